"""Run-time plumbing shared by every stage that runs a network.

* Device resolution (:func:`resolve_device`): training, fine-tuning, extraction, TV-L1 on GPU and
  detectron2 all pick their device here, so a GPU configured but absent fails the same way
  everywhere: a :class:`DeviceError` naming the config key, never a quiet CPU run.
* The distributed set-up of the two training loops (``m3em.train``, ``extractors.finetune``):
  :func:`distributed_run` joins the ``torchrun`` process group (when ``WORLD_SIZE > 1``), puts
  each process on its own GPU and leaves the group on exit; :func:`data_parallel` wraps a model
  in DistributedDataParallel; :func:`barrier` waits for every rank.
* Their writers: :func:`save_checkpoint` (``torch.save``) and :func:`write_metrics_csv` (one row
  per epoch), both atomic (:mod:`m3em.epic.atomic`): a killed job leaves the previous complete
  file, never a truncated one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from m3em.epic.atomic import atomic_output, atomic_write_text
from m3em.epic.errors import InputError


class DeviceError(InputError, ValueError):
    """A configured device that is malformed or not present on this machine."""


def resolve_device(name: str | torch.device, key: str = "device") -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> the torch device; CUDA requested but absent is an error.

    Under ``torchrun`` (a process group is up) ``cuda`` means this process's GPU, ``LOCAL_RANK``.

    Args:
        name: the configured device.
        key: the config key it came from (``train.device``), named in the error.

    Raises:
        DeviceError: not ``cpu``/``cuda[:N]``, no CUDA, or index beyond the visible GPUs.
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"{key}: {str(name)!r} is not a device; use cpu, cuda or cuda:N") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceError(f"{key}: unsupported device {str(name)!r}; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"{key}: {str(name)!r} requested but CUDA is not available on this machine "
                          "(set it to cpu to run without a GPU; there is no fallback)")
    if dev.index is None and dist.is_available() and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"{key}: {str(name)!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


# ---------------------------------------------------------------------------------------------
# Distributed training (torchrun)


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly single-process) training job.

    Attributes:
        rank: global rank (0 writes the files).
        world_size: number of processes (1 without ``torchrun``).
        local_rank: rank on this machine; the GPU index under ``torchrun``.
        device: the device this process computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, metrics and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is up (``world_size > 1``)."""
        return self.world_size > 1


def init_distributed(device: str, key: str = "device") -> DistributedContext:
    """Resolve ``device`` and, under ``torchrun`` (``WORLD_SIZE > 1``), join the process group.

    The device is checked before the group is joined, so a bad ``train.device`` fails the same
    way with and without ``torchrun``. With several processes ``cuda`` means this process's GPU,
    ``cuda:LOCAL_RANK`` (set as the current CUDA device, so NCCL and ``.cuda()`` agree); NCCL
    serves CUDA, gloo the CPU.

    Args:
        device: the configured device (``cpu``, ``cuda``, ``cuda:N``).
        key: its config key, named in errors (``train.device``).

    Raises:
        DeviceError: the device is malformed or absent, or a ``cuda:N`` other than this process's
            GPU under ``torchrun``.
    """
    dev = resolve_device(device, key)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if dev.index is not None and dev.index != local:
            raise DeviceError(f"{key}: {device!r} under torchrun: every process uses its own GPU (LOCAL_RANK "
                              f"{local}); set {key}: cuda")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=dev)


def teardown_distributed() -> None:
    """Leave the process group, if one is up (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_run(device: str, key: str = "device") -> Iterator[DistributedContext]:
    """:func:`init_distributed` for the duration of a ``with`` block; the group is left on exit,
    also when the block raises (so a failed rank does not leave the others hanging in ``init``)."""
    ctx = init_distributed(device, key)
    try:
        yield ctx
    finally:
        teardown_distributed()


def barrier(ctx: DistributedContext) -> None:
    """Wait until every rank got here (rank 0's files are written); a no-op in one process."""
    if ctx.distributed:
        dist.barrier()


def data_parallel(model: nn.Module, ctx: DistributedContext, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel on ``ctx.device`` under ``torchrun``, else ``model``.

    ``find_unused_parameters``: parameters that receive no gradient in some steps (e.g. the domain
    heads of a source-only run) must be declared, or DDP waits for them forever.
    """
    if not ctx.distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints and per-epoch metrics


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (a dict of tensors, numbers, strings, lists and dicts: readable with
    ``torch.load(weights_only=True)``) to ``path`` with ``torch.save``, atomically."""
    with atomic_output(path) as tmp:
        torch.save(dict(payload), tmp)


def write_metrics_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                      *, float_format: str | None = None) -> None:
    """Write the per-epoch ``rows`` as a CSV table (``\\n`` line ends), atomically.

    The whole table is rewritten each epoch from the rows so far, so the file always matches the
    checkpoint written with it.

    Args:
        path: the CSV file.
        rows: one mapping per epoch; a key missing from a row is an empty cell.
        columns: the header, in order; default: the keys of the first row.
        float_format: a format spec for float cells (``".6g"``); None writes ``repr``-exact floats.
    """
    fieldnames = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (format(v, float_format) if float_format and isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())

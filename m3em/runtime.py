"""Run-time plumbing shared by every stage that runs a network: device resolution.

The training and fine-tuning loops (``m3em.train``, ``extractors.finetune``), extraction, TV-L1 on
GPU and detectron2 all pick their device here, so a GPU configured but absent fails the same way
everywhere: a :class:`DeviceError` naming the config key, never a quiet CPU run.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

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

"""Device resolution: one function and one error type for every stage (no CPU fallback)."""

from __future__ import annotations

import pytest
import torch

from m3em.epic.errors import InputError
from m3em.runtime import DeviceError, resolve_device


def test_cpu_resolves():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "mps", ""])
def test_malformed_or_unsupported_device_names_the_key(name):
    with pytest.raises(DeviceError, match=r"^features\.device: "):
        resolve_device(name, "features.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_absent_is_an_input_error_not_a_fallback(name):
    with pytest.raises(DeviceError, match=r"train\.device: .*CUDA is not available") as info:
        resolve_device(name, "train.device")
    assert isinstance(info.value, InputError)  # entry points report it as one line, exit 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_visible_gpus():
    with pytest.raises(DeviceError, match="GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}", "train.device")


# ---------------------------------------------------------------------------------------------
# The distributed set-up and the writers shared by m3em.train and extractors.finetune.


def test_single_process_context_joins_no_group(monkeypatch):
    import torch.distributed as dist

    from m3em.runtime import DistributedContext, barrier, data_parallel, distributed_run

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed_run("cpu", "train.device") as ctx:
        assert ctx == DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        assert ctx.is_main and not ctx.distributed and not dist.is_initialized()
        model = torch.nn.Linear(2, 2)
        assert data_parallel(model, ctx) is model
        barrier(ctx)  # a no-op in one process


def test_bad_device_fails_before_joining_a_group(monkeypatch):
    import torch.distributed as dist

    from m3em.runtime import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DeviceError, match=r"^finetune\.device: "):
        init_distributed("tpu", "finetune.device")
    assert not dist.is_initialized()


def _two_ranks(rank: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from m3em.runtime import barrier, data_parallel, distributed_run

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with distributed_run("cpu", "train.device") as ctx:
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        wrapped = type(data_parallel(torch.nn.Linear(2, 2), ctx)).__name__
        barrier(ctx)
    torch.save({"rank": ctx.rank, "world": ctx.world_size, "sum": t.item(), "wrapped": wrapped,
                "left": not dist.is_initialized()}, f"{out}/{rank}.pt")


def test_two_processes_share_one_gloo_group_and_leave_it(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_ranks, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert r == {"rank": rank, "world": 2, "sum": 3.0, "wrapped": "DistributedDataParallel", "left": True}


def test_checkpoint_writer_is_atomic_and_weights_only(tmp_path):
    from m3em.runtime import save_checkpoint

    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.ones(2)}, "meta": {"epoch": 1, "modalities": ["rgb"]}})
    assert torch.load(path, weights_only=True)["meta"] == {"epoch": 1, "modalities": ["rgb"]}

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"meta": {"epoch": 2}, "bad": Unpicklable()})
    assert torch.load(path, weights_only=True)["meta"]["epoch"] == 1  # the previous file survives
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # and no temporary is left


def test_metrics_csv_header_cells_and_float_format(tmp_path):
    from m3em.runtime import write_metrics_csv

    rows = [{"epoch": 1, "loss": 1 / 3, "name": "a"}, {"epoch": 2, "loss": float("nan"), "name": "b"}]
    write_metrics_csv(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_bytes() == b"epoch,loss,name\n1,0.3333333333333333,a\n2,nan,b\n"
    write_metrics_csv(tmp_path / "m.csv", rows[:1], ["epoch", "loss", "acc", "name"], float_format=".3g")
    assert (tmp_path / "m.csv").read_text() == "epoch,loss,acc,name\n1,0.333,,a\n"

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

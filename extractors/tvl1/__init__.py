"""TV-L1 optical flow with one interface and two backends.

- ``"opencv"``: ``cv2.optflow.DualTVL1OpticalFlow`` on the CPU, one pair at a time (the reference);
- ``"torch"``: our batched PyTorch port of the same algorithm, on CPU or CUDA.

Both take grayscale frames on the 0-255 scale and return float flow in pixels:

>>> flow = compute_flow(prev, nxt, TVL1Params(), backend="torch", device="cpu")  # doctest: +SKIP

Threads are the caller's choice (``cv2.setNumThreads`` / ``torch.set_num_threads``); on the CPU the
torch backend spreads *batches* over its ``torch.get_num_threads()`` threads (each op single-threaded).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch

from m3em.runtime import resolve_device

from .opencv_backend import create_opencv_tvl1, opencv_flow
from .params import EPIC_PARAMS, OPENCV_CPU_DEFAULTS, TVL1Params
from .torch_backend import torch_flow

Backend = Literal["opencv", "torch"]
BACKENDS: tuple[str, ...] = ("opencv", "torch")

__all__ = [
    "BACKENDS",
    "EPIC_PARAMS",
    "OPENCV_CPU_DEFAULTS",
    "TVL1Params",
    "compute_flow",
    "create_opencv_tvl1",
    "end_point_error",
]


def _check_frames(prev: np.ndarray, nxt: np.ndarray) -> None:
    for name, arr in (("prev", prev), ("next", nxt)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"TV-L1: {name} must be a numpy array, got {type(arr).__name__}")
        if arr.ndim != 3:
            raise ValueError(f"TV-L1: {name} must be grayscale frames (N, H, W), got shape {arr.shape}")
        if arr.dtype not in (np.uint8, np.float32):
            raise TypeError(f"TV-L1: {name} must be uint8 or float32 (0-255 scale), got {arr.dtype}")
    if prev.shape != nxt.shape:
        raise ValueError(f"TV-L1: prev and next shapes differ: {prev.shape} vs {nxt.shape}")
    if prev.dtype != nxt.dtype:
        raise TypeError(f"TV-L1: prev and next dtypes differ: {prev.dtype} vs {nxt.dtype}")
    n, h, w = prev.shape
    if h < 8 or w < 8:
        raise ValueError(f"TV-L1: frames of {h}x{w} px are too small (need at least 8x8)")
    if prev.dtype == np.float32:
        for name, arr in (("prev", prev), ("next", nxt)):
            if not np.isfinite(arr).all():
                raise ValueError(f"TV-L1: {name} contains non-finite values (NaN or inf)")
            if n and (arr.min() < 0.0 or arr.max() > 255.0):
                raise ValueError(
                    f"TV-L1: {name} values span [{arr.min():.3g}, {arr.max():.3g}]; float frames must be "
                    "on the 0-255 scale"
                )


def compute_flow(
    prev: np.ndarray,
    nxt: np.ndarray,
    params: TVL1Params = EPIC_PARAMS,
    backend: Backend = "torch",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    check_every: int | None = None,
    compiled: bool = False,
) -> np.ndarray:
    """TV-L1 flow from each frame of ``prev`` to the frame of ``nxt`` at the same index.

    Args:
        prev: (N, H, W) grayscale first frames, uint8 or float32 on the 0-255 scale.
        nxt: (N, H, W) grayscale second frames, same shape and dtype.
        params: TV-L1 parameters (default: the EPIC extractor's).
        backend: ``"opencv"`` (CPU only) or ``"torch"``.
        device: ``"cpu"`` or ``"cuda[:i]"`` (torch backend only); CUDA that is absent is an error.
        batch_size: pairs solved at once by the torch backend; default 1 on CPU (the working set of
            one 456x256 pair fits in cache; larger batches are slower per pair there; batches are
            spread over ``torch.get_num_threads()`` threads) and 64 on CUDA.
        check_every: iterations between host-side checks of the per-pair stopping flags (torch
            backend); default 1 on CPU, 10 on CUDA. Results do not depend on it.
        compiled: fuse the iteration with ``torch.compile`` (torch backend; for CUDA throughput).

    Returns:
        (N, 2, H, W) float32 flow in pixels; channel 0 = x (horizontal), channel 1 = y, such that
        ``prev[n, y, x] ~ nxt[n, y + flow[n, 1, y, x], x + flow[n, 0, y, x]]``.
    """
    if not isinstance(params, TVL1Params):
        raise TypeError(f"TV-L1: params must be TVL1Params, got {type(params).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"TV-L1: unknown backend {backend!r}; choose one of {BACKENDS}")
    _check_frames(prev, nxt)
    n, h, w = prev.shape
    if backend == "opencv":
        if torch.device(device).type != "cpu":
            raise ValueError(f"TV-L1: the opencv backend runs on the CPU only, got device {str(device)!r}")
        return opencv_flow(prev, nxt, params)
    dev = resolve_device(device, "flow.device")
    on_cuda = dev.type == "cuda"
    batch_size = batch_size if batch_size is not None else (64 if on_cuda else 1)
    check_every = check_every if check_every is not None else (10 if on_cuda else 1)
    if batch_size < 1 or check_every < 1:
        raise ValueError(f"TV-L1: batch_size ({batch_size}) and check_every ({check_every}) must be >= 1")
    out = np.empty((n, 2, h, w), np.float32)
    chunks = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]

    def solve(chunk: tuple[int, int]) -> None:
        start, stop = chunk
        a = torch.from_numpy(np.ascontiguousarray(prev[start:stop])).to(dev).float()
        b = torch.from_numpy(np.ascontiguousarray(nxt[start:stop])).to(dev).float()
        out[start:stop] = torch_flow(a, b, params, check_every, compiled).cpu().numpy()

    if on_cuda:
        for chunk in chunks:
            solve(chunk)
        return out
    # On the CPU the torch threads work on different batches, each op single-threaded: one
    # iteration is ~20 small element-wise ops, and splitting each of them across threads costs a
    # barrier per op (measured 10-30x slower on a loaded 2-core machine) while independent
    # batches never wait for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        workers = min(threads, len(chunks))
        if workers <= 1:
            for chunk in chunks:
                solve(chunk)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(solve, chunks))
    finally:
        torch.set_num_threads(threads)
    return out


def end_point_error(a: np.ndarray, b: np.ndarray, border: int = 0) -> np.ndarray:
    """Per-pixel end-point error of (..., 2, H, W) flows, an optional border band dropped."""
    err = np.sqrt(((a - b) ** 2).sum(axis=-3))
    if border:
        err = err[..., border:-border, border:-border]
    return err

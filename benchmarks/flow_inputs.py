"""Benchmark inputs: grey frame pairs from real video files (flow parity and speed benchmarks)."""

from __future__ import annotations

from pathlib import Path

import cv2
import decord
import numpy as np


def gray_pairs(
    path: str | Path, n_pairs: int, size: tuple[int, int] | None = (256, 456), dilation: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` pairs (t, t + dilation) spread evenly over a video, as grey uint8 frames.

    Grey as in the EPIC extractor (``cvtColor`` to grey on 8-bit data); resized with INTER_AREA.

    Args:
        path: video file readable by decord.
        n_pairs: number of pairs.
        size: (H, W) output size, or None for the native size.
        dilation: frame distance inside a pair.

    Returns:
        prev, next: (n_pairs, H, W) uint8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    reader = decord.VideoReader(str(path))
    last = len(reader) - 1 - dilation
    if last < 0:
        raise ValueError(f"{path}: {len(reader)} frames, too few for dilation {dilation}")
    starts = np.unique(np.linspace(0, last, n_pairs).round().astype(int))
    index = sorted(set(starts.tolist()) | set((starts + dilation).tolist()))
    frames = reader.get_batch(index).asnumpy()
    gray = {}
    for i, frame in zip(index, frames):
        g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if size is not None and g.shape != size:
            g = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        gray[i] = g
    prev = np.stack([gray[s] for s in starts])
    nxt = np.stack([gray[s + dilation] for s in starts])
    return prev, nxt

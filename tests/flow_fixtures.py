"""Test fixtures: synthetic frame pairs with known motion (TV-L1 accuracy tests, and
``benchmarks/flow_parity.py --synthetic``, run with ``PYTHONPATH=tests``).

Convention as the flow: ``I0(x) = I1(x + flow(x))`` (flow maps the first frame onto the second).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W) float32 multi-scale smooth random texture on the 0-255 scale."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width), np.float64)
    for sigma, weight in ((1.0, 0.35), (3.0, 0.4), (8.0, 0.25)):
        noise = cv2.GaussianBlur(rng.standard_normal((height, width)), (0, 0), sigma)
        img += weight * noise / noise.std()
    img = (img - img.min()) / (img.max() - img.min())
    return (20.0 + 215.0 * img).astype(np.float32)


def warp_by_flow(img1: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """I0 = I1(x + flow) by bicubic sampling with replicated borders; flow (2, H, W) x first."""
    h, w = img1.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        img1, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    ).astype(np.float32)


def translation_flow(height: int, width: int, dx: float, dy: float) -> np.ndarray:
    """(2, H, W) float32 constant flow."""
    return np.stack([np.full((height, width), dx, np.float32), np.full((height, width), dy, np.float32)])


def rotation_flow(height: int, width: int, degrees: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """(2, H, W) float32 flow of a rotation about the image centre plus a translation."""
    a = math.radians(degrees)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64) - cx, np.arange(height, dtype=np.float64) - cy)
    u = math.cos(a) * xs - math.sin(a) * ys - xs + dx
    v = math.sin(a) * xs + math.cos(a) * ys - ys + dy
    return np.stack([u, v]).astype(np.float32)


def make_pair(flow: np.ndarray, seed: int = 0, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(I0, I1) uint8 frames whose true flow is ``flow`` (2, H, W); optional Gaussian noise (grey levels)."""
    _, h, w = flow.shape
    img1 = textured_image(h, w, seed)
    img0 = warp_by_flow(img1, flow)
    rng = np.random.default_rng(seed + 1)
    if noise:
        img0 = img0 + rng.normal(0.0, noise, img0.shape)
        img1 = img1 + rng.normal(0.0, noise, img1.shape)
    to_u8 = lambda x: np.clip(np.rint(x), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(img0), to_u8(img1)

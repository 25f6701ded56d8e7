"""Hand-object detections for the demo videos, made from the true boxes with detector-like noise.

The result is what the EPIC-100 hand-object release would hold for the video: for every RGB frame
the hands (box, score, side, contact state, offset to the object in contact) and the objects
(box, score), normalised to [0, 1]. The noise imitates the detector the release was made with
(ddshan/Hand_Object_Detector at low thresholds): jittered boxes, missed hands and objects (more
often in the darker, blurrier target domain), low-score false positives, an occasional spurious
left hand, and contact states that are sometimes wrong.
"""

from __future__ import annotations

import numpy as np

from epic_demo.scene import Box, FrameTruth
from extractors.detections.official import FrameDetections, HandBox, HandSide, HandState, ObjectBox


def _noisy_box(box: Box, w: int, h: int, rng: np.random.Generator, jitter: float) -> tuple[float, ...] | None:
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    j = rng.normal(0.0, jitter, 4) * np.array([bw, bh, bw, bh])
    x1, y1, x2, y2 = x1 + j[0], y1 + j[1], x2 + 1 + j[2], y2 + 1 + j[3]
    left, right = sorted((float(np.clip(x1 / w, 0, 1)), float(np.clip(x2 / w, 0, 1))))
    top, bottom = sorted((float(np.clip(y1 / h, 0, 1)), float(np.clip(y2 / h, 0, 1))))
    if right - left < 1e-3 or bottom - top < 1e-3:
        return None
    return left, top, right, bottom


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2


def noisy_detections(frame_number: int, truth: FrameTruth, width: int, height: int, miss_rate: float,
                     rng: np.random.Generator) -> FrameDetections:
    """Detections of one frame from its true boxes (pixels), normalised by ``width``/``height``."""
    hands: list[HandBox] = []
    objects: list[ObjectBox] = []
    if truth.hand is not None and rng.random() >= miss_rate:
        coords = _noisy_box(truth.hand, width, height, rng, 0.04)
        if coords is not None:
            contact = truth.holding
            if rng.random() < 0.08:  # the contact classifier is wrong now and then
                contact = not contact
            state = HandState.PORTABLE_OBJECT if contact else HandState.NO_CONTACT
            ox = oy = 0.0
            if contact and truth.held is not None:
                hx, hy = _centre(truth.hand)
                cx, cy = _centre(truth.held)
                ox = float(np.clip((cx - hx) / width + rng.normal(0, 0.01), -1, 1))
                oy = float(np.clip((cy - hy) / height + rng.normal(0, 0.01), -1, 1))
            score = float(np.clip(rng.beta(12, 1.5), 0.1, 1.0))
            hands.append(HandBox(*coords, score=score, side=int(HandSide.RIGHT), state=int(state),
                                 offset_x=ox, offset_y=oy))
    if rng.random() < 0.03:  # a spurious left hand (skin-coloured clutter)
        hands.append(_random_hand(rng))
    for box in truth.objects:
        is_held = truth.held is not None and box == truth.held
        if rng.random() < (miss_rate if is_held else 3 * miss_rate):
            continue
        coords = _noisy_box(box, width, height, rng, 0.06)
        if coords is None:
            continue
        score = float(rng.beta(8, 2) if is_held else rng.uniform(0.02, 0.6))
        objects.append(ObjectBox(*coords, score=score))
    for _ in range(int(rng.poisson(0.4))):  # false positives at the low release threshold
        objects.append(_random_object(rng))
    return FrameDetections(frame_number=frame_number, hands=tuple(hands), objects=tuple(objects))


def _random_box(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float, float, float]:
    w, h = rng.uniform(lo, hi, 2)
    x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    return float(x), float(y), float(x + w), float(y + h)


def _random_hand(rng: np.random.Generator) -> HandBox:
    return HandBox(*_random_box(rng, 0.05, 0.15), score=float(rng.uniform(0.1, 0.3)), side=int(HandSide.LEFT),
                   state=int(HandState.NO_CONTACT), offset_x=0.0, offset_y=0.0)


def _random_object(rng: np.random.Generator) -> ObjectBox:
    return ObjectBox(*_random_box(rng, 0.03, 0.25), score=float(rng.uniform(0.01, 0.25)))

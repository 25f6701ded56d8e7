"""Rendering of the demo kitchen: background, distractor objects, a hand that acts on an object.

Shapes are drawn from signed distance functions (SDF, in pixels, negative inside) on small
patches of the frame, which gives anti-aliased, rotatable shapes at any resolution for the cost
of a few numpy operations per shape. Every drawn shape returns its true pixel box, from which the
detections are made (the true boxes never leave the generator).

Coordinates: ``x`` to the right, ``y`` down, in pixels of the output frame; frame ``n`` (1-based)
shows time ``(n - 1) / fps``. Lengths of objects and motions are in units of the frame height
``H`` so that every size preset shows the same scene.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from epic_demo.spec import (
    COMPATIBLE_NOUNS,
    COMPATIBLE_PROB,
    NOUNS,
    VERBS,
    Background,
    Noun,
    Shape,
    Texture,
    VideoSpec,
)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels (inclusive pixel extent)

# ---------------------------------------------------------------------------------------------
# The action plan of one video


@dataclasses.dataclass(frozen=True)
class Segment:
    """One action segment: 1-based inclusive frame range, classes and where it happens.

    ``anchor`` is the object's resting position as a fraction of (width, height); ``amp`` and
    ``phase`` vary the motion pattern from one instance to the next.
    """

    start_frame: int
    stop_frame: int
    verb: int
    noun: int
    anchor: tuple[float, float]
    amp: float
    phase: float
    narration_offset: float  # where the narration was spoken, seconds after the start


def plan_segments(video: VideoSpec, rng: np.random.Generator) -> tuple[Segment, ...]:
    """Lay out a run of segments with gaps over the video.

    Verbs cycle through shuffled blocks of all verbs, so every verb appears about equally often
    in every video; nouns are a compatible kind with probability ``COMPATIBLE_PROB``.
    """
    fps = video.domain.fps
    lo, hi = video.domain.segment_seconds
    glo, ghi = video.domain.gap_seconds
    noun_index = {n.key: i for i, n in enumerate(NOUNS)}
    segments: list[Segment] = []
    verbs: list[int] = []
    t = float(rng.uniform(0.3, 0.8))
    while True:
        length = float(rng.uniform(lo, hi))
        if t + length > video.seconds - 0.3:
            break
        if not verbs:
            verbs = [int(v) for v in rng.permutation(len(VERBS))]
        verb = verbs.pop()
        if rng.random() < COMPATIBLE_PROB:
            choices = COMPATIBLE_NOUNS[VERBS[verb].key]
            noun = noun_index[choices[int(rng.integers(len(choices)))]]
        else:
            noun = int(rng.integers(len(NOUNS)))
        start = 1 + round(t * fps)
        stop = 1 + round((t + length) * fps)
        segments.append(Segment(
            start_frame=start, stop_frame=stop, verb=verb, noun=noun,
            anchor=(float(rng.uniform(0.32, 0.62)), float(rng.uniform(0.58, 0.74))),
            amp=float(rng.uniform(0.85, 1.15)), phase=float(rng.uniform(0, 2 * math.pi)),
            narration_offset=float(rng.uniform(0.0, 0.6 * length)),
        ))
        t += length + float(rng.uniform(glo, ghi))
    return tuple(segments)


# ---------------------------------------------------------------------------------------------
# Signed distance functions (pixels, negative inside)


def sd_box(u: np.ndarray, v: np.ndarray, hx: float, hy: float, r: float = 0.0) -> np.ndarray:
    """Rounded box centred at the origin with half sizes (hx, hy) and corner radius r."""
    qx = np.abs(u) - (hx - r)
    qy = np.abs(v) - (hy - r)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def sd_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate ellipse distance (exact on the axes, good enough for 1-pixel anti-aliasing)."""
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


def sd_capsule(x: np.ndarray, y: np.ndarray, ax: float, ay: float, bx: float, by: float, r: float) -> np.ndarray:
    """Capsule (thick segment) from (ax, ay) to (bx, by) with radius r."""
    px, py = x - ax, y - ay
    dx, dy = bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(px - dx * h, py - dy * h) - r


def object_sdf(noun: Noun, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """SDF of a noun's silhouette in local pixel coordinates ``(u, v)``; ``scale`` = pixels per H."""
    a, b = noun.half_width * scale, noun.half_height * scale
    if noun.shape is Shape.DISC:
        return np.hypot(u, v) - a
    if noun.shape is Shape.ELLIPSE:
        return sd_ellipse(u, v, a, b)
    if noun.shape is Shape.BOX:
        return sd_box(u, v, a, b, 0.15 * min(a, b))
    if noun.shape is Shape.BOTTLE:
        body = sd_box(u, v - 0.25 * b, a, 0.75 * b, 0.3 * a)
        neck = sd_box(u, v + 0.75 * b, 0.45 * a, 0.3 * b, 0.1 * a)
        return np.minimum(body, neck)
    if noun.shape is Shape.BOWL:
        # Lower half of an ellipse (v > 0 is down), rim at v = -0.2b so the opening shows.
        return np.maximum(sd_ellipse(u, v + 0.2 * b, a, 1.2 * b), -(v + 0.2 * b))
    if noun.shape is Shape.PAN:
        return np.minimum(np.hypot(u, v) - a, sd_capsule(u, v, 0.9 * a, 0.0, 2.0 * a, -0.2 * a, 0.12 * a))
    if noun.shape is Shape.TRIANGLE:
        # Pointing down: top edge at v = -b, apex at (0, b); intersection of three half planes.
        n = math.hypot(2 * b, a)
        right = (2 * b * u + a * v - a * b) / n
        left = (-2 * b * u + a * v - a * b) / n
        return np.maximum(np.maximum(-(v + b), right), left)
    raise ValueError(f"unknown shape {noun.shape}")


def texture(kind: Texture, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray | float:
    """Brightness modulation of a surface pattern (1 = base colour)."""
    period = 0.045 * scale
    if kind is Texture.PLAIN:
        return 1.0
    if kind is Texture.STRIPES:
        return 0.78 + 0.22 * np.tanh(3.0 * np.sin(2 * math.pi * (u + 0.5 * v) / period))
    if kind is Texture.DOTS:
        du = np.mod(u, period) - 0.5 * period
        dv = np.mod(v, period) - 0.5 * period
        return 1.0 - 0.4 * (np.hypot(du, dv) < 0.22 * period)
    if kind is Texture.CHECKER:
        return 0.8 + 0.2 * np.sign(np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period))
    raise ValueError(f"unknown texture {kind}")


# ---------------------------------------------------------------------------------------------
# Painting


class Canvas:
    """A float RGB image plus cached pixel coordinate grids, with SDF painting."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.xs, self.ys = xs, ys
        self.img = np.zeros((height, width, 3), np.float32)

    def paint(self, cx: float, cy: float, radius: float, sdf, colour) -> Box | None:
        """Composite a shape whose pixels lie within ``radius`` of (cx, cy).

        Args:
            sdf: ``f(x, y) -> distance`` on coordinate patches (pixels).
            colour: an RGB triple, or ``f(x, y) -> (h, w, 3)`` colours.

        Returns:
            The box of the pixels at least half covered, or None if nothing is visible.
        """
        x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, self.w)
        y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        xs, ys = self.xs[y0:y1, x0:x1], self.ys[y0:y1, x0:x1]
        alpha = np.clip(0.5 - sdf(xs, ys), 0.0, 1.0)
        covered = alpha >= 0.5
        if not covered.any():
            return None
        col = colour(xs, ys) if callable(colour) else np.asarray(colour, np.float32)
        patch = self.img[y0:y1, x0:x1]
        patch += alpha[..., None] * (col - patch)
        rows = np.flatnonzero(covered.any(axis=1))
        cols = np.flatnonzero(covered.any(axis=0))
        return (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1]), float(y0 + rows[-1]))


def paint_object(canvas: Canvas, noun: Noun, x: float, y: float, angle: float, scale: float, unit: float,
                 colour: tuple[float, float, float] | None = None) -> Box | None:
    """Paint a noun's object centred at (x, y), rotated by ``angle`` (radians), size ``scale``."""
    s = unit * scale
    c, sn = math.cos(angle), math.sin(angle)
    base = np.asarray(colour if colour is not None else noun.colour, np.float32)

    def local(xs, ys):
        dx, dy = xs - x, ys - y
        return c * dx + sn * dy, -sn * dx + c * dy

    def sdf(xs, ys):
        u, v = local(xs, ys)
        return object_sdf(noun, u, v, s)

    def col(xs, ys):
        u, v = local(xs, ys)
        shade = 1.05 - 0.25 * np.clip(v / (2 * noun.half_height * s) + 0.5, 0.0, 1.0)  # light from above
        return base * (shade * texture(noun.texture, u, v, s))[..., None]

    radius = 2.3 * max(noun.half_width, noun.half_height) * s
    return canvas.paint(x, y, radius, sdf, col)


# ---------------------------------------------------------------------------------------------
# Background


def render_background(style: Background, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A static kitchen view: wall in the top third, worktop below. ``(height, width, 3)`` float."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    unit = float(height) / 1.2  # the canvas is taller than a frame by the camera margin
    wall_line = 0.33 * height
    img = np.empty((height, width, 3), np.float32)
    grain = rng.normal(0.0, 1.0, (height // 4 + 2, width // 4 + 2)).astype(np.float32)
    grain = cv2.resize(cv2.GaussianBlur(grain, (0, 0), 1.5), (width, height), interpolation=cv2.INTER_LINEAR)
    if style is Background.WOOD:
        wall = np.array([222, 208, 180], np.float32) * (1.0 + 0.02 * grain[..., None])
        plank = np.floor((ys - wall_line) / (0.22 * unit))
        ring = np.sin(2 * math.pi * (xs / (0.5 * unit) + 0.7 * plank) + 3.0 * grain)
        wood = np.array([150, 104, 62], np.float32) * (0.9 + 0.08 * ring + 0.04 * grain)[..., None]
        seam = np.abs(np.mod(ys - wall_line, 0.22 * unit)) < 0.012 * unit
        wood[seam] *= 0.6
        img[:] = np.where((ys < wall_line)[..., None], wall, wood)
    elif style is Background.TILES:
        tile = 0.11 * unit
        grout = (np.mod(xs, tile) < 0.1 * tile) | (np.mod(ys, tile) < 0.1 * tile)
        wall = np.where(grout[..., None], np.array([150, 150, 150], np.float32),
                        np.array([200, 215, 232], np.float32) * (1.0 + 0.02 * grain[..., None]))
        speck = rng.random((height, width)).astype(np.float32)
        granite = np.array([118, 118, 124], np.float32) * (0.85 + 0.3 * (speck > 0.93) - 0.15 * (speck < 0.05)
                                                            + 0.05 * grain)[..., None]
        img[:] = np.where((ys < wall_line)[..., None], wall, granite)
    else:
        raise ValueError(f"unknown background {style}")
    # The worktop's front edge (a darker band) gives the scene a horizon.
    edge = np.abs(ys - wall_line) < 0.015 * unit
    img[edge] *= 0.55
    return img


# ---------------------------------------------------------------------------------------------
# The hand


SKIN_TONES = ((224, 172, 138), (198, 140, 105), (236, 192, 160), (160, 110, 80))
SLEEVES = ((40, 60, 110), (120, 30, 40), (70, 70, 72), (30, 100, 80))


def paint_hand(canvas: Canvas, gx: float, gy: float, unit: float, skin, sleeve, closed: float) -> Box | None:
    """Paint a right hand reaching in from the bottom right, fingers at the grip point (gx, gy).

    ``closed`` in [0, 1] curls the fingers (1 = gripping). Returns the hand's box (palm, thumb and
    fingers; the forearm is not part of a hand box, as in the EPIC detector's output).
    """
    shoulder = (0.95 * canvas.w + 0.4 * unit, canvas.h + 0.6 * unit)
    dx, dy = gx - shoulder[0], gy - shoulder[1]
    n = math.hypot(dx, dy)
    fx, fy = dx / n, dy / n           # along the arm, towards the fingers
    px, py = -fy, fx                  # across the hand
    palm = (gx - 0.075 * unit * fx, gy - 0.075 * unit * fy)
    wrist = (palm[0] - 0.06 * unit * fx, palm[1] - 0.06 * unit * fy)
    elbow = (palm[0] - 0.9 * unit * fx, palm[1] - 0.9 * unit * fy)
    # Sleeve and forearm first (behind the hand).
    sleeve_start = (palm[0] - 0.16 * unit * fx, palm[1] - 0.16 * unit * fy)
    canvas.paint((sleeve_start[0] + elbow[0]) / 2, (sleeve_start[1] + elbow[1]) / 2, 0.5 * unit,
                 lambda xs, ys: sd_capsule(xs, ys, *sleeve_start, *elbow, 0.055 * unit), sleeve)
    canvas.paint((palm[0] + sleeve_start[0]) / 2, (palm[1] + sleeve_start[1]) / 2, 0.12 * unit,
                 lambda xs, ys: sd_capsule(xs, ys, *wrist, *sleeve_start, 0.032 * unit),
                 np.asarray(skin, np.float32) * 0.93)
    fingers = []
    length = (0.07 - 0.03 * closed) * unit
    for k, off in enumerate((-0.033, -0.011, 0.011, 0.033)):
        base = (palm[0] + 0.035 * unit * fx + off * unit * px, palm[1] + 0.035 * unit * fy + off * unit * py)
        ln = length * (0.85 if k in (0, 3) else 1.0)
        tip = (base[0] + ln * fx - 0.3 * closed * ln * px, base[1] + ln * fy - 0.3 * closed * ln * py)
        fingers.append((*base, *tip))
    thumb_base = (palm[0] - 0.045 * unit * px, palm[1] - 0.045 * unit * py)
    thumb_tip = (thumb_base[0] + 0.05 * unit * (fx - px), thumb_base[1] + 0.05 * unit * (fy - py))

    def sdf(xs, ys):
        d = sd_capsule(xs, ys, palm[0] - 0.02 * unit * fx, palm[1] - 0.02 * unit * fy,
                       palm[0] + 0.02 * unit * fx, palm[1] + 0.02 * unit * fy, 0.045 * unit)
        for f in fingers:
            d = np.minimum(d, sd_capsule(xs, ys, *f, 0.012 * unit))
        return np.minimum(d, sd_capsule(xs, ys, *thumb_base, *thumb_tip, 0.014 * unit))

    skin_arr = np.asarray(skin, np.float32)

    def col(xs, ys):
        # Knuckle shading: darker towards the finger tips.
        t = ((xs - palm[0]) * fx + (ys - palm[1]) * fy) / unit
        return skin_arr * (1.0 - 0.8 * np.clip(t - 0.03, 0.0, 0.15))[..., None]

    return canvas.paint(palm[0], palm[1], 0.2 * unit, sdf, col)


# ---------------------------------------------------------------------------------------------
# Verb motion patterns


@dataclasses.dataclass
class Pose:
    """Where everything is at one instant of a segment (pixels, radians)."""

    x: float
    y: float
    angle: float = 0.0
    scale: float = 1.0
    lid: tuple[float, float] | None = None         # lid displacement (open/close)
    tool: str | None = None                         # "knife" or "spoon"
    tool_tip: tuple[float, float] | None = None
    stream: tuple[float, float, float] | None = None  # x, y_top, y_bottom of falling drops
    stream_colour: tuple[int, int, int] = (150, 190, 235)
    grip: tuple[float, float] | None = None         # where the hand's fingers are


def _ease(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def verb_pose(verb: str, noun: Noun, t: float, seconds: float, ax: float, ay: float, unit: float,
              amp: float, phase: float) -> Pose:
    """The pose at normalised time ``t`` in [0, 1] of a segment lasting ``seconds``.

    Rhythms are in Hz of real time (``t * seconds``), so they look the same at 60 and at 50 fps.
    """
    tau = t * seconds
    hw, hh = noun.half_width * unit, noun.half_height * unit
    right_grip = (0.85 * hw, 0.2 * hh)  # fingers on the object's right side
    if verb in ("take", "put"):
        e = _ease(t) if verb == "take" else 1.0 - _ease(t)
        y = ay + amp * (0.16 - 0.34 * e) * unit
        pose = Pose(ax + 0.05 * e * unit, y, angle=0.1 * e, scale=0.9 + 0.4 * e)
    elif verb == "wash":
        x = ax + amp * 0.1 * unit * math.sin(2 * math.pi * 2.5 * tau + phase)
        y = ay - 0.05 * unit + 0.02 * unit * math.sin(2 * math.pi * 5.0 * tau)
        pose = Pose(x, y, angle=0.15 * math.sin(2 * math.pi * 2.5 * tau + phase))
        pose.stream = (ax, 0.0, y - hh)
    elif verb in ("open", "close"):
        e = _ease(t) if verb == "open" else 1.0 - _ease(t)
        pose = Pose(ax, ay)
        pose.lid = (amp * 0.12 * unit * e, -amp * 0.22 * unit * e)
        pose.grip = (ax + pose.lid[0] + 0.5 * hw, ay - hh + pose.lid[1])
        return pose
    elif verb == "cut":
        pose = Pose(ax, ay)
        down = abs(math.sin(math.pi * 3.0 * tau + phase))  # three chops per second
        tip = (ax - hw + 2 * hw * t, ay - hh - 0.02 * unit - amp * 0.13 * unit * down)
        pose.tool, pose.tool_tip = "knife", tip
        pose.grip = (tip[0] + 0.2 * unit, tip[1] - 0.02 * unit)
        return pose
    elif verb == "pour":
        e = _ease(min(t / 0.35, 1.0)) * (1.0 - _ease((t - 0.8) / 0.2))
        pose = Pose(ax + 0.04 * unit * e, ay - 0.18 * unit * e, angle=-amp * 1.7 * e)
        if 0.3 < t < 0.85:
            c, s = math.cos(pose.angle), math.sin(pose.angle)
            sx = pose.x + c * (-hw) - s * (-hh)
            sy = pose.y + s * (-hw) + c * (-hh)
            pose.stream = (sx, sy, ay + 0.18 * unit)
            pose.stream_colour = (190, 140, 90)
    elif verb == "mix":
        pose = Pose(ax, ay)
        w = 2 * math.pi * 1.5 * tau + phase
        tip = (ax + amp * 0.09 * unit * math.cos(w), ay - 0.2 * hh + amp * 0.05 * unit * math.sin(w))
        pose.tool, pose.tool_tip = "spoon", tip
        pose.grip = (tip[0] + 0.1 * unit, tip[1] - 0.16 * unit)
        return pose
    else:
        raise ValueError(f"unknown verb {verb!r}")
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    gx = pose.x + pose.scale * (c * right_grip[0] - s * right_grip[1])
    gy = pose.y + pose.scale * (s * right_grip[0] + c * right_grip[1])
    pose.grip = (gx, gy)
    return pose


# ---------------------------------------------------------------------------------------------
# Scene


@dataclasses.dataclass(frozen=True)
class FrameTruth:
    """True boxes of one frame (pixels). ``held`` is the box of what the hand holds, if anything."""

    hand: Box | None
    holding: bool
    held: Box | None
    objects: tuple[Box, ...]


def _shift(box: Box | None, ox: float, oy: float, w: int, h: int) -> Box | None:
    if box is None:
        return None
    x1, y1, x2, y2 = box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return (x1, y1, x2, y2)


class Scene:
    """Renders the frames of one video and reports the true boxes of each frame."""

    def __init__(self, video: VideoSpec, segments: tuple[Segment, ...], rng: np.random.Generator) -> None:
        self.video = video
        self.segments = segments
        self.fps = video.domain.fps
        self.h, self.w = video.height, video.width
        self.unit = float(self.h)
        style = video.domain
        # Camera margin: the head-mounted camera drifts over a canvas 20% larger than the frame.
        self.mx, self.my = int(round(0.1 * self.w)), int(round(0.1 * self.h))
        ch, cw = self.h + 2 * self.my, self.w + 2 * self.mx
        self.static = Canvas(ch, cw)
        self.static.img[:] = render_background(style.background, ch, cw, rng)
        # Clutter on the worktop and shelf; boxes in canvas coordinates.
        self.distractors: list[Box] = []
        spots = [(0.12, 0.5), (0.86, 0.5), (0.8, 0.86), (0.16, 0.88), (0.52, 0.22), (0.3, 0.24)]
        for k in rng.permutation(len(spots))[: int(rng.integers(3, 6))]:
            sx, sy = spots[int(k)]
            noun = NOUNS[int(rng.integers(len(NOUNS)))]
            box = paint_object(self.static, noun, sx * cw, sy * ch, float(rng.uniform(-0.3, 0.3)),
                               float(rng.uniform(0.55, 0.8)), self.unit)
            if box is not None:
                self.distractors.append(box)
        self.cam_freq = rng.uniform(0.05, 0.25, size=4)
        self.cam_phase = rng.uniform(0, 2 * math.pi, size=4)
        pid = int(video.participant_id[1:])
        self.skin = SKIN_TONES[pid % len(SKIN_TONES)]
        self.sleeve = SLEEVES[(pid // 2 + pid) % len(SLEEVES)]
        # Lighting: per-video jitter of the domain's gain and cast (recordings differ a little).
        gain = style.gain * float(rng.uniform(0.93, 1.07))
        cast = np.asarray(style.colour_cast, np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
        ys, xs = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        ramp = 1.0 - style.light_ramp * (xs / self.w)
        r2 = ((xs / self.w - 0.5) ** 2 + (ys / self.h - 0.5) ** 2) / 0.5
        self.light = (gain * ramp * (1.0 - style.vignette * r2))[..., None] * cast
        self.blur = style.blur_sigma * self.w
        self.noise_rng = rng
        luma = rng.standard_normal((4, self.h + 40, self.w + 40, 1), dtype=np.float32)
        chroma = rng.standard_normal((4, self.h + 40, self.w + 40, 3), dtype=np.float32)
        self.noise_bank = style.noise_sigma * (luma + 0.4 * chroma)
        self.frame = Canvas(self.h, self.w)
        self.rest = (0.82 * self.w, 0.95 * self.h)  # hand at rest, partly out of view
        self._seg_starts = np.array([s.start_frame for s in segments], np.int64)

    def camera(self, tau: float) -> tuple[int, int]:
        """Integer camera offset into the canvas at time tau (smooth head drift)."""
        f, p = self.cam_freq, self.cam_phase
        ox = 0.6 * math.sin(2 * math.pi * f[0] * tau + p[0]) + 0.4 * math.sin(2 * math.pi * f[1] * tau + p[1])
        oy = 0.6 * math.sin(2 * math.pi * f[2] * tau + p[2]) + 0.4 * math.sin(2 * math.pi * f[3] * tau + p[3])
        return int(round(self.mx * (1 + 0.8 * ox))), int(round(self.my * (1 + 0.8 * oy)))

    def _segment_at(self, n: int) -> tuple[Segment | None, Segment | None, Segment | None]:
        """(active segment, previous segment, next segment) around frame n."""
        i = int(np.searchsorted(self._seg_starts, n, side="right")) - 1
        prev = self.segments[i] if i >= 0 else None
        nxt = self.segments[i + 1] if i + 1 < len(self.segments) else None
        if prev is not None and n <= prev.stop_frame:
            return prev, (self.segments[i - 1] if i >= 1 else None), nxt
        return None, prev, nxt

    def _pose(self, seg: Segment, n: int) -> Pose:
        t = (n - seg.start_frame) / max(seg.stop_frame - seg.start_frame, 1)
        seconds = (seg.stop_frame - seg.start_frame) / self.fps
        return verb_pose(VERBS[seg.verb].key, NOUNS[seg.noun], t, seconds, seg.anchor[0] * self.w,
                         seg.anchor[1] * self.h, self.unit, seg.amp, seg.phase)

    def render(self, n: int) -> tuple[np.ndarray, FrameTruth]:
        """Frame ``n`` (1-based) as ``(H, W, 3)`` uint8 RGB, and its true boxes."""
        tau = (n - 1) / self.fps
        ox, oy = self.camera(tau)
        canvas = self.frame
        canvas.img[:] = self.static.img[oy:oy + self.h, ox:ox + self.w]
        # Dynamic things live in world coordinates = frame coordinates at the mean camera offset.
        dx, dy = ox - self.mx, oy - self.my
        objects: list[Box] = []
        for box in self.distractors:
            b = _shift(box, ox, oy, self.w, self.h)
            if b is not None:
                objects.append(b)
        seg, prev, nxt = self._segment_at(n)
        held: Box | None = None
        holding = False
        if seg is not None:
            noun = NOUNS[seg.noun]
            pose = self._pose(seg, n)
            box = paint_object(canvas, noun, pose.x - dx, pose.y - dy, pose.angle, pose.scale, self.unit)
            if pose.lid is not None:
                lid_colour = tuple(0.6 * c for c in noun.colour)
                top = pose.y - dy - noun.half_height * self.unit
                lx, ly = pose.x - dx + pose.lid[0], top + pose.lid[1]
                lhw, lhh = 1.05 * noun.half_width * self.unit, 0.025 * self.unit
                lid_box = canvas.paint(lx, ly, lhw + lhh, lambda xs, ys: sd_box(xs - lx, ys - ly, lhw, lhh, lhh * 0.5),
                                       lid_colour)
                box = _union(box, lid_box) if pose.lid[1] > -0.03 * self.unit else box
                if lid_box is not None and pose.lid[1] <= -0.03 * self.unit:
                    objects.append(lid_box)
                held = lid_box
            if box is not None:
                objects.append(box)
            if pose.stream is not None:
                self._paint_stream(canvas, pose, tau, dx, dy)
            if pose.tool is not None:
                tool_box = self._paint_tool(canvas, pose, dx, dy)
                if tool_box is not None:
                    objects.append(tool_box)
                held = tool_box
            elif pose.lid is None:
                held = box
            holding = True
            grip = pose.grip
            closed = 1.0
        else:
            grip, closed = self._idle_grip(n, prev, nxt), 0.0
        hand = paint_hand(canvas, grip[0] - dx, grip[1] - dy, self.unit, self.skin, self.sleeve, closed)
        return self._finish(canvas.img), FrameTruth(hand=hand, holding=holding and held is not None, held=held,
                                                    objects=tuple(objects))

    def _idle_grip(self, n: int, prev: Segment | None, nxt: Segment | None) -> tuple[float, float]:
        """Between segments the empty hand moves from where it let go to where it grips next."""
        a = self._pose(prev, prev.stop_frame).grip if prev is not None else self.rest
        b = self._pose(nxt, nxt.start_frame).grip if nxt is not None else self.rest
        n0 = prev.stop_frame if prev is not None else 1
        n1 = nxt.start_frame if nxt is not None else int(self.video.n_frames)
        u = _ease((n - n0) / max(n1 - n0, 1))
        dip = 0.12 * self.unit * math.sin(math.pi * u)  # dips towards the rest position
        return (a[0] + (b[0] - a[0]) * u + 0.3 * dip, a[1] + (b[1] - a[1]) * u + dip)

    def _paint_stream(self, canvas: Canvas, pose: Pose, tau: float, dx: float, dy: float) -> None:
        x, top, bottom = pose.stream
        x, top, bottom = x - dx, top - dy, bottom - dy
        if bottom <= top + 2:
            return
        spacing = 0.05 * self.unit
        r = 0.012 * self.unit
        offset = (tau * 1.2 * self.unit) % spacing  # drops fall at 1.2 frame heights per second
        ys = np.arange(top + offset, bottom, spacing, dtype=np.float32)
        if ys.size == 0:
            return

        def sdf(xs, yy):
            # Drops are ellipses 1.8x taller than wide; the union is the minimum over drops.
            d = np.hypot(((xs - x) * 1.8)[..., None], yy[..., None] - ys) - 1.8 * r
            return d.min(axis=-1)

        canvas.paint(x, (top + bottom) / 2, (bottom - top) / 2 + r, sdf, pose.stream_colour)

    def _paint_tool(self, canvas: Canvas, pose: Pose, dx: float, dy: float) -> Box | None:
        tx, ty = pose.tool_tip[0] - dx, pose.tool_tip[1] - dy
        gx, gy = pose.grip[0] - dx, pose.grip[1] - dy
        u = self.unit
        if pose.tool == "knife":
            blade = canvas.paint((tx + gx) / 2, (ty + gy) / 2, 0.16 * u,
                                 lambda xs, ys: sd_capsule(xs, ys, tx, ty, gx - 0.06 * u, gy, 0.014 * u),
                                 (196, 198, 206))
            handle = canvas.paint(gx, gy, 0.08 * u,
                                  lambda xs, ys: sd_capsule(xs, ys, gx - 0.06 * u, gy, gx + 0.03 * u, gy, 0.017 * u),
                                  (45, 30, 25))
            return _union(blade, handle)
        stick = canvas.paint((tx + gx) / 2, (ty + gy) / 2, 0.2 * u,
                             lambda xs, ys: sd_capsule(xs, ys, tx, ty, gx, gy, 0.008 * u), (205, 205, 210))
        bowl = canvas.paint(tx, ty, 0.04 * u, lambda xs, ys: sd_ellipse(xs - tx, ys - ty, 0.022 * u, 0.014 * u),
                            (215, 215, 220))
        return _union(stick, bowl)

    def _finish(self, img: np.ndarray) -> np.ndarray:
        """Camera: lighting, colour cast, saturation, gamma, optics blur, sensor noise, 8 bits."""
        style = self.video.domain
        out = img * self.light
        if style.saturation != 1.0:
            grey = out.dot(np.full(3, 1.0 / 3.0, np.float32))[..., None]
            out = grey + style.saturation * (out - grey)
        out = np.clip(out, 0.0, 255.0)
        if style.gamma != 1.0:
            out = 255.0 * (out / 255.0) ** style.gamma
        if self.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur)
        if style.noise_sigma > 0:
            # A random window of a larger pre-drawn noise field: drawing fresh normals for every
            # frame costs more than the rest of the frame.
            k = int(self.noise_rng.integers(len(self.noise_bank)))
            y = int(self.noise_rng.integers(self.noise_bank.shape[1] - self.h + 1))
            x = int(self.noise_rng.integers(self.noise_bank.shape[2] - self.w + 1))
            out = out + self.noise_bank[k, y:y + self.h, x:x + self.w]
        return np.clip(out + 0.5, 0.0, 255.0).astype(np.uint8)


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))

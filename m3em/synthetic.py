"""Synthetic spatial multi-modal features with a controllable domain shift, for fast experiments.

Writes what the extractors would: an annotation directory in the official layout (class files,
video table, UDA split CSVs) and one feature file per (video, stream) in the contract of
:mod:`m3em.epic.features`, so :mod:`m3em.train` runs on it unchanged, in seconds on a CPU.

How a segment with verb ``v`` and noun ``n`` is drawn (per stream, per position ``p``):

* the acted-on object sits at a random cell of the ``h x w`` map; appearance streams (names with
  ``rgb``) show noun prototype ``mu_n`` there, and a *distractor* object (another noun) at
  another cell, equally strong; pooled over the map the two nouns are confounded;
* motion streams (``flow``) show the verb prototype ``nu_v`` (plus a verb-specific temporal
  modulation over positions, for the relation module) at the object's cell only, so the
  agreement of appearance and motion tells which object is acted on (what M3EM's cross-modality
  consensus is for);
* vector streams: ``audio`` carries mostly the verb, ``object`` the two nouns;
* everything gets i.i.d. Gaussian noise of std ``noise``.

The target domain (``P..._1xx`` videos, 50 fps like EPIC-100's extension; source ``P.._0x`` at
60 fps) differs by ``shift``: per stream and channel a gain ``exp(0.5 * shift * g)`` and an offset
``0.5 * shift * b`` (``g, b ~ N(0, 1)``, fixed per stream, like a colour/lighting change), a
background level ``0.3 * shift * z`` over the whole map, and noise ``noise * (1 + 0.25 * shift)``.
``shift = 0`` gives identically distributed domains.

Usage::

    python -m m3em.synthetic --out-dir results/synthetic --seed 0 --shift 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from m3em.epic.annotations import (
    ClassRecord,
    NarrationRecord,
    VideoRecord,
    split_file,
    write_class_files,
    write_split,
    write_video_info,
)
from m3em.epic.cli import run_entry_point
from m3em.epic.errors import InputError
from m3em.epic.features import feature_path, segment_positions, write_features
from m3em.epic.streams import SPATIAL_STREAMS, STREAMS

SOURCE_FPS = 60.0
TARGET_FPS = 50.0
SEGMENT_FRAMES = 80  # each segment spans 80 frames, one every 100
DOMAINS = {"source_train": "source", "target_train": "target", "target_val": "target", "target_test": "target"}
LABELLED = {"source_train": True, "target_train": False, "target_val": True, "target_test": False}

log = logging.getLogger("m3em.synthetic")


class SyntheticSpecError(ValueError, InputError):
    """A :class:`SyntheticSpec` that cannot be generated (the command-line values behind it)."""


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
        seed: everything is a function of the seed (and the other fields).
        n_verbs, n_nouns: class counts (class files ``verb_0..``, ``noun_0..``).
        channels: channels of the spatial streams; ``vector_channels`` of audio/object.
        map_size: ``h = w`` of the spatial maps.
        positions: positions stored per segment.
        videos: videos per split (source_train, target_train, target_val, target_test).
        segments_per_video: segments in each video.
        shift: domain-shift strength (0: none).
        noise: noise standard deviation (the class prototypes have unit-variance entries).
        streams: which feature streams to write.
    """

    seed: int = 0
    n_verbs: int = 6
    n_nouns: int = 8
    channels: int = 32
    vector_channels: int = 16
    map_size: int = 4
    positions: int = 5
    videos: tuple[int, int, int, int] = (6, 6, 4, 2)
    segments_per_video: int = 40
    shift: float = 1.0
    noise: float = 3.0
    streams: tuple[str, ...] = ("tbn_rgb", "tbn_flow", "tbn_audio")

    def __post_init__(self) -> None:
        unknown = [s for s in self.streams if s not in STREAMS]
        if unknown:
            raise SyntheticSpecError(f"unknown stream(s) {unknown}; known: {list(STREAMS)}")
        if self.n_nouns < 2 or self.n_verbs < 1 or self.map_size < 2 or self.positions < 1:
            raise SyntheticSpecError("need n_nouns >= 2, n_verbs >= 1, map_size >= 2, positions >= 1")
        if self.shift < 0 or self.noise < 0:
            raise SyntheticSpecError("shift and noise must be non-negative")


def _role(stream: str) -> str:
    for key in ("rgb", "flow", "audio", "object"):
        if key in stream:
            return key
    raise ValueError(f"stream {stream!r} has no synthetic role")


@dataclasses.dataclass(frozen=True)
class _Segment:
    narration_id: str
    video_id: str
    start_frame: int
    stop_frame: int
    verb: int
    noun: int
    distractor: int
    cell: int          # object cell, row-major in the h x w map
    distractor_cell: int


def _videos(spec: SyntheticSpec) -> dict[str, list[str]]:
    """Video ids per split: source ``P0k_0j`` (EPIC-55 style), target ``P0k_1jj`` (extension style)."""
    out: dict[str, list[str]] = {}
    counter = {"source": 0, "target": 0}
    for split, n in zip(DOMAINS, spec.videos):
        ids = []
        for _ in range(n):
            k = counter[DOMAINS[split]]
            counter[DOMAINS[split]] += 1
            participant = 1 + k // 4
            ids.append(f"P{participant:02d}_{(k % 4) + 1:02d}" if DOMAINS[split] == "source"
                       else f"P{participant:02d}_{101 + k % 4}")
        out[split] = ids
    return out


def _segments(spec: SyntheticSpec, rng: np.random.Generator, videos: dict[str, list[str]]) -> dict[str, list[_Segment]]:
    cells = spec.map_size * spec.map_size
    out: dict[str, list[_Segment]] = {}
    for split, vids in videos.items():
        segs = []
        for video in vids:
            for k in range(spec.segments_per_video):
                noun = int(rng.integers(spec.n_nouns))
                distractor = int((noun + rng.integers(1, spec.n_nouns)) % spec.n_nouns)
                cell = int(rng.integers(cells))
                dcell = int((cell + rng.integers(1, cells)) % cells)
                start = 1 + 100 * k
                segs.append(_Segment(f"{video}_{k}", video, start, start + SEGMENT_FRAMES - 1,
                                     int(rng.integers(spec.n_verbs)), noun, distractor, cell, dcell))
        out[split] = segs
    return out


class _Generator:
    """Class prototypes and per-stream domain transforms, all drawn from one seed."""

    def __init__(self, spec: SyntheticSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.dims = {s: spec.channels if s in SPATIAL_STREAMS else spec.vector_channels for s in spec.streams}
        self.noun = {s: rng.normal(size=(spec.n_nouns, d)) for s, d in self.dims.items()}
        self.verb = {s: rng.normal(size=(spec.n_verbs, d)) for s, d in self.dims.items()}
        self.verb_t = {s: rng.normal(size=(spec.n_verbs, d)) for s, d in self.dims.items()}
        phase = rng.uniform(0, 2 * np.pi, size=spec.n_verbs)
        t = np.linspace(0, np.pi, spec.positions)
        self.profile = np.sin(t[None, :] + phase[:, None])  # (n_verbs, P) temporal modulation
        self.gain = {s: np.exp(0.5 * spec.shift * rng.normal(size=d)) for s, d in self.dims.items()}
        self.offset = {s: 0.5 * spec.shift * rng.normal(size=d) for s, d in self.dims.items()}
        self.background = {s: 0.3 * spec.shift * rng.normal(size=d) for s, d in self.dims.items()}

    def segment(self, stream: str, seg: _Segment, target: bool, rng: np.random.Generator) -> np.ndarray:
        """One segment of one stream: ``(P, C, h, w)`` or ``(P, D)`` float32."""
        spec = self.spec
        role = _role(stream)
        prof = self.profile[seg.verb][:, None]  # (P, 1)
        verb_sig = self.verb[stream][seg.verb][None, :] + 0.7 * prof * self.verb_t[stream][seg.verb][None, :]  # (P, D)
        noun_sig = np.broadcast_to(self.noun[stream][seg.noun], verb_sig.shape)
        dist_sig = np.broadcast_to(self.noun[stream][seg.distractor], verb_sig.shape)
        noise = spec.noise * (1.0 + 0.25 * spec.shift * target)
        if stream in SPATIAL_STREAMS:
            cells = spec.map_size * spec.map_size
            x = np.zeros((spec.positions, self.dims[stream], cells))
            if role == "rgb":
                x[:, :, seg.cell] += noun_sig + 0.3 * verb_sig
                x[:, :, seg.distractor_cell] += dist_sig
            else:  # motion: only where the hand acts on the object
                x[:, :, seg.cell] += verb_sig + 0.3 * noun_sig
            x += noise * rng.normal(size=x.shape)
            if target:
                x += self.background[stream][None, :, None]
                x = x * self.gain[stream][None, :, None] + self.offset[stream][None, :, None]
            return x.reshape(spec.positions, self.dims[stream], spec.map_size, spec.map_size).astype(np.float32)
        if role == "audio":
            x = verb_sig + 0.3 * noun_sig
        else:  # object detections: both objects are seen
            x = 0.7 * (noun_sig + dist_sig) + 0.2 * verb_sig
        x = x + noise * rng.normal(size=x.shape)
        if target:
            x = (x + self.background[stream]) * self.gain[stream] + self.offset[stream]
        return x.astype(np.float32)


def _write_annotations(spec: SyntheticSpec, ann_dir: Path, segments: dict[str, list[_Segment]],
                       videos: dict[str, list[str]]) -> None:
    """The official-layout annotation files of the synthetic videos (classes ``verb_i`` / ``noun_i``)."""
    def classes(prefix: str, n: int) -> list[ClassRecord]:
        return [ClassRecord(f"{prefix}_{i}", (f"{prefix}_{i}",), prefix) for i in range(n)]

    def fps_of(split: str) -> float:
        return SOURCE_FPS if DOMAINS[split] == "source" else TARGET_FPS

    write_class_files(ann_dir, classes("verb", spec.n_verbs), classes("noun", spec.n_nouns))
    write_video_info(ann_dir, [
        VideoRecord(v, round((100 * spec.segments_per_video + 50) / fps_of(split), 3), fps_of(split), 456, 256)
        for split, vids in videos.items() for v in vids
    ])
    for split, segs in segments.items():
        write_split(split_file(ann_dir, split), [
            NarrationRecord(s.narration_id, s.video_id, s.start_frame, s.stop_frame, fps_of(split),
                            verb=f"verb_{s.verb}", verb_class=s.verb, noun=f"noun_{s.noun}", noun_class=s.noun)
            for s in segs
        ], labelled=LABELLED[split])


def generate(spec: SyntheticSpec, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/annotations`` and ``<out_dir>/features``; return the two directories.

    Deterministic: the same spec writes the same annotations and the same feature values.
    """
    out_dir = Path(out_dir)
    ann_dir, feat_dir = out_dir / "annotations", out_dir / "features"
    rng = np.random.default_rng(spec.seed)
    videos = _videos(spec)
    segments = _segments(spec, rng, videos)
    gen = _Generator(spec, rng)
    _write_annotations(spec, ann_dir, segments, videos)
    for split, segs in segments.items():
        target = DOMAINS[split] == "target"
        by_video: dict[str, list[_Segment]] = {}
        for s in segs:
            by_video.setdefault(s.video_id, []).append(s)
        for video, vsegs in by_video.items():
            frames = np.stack([segment_positions(s.start_frame, s.stop_frame, spec.positions) for s in vsegs])
            for si, stream in enumerate(spec.streams):
                # One RNG per (video, stream): a stream's values do not depend on which others are written.
                vrng = np.random.default_rng((spec.seed, int.from_bytes(video.encode(), "little") % (2**31), si))
                arr = np.stack([gen.segment(stream, s, target, vrng) for s in vsegs])
                write_features(feature_path(feat_dir, stream, video), arr, [s.narration_id for s in vsegs], frames,
                               stream=stream, video_id=video,
                               producer={"generator": "m3em.synthetic", "seed": spec.seed, "shift": spec.shift,
                                         "noise": spec.noise})
    return ann_dir, feat_dir


# --------------------------------------------------------------------------------------------
# In-memory features for the mechanism benchmark (benchmarks/synthetic_mechanism.py).
#
# The file generator above tests the pipeline end to end; the one below builds, in memory, the
# spatial structure the M3EM report relies on, with every part named so a benchmark can tell
# which mechanism helps: where the acted-on object is (a mask per segment), which channels carry
# the class (content) and which only the domain (nuisance), and what the target domain changes.

#: Object shapes (rows, cols): 1 to 4 cells.
OBJECT_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2))


@dataclasses.dataclass(frozen=True)
class MechanismSpec:
    """What :func:`mechanism_data` draws.

    Attributes:
        seed: prototypes and domain directions come from ``seed`` alone (not from ``shift``), so
            settings that differ only in ``shift`` share them; each split has its own stream.
        n_verbs, n_nouns: class counts.
        content_channels: channels ``[0, content)`` of RGB and Flow: class content and the shared
            object code. ``nuisance_channels`` follow: scene/camera variation and domain offsets only.
        audio_channels: size of the audio vector.
        map_size: ``h = w``; positions: ``P``.
        shift: domain-shift strength (0: target drawn like source).
        noise: std of the i.i.d. Gaussian noise on every entry.
        object_amp: amplitude of the class prototypes and of the shared object code.
        distractors: static distractor objects (another noun, one cell each) per segment.
        clutter: moving background cells per target segment (their Flow amplitude grows with shift).
        audio_amp: amplitude of the (weak) verb prototype in audio.
        scene_content, camera_content: std of the per-segment background (RGB scene, Flow camera
            motion) in the content channels; the nuisance channels' is 1.
    """

    seed: int = 0
    n_verbs: int = 8
    n_nouns: int = 10
    content_channels: int = 16
    nuisance_channels: int = 16
    audio_channels: int = 16
    map_size: int = 7
    positions: int = 5
    shift: float = 1.0
    noise: float = 1.0
    object_amp: float = 1.5
    distractors: int = 2
    clutter: int = 2
    audio_amp: float = 0.5
    scene_content: float = 0.2
    camera_content: float = 0.3

    def __post_init__(self) -> None:
        if self.n_nouns < 2 or self.n_verbs < 1 or self.positions < 2:
            raise ValueError("need n_nouns >= 2, n_verbs >= 1, positions >= 2")
        if self.map_size < 3 or self.map_size**2 < 4 + self.distractors + self.clutter:
            raise ValueError(f"map_size {self.map_size} leaves no room for the object, distractors and clutter")
        if self.shift < 0 or not 0 <= self.noise <= 1:
            raise ValueError("need shift >= 0 and 0 <= noise <= 1")

    @property
    def channels(self) -> int:
        return self.content_channels + self.nuisance_channels


@dataclasses.dataclass(frozen=True)
class MechanismSplit:
    """One split of :func:`mechanism_data` (``N`` segments).

    Attributes:
        rgb, flow: ``(N, P, c, h, w)`` float32; audio: ``(N, P, audio_channels)`` float32.
        verb, noun: ``(N,)`` int64 labels.
        object_mask: ``(N, h, w)`` bool, the acted-on object's cells (fixed over positions).
        target: whether the split is drawn from the target domain.
    """

    rgb: np.ndarray
    flow: np.ndarray
    audio: np.ndarray
    verb: np.ndarray
    noun: np.ndarray
    object_mask: np.ndarray
    target: bool

    def __len__(self) -> int:
        return len(self.verb)


class _MechanismWorld:
    """The seed's prototypes and domain directions (unit-variance entries; ``shift`` scales them)."""

    def __init__(self, spec: MechanismSpec) -> None:
        rng = np.random.default_rng((spec.seed, 0))
        cc, nc, ac = spec.content_channels, spec.nuisance_channels, spec.audio_channels
        self.noun = rng.normal(size=(spec.n_nouns, cc))  # RGB content of each noun
        self.verb = rng.normal(size=(spec.n_verbs, cc))  # Flow content of each verb
        self.verb_t = rng.normal(size=(spec.n_verbs, cc))  # its temporal modulation (for TRN)
        self.profile = np.sin(np.linspace(0, np.pi, spec.positions)[None, :]
                              + rng.uniform(0, 2 * np.pi, size=spec.n_verbs)[:, None])  # (n_verbs, P)
        self.code = rng.normal(size=cc)  # "the action is here": the same in RGB and Flow
        self.audio_verb = rng.normal(size=(spec.n_verbs, ac))
        # Target-domain directions: background appearance (content, nuisance), camera motion in
        # Flow, distractor style, audio offset. Object cells never receive any of them.
        self.bg_rgb = rng.normal(size=cc + nc)
        self.bg_flow = rng.normal(size=cc + nc)
        self.distractor_style = rng.normal(size=cc)
        self.audio_shift = rng.normal(size=ac)


def _place(spec: MechanismSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object masks ``(n, h, w)`` and, per segment, distractor and clutter cells (flat indices)."""
    hw = spec.map_size
    masks = np.zeros((n, hw, hw), dtype=bool)
    dcells = np.zeros((n, spec.distractors), dtype=np.int64)
    ccells = np.zeros((n, spec.clutter), dtype=np.int64)
    for i in range(n):
        rows, cols = OBJECT_SHAPES[rng.integers(len(OBJECT_SHAPES))]
        r, c = rng.integers(hw - rows + 1), rng.integers(hw - cols + 1)
        masks[i, r:r + rows, c:c + cols] = True
        free = np.flatnonzero(~masks[i].ravel())
        pick = rng.choice(free, size=spec.distractors + spec.clutter, replace=False)
        dcells[i], ccells[i] = pick[:spec.distractors], pick[spec.distractors:]
    return masks, dcells, ccells


def _mechanism_split(spec: MechanismSpec, world: _MechanismWorld, n: int, target: bool,
                     rng: np.random.Generator) -> MechanismSplit:
    P, hw, cc, C = spec.positions, spec.map_size, spec.content_channels, spec.channels
    s = spec.shift if target else 0.0
    verb = rng.integers(spec.n_verbs, size=n)
    noun = rng.integers(spec.n_nouns, size=n)
    masks, dcells, ccells = _place(spec, rng, n)
    cells = hw * hw
    # Background, per segment: a scene appearance (content std scene_content, nuisance 1) and, in
    # the target, the domain's background offset; constant over cells and positions.
    scene = rng.normal(size=(n, C)) * np.r_[np.full(cc, spec.scene_content), np.ones(C - cc)]
    camera = rng.normal(size=(n, C)) * np.r_[np.full(cc, spec.camera_content), np.ones(C - cc)]
    rgb = np.broadcast_to((scene + s * world.bg_rgb)[:, None, :, None], (n, P, C, cells)).copy()
    flow = np.broadcast_to((camera + s * world.bg_flow)[:, None, :, None], (n, P, C, cells)).copy()
    seg = np.arange(n)
    # Static distractors: another noun (never the object's), one cell each; in the target their
    # appearance gains the domain's distractor style.
    for j in range(spec.distractors):
        other = (noun + rng.integers(1, spec.n_nouns, size=n)) % spec.n_nouns
        val = np.zeros((n, C))
        val[:, :cc] = spec.object_amp * world.noun[other] + s * world.distractor_style
        rgb[seg, :, :, dcells[:, j]] = val[:, None, :]
    # Target clutter: moving background cells (Flow content of a random verb, amplitude s).
    for j in range(spec.clutter):
        val = np.zeros((n, C))
        val[:, :cc] = s * world.verb[rng.integers(spec.n_verbs, size=n)]
        flow[seg, :, :, ccells[:, j]] += val[:, None, :]
    # The object: noun (RGB) or verb with its temporal profile (Flow), plus the shared code, in
    # the content channels; the nuisance channels are empty (the object hides the background).
    obj_rgb = np.zeros((n, P, C))
    obj_rgb[:, :, :cc] = spec.object_amp * (world.noun[noun] + world.code)[:, None, :]
    obj_flow = np.zeros((n, P, C))
    obj_flow[:, :, :cc] = spec.object_amp * (world.verb[verb][:, None, :] + world.code[None, None, :]
                                             + 0.7 * world.profile[verb][:, :, None] * world.verb_t[verb][:, None, :])
    m = masks.reshape(n, 1, 1, cells)
    rgb = np.where(m, obj_rgb[..., None], rgb)
    flow = np.where(m, obj_flow[..., None], flow)
    rgb += spec.noise * rng.normal(size=rgb.shape)
    flow += spec.noise * rng.normal(size=flow.shape)
    audio = (spec.audio_amp * world.audio_verb[verb][:, None, :] + s * world.audio_shift
             + spec.noise * rng.normal(size=(n, P, spec.audio_channels)))
    shape = (n, P, C, hw, hw)
    return MechanismSplit(rgb.reshape(shape).astype(np.float32), flow.reshape(shape).astype(np.float32),
                          audio.astype(np.float32), verb.astype(np.int64), noun.astype(np.int64), masks, target)


def mechanism_data(spec: MechanismSpec, sizes: Mapping[str, int]) -> dict[str, MechanismSplit]:
    """Draw the splits ``sizes`` (``{split: N}``, split one of :data:`DOMAINS`) in memory.

    Per segment (``P`` positions, ``h x w`` cells, ``c = content + nuisance`` channels):

    * the acted-on object covers 1-4 adjacent cells (:data:`OBJECT_SHAPES`), fixed over positions;
      in the content channels RGB shows its noun prototype and Flow its verb prototype (with a
      verb-specific temporal modulation), and both show the same class-independent code (the
      "action is here" signal that RGB and Flow share); its nuisance channels are empty;
    * every other cell shows the background: a per-segment scene (RGB) or camera motion (Flow),
      in content (std 0.5 / 0.3) and nuisance channels (std 1);
    * ``distractors`` cells show other nouns in RGB (no code, no motion);
    * audio carries the verb weakly (``audio_amp``);
    * noise ``noise`` everywhere.

    The target domain (``target_*`` splits) adds, with strength ``shift``: a background offset
    (RGB and Flow, content and nuisance channels), a style on the distractors, motion on
    ``clutter`` background cells, an audio offset. The object cells are drawn identically in both
    domains, so pooling over the object is domain-invariant while plain average pooling shifts.
    Deterministic in ``spec`` and ``sizes``; a split's draw does not depend on the other splits.
    """
    world = _MechanismWorld(spec)
    out = {}
    for split, n in sizes.items():
        if split not in DOMAINS:
            raise ValueError(f"unknown split {split!r}; known: {list(DOMAINS)}")
        rng = np.random.default_rng((spec.seed, 1 + list(DOMAINS).index(split)))
        out[split] = _mechanism_split(spec, world, int(n), DOMAINS[split] == "target", rng)
    return out


def _parser() -> argparse.ArgumentParser:
    d = SyntheticSpec()
    p = argparse.ArgumentParser(prog="python -m m3em.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, required=True, help="writes OUT_DIR/annotations and OUT_DIR/features")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--shift", type=float, default=d.shift, help="domain-shift strength (0: none)")
    p.add_argument("--noise", type=float, default=d.noise)
    p.add_argument("--n-verbs", type=int, default=d.n_verbs)
    p.add_argument("--n-nouns", type=int, default=d.n_nouns)
    p.add_argument("--channels", type=int, default=d.channels, help="channels of the spatial streams")
    p.add_argument("--vector-channels", type=int, default=d.vector_channels, help="channels of audio/object")
    p.add_argument("--map-size", type=int, default=d.map_size)
    p.add_argument("--positions", type=int, default=d.positions)
    p.add_argument("--videos", type=int, nargs=4, default=list(d.videos),
                   metavar=("SOURCE_TRAIN", "TARGET_TRAIN", "TARGET_VAL", "TARGET_TEST"))
    p.add_argument("--segments-per-video", type=int, default=d.segments_per_video)
    p.add_argument("--streams", nargs="+", default=list(d.streams), choices=list(STREAMS))
    return p


def _run(a: argparse.Namespace) -> None:
    spec = SyntheticSpec(seed=a.seed, n_verbs=a.n_verbs, n_nouns=a.n_nouns, channels=a.channels,
                         vector_channels=a.vector_channels, map_size=a.map_size, positions=a.positions,
                         videos=tuple(a.videos), segments_per_video=a.segments_per_video, shift=a.shift,
                         noise=a.noise, streams=tuple(a.streams))
    ann, feat = generate(spec, a.out_dir)
    log.info("annotations: %s, features: %s", ann, feat)


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m m3em.synthetic", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

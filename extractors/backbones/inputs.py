"""Model inputs of one video: frame, flow-stack, spectrogram and clip sampling plus geometry.

Adapter between the data modules (``extractors.video``, ``extractors.flow_archive``,
``extractors.audio``, ``extractors.detections.crops``) and the backbones. Everything here is
numpy/uint8 so it runs in DataLoader worker processes; normalisation happens on the device.

Rules (documented once, tested in ``tests/test_backbone_inputs.py``):

* **Positions.** Extraction uses :func:`m3em.epic.features.segment_positions` (TSN centres of P equal
  chunks) on RGB frame numbers; the same P frames serve every stream, so one ``frames`` list
  describes a file. Training samples K positions per segment with TSN's random offsets
  (:func:`tsn_train_positions`); TBN's temporal binding window draws flow and audio positions
  independently and shuffles them across segments (RGB is the anchor).
* **Geometry.** Full frames: shorter side scaled to ``round(size * 256 / 224)`` (TBN's
  ``GroupScale(256)`` for 224), then a centre ``size`` x ``size`` crop. Crop streams: the crop box
  (pixels, from the crop table) cut out and resized to ``size`` x ``size`` without keeping the
  aspect ratio (the whole hand-object region stays in view). Flow images are resized like
  images, values unchanged (as TBN does).
* **Flow stacks (TBN).** Position RGB frame ``n`` -> flow frame ``k = (n-1)//stride + 1``; the
  stack is flow frames ``k..k+4`` clamped to the archive (TBN repeats the last frame at the end),
  channels interleaved ``x1,y1,...,x5,y5``. Cropped flow stacks use one box for the whole stack:
  the union of the crops of its five flow frames.
* **Short flow archives.** The last ``dilation`` RGB frames start no flow pair, so ``k`` may pass
  the archive's last frame by at most ``ceil(dilation / stride)``; it is then clamped. Any larger
  gap means the archive is shorter than the video: :class:`InputError` naming the archive.
* **I3D clips.** ``clip_length`` L consecutive frames starting at ``n - L//2`` (RGB frames; flow
  frames around ``k`` for flow), indices clamped into the segment, so a segment shorter than the
  clip repeats its first/last frame (edge padding).
* **NaN/inf** in the sound track or a spectrogram is an error naming the file (uint8 images
  and flow cannot hold NaN).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from extractors.audio import AudioConfig, AudioTrack, open_audio
from extractors.detections.config import FlowBox
from extractors.detections.crops import CropTable, pixel_boxes, read_crops
from extractors.flow_archive import FlowSource, open_flow, rgb_to_flow_index
from extractors.video import FrameSource, open_frames
from m3em.epic.errors import InputError

FLOW_STACK = 5


# ---------------------------------------------------------------------------------------------
# Sampling


def tsn_train_positions(start: int, stop: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """TSN training sampling: one random frame in each of K equal chunks of ``[start, stop]``.

    Matches TBN ``_sample_indices`` (``new_length`` 1): chunk length ``n // K``; when a segment is
    shorter than K frames every position is its first frame.

    Returns:
        ``(K,)`` int64 1-based frame numbers.
    """
    n = stop - start + 1
    avg = n // k
    if avg > 0:
        offsets = np.arange(k) * avg + rng.integers(0, avg, size=k)
    else:
        offsets = np.zeros(k, dtype=np.int64)
    return (start + offsets).astype(np.int64)


def binding_window_positions(start: int, stop: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Temporal binding window: independent TSN positions, shuffled across segments (flow, audio)."""
    pos = tsn_train_positions(start, stop, k, rng)
    rng.shuffle(pos)
    return pos


def clip_frames(centre: int, length: int, lo: int, hi: int) -> np.ndarray:
    """``length`` consecutive frame numbers starting at ``centre - length//2``, clamped to ``[lo, hi]``."""
    first = centre - length // 2
    return np.clip(np.arange(first, first + length, dtype=np.int64), lo, hi)


# ---------------------------------------------------------------------------------------------
# Geometry


def scale_size(size: int) -> int:
    """Shorter side before the centre crop: TBN's ``size * 256 / 224`` (256 for 224)."""
    return int(round(size * 256 / 224))


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out  # cv2 drops a single channel axis


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(N, size, size, C)``: shorter side to :func:`scale_size`, centre crop."""
    n, h, w, c = frames.shape
    s = scale_size(size)
    if h <= w:
        nh, nw = s, max(size, int(round(w * s / h)))
    else:
        nw, nh = s, max(size, int(round(h * s / w)))
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    out = np.empty((n, size, size, c), dtype=frames.dtype)
    for i in range(n):
        out[i] = _resize(frames[i], nw, nh)[y0 : y0 + size, x0 : x0 + size]
    return out


def crop_resize(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut pixel boxes ``(N, 4)`` ``x1, y1, x2, y2`` (x2/y2 exclusive) and resize each to ``size`` x ``size``."""
    n, _, _, c = frames.shape
    out = np.empty((n, size, size, c), dtype=frames.dtype)
    for i in range(n):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        out[i] = _resize(np.ascontiguousarray(frames[i, y1:y2, x1:x2]), size, size)
    return out


def random_crop_flip(frames: np.ndarray, size: int, rng: np.random.Generator, flow: bool) -> np.ndarray:
    """Training augmentation for one clip's frames of one modality (same crop for all of them).

    A simplified ``GroupMultiScaleCrop(size, [1, .875, .75, .66])`` + ``GroupRandomHorizontalFlip``:
    after scaling the shorter side to :func:`scale_size`, a square of side ``scale * shorter`` at a
    random position, resized to ``size``; a horizontal flip with probability 0.5, which inverts the
    x components of flow (``255 - x``, channels 0, 2, 4, ...).
    """
    n, h, w, c = frames.shape
    s = scale_size(size)
    nh, nw = (s, int(round(w * s / h))) if h <= w else (int(round(h * s / w)), s)
    side = int(round(min(nh, nw) * float(rng.choice([1.0, 0.875, 0.75, 0.66]))))
    side = max(side, 1)
    y0 = int(rng.integers(0, nh - side + 1))
    x0 = int(rng.integers(0, nw - side + 1))
    flip = bool(rng.integers(0, 2))
    out = np.empty((n, size, size, c), dtype=frames.dtype)
    for i in range(n):
        img = _resize(frames[i], nw, nh)[y0 : y0 + side, x0 : x0 + side]
        out[i] = _resize(np.ascontiguousarray(img), size, size)
    if flip:
        out = out[:, :, ::-1].copy()
        if flow:
            out[..., 0::2] = 255 - out[..., 0::2]
    return out


# ---------------------------------------------------------------------------------------------
# One video's sources


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """Where one video's inputs live (picklable; opened lazily in each worker process).

    Attributes:
        video_id: the video.
        fps: annotation frame rate.
        video_path: the media file (RGB frames unless ``frames_archive`` is given; audio).
        frames_archive: official frame tar (RGB frames).
        flow_path: flow archive (``u/``, ``v/`` ``frame_%010d.jpg``).
        crops_path: crop table (Parquet) for the crop streams.
        decode_height: frame height when decoding a video file.
        flow_stride, flow_dilation: flow pairing of the archive.
        flow_box: crop rule of a flow frame (crops config).
        audio: audio config (spectrogram settings).
    """

    video_id: str
    fps: float
    video_path: Path | None = None
    frames_archive: Path | None = None
    flow_path: Path | None = None
    crops_path: Path | None = None
    decode_height: int = 256
    flow_stride: int = 1
    flow_dilation: int = 1
    flow_box: FlowBox = FlowBox.UNION
    audio: AudioConfig = AudioConfig()


class VideoInputs:
    """Opened sources of one video; every method returns uint8 (float32 for spectrograms) numpy arrays."""

    def __init__(self, spec: VideoSpec) -> None:
        self.spec = spec
        self._frames: FrameSource | None = None
        self._flow: FlowSource | None = None
        self._audio: AudioTrack | None = None
        self._crops: CropTable | None = None
        self._audio_checked = False
        # {"rgb"/"flow": {frame number: decoded image}} inside shared_decode(), else None.
        self._memo: dict[str, dict[int, np.ndarray]] | None = None

    # -- sources (opened on first use) --
    @property
    def frames(self) -> FrameSource:
        if self._frames is None:
            s = self.spec
            if s.video_path is None and s.frames_archive is None:
                raise InputError(f"{s.video_id}: RGB frames needed but neither a video file nor a frame archive was given")
            self._frames = open_frames(
                s.video_id, fps=s.fps, height=s.decode_height if s.frames_archive is None else None,
                video_path=None if s.frames_archive is not None else s.video_path, frames_archive=s.frames_archive,
            )
        return self._frames

    @property
    def flow(self) -> FlowSource:
        if self._flow is None:
            if self.spec.flow_path is None:
                raise InputError(f"{self.spec.video_id}: flow needed but no flow archive was given")
            self._flow = open_flow(self.spec.flow_path)
        return self._flow

    @property
    def audio(self) -> AudioTrack:
        if self._audio is None:
            if self.spec.video_path is None:
                raise InputError(f"{self.spec.video_id}: audio needed but no video file was given")
            self._audio = open_audio(self.spec.video_path, self.spec.audio)
        return self._audio

    @property
    def crops(self) -> CropTable:
        if self._crops is None:
            if self.spec.crops_path is None:
                raise InputError(f"{self.spec.video_id}: crop streams need a crop table (--crops)")
            self._crops = read_crops(self.spec.crops_path, video_id=self.spec.video_id)
        return self._crops

    # -- decoding shared between streams --
    @contextlib.contextmanager
    def shared_decode(self) -> Iterator[VideoInputs]:
        """Inside the block every RGB / flow frame is decoded at most once and reused by each call.

        One segment's streams read overlapping frames (TBN RGB, its crop and the I3D clip around
        the same positions; a flow stack, its crop and the I3D flow clip), and decoding is
        deterministic, so reusing the decoded image changes no value. The memo is dropped on exit:
        memory stays bounded by one block's frames.
        """
        self._memo = {"rgb": {}, "flow": {}}
        try:
            yield self
        finally:
            self._memo = None

    def _decoded(self, kind: str, numbers: np.ndarray) -> np.ndarray:
        """``frames.get`` (``kind`` "rgb") / ``flow.get`` ("flow"), through the memo inside :meth:`shared_decode`."""
        source = self.frames if kind == "rgb" else self.flow
        numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if self._memo is None or numbers.size == 0:
            return source.get(numbers)
        memo = self._memo[kind]
        missing = sorted({n for n in numbers.tolist() if n not in memo})
        if missing:  # one decoder call for all new frames (the sources check the numbers)
            for n, img in zip(missing, source.get(np.array(missing, dtype=np.int64))):
                memo[n] = img
        return np.stack([memo[n] for n in numbers.tolist()])

    # -- flow indexing --
    def flow_index(self, rgb_frames: np.ndarray) -> np.ndarray:
        """Flow frame of each RGB frame (clamped at the video's tail; error if the archive is short)."""
        s = self.spec
        k = rgb_to_flow_index(np.asarray(rgb_frames, dtype=np.int64), s.flow_stride)
        n_flow = self.flow.n_frames
        tail = math.ceil(s.flow_dilation / s.flow_stride)
        if k.size and k.max() > n_flow + tail:
            raise InputError(
                f"{self.flow.path}: flow archive shorter than the video: it has {n_flow} flow frames, but RGB frame "
                f"{int(np.asarray(rgb_frames).max())} needs flow frame {int(k.max())} (stride {s.flow_stride}, "
                f"dilation {s.flow_dilation})"
            )
        return np.minimum(k, n_flow)

    def flow_stacks(self, rgb_frames: np.ndarray) -> np.ndarray:
        """``(N, 5, 2)`` -> flow frame numbers of each stack, ``k..k+4`` clamped to the archive."""
        k = self.flow_index(rgb_frames)
        return np.minimum(k[:, None] + np.arange(FLOW_STACK)[None, :], self.flow.n_frames)

    # -- TBN inputs --
    def rgb(self, rgb_frames: np.ndarray, size: int, crop: bool = False,
            rng: np.random.Generator | None = None) -> np.ndarray:
        """``(N, size, size, 3)`` uint8 RGB at the given frames (full frame or hand-object crop).

        With ``rng`` (training) the full frames get :func:`random_crop_flip` instead of the centre crop.
        """
        frames = self._decoded("rgb", np.asarray(rgb_frames, dtype=np.int64))
        if rng is not None:
            return random_crop_flip(frames, size, rng, flow=False)
        if not crop:
            return resize_center_crop(frames, size)
        h, w = frames.shape[1:3]
        return crop_resize(frames, pixel_boxes(self.crops.boxes(rgb_frames), w, h), size)

    def flow_stack(self, rgb_frames: np.ndarray, size: int, crop: bool = False,
                   rng: np.random.Generator | None = None) -> np.ndarray:
        """``(N, size, size, 10)`` uint8 stacked flow, channels ``x1, y1, ..., x5, y5`` (``rng``: training aug)."""
        stacks = self.flow_stacks(rgb_frames)
        flat = self._decoded("flow", stacks.reshape(-1))  # (N*5, H, W, 2)
        n = stacks.shape[0]
        h, w = flat.shape[1:3]
        # (N, 5, H, W, 2) -> (N, H, W, 5, 2) -> (N, H, W, 10): interleaved x1, y1, x2, y2, ...
        flat = flat.reshape(n, FLOW_STACK, h, w, 2).transpose(0, 2, 3, 1, 4).reshape(n, h, w, 2 * FLOW_STACK)
        if rng is not None:
            return random_crop_flip(flat, size, rng, flow=True)
        if not crop:
            return resize_center_crop(flat, size)
        boxes = self.crops.flow_boxes(stacks.reshape(-1), stride=self.spec.flow_stride,
                                      dilation=self.spec.flow_dilation, mode=self.spec.flow_box).reshape(n, FLOW_STACK, 4)
        union = np.concatenate([boxes[:, :, :2].min(1), boxes[:, :, 2:].max(1)], axis=1)
        return crop_resize(np.ascontiguousarray(flat), pixel_boxes(union, w, h), size)

    def spectrogram(self, rgb_frames: np.ndarray) -> np.ndarray:
        """``(N, F, T)`` float32 log spectrograms centred on the frames' times (256 x 256 by default)."""
        track = self.audio
        if not self._audio_checked:  # once per video: librosa would fail with a message naming no file
            if not np.isfinite(track.samples).all():
                raise InputError(f"{self.spec.video_path}: the sound track contains NaN or inf samples")
            self._audio_checked = True
        spec = track.spectrograms_at_frames(np.asarray(rgb_frames, dtype=np.int64), self.spec.fps)
        bad = ~np.isfinite(spec).all(axis=(1, 2))
        if bad.any():
            raise InputError(f"{self.spec.video_path}: spectrogram at frame {int(np.asarray(rgb_frames)[bad][0])} "
                             "contains NaN or inf")
        return spec

    # -- I3D inputs --
    def rgb_clips(self, rgb_frames: np.ndarray, start: int, stop: int, length: int, size: int,
                  rng: np.random.Generator | None = None) -> np.ndarray:
        """``(N, L, size, size, 3)`` uint8 RGB clips around the frames, clamped to ``[start, stop]``."""
        idx = np.stack([clip_frames(int(n), length, start, stop) for n in np.asarray(rgb_frames)])
        frames = self._decoded("rgb", idx.reshape(-1))
        out = random_crop_flip(frames, size, rng, flow=False) if rng is not None else resize_center_crop(frames, size)
        return out.reshape(idx.shape[0], length, size, size, 3)

    def flow_clips(self, rgb_frames: np.ndarray, start: int, stop: int, length: int, size: int,
                   rng: np.random.Generator | None = None) -> np.ndarray:
        """``(N, L, size, size, 2)`` uint8 flow clips around each frame's flow frame, within the segment's flow range."""
        k = self.flow_index(np.asarray(rgb_frames, dtype=np.int64))
        lo, hi = (int(v) for v in self.flow_index(np.array([start, stop])))
        idx = np.stack([clip_frames(int(c), length, lo, hi) for c in k])
        flows = self._decoded("flow", idx.reshape(-1))
        out = random_crop_flip(flows, size, rng, flow=True) if rng is not None else resize_center_crop(flows, size)
        return out.reshape(idx.shape[0], length, size, size, 2)

    def close(self) -> None:
        for src in (self._frames, self._flow):
            close = getattr(src, "close", None)
            if close is not None:
                close()

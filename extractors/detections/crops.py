"""Per-frame crop boxes around the hands and the objects they handle (model C's input).

For every RGB frame of a video (1..n_frames) one box, normalised ``x1, y1, x2, y2`` in [0, 1]:

1. *keep*: hands with score >= ``hand_threshold`` and objects with score >= ``object_threshold``
   (0.5 / 0.5 by default, the EPIC release's suggestion);
2. *union* of the kept boxes of the frame;
3. *margin*: grown by ``margin`` x its own width (height) on the left and right (top and bottom),
   clipped to the frame;
4. *minimum size*: each side at least ``min_size`` x the frame side, grown about the box centre
   and shifted (not shrunk) back inside the frame;
5. *borrow*: a frame without a kept box takes the step-4 box of the nearest frame that has one
   within ``borrow_window`` frames (the earlier one on a tie); else the full frame ``[0, 0, 1, 1]``;
6. *smoothing*: a centred moving average of the four coordinates over ``smoothing_window``
   frames (shorter at the ends of the video), then united with the frame's own step-5 box, so
   smoothing can only grow a crop: it never cuts off a kept box or drops below the minimum size.

The output is a table of boxes (no image files): Parquet ``frame int32, x1, y1, x2, y2 float64,
source`` (``detected`` | ``borrowed`` | ``full``), with metadata ``format``, ``video_id``,
``n_frames`` and the settings used. Readers call :func:`read_crops` and
:meth:`CropTable.boxes` (RGB frames) or :meth:`CropTable.flow_boxes` (flow frames).

Flow frames: flow frame ``k`` pairs RGB frames ``a = (k-1)*stride + 1`` and ``b = a + dilation``
(DESIGN section 3; ``b`` clamped to the last frame). With ``flow_box: union`` (default) its crop is
the union of the crops of ``a`` and ``b``, which contains everything that moved between them;
with ``first`` it is the crop of ``a``.

CLI: ``python -m extractors.detections.crops --config config.yaml --video-id V
--detections V.parquet --out V.crops.parquet``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from extractors.detections.cli import run_video_command, video_parser
from extractors.detections.config import CropsConfig, FlowBox
from extractors.detections.official import DetectionFileError
from extractors.detections.table import DetectionTable, read_detection_table
from m3em.epic.atomic import atomic_output
from m3em.epic.cli import load_job_config

log = logging.getLogger("extractors.detections.crops")
#: The module run by ``python -m`` (``__name__`` is then ``__main__``).
COMMAND = "extractors.detections.crops"

FORMAT = "m3em-crops/1"
SOURCES = ("detected", "borrowed", "full")
CROP_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("x1", pa.float64(), nullable=False),
        pa.field("y1", pa.float64(), nullable=False),
        pa.field("x2", pa.float64(), nullable=False),
        pa.field("y2", pa.float64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


def kept_boxes(table: DetectionTable, cfg: CropsConfig) -> pd.DataFrame:
    """The boxes that define the crops: hands and objects at or above their thresholds."""
    b = table.boxes
    keep = ((b["kind"] == "hand") & (b["score"] >= cfg.hand_threshold)) | (
        (b["kind"] == "object") & (b["score"] >= cfg.object_threshold)
    )
    return b[keep]


def _min_size(lo: np.ndarray, hi: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Grow ``[lo, hi]`` (inside [0, 1]) about its centre to at least ``size``, shifted inside [0, 1]."""
    small = hi - lo < size
    centre = (lo + hi) / 2
    new_lo = np.where(small, centre - size / 2, lo)
    new_hi = np.where(small, centre + size / 2, hi)
    shift = np.where(new_lo < 0, -new_lo, 0.0) - np.where(new_hi > 1, new_hi - 1, 0.0)
    new_lo, new_hi = new_lo + shift, new_hi + shift
    # Guard the rounding of the arithmetic above: the grown box must still contain the original.
    return np.clip(np.minimum(new_lo, lo), 0.0, 1.0), np.clip(np.maximum(new_hi, hi), 0.0, 1.0)


def compute_crops(
    frames: np.ndarray, boxes: np.ndarray, n_frames: int, cfg: CropsConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Crop box of every frame from the kept boxes.

    Args:
        frames: ``(K,)`` 1-based frame number of each kept box.
        boxes: ``(K, 4)`` kept boxes, normalised ``x1, y1, x2, y2``.
        n_frames: frames in the video.
        cfg: crop settings.

    Returns:
        ``crops (n_frames, 4)`` float64 normalised boxes for frames 1..n_frames, and
        ``source (n_frames,)`` int8: 0 detected, 1 borrowed, 2 full frame.
    """
    frames = np.asarray(frames, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(frames) and (frames.min() < 1 or frames.max() > n_frames):
        raise ValueError(f"box frame numbers must be in 1..{n_frames}")
    union = np.empty((n_frames, 4))
    union[:, :2], union[:, 2:] = np.inf, -np.inf
    idx = frames - 1
    np.minimum.at(union[:, 0], idx, boxes[:, 0])
    np.minimum.at(union[:, 1], idx, boxes[:, 1])
    np.maximum.at(union[:, 2], idx, boxes[:, 2])
    np.maximum.at(union[:, 3], idx, boxes[:, 3])
    detected = np.zeros(n_frames, dtype=bool)
    detected[idx] = True

    # Steps 3-4 on the detected frames.
    d = union[detected]
    w, h = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    grown = np.stack([d[:, 0] - cfg.margin * w, d[:, 1] - cfg.margin * h,
                      d[:, 2] + cfg.margin * w, d[:, 3] + cfg.margin * h], axis=1)
    grown = np.clip(grown, 0.0, 1.0)
    x1, x2 = _min_size(grown[:, 0], grown[:, 2], cfg.min_size)
    y1, y2 = _min_size(grown[:, 1], grown[:, 3], cfg.min_size)
    # Containment of the union itself (clip can only have touched the frame border).
    own = np.full((n_frames, 4), np.nan)
    own[detected] = np.stack([np.minimum(x1, d[:, 0]), np.minimum(y1, d[:, 1]),
                              np.maximum(x2, d[:, 2]), np.maximum(y2, d[:, 3])], axis=1)

    # Step 5: borrow from the nearest detected frame within the window, else the full frame.
    source = np.full(n_frames, 2, dtype=np.int8)
    source[detected] = 0
    det_idx = np.flatnonzero(detected)
    missing = np.flatnonzero(~detected)
    if len(det_idx) and len(missing):
        pos = np.searchsorted(det_idx, missing)
        before = det_idx[np.clip(pos - 1, 0, len(det_idx) - 1)]
        after = det_idx[np.clip(pos, 0, len(det_idx) - 1)]
        d_before = np.where(pos > 0, missing - before, np.iinfo(np.int64).max)
        d_after = np.where(pos < len(det_idx), after - missing, np.iinfo(np.int64).max)
        nearest = np.where(d_before <= d_after, before, after)
        dist = np.minimum(d_before, d_after)
        ok = dist <= cfg.borrow_window
        own[missing[ok]] = own[nearest[ok]]
        source[missing[ok]] = 1
    own[source == 2] = (0.0, 0.0, 1.0, 1.0)

    # Step 6: centred moving average, then never smaller than the frame's own box.
    if cfg.smoothing_window > 1:
        half = cfg.smoothing_window // 2
        csum = np.concatenate([np.zeros((1, 4)), np.cumsum(own, axis=0)])
        lo = np.clip(np.arange(n_frames) - half, 0, n_frames)
        hi = np.clip(np.arange(n_frames) + (cfg.smoothing_window - half), 0, n_frames)
        smooth = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
        crops = np.concatenate([np.minimum(smooth[:, :2], own[:, :2]), np.maximum(smooth[:, 2:], own[:, 2:])], axis=1)
        crops = np.clip(crops, 0.0, 1.0)
    else:
        crops = own
    return crops, source


def pixel_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised ``(N, 4)`` boxes -> int64 pixel boxes ``x1, y1, x2, y2`` (x2/y2 exclusive)
    covering them in a ``width`` x ``height`` frame, at least one pixel per side."""
    b = np.asarray(boxes, dtype=np.float64) * np.array([width, height, width, height], dtype=np.float64)
    px = np.concatenate([np.floor(b[:, :2] + 1e-9), np.ceil(b[:, 2:] - 1e-9)], axis=1).astype(np.int64)
    px[:, [0, 2]] = np.clip(px[:, [0, 2]], 0, width)
    px[:, [1, 3]] = np.clip(px[:, [1, 3]], 0, height)
    px[:, 2] = np.maximum(px[:, 2], np.minimum(px[:, 0] + 1, width))
    px[:, 0] = np.minimum(px[:, 0], px[:, 2] - 1)
    px[:, 3] = np.maximum(px[:, 3], np.minimum(px[:, 1] + 1, height))
    px[:, 1] = np.minimum(px[:, 1], px[:, 3] - 1)
    return px


@dataclass(frozen=True)
class CropTable:
    """Crop boxes of one video; ``boxes_array[f-1]`` is the crop of RGB frame ``f``."""

    video_id: str
    n_frames: int
    boxes_array: np.ndarray  # (n_frames, 4) float64, normalised x1, y1, x2, y2
    source: np.ndarray       # (n_frames,) str: detected | borrowed | full

    def boxes(self, frame_numbers) -> np.ndarray:
        """``(N, 4)`` float64 normalised ``x1, y1, x2, y2`` crops of 1-based RGB ``frame_numbers``."""
        f = np.asarray(frame_numbers, dtype=np.int64).reshape(-1)
        if len(f) and (f.min() < 1 or f.max() > self.n_frames):
            raise IndexError(f"{self.video_id}: frame numbers must be in 1..{self.n_frames}, got {f.min()}..{f.max()}")
        return self.boxes_array[f - 1].copy()

    def flow_boxes(self, flow_frames, *, stride: int, dilation: int, mode: FlowBox = FlowBox.UNION) -> np.ndarray:
        """``(N, 4)`` crops of 1-based flow frames: flow frame ``k`` pairs RGB frames
        ``a = (k-1)*stride + 1`` and ``b = min(a + dilation, n_frames)``; ``mode`` picks the crop
        of ``a`` (``first``) or the union of both (``union``)."""
        k = np.asarray(flow_frames, dtype=np.int64).reshape(-1)
        a = (k - 1) * stride + 1
        first = self.boxes(a)
        if FlowBox(mode) is FlowBox.FIRST:
            return first
        second = self.boxes(np.minimum(a + dilation, self.n_frames))
        return np.concatenate([np.minimum(first[:, :2], second[:, :2]), np.maximum(first[:, 2:], second[:, 2:])], axis=1)

    def pixel_boxes(self, frame_numbers, width: int, height: int) -> np.ndarray:
        """``(N, 4)`` int64 pixel boxes ``x1, y1, x2, y2`` (x2/y2 exclusive) covering the crops of
        ``frame_numbers`` in a ``width`` x ``height`` frame; at least one pixel per side."""
        return pixel_boxes(self.boxes(frame_numbers), width, height)


def crops_for_table(table: DetectionTable, cfg: CropsConfig) -> CropTable:
    """Crops of every frame of ``table``'s video.

    A table detected on every ``frame_step``-th frame (producer metadata) needs
    ``borrow_window >= frame_step // 2``, else the frames in between would silently get the full
    frame; that is an error.
    """
    step = int(table.producer.get("frame_step", 1))
    if cfg.borrow_window < step // 2:
        raise ValueError(f"{table.video_id}: detections were run on every {step}th frame, so crops.borrow_window "
                         f"must be at least {step // 2} (is {cfg.borrow_window})")
    kept = kept_boxes(table, cfg)
    crops, source = compute_crops(kept["frame"].to_numpy(), kept[["x1", "y1", "x2", "y2"]].to_numpy(),
                                  table.n_frames, cfg)
    return CropTable(table.video_id, table.n_frames, crops, np.asarray(SOURCES, dtype=object)[source])


def write_crops(path: str | Path, crops: CropTable, cfg: CropsConfig) -> None:
    """Write a crop table atomically."""
    data = {
        "frame": np.arange(1, crops.n_frames + 1, dtype=np.int32),
        **{c: crops.boxes_array[:, i] for i, c in enumerate(("x1", "y1", "x2", "y2"))},
        "source": list(crops.source),
    }
    table = pa.Table.from_pydict(data, schema=CROP_SCHEMA)
    settings = {k: (v.value if isinstance(v, FlowBox) else v) for k, v in asdict(cfg).items()}
    meta = {"format": FORMAT, "video_id": crops.video_id, "n_frames": str(crops.n_frames),
            "settings": json.dumps(settings, sort_keys=True)}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_crops(path: str | Path, *, video_id: str | None = None, n_frames: int | None = None) -> CropTable:
    """Read and validate a crop table written by :func:`write_crops`."""
    path = Path(path)
    if not path.is_file():
        raise DetectionFileError(f"{path}: crop table not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DetectionFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("format") != FORMAT:
        raise DetectionFileError(f"{path}: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    if not pa.schema([pa.field(f.name, f.type) for f in table.schema]).equals(
            pa.schema([pa.field(f.name, f.type) for f in CROP_SCHEMA])):
        raise DetectionFileError(f"{path}: columns/types differ from the crop table schema")
    vid, n = meta["video_id"], int(meta["n_frames"])
    if video_id is not None and vid != video_id:
        raise DetectionFileError(f"{path}: crops are for video {vid!r}, expected {video_id!r}")
    if n_frames is not None and n != n_frames:
        raise DetectionFileError(f"{path}: crops cover {n} frames, but the video has {n_frames}")
    frame = table.column("frame").to_numpy()
    if len(frame) != n or not np.array_equal(frame, np.arange(1, n + 1)):
        raise DetectionFileError(f"{path}: expected one row per frame 1..{n} in order")
    boxes = np.stack([table.column(c).to_numpy() for c in ("x1", "y1", "x2", "y2")], axis=1)
    bad = ~np.isfinite(boxes).all(1) | (boxes < 0).any(1) | (boxes > 1).any(1) | (boxes[:, 0] >= boxes[:, 2]) | (
        boxes[:, 1] >= boxes[:, 3])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DetectionFileError(f"{path}: frame {i + 1}: crop {boxes[i].tolist()} is empty or outside [0, 1]")
    source = np.asarray(table.column("source").to_pylist(), dtype=object)
    if not np.isin(source, SOURCES).all():
        raise DetectionFileError(f"{path}: source must be one of {SOURCES}")
    return CropTable(vid, n, boxes, source)


@dataclass(frozen=True)
class CropsJobConfig:
    """The config sections ``python -m extractors.detections.crops`` reads."""

    crops: CropsConfig


def _parser() -> argparse.ArgumentParser:
    parser = video_parser(COMMAND, __doc__, config_help="config.yaml (uses the crops: section)")
    parser.add_argument("--detections", required=True, type=Path, help="the video's detection table (.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="output crop table (.parquet)")
    return parser


def _run(args: argparse.Namespace) -> None:
    cfg = load_job_config(args.config, CropsJobConfig).crops
    table = read_detection_table(args.detections, video_id=args.video_id)
    crops = crops_for_table(table, cfg)
    write_crops(args.out, crops, cfg)
    counts = {s: int((crops.source == s).sum()) for s in SOURCES}
    log.info("%s: %d frames, %s", args.out, crops.n_frames, counts)


def main(argv: Sequence[str] | None = None) -> int:
    return run_video_command(COMMAND, _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

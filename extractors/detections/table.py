"""The detection table (DESIGN section 3): one Parquet file per video, one row per box.

Columns (the schema lives only here, :data:`SCHEMA`):

============ ========= =====================================================================
column       type      meaning
============ ========= =====================================================================
frame        int32     1-based RGB frame number (annotation frame rate), 1..n_frames
kind         string    ``hand`` or ``object``
x1,y1,x2,y2  float32   box normalised to [0, 1] by the frame width / height, x1<=x2, y1<=y2
score        float32   detector confidence in [0, 1]
label        int32     object class id in [0, n_object_classes) or -1 (class-agnostic; all hands)
side         int8      hands: 0 left, 1 right, -1 unknown; objects: -1
state        int8      hands: contact state 0..4 (official ``HandState``) or -1 unknown; objects: -1
offset_x/y   float32   hands: normalised hand->object offset in [-1, 1] or null (unknown);
                       objects: null
============ ========= =====================================================================

Parquet key-value metadata: ``format`` (``m3em-detections/1``), ``video_id``, ``n_frames`` (the
video's RGB frame count; frames without a row have no detection), ``n_object_classes`` (0 when
every object is class-agnostic) and ``producer`` (JSON).

Rows are sorted by ``frame``, hands before objects, then by descending score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from extractors.detections.official import DetectionFileError, FrameDetections, OfficialColumns
from m3em.epic.atomic import atomic_output

FORMAT = "m3em-detections/1"
KINDS = ("hand", "object")

SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("side", pa.int8(), nullable=False),
        pa.field("state", pa.int8(), nullable=False),
        pa.field("offset_x", pa.float32(), nullable=True),
        pa.field("offset_y", pa.float32(), nullable=True),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class DetectionTable:
    """All boxes of one video.

    Attributes:
        video_id: the video.
        n_frames: RGB frame count of the video (frames 1..n_frames).
        n_object_classes: size of the object vocabulary of labelled objects; 0 if all are -1.
        boxes: DataFrame with :data:`COLUMNS` (pandas dtypes: int32/str/float32/int8, offsets
            float32 with NaN for null), sorted as described in the module docstring.
        producer: what made the table (JSON-like).
    """

    video_id: str
    n_frames: int
    n_object_classes: int
    boxes: pd.DataFrame
    producer: Mapping[str, Any]

    def hands(self) -> pd.DataFrame:
        return self.boxes[self.boxes["kind"] == "hand"]

    def objects(self) -> pd.DataFrame:
        return self.boxes[self.boxes["kind"] == "object"]

    def summary(self) -> str:
        """``"<n> frames, <h> hands, <o> objects"`` (what the detection commands log)."""
        n_hands = int((self.boxes["kind"] == "hand").sum())
        return f"{self.n_frames} frames, {n_hands} hands, {len(self.boxes) - n_hands} objects"


def empty_boxes() -> pd.DataFrame:
    """A zero-row box frame with the table's columns and dtypes."""
    return SCHEMA.empty_table().to_pandas()


def boxes_from_frames(frames: list[FrameDetections]) -> pd.DataFrame:
    """Rows of the table from official-format per-frame detections (objects class-agnostic)."""
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for fr in frames:
        for h in fr.hands:
            for c, v in zip(COLUMNS, (fr.frame_number, "hand", h.left, h.top, h.right, h.bottom, h.score, -1,
                                      h.side, h.state, h.offset_x, h.offset_y)):
                cols[c].append(v)
        for o in fr.objects:
            for c, v in zip(COLUMNS, (fr.frame_number, "object", o.left, o.top, o.right, o.bottom, o.score, -1,
                                      -1, -1, None, None)):
                cols[c].append(v)
    return pa.Table.from_pydict(cols, schema=SCHEMA).to_pandas()


def boxes_from_official(cols: OfficialColumns) -> pd.DataFrame:
    """Rows of the table from :func:`~extractors.detections.official.read_official_columns` (fast path)."""
    h, o = cols.hands, cols.objects
    k, m = len(h), len(o)
    data = {
        "frame": np.concatenate([cols.hand_frame, cols.object_frame]).astype(np.int32),
        "kind": np.array(["hand"] * k + ["object"] * m, dtype=object),
        **{c: np.concatenate([h[:, i], o[:, i]]).astype(np.float32) for i, c in enumerate((*BOX_COLUMNS, "score"))},
        "label": np.full(k + m, -1, np.int32),
        "side": np.concatenate([h[:, 5], np.full(m, -1)]).astype(np.int8),
        "state": np.concatenate([h[:, 6], np.full(m, -1)]).astype(np.int8),
        "offset_x": np.concatenate([h[:, 7], np.full(m, np.nan)]).astype(np.float32),
        "offset_y": np.concatenate([h[:, 8], np.full(m, np.nan)]).astype(np.float32),
    }
    return pa.Table.from_pydict(data, schema=SCHEMA).to_pandas()


def _sorted(boxes: pd.DataFrame) -> pd.DataFrame:
    order = np.lexsort((-boxes["score"].to_numpy(np.float64), (boxes["kind"] != "hand").to_numpy(),
                        boxes["frame"].to_numpy()))
    return boxes.iloc[order].reset_index(drop=True)


def validate_boxes(boxes: pd.DataFrame, *, n_frames: int, n_object_classes: int, source: str) -> None:
    """Check the table contract; raise :class:`DetectionFileError` naming ``source`` and the first bad row."""

    def fail(mask: np.ndarray, problem: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            row = boxes.iloc[i]
            raise DetectionFileError(f"{source}: row {i} (frame {row['frame']}, {row['kind']}): {problem}")

    missing = [c for c in COLUMNS if c not in boxes.columns]
    if missing:
        raise DetectionFileError(f"{source}: missing column(s) {missing}")
    extra = [c for c in boxes.columns if c not in COLUMNS]
    if extra:
        raise DetectionFileError(f"{source}: unknown column(s) {extra}")
    frame = boxes["frame"].to_numpy()
    fail((frame < 1) | (frame > n_frames), f"frame outside 1..{n_frames} (the video's frame count)")
    kind = boxes["kind"].to_numpy(dtype=object)
    is_hand = kind == "hand"
    fail(~(is_hand | (kind == "object")), "kind must be 'hand' or 'object'")
    xy = boxes[list(BOX_COLUMNS)].to_numpy(np.float64)
    fail(~np.isfinite(xy).all(1) | (xy < 0).any(1) | (xy > 1).any(1), "box coordinates outside [0, 1]")
    fail((xy[:, 0] > xy[:, 2]) | (xy[:, 1] > xy[:, 3]), "box has x1 > x2 or y1 > y2")
    score = boxes["score"].to_numpy(np.float64)
    fail(~np.isfinite(score) | (score < 0) | (score > 1), "score outside [0, 1]")
    label = boxes["label"].to_numpy()
    fail(is_hand & (label != -1), "hands must have label -1")
    fail((label < -1) | (label >= n_object_classes) & (label != -1),
         f"label outside -1..{n_object_classes - 1} (n_object_classes={n_object_classes})")
    side, state = boxes["side"].to_numpy(), boxes["state"].to_numpy()
    fail(is_hand & ~np.isin(side, (-1, 0, 1)), "hand side must be 0 (left), 1 (right) or -1 (unknown)")
    fail(is_hand & ((state < -1) | (state > 4)), "hand state must be 0..4 or -1 (unknown)")
    off = boxes[["offset_x", "offset_y"]].to_numpy(np.float64)
    fail(is_hand & ~np.isnan(off).all(1) & ((np.abs(off) > 1).any(1) | np.isnan(off).any(1)),
         "hand offset must be null or two values in [-1, 1]")
    fail(~is_hand & ((side != -1) | (state != -1) | ~np.isnan(off).all(1)),
         "objects must have side -1, state -1 and null offsets")


def write_detection_table(
    path: str | Path,
    boxes: pd.DataFrame,
    *,
    video_id: str,
    n_frames: int,
    n_object_classes: int,
    producer: Mapping[str, Any] | None = None,
) -> DetectionTable:
    """Validate and write one video's detection table atomically; return it as read back."""
    path = Path(path)
    if n_frames < 1:
        raise DetectionFileError(f"{path}: n_frames must be >= 1, got {n_frames}")
    if n_object_classes < 0:
        raise DetectionFileError(f"{path}: n_object_classes must be >= 0, got {n_object_classes}")
    validate_boxes(boxes, n_frames=n_frames, n_object_classes=n_object_classes, source=str(path))
    boxes = _sorted(boxes[list(COLUMNS)])
    table = pa.Table.from_pandas(boxes, schema=SCHEMA, preserve_index=False)
    meta = {
        "format": FORMAT,
        "video_id": video_id,
        "n_frames": str(int(n_frames)),
        "n_object_classes": str(int(n_object_classes)),
        "producer": json.dumps(dict(producer or {}), sort_keys=True),
    }
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return DetectionTable(video_id, int(n_frames), int(n_object_classes), table.to_pandas(), dict(producer or {}))


def read_detection_table(
    path: str | Path, *, video_id: str | None = None, n_frames: int | None = None
) -> DetectionTable:
    """Read and validate a detection table.

    Args:
        path: the Parquet file.
        video_id, n_frames: if given, must match the file's metadata.

    Raises:
        DetectionFileError: missing/unreadable file, wrong format or schema, wrong video or frame
            count, any row breaking the contract.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectionFileError(f"{path}: detection table not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DetectionFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("format") != FORMAT:
        raise DetectionFileError(f"{path}: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    for key in ("video_id", "n_frames", "n_object_classes"):
        if key not in meta:
            raise DetectionFileError(f"{path}: metadata key {key!r} missing")
    got = pa.schema([pa.field(f.name, f.type) for f in table.schema])
    want = pa.schema([pa.field(f.name, f.type) for f in SCHEMA])
    if not got.equals(want):
        raise DetectionFileError(f"{path}: columns/types {got.to_string()!r} differ from the table schema")
    file_video, file_frames = meta["video_id"], int(meta["n_frames"])
    if video_id is not None and file_video != video_id:
        raise DetectionFileError(f"{path}: detections are for video {file_video!r}, expected {video_id!r}")
    if n_frames is not None and file_frames != n_frames:
        raise DetectionFileError(f"{path}: detections cover {file_frames} frames, but the video has {n_frames}")
    boxes = table.to_pandas()
    n_classes = int(meta["n_object_classes"])
    validate_boxes(boxes, n_frames=file_frames, n_object_classes=n_classes, source=str(path))
    return DetectionTable(file_video, file_frames, n_classes, boxes, json.loads(meta.get("producer", "{}")))

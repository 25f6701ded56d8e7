"""Read and write the official EPIC-KITCHENS-100 hand-object detection files.

Format (``epic-kitchens/epic-kitchens-100-hand-object-bboxes``): one pickle per video holding a
Python ``list`` of serialized protobuf ``model.detections.Detections`` byte strings, one per RGB
frame; list position ``i`` is ``frame_number == i + 1`` (1-based, file ``frame_{i+1:010d}.jpg``).
Box coordinates are normalised to [0, 1] by the 456x256 frame the detector ran on; hand
``object_offset`` is a normalised displacement clipped to [-1, 1].

The schema lives in ``hoa_detections.proto`` (see :mod:`extractors.detections.proto_schema`);
the EPIC support library is not needed. Pickles are loaded with
:func:`m3em.epic.safe_pickle.safe_load`, which refuses every global outside a small data allow-list,
and the result must be a list of ``bytes``.
"""

from __future__ import annotations

import enum
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from extractors.detections import proto_schema
from m3em.epic.atomic import atomic_output
from m3em.epic.errors import InputError
from m3em.epic.safe_pickle import safe_load


class HandSide(enum.IntEnum):
    """``HandDetection.HandSide`` of the official schema."""

    LEFT = 0
    RIGHT = 1


class HandState(enum.IntEnum):
    """``HandDetection.HandState`` of the official schema (contact state)."""

    NO_CONTACT = 0
    SELF_CONTACT = 1
    ANOTHER_PERSON = 2
    PORTABLE_OBJECT = 3
    STATIONARY_OBJECT = 4


class DetectionFileError(ValueError, InputError):
    """A detection file (official pickle or detection table) breaks its contract; names the file."""


@dataclass(frozen=True)
class HandBox:
    """One hand: box normalised to [0, 1], score, side (:class:`HandSide`), contact state
    (:class:`HandState`) and the normalised hand->object offset in [-1, 1]."""

    left: float
    top: float
    right: float
    bottom: float
    score: float
    side: int
    state: int
    offset_x: float
    offset_y: float


@dataclass(frozen=True)
class ObjectBox:
    """One (class-agnostic) object: box normalised to [0, 1] and score."""

    left: float
    top: float
    right: float
    bottom: float
    score: float


@dataclass(frozen=True)
class FrameDetections:
    """All boxes of one RGB frame (``frame_number`` is 1-based)."""

    frame_number: int
    hands: tuple[HandBox, ...] = ()
    objects: tuple[ObjectBox, ...] = ()


def _check_box(box: HandBox | ObjectBox, where: str) -> None:
    coords = (box.left, box.top, box.right, box.bottom)
    if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in coords):
        raise DetectionFileError(f"{where}: box {coords} has coordinates outside [0, 1]")
    if box.left > box.right or box.top > box.bottom:
        raise DetectionFileError(f"{where}: box {coords} has left > right or top > bottom")
    if not (math.isfinite(box.score) and 0.0 <= box.score <= 1.0):
        raise DetectionFileError(f"{where}: score {box.score} outside [0, 1]")
    if isinstance(box, HandBox):
        if box.side not in HandSide._value2member_map_:
            raise DetectionFileError(f"{where}: hand side {box.side} is not one of {[int(s) for s in HandSide]}")
        if box.state not in HandState._value2member_map_:
            raise DetectionFileError(f"{where}: hand state {box.state} is not one of {[int(s) for s in HandState]}")
        if not all(math.isfinite(o) and -1.0 <= o <= 1.0 for o in (box.offset_x, box.offset_y)):
            raise DetectionFileError(f"{where}: hand offset {(box.offset_x, box.offset_y)} outside [-1, 1]")


def _to_message(video_id: str, frame: FrameDetections):
    msg = proto_schema.Detections(video_id=video_id, frame_number=frame.frame_number)
    for hand in frame.hands:
        h = msg.hands.add(score=hand.score, side=hand.side, state=hand.state)
        h.bbox.left, h.bbox.top, h.bbox.right, h.bbox.bottom = hand.left, hand.top, hand.right, hand.bottom
        h.object_offset.x, h.object_offset.y = hand.offset_x, hand.offset_y
    for obj in frame.objects:
        o = msg.objects.add(score=obj.score)
        o.bbox.left, o.bbox.top, o.bbox.right, o.bbox.bottom = obj.left, obj.top, obj.right, obj.bottom
    return msg


def write_official_detections(path: str | Path, video_id: str, frames: Sequence[FrameDetections]) -> None:
    """Write ``frames`` as an official hand-object pickle (atomically).

    Args:
        path: destination ``.pkl``.
        video_id: stored in every ``Detections`` message.
        frames: one entry per RGB frame of the video, ``frames[i].frame_number == i + 1``.

    Raises:
        DetectionFileError: frame numbers out of order, boxes outside [0, 1], bad side/state.
    """
    path = Path(path)
    payload: list[bytes] = []
    for i, frame in enumerate(frames):
        if frame.frame_number != i + 1:
            raise DetectionFileError(
                f"{path}: frames[{i}].frame_number is {frame.frame_number}, expected {i + 1} (one entry per frame, in order)"
            )
        for box in (*frame.hands, *frame.objects):
            _check_box(box, f"{path}: frame {frame.frame_number}")
        payload.append(_to_message(video_id, frame).SerializeToString())
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            # Protocol 4 stores bytes as plain opcodes: the list needs no global at all to load.
            pickle.dump(payload, fh, protocol=4)


@dataclass(frozen=True)
class OfficialColumns:
    """The boxes of an official file as arrays (the fast path used by the table converter).

    Attributes:
        video_id: the ``video_id`` stored in the messages.
        n_frames: number of frames (list entries).
        hand_frame: ``(K,)`` int64 1-based frame of each hand.
        hands: ``(K, 9)`` float64 ``left, top, right, bottom, score, side, state, offset_x, offset_y``.
        object_frame: ``(M,)`` int64.
        objects: ``(M, 5)`` float64 ``left, top, right, bottom, score``.
    """

    video_id: str
    n_frames: int
    hand_frame: np.ndarray
    hands: np.ndarray
    object_frame: np.ndarray
    objects: np.ndarray


def _validate_columns(path: Path, cols: OfficialColumns) -> None:
    """Vectorised :func:`_check_box` over all boxes; reports the first bad box of the file."""
    for frame, arr, is_hand in ((cols.hand_frame, cols.hands, True), (cols.object_frame, cols.objects, False)):
        if not len(arr):
            continue
        xy, score = arr[:, :4], arr[:, 4]
        bad = ~np.isfinite(xy).all(1) | (xy < 0).any(1) | (xy > 1).any(1) | (xy[:, 0] > xy[:, 2]) | (
            xy[:, 1] > xy[:, 3]) | ~np.isfinite(score) | (score < 0) | (score > 1)
        if is_hand:
            off = arr[:, 7:9]
            bad |= ~np.isin(arr[:, 5], [int(s) for s in HandSide]) | ~np.isin(arr[:, 6], [int(s) for s in HandState])
            bad |= ~np.isfinite(off).all(1) | (np.abs(off) > 1).any(1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = arr[i].tolist()
            box = (HandBox(*row[:5], int(row[5]), int(row[6]), *row[7:]) if is_hand else ObjectBox(*row))
            _check_box(box, f"{path}: frame {int(frame[i])}")
            raise AssertionError("unreachable: vectorised and scalar box checks disagree")  # pragma: no cover


def read_official_columns(
    path: str | Path, *, video_id: str | None = None, n_frames: int | None = None
) -> OfficialColumns:
    """Read and validate an official hand-object pickle into arrays (see :func:`read_official_detections`)."""
    path = Path(path)
    if not path.is_file():
        raise DetectionFileError(f"{path}: detection file not found")
    try:
        entries = safe_load(path)
    except pickle.UnpicklingError as exc:  # includes UnsafePickleError
        raise DetectionFileError(f"{path}: cannot load as an official detections pickle: {exc}") from exc
    if not isinstance(entries, list):
        raise DetectionFileError(f"{path}: expected a list of serialized Detections, got {type(entries).__name__}")
    if n_frames is not None and len(entries) != n_frames:
        raise DetectionFileError(f"{path}: holds {len(entries)} frames, but the video has {n_frames}")
    hand_frame: list[int] = []
    hands: list[tuple] = []
    object_frame: list[int] = []
    objects: list[tuple] = []
    file_video_id: str | None = None
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            # Python-2 pickles of str come back as latin-1 text; the bytes are recoverable exactly.
            entry = entry.encode("latin1")
        if not isinstance(entry, bytes):
            raise DetectionFileError(f"{path}: entry {i} is {type(entry).__name__}, expected bytes")
        try:
            msg = proto_schema.Detections.FromString(entry)
        except DecodeError as exc:
            raise DetectionFileError(f"{path}: entry {i} is not a valid Detections protobuf: {exc}") from exc
        if msg.frame_number != i + 1:
            raise DetectionFileError(
                f"{path}: entry {i} has frame_number {msg.frame_number}, expected {i + 1} (frames out of order)"
            )
        if video_id is not None and msg.video_id != video_id:
            raise DetectionFileError(f"{path}: frame {i + 1} is for video {msg.video_id!r}, expected {video_id!r}")
        if file_video_id is None:
            file_video_id = msg.video_id
        elif msg.video_id != file_video_id:
            raise DetectionFileError(
                f"{path}: frame {i + 1} is for video {msg.video_id!r} but earlier frames are for {file_video_id!r}"
            )
        for h in msg.hands:
            b = h.bbox
            hand_frame.append(i + 1)
            hands.append((b.left, b.top, b.right, b.bottom, h.score, h.side, h.state, h.object_offset.x,
                          h.object_offset.y))
        for o in msg.objects:
            b = o.bbox
            object_frame.append(i + 1)
            objects.append((b.left, b.top, b.right, b.bottom, o.score))
    cols = OfficialColumns(
        file_video_id or "", len(entries), np.asarray(hand_frame, dtype=np.int64),
        np.asarray(hands, dtype=np.float64).reshape(-1, 9), np.asarray(object_frame, dtype=np.int64),
        np.asarray(objects, dtype=np.float64).reshape(-1, 5),
    )
    _validate_columns(path, cols)
    return cols


def read_official_detections(
    path: str | Path, *, video_id: str | None = None, n_frames: int | None = None
) -> list[FrameDetections]:
    """Read an official hand-object pickle.

    Args:
        path: the ``PXX_YY.pkl`` file.
        video_id: if given, every message's ``video_id`` must equal it.
        n_frames: if given, the list must hold exactly this many frames (the video's RGB frame count).

    Returns:
        One :class:`FrameDetections` per frame, ``result[i].frame_number == i + 1``.

    Raises:
        DetectionFileError: missing file, corrupt/unsafe pickle or protobuf, not a list of bytes,
            wrong video id, wrong frame count, frame numbers out of order, boxes outside [0, 1].
    """
    cols = read_official_columns(path, video_id=video_id, n_frames=n_frames)
    hands: list[list[HandBox]] = [[] for _ in range(cols.n_frames)]
    for f, r in zip(cols.hand_frame.tolist(), cols.hands.tolist()):
        hands[f - 1].append(HandBox(*r[:5], int(r[5]), int(r[6]), *r[7:]))
    objects: list[list[ObjectBox]] = [[] for _ in range(cols.n_frames)]
    for f, r in zip(cols.object_frame.tolist(), cols.objects.tolist()):
        objects[f - 1].append(ObjectBox(*r))
    return [FrameDetections(i + 1, tuple(hands[i]), tuple(objects[i])) for i in range(cols.n_frames)]

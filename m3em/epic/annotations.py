"""EPIC-KITCHENS-100 UDA annotation I/O: the one module every stage reads annotations through.

Reads the official files (CSV, or pandas pickle through the restricted unpickler) into one
DataFrame schema (DESIGN section 3)::

    narration_id, participant_id, video_id, start_frame, stop_frame,
    start_timestamp, stop_timestamp, verb_class, noun_class

``verb_class``/``noun_class`` are present only for labelled splits. Frame numbers are 1-based at
the video's annotation frame rate. Every problem found is reported with the file and the row.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from m3em.epic.atomic import atomic_write_text
from m3em.epic.errors import InputError
from m3em.epic.safe_pickle import safe_load

SPLITS: tuple[str, ...] = (
    "source_train",
    "source_val",
    "source_test",
    "target_train",
    "target_val",
    "target_test",
)

#: Official file stem of each split in ``UDA_annotations/`` (the ``.csv`` or ``.pkl`` is added).
SPLIT_FILES: dict[str, str] = {
    "source_train": "EPIC_100_uda_source_train",
    "source_val": "EPIC_100_uda_source_val",
    "source_test": "EPIC_100_uda_source_test_timestamps",
    "target_train": "EPIC_100_uda_target_train_timestamps",
    "target_val": "EPIC_100_uda_target_val",
    "target_test": "EPIC_100_uda_target_test_timestamps",
}

#: Splits whose official file carries labels.
LABELLED_SPLITS: frozenset[str] = frozenset({"source_train", "source_val", "target_val"})

BASE_COLUMNS: tuple[str, ...] = (
    "narration_id",
    "participant_id",
    "video_id",
    "start_frame",
    "stop_frame",
    "start_timestamp",
    "stop_timestamp",
)
LABEL_COLUMNS: tuple[str, ...] = ("verb_class", "noun_class")

#: Official timestamps look like ``00:01:02.35`` (hours, minutes, seconds and a fraction).
TIMESTAMP_PATTERN = r"\d+:[0-5]\d:[0-5]\d(?:\.\d+)?"

VERB_CLASSES_FILE = "EPIC_100_verb_classes.csv"
NOUN_CLASSES_FILE = "EPIC_100_noun_classes.csv"
VIDEO_INFO_FILE = "EPIC_100_video_info.csv"

#: Column order of the official labelled / timestamps CSVs (used by writers, e.g. the demo).
OFFICIAL_LABELLED_COLUMNS: tuple[str, ...] = (
    "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
    "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
    "noun_class", "all_nouns", "all_noun_classes",
)
OFFICIAL_TIMESTAMP_COLUMNS: tuple[str, ...] = OFFICIAL_LABELLED_COLUMNS[:8]


class AnnotationError(ValueError, InputError):
    """An annotation file that does not satisfy the EPIC schema; the message names file and row."""


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """A verb or noun class file: ``keys[i]`` is the name of class ``i``."""

    keys: tuple[str, ...]
    path: Path

    def __len__(self) -> int:
        return len(self.keys)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found")
    if path.suffix == ".pkl":
        try:
            df = safe_load(path)
        except Exception as exc:  # the restricted unpickler names the file already
            raise AnnotationError(f"{path}: cannot read pickle: {exc}") from exc
        if not isinstance(df, pd.DataFrame):
            raise AnnotationError(f"{path}: expected a pandas DataFrame, got {type(df).__name__}")
        try:
            if df.index.name == "narration_id":
                df = df.reset_index()
            # A fresh frame of plain arrays: what pandas does with an unpickled object's internals
            # stays inside this try, so a malformed one is reported with the file's name.
            return pd.DataFrame({c: df[c].to_numpy() for c in df.columns})
        except Exception as exc:
            raise AnnotationError(f"{path}: the pickled DataFrame is malformed: {type(exc).__name__}: {exc}") from exc
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot parse CSV: {exc}") from exc


def _row(df: pd.DataFrame, mask: pd.Series) -> str:
    """Describe the first offending row: CSV line number (header is line 1) and narration id."""
    pos = int(mask.to_numpy().nonzero()[0][0])
    nid = df["narration_id"].iloc[pos] if "narration_id" in df else "?"
    return f"row {pos + 2} (narration_id {nid})"


def read_classes(path: str | Path) -> ClassTable:
    """Read ``EPIC_100_{verb,noun}_classes.csv`` (columns ``id,key,...``; ids 0..N-1, contiguous)."""
    path = Path(path)
    df = _read_table(path)
    for col in ("id", "key"):
        if col not in df.columns:
            raise AnnotationError(f"{path}: missing column {col!r} (have {list(df.columns)})")
    ids = df["id"].to_numpy()
    if list(ids) != list(range(len(df))):
        bad = next(i for i, v in enumerate(ids) if v != i)
        raise AnnotationError(f"{path}: class ids must be 0..{len(df) - 1} in order; row {bad + 2} has id {ids[bad]}")
    return ClassTable(keys=tuple(str(k) for k in df["key"]), path=path)


def read_video_info(path: str | Path) -> pd.DataFrame:
    """Read ``EPIC_100_video_info.csv`` into ``video_id, duration, fps, width, height``.

    ``video_id`` is the index.
    """
    path = Path(path)
    df = _read_table(path)
    missing = [c for c in ("video_id", "duration", "fps", "resolution") if c not in df.columns]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}")
    res = df["resolution"].astype(str).str.extract(r"^(\d+)x(\d+)$")
    bad = res[0].isna()
    if bad.any():
        raise AnnotationError(f"{path}: {_row(df.rename(columns={'video_id': 'narration_id'}), bad)}: "
                              "resolution must look like 1920x1080")
    if (df["fps"] <= 0).any():
        raise AnnotationError(f"{path}: {_row(df.rename(columns={'video_id': 'narration_id'}), df['fps'] <= 0)}: "
                              "fps must be positive")
    dup = df["video_id"].duplicated()
    if dup.any():
        raise AnnotationError(f"{path}: duplicate video_id {df['video_id'][dup].iloc[0]!r}")
    out = pd.DataFrame(
        {
            "video_id": df["video_id"].astype(str),
            "duration": df["duration"].astype(float),
            "fps": df["fps"].astype(float),
            "width": res[0].astype(int),
            "height": res[1].astype(int),
        }
    )
    return out.set_index("video_id")


def read_annotation_file(
    path: str | Path,
    *,
    labelled: bool | None = None,
    n_verbs: int | None = None,
    n_nouns: int | None = None,
    video_ids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Read one official UDA annotation file (``.csv`` or ``.pkl``) into the common schema.

    Args:
        path: the file.
        labelled: require (True) or drop (False) the label columns; None keeps them when present.
        n_verbs, n_nouns: class counts; labels outside ``[0, n)`` are an error.
        video_ids: known video ids (the video table); a row naming another video is an error.

    Returns:
        DataFrame with :data:`BASE_COLUMNS` (+ :data:`LABEL_COLUMNS` when labelled), a RangeIndex,
        frames as int64.

    Raises:
        AnnotationError: naming the file and the first offending row.
    """
    path = Path(path)
    df = _read_table(path)
    has_labels = all(c in df.columns for c in LABEL_COLUMNS)
    if labelled is None:
        labelled = has_labels
    wanted = BASE_COLUMNS + (LABEL_COLUMNS if labelled else ())
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing} (have {list(df.columns)})")
    # A fresh frame: pickles written by older pandas carry object-dtype column indexes and
    # categorical columns that would otherwise leak into the common schema.
    df = pd.DataFrame({c: df[c].to_numpy() for c in wanted})
    for col in ("start_frame", "stop_frame") + (LABEL_COLUMNS if labelled else ()):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            raise AnnotationError(f"{path}: {_row(df, bad)}: {col} must be an integer, got {df[col][bad].iloc[0]!r}")
        df[col] = values.astype("int64")
    for col in ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp"):
        # Checked before str(): an empty CSV cell reads as NaN, which str() would turn into "nan".
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            raise AnnotationError(f"{path}: {_row(df, bad)}: {col} is empty")
        df[col] = df[col].astype(str)
    for col in ("start_timestamp", "stop_timestamp"):
        bad = ~df[col].str.fullmatch(TIMESTAMP_PATTERN)
        if bad.any():
            raise AnnotationError(f"{path}: {_row(df, bad)}: {col} {df[col][bad].iloc[0]!r} is not a timestamp "
                                  "HH:MM:SS[.fraction]")
    bad = df["start_frame"] < 1
    if bad.any():
        raise AnnotationError(f"{path}: {_row(df, bad)}: start_frame must be >= 1 (frame numbers are 1-based)")
    bad = df["stop_frame"] < df["start_frame"]
    if bad.any():
        raise AnnotationError(f"{path}: {_row(df, bad)}: stop_frame is before start_frame")
    dup = df["narration_id"].duplicated()
    if dup.any():
        raise AnnotationError(f"{path}: {_row(df, dup)}: duplicate narration_id")
    if labelled:
        for col, n in (("verb_class", n_verbs), ("noun_class", n_nouns)):
            if n is None:
                continue
            bad = (df[col] < 0) | (df[col] >= n)
            if bad.any():
                raise AnnotationError(
                    f"{path}: {_row(df, bad)}: {col} {df[col][bad].iloc[0]} out of range [0, {n})"
                )
    if video_ids is not None:
        known = set(video_ids)
        bad = ~df["video_id"].isin(known)
        if bad.any():
            raise AnnotationError(
                f"{path}: {_row(df, bad)}: video_id {df['video_id'][bad].iloc[0]!r} is not in the video table"
            )
    return df.reset_index(drop=True)


def split_path(annotations_dir: str | Path, split: str) -> Path:
    """The file of ``split`` in an annotations directory: the CSV if present, else the pickle.

    Looks in ``annotations_dir`` and ``annotations_dir/UDA_annotations`` (the official layout).
    CSV is preferred because reading it runs no code.
    """
    if split not in SPLIT_FILES:
        raise AnnotationError(f"unknown split {split!r}; known: {list(SPLITS)}")
    root = Path(annotations_dir)
    stem = SPLIT_FILES[split]
    candidates = [d / f"{stem}{ext}" for d in (root / "UDA_annotations", root) for ext in (".csv", ".pkl")]
    for cand in candidates:
        if cand.exists():
            return cand
    raise AnnotationError(f"{root}: no annotation file for split {split!r}; expected one of "
                          + ", ".join(str(c) for c in candidates))


@dataclasses.dataclass(frozen=True)
class EpicAnnotations:
    """The class files and the video table of one annotation directory.

    Reading a split through :meth:`split` validates labels against the class counts and video ids
    against the video table.
    """

    root: Path
    verbs: ClassTable
    nouns: ClassTable
    videos: pd.DataFrame  # index video_id; columns duration, fps, width, height

    @classmethod
    def open(cls, annotations_dir: str | Path) -> EpicAnnotations:
        """Open an annotation directory in the official layout (class files and video table at its root)."""
        root = Path(annotations_dir)
        if not root.is_dir():
            raise AnnotationError(f"{root}: annotations directory not found")
        return cls(
            root=root,
            verbs=read_classes(root / VERB_CLASSES_FILE),
            nouns=read_classes(root / NOUN_CLASSES_FILE),
            videos=read_video_info(root / VIDEO_INFO_FILE),
        )

    def split(self, split: str, *, labelled: bool | None = None) -> pd.DataFrame:
        """Read and validate one split (see :func:`read_annotation_file`)."""
        if labelled is None:
            labelled = split in LABELLED_SPLITS
        return read_annotation_file(
            split_path(self.root, split),
            labelled=labelled,
            n_verbs=len(self.verbs),
            n_nouns=len(self.nouns),
            video_ids=self.videos.index,
        )

    def fps(self, video_id: str) -> float:
        """Annotation frame rate of a video, from the video table."""
        if video_id not in self.videos.index:
            raise AnnotationError(f"{self.root / VIDEO_INFO_FILE}: video {video_id!r} is not in the video table")
        return float(self.videos.at[video_id, "fps"])


def video_segments(ann: EpicAnnotations, video_id: str) -> pd.DataFrame:
    """Every segment of ``video_id`` over all split files present (narration_id, start_frame,
    stop_frame, split, file), ordered by start frame then narration id, each narration id once.

    The one rule for which segments a per-video feature file holds (every extracted stream and the
    object stream), so a model can read any split of the video, whichever splits the run evaluates.
    """
    parts = []
    for split in SPLITS:
        try:
            path = split_path(ann.root, split)
        except AnnotationError:
            continue  # optional splits (source_val/test) may be absent
        df = ann.split(split)
        df = df[df["video_id"] == video_id]
        if len(df):
            parts.append(df[["narration_id", "start_frame", "stop_frame"]].assign(split=split, file=str(path)))
    if not parts:
        raise AnnotationError(f"{ann.root}: video {video_id!r} has no segment in any split file")
    seg = pd.concat(parts, ignore_index=True)
    dup = seg[seg.duplicated("narration_id", keep=False)]
    for nid, g in dup.groupby("narration_id"):
        if g[["start_frame", "stop_frame"]].drop_duplicates().shape[0] > 1:
            raise AnnotationError(f"narration {nid!r} has different frames in {sorted(g['file'])}")
    seg = seg.drop_duplicates("narration_id").sort_values(["start_frame", "narration_id"], kind="stable")
    bad = seg[seg["stop_frame"] < seg["start_frame"]]
    if len(bad):
        raise AnnotationError(f"segment {bad.iloc[0]['narration_id']!r}: stop_frame < start_frame")
    return seg.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Writing the official layout (the demo dataset, the synthetic feature sets, test fixtures).
#
# Same file names, columns and column order as the official release, timestamps formatted like
# the official ones (``00:00:03.37`` for start/stop, ``00:00:01.089`` for the narration), list
# columns written the way pandas writes Python lists (``['cup']``, ``[1]``). The csv module with
# ``\n`` line ends makes the bytes depend on the rows only.


@dataclasses.dataclass(frozen=True)
class ClassRecord:
    """One row of a verb / noun class file (its id is its position)."""

    key: str
    instances: tuple[str, ...]
    category: str


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One row of ``EPIC_100_video_info.csv``."""

    video_id: str
    duration: float
    fps: float
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class NarrationRecord:
    """One action segment of a split file; ``verb``/``noun`` (key and class) only when labelled.

    Frames are 1-based at ``fps``; the timestamps are derived from them (frame ``n`` at
    ``(n - 1) / fps`` s), the narration ``narration_offset`` s after the start.
    """

    narration_id: str
    video_id: str
    start_frame: int
    stop_frame: int
    fps: float
    narration_offset: float = 0.0
    verb: str | None = None
    verb_class: int | None = None
    noun: str | None = None
    noun_class: int | None = None

    @property
    def participant_id(self) -> str:
        return self.video_id.split("_")[0]


def format_timestamp(seconds: float, decimals: int) -> str:
    """``HH:MM:SS.ss`` (2 decimals, start/stop) or ``HH:MM:SS.fff`` (3 decimals, narration)."""
    scale = 10**decimals
    ticks = int(round(seconds * scale))
    whole, frac = divmod(ticks, scale)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{frac:0{decimals}d}"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _narration_row(r: NarrationRecord, labelled: bool) -> list[object]:
    start_s, stop_s = (r.start_frame - 1) / r.fps, (r.stop_frame - 1) / r.fps
    row: list[object] = [
        r.narration_id, r.participant_id, r.video_id, format_timestamp(start_s + r.narration_offset, 3),
        format_timestamp(start_s, 2), format_timestamp(stop_s, 2), r.start_frame, r.stop_frame,
    ]
    if labelled:
        if r.verb is None or r.verb_class is None or r.noun is None or r.noun_class is None:
            raise ValueError(f"{r.narration_id}: a labelled split needs verb and noun (key and class)")
        row += [f"{r.verb} {r.noun}", r.verb, r.verb_class, r.noun, r.noun_class, f"['{r.noun}']", f"[{r.noun_class}]"]
    return row


def split_file(annotations_dir: str | Path, split: str) -> Path:
    """Where the official layout keeps a split's CSV (``UDA_annotations/<official name>.csv``)."""
    if split not in SPLIT_FILES:
        raise AnnotationError(f"unknown split {split!r}; known: {list(SPLITS)}")
    return Path(annotations_dir) / "UDA_annotations" / f"{SPLIT_FILES[split]}.csv"


def write_split(path: str | Path, records: Iterable[NarrationRecord], labelled: bool) -> None:
    """Write one split file: the labelled layout, or the ``*_timestamps`` layout without labels."""
    header = OFFICIAL_LABELLED_COLUMNS if labelled else OFFICIAL_TIMESTAMP_COLUMNS
    atomic_write_text(Path(path), _csv_text(header, [_narration_row(r, labelled) for r in records]))


def write_class_files(annotations_dir: str | Path, verbs: Sequence[ClassRecord], nouns: Sequence[ClassRecord]) -> None:
    """``EPIC_100_verb_classes.csv`` and ``EPIC_100_noun_classes.csv`` (``id,key,instances,category``)."""
    header = ("id", "key", "instances", "category")
    for name, classes in ((VERB_CLASSES_FILE, verbs), (NOUN_CLASSES_FILE, nouns)):
        rows = [(i, c.key, str(list(c.instances)), c.category) for i, c in enumerate(classes)]
        atomic_write_text(Path(annotations_dir) / name, _csv_text(header, rows))


def write_video_info(annotations_dir: str | Path, videos: Iterable[VideoRecord]) -> None:
    """``EPIC_100_video_info.csv`` (``video_id,duration,fps,resolution``)."""
    rows = [(v.video_id, repr(float(v.duration)), repr(float(v.fps)), f"{v.width}x{v.height}") for v in videos]
    atomic_write_text(Path(annotations_dir) / VIDEO_INFO_FILE,
                      _csv_text(("video_id", "duration", "fps", "resolution"), rows))

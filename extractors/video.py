"""Frame sources: RGB frames by 1-based *annotation* frame number, from a video file or an archive.

Every stage that needs pixels (flow, detection, backbones) reads them through one interface,
:class:`FrameSource`, built by :func:`open_frames`::

    src = open_frames("P01_101", fps=50.0, height=256, video_path="videos/P01_101.MP4")
    src.n_frames                     # annotation frames in the video
    src.size                         # (width, height) of the returned frames, e.g. (456, 256)
    x = src.get([1, 2, 500])         # (3, 256, 456, 3) uint8 RGB

Two implementations stand behind it:

* :class:`VideoFrameSource` decodes the video with decord. Annotation frame ``n`` is the decoded
  frame whose presentation time is nearest to ``(n - 1) / fps`` (DESIGN section 3), where
  ``fps`` is the *annotation* frame rate (:func:`annotation_fps`) and times are counted from the
  first decoded frame; a tie goes to the earlier frame. This works for variable-frame-rate files
  and for files whose container rate differs from the annotation rate (frames are duplicated or
  skipped). Against the frames EPIC's extraction command writes (``ffmpeg -r 60`` / ``-r 50``)
  it agrees frame for frame when up-sampling, and for 59.94 -> 60 fps except where an input
  frame sits within tens of microseconds of half-way (ffmpeg keeps the earlier one: 1 frame in 700
  in the tests); when down-sampling ffmpeg's constant-rate sync lags the nearest frame by one or
  two frames. Frames are scaled by decord (ffmpeg
  swscale) to height ``H`` keeping the aspect ratio, the width rounded to an even number as
  ffmpeg's ``scale=-2:H`` does (1920x1080 -> 456x256). A display matrix that turns the picture
  by 90, 180 or 270 degrees (phones, some head-mounted cameras) is honoured: frames come out
  upright, as the ffmpeg program shows them, and the size follows (:func:`probe_stream`); a
  mirrored or other-angle matrix is an error. The number of annotation frames uses the header's
  exact duration where it agrees with decord's float32 timestamps
  (:func:`annotation_frame_count`), so a 59.94 fps clip of 240 frames has 240, not 241.
* :class:`ArchiveFrameSource` reads an official frame archive (an uncompressed tar of 1-based
  ``frame_%010d.jpg``, e.g. ``P01/rgb_frames/P01_101.tar``): file ``frame_n`` *is* annotation
  frame ``n``. Members are found once (:class:`TarIndex`, two integer arrays, flat memory) and
  read by seeking.

:func:`iter_frame_batches` streams any list of frame numbers in bounded chunks. Sort requests
per video where possible: a random access costs a seek to the previous keyframe.

Errors (missing, empty, truncated or corrupt files, frame numbers past the end) raise
:class:`FrameSourceError` with the file name in the message.
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from m3em.epic.errors import InputError

#: ``decode.annotation_fps`` values. ``table``: the fps column of the video table *is* the
#: annotation rate (the demo, and any dataset whose table lists it). ``epic_release``: EPIC's
#: released frames were resampled to 60 fps for EPIC-55 videos (``PXX_YY``) and 50 fps for the
#: extension (``PXX_1YY``), whatever the container says (59.94, 29.97, 48, 90 in
#: ``EPIC_100_video_info.csv``); the annotation frame numbers follow the released frames
#: (stop_frame / stop_timestamp is 60.00 and 50.00 on the official splits).
ANNOTATION_FPS_RULES: tuple[str, ...] = ("table", "epic_release")

_FRAME_NAME = re.compile(r"(?:^|/)frame_(?P<n>\d+)\.jpe?g$")
_EPIC_VIDEO_ID = re.compile(r"P\d{2}_(\d{2,3})")


class FrameSourceError(RuntimeError, InputError):
    """A video or frame archive that cannot give the requested frames; the message names the file."""


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """The ``decode:`` config section.

    Attributes:
        height: output frame height in pixels (EPIC: 256, giving 456x256 for 16:9 video).
        batch_size: frames decoded per call by streaming consumers (memory vs. seek overhead).
        annotation_fps: rule giving the annotation frame rate, one of :data:`ANNOTATION_FPS_RULES`.
        threads: decoder threads (0: decord's automatic choice).
    """

    height: int = 256
    batch_size: int = 64
    annotation_fps: str = "table"
    threads: int = 0


@runtime_checkable
class FrameSource(Protocol):
    """RGB frames of one video addressed by 1-based annotation frame number.

    Attributes:
        video_id: the video's id (e.g. ``P01_101``).
        path: the file frames come from.
        fps: annotation frame rate (frame ``n`` is at time ``(n - 1) / fps``).
        n_frames: number of annotation frames; valid frame numbers are ``1..n_frames``.
        size: ``(width, height)`` of the frames :meth:`get` returns.
    """

    video_id: str
    path: Path
    fps: float
    n_frames: int
    size: tuple[int, int]

    def get(self, frame_numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``frame_numbers`` (any order, repeats allowed) as ``(N, H, W, 3)`` uint8 RGB."""
        ...


def annotation_fps(video_id: str, table_fps: float, rule: str) -> float:
    """The annotation frame rate of ``video_id`` under ``rule`` (see :data:`ANNOTATION_FPS_RULES`).

    Args:
        video_id: the video id.
        table_fps: the fps column of the video table (``EpicAnnotations.videos``).
        rule: ``table`` or ``epic_release``.
    """
    if rule == "table":
        if not table_fps > 0:
            raise FrameSourceError(f"{video_id}: video table fps must be positive, got {table_fps}")
        return float(table_fps)
    if rule == "epic_release":
        m = _EPIC_VIDEO_ID.fullmatch(video_id)
        if m is None:
            raise FrameSourceError(
                f"{video_id}: annotation_fps rule 'epic_release' needs an EPIC video id (PXX_YY or PXX_1YY)"
            )
        return 50.0 if len(m.group(1)) == 3 else 60.0
    raise FrameSourceError(f"unknown annotation_fps rule {rule!r}; known: {list(ANNOTATION_FPS_RULES)}")


def output_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """``(W, H)`` after scaling ``width x height`` to ``target_height`` keeping the aspect ratio.

    The width is rounded to the nearest even number like ffmpeg's ``scale=-2:H``
    (``2 * round(H * width / (2 * height))``, halves rounded up): 1920x1080 -> 456x256,
    1920x1440 -> 342x256.
    """
    if width <= 0 or height <= 0 or target_height <= 0:
        raise ValueError(f"sizes must be positive, got {width}x{height} -> height {target_height}")
    half = (target_height * width) / (2 * height)
    return max(2, 2 * int(np.floor(half + 0.5))), int(target_height)


def nearest_frame_indices(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame whose time is nearest to each of ``times``; ties go to the earlier frame.

    Args:
        timestamps: ``(F,)`` non-decreasing presentation times of the decoded frames (seconds).
        times: ``(N,)`` query times (seconds).

    Returns:
        ``(N,)`` int64 indices into ``timestamps``.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    right = np.clip(np.searchsorted(ts, t, side="right"), 1, len(ts) - 1) if len(ts) > 1 else None
    if right is None:
        return np.zeros(t.shape, dtype=np.int64)
    left = right - 1
    # 1 microsecond of slack so that float noise in container timestamps never breaks a tie
    # towards the later frame.
    take_right = (ts[right] - t) < (t - ts[left]) - 1e-6
    return np.where(take_right, right, left).astype(np.int64)


def _check_numbers(frame_numbers: Sequence[int] | np.ndarray, n_frames: int, path: Path) -> np.ndarray:
    arr = np.asarray(frame_numbers)
    if arr.ndim != 1:
        raise FrameSourceError(f"{path}: frame numbers must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise FrameSourceError(f"{path}: frame numbers must be integers, got {arr[:5].tolist()}...")
    arr = arr.astype(np.int64)
    bad = (arr < 1) | (arr > n_frames)
    if bad.any():
        raise FrameSourceError(
            f"{path}: frame number(s) {arr[bad][:5].tolist()} outside 1..{n_frames} "
            f"(the video has {n_frames} annotation frames)"
        )
    return arr


@dataclasses.dataclass(frozen=True)
class StreamProbe:
    """What the container header (and the first frame's side data) says about the video stream.

    Attributes:
        width, height: frame size as displayed, i.e. after :attr:`rotation`.
        rotation: counter-clockwise rotation (degrees: 0, 90, 180 or 270) the display matrix
            asks for before display.
        time_base: seconds per timestamp tick, if the stream states one.
        duration_ticks: the stream's duration in ticks, if the header states it (MP4/MOV do).
    """

    width: int
    height: int
    rotation: int
    time_base: Fraction | None
    duration_ticks: int | None


def display_rotation(matrix: Sequence[int], path: Path) -> int:
    """Counter-clockwise rotation (0, 90, 180, 270) of a display matrix; an error for anything else.

    Args:
        matrix: the 9 int32 values of ffmpeg's display matrix (``libavutil/display.h``: 16.16
            fixed point, row-major ``a b u / c d v / x y w``; a source pixel ``(p, q)`` is shown
            at ``(a p + c q, b p + d q)``).
        path: the video, for messages.

    Mirrored matrices (``-display_hflip`` / ``-display_vflip``) and angles that are not a
    multiple of 90 degrees are refused: decord applies only a pure rotation, so their frames
    would come out mirrored or skewed.
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0:
        raise FrameSourceError(f"{path}: display matrix {list(matrix)} is singular")
    a, b, c, d = (round(v / scale, 3) for v in (a, b, c, d))
    # the four proper rotations by a multiple of 90 degrees, as (a, b, c, d)
    rotations = {(1, 0, 0, 1): 0, (0, -1, 1, 0): 90, (-1, 0, 0, -1): 180, (0, 1, -1, 0): 270}
    if (a, b, c, d) in rotations:
        return rotations[(a, b, c, d)]
    what = "mirrors the picture" if a * d - b * c < 0 else "is not a rotation by a multiple of 90 degrees"
    raise FrameSourceError(f"{path}: the video's display matrix {list(matrix)} {what}; only rotations by "
                           "0/90/180/270 degrees are supported (re-encode the video upright first)")


def probe_stream(path: Path) -> StreamProbe:
    """Read the video stream decord will pick: size, display rotation and duration (see :class:`StreamProbe`).

    PyAV reads the header and decodes the first frame, whose side data carries the display
    matrix (decord would need a second full open, which scans the whole file to index it).
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameSourceError(f"{path}: no video stream (zero-length or audio-only file)")
            stream = container.streams.best("video")
            w, h = stream.codec_context.width, stream.codec_context.height
            if not w or not h:
                raise FrameSourceError(f"{path}: video stream has no frame size (zero-length or corrupt file)")
            time_base = Fraction(stream.time_base) if stream.time_base else None
            duration = int(stream.duration) if stream.duration is not None and stream.duration > 0 else None
            frame = next(container.decode(stream), None)
            if frame is None:
                raise FrameSourceError(f"{path}: the video stream has no frames")
            matrix = [np.frombuffer(bytes(sd), dtype=np.int32).tolist() for sd in frame.side_data
                      if sd.type == av.sidedata.sidedata.Type.DISPLAYMATRIX]
    except FrameSourceError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends carry ffmpeg's message
        raise FrameSourceError(f"{path}: cannot open video (truncated or corrupt): {exc}") from exc
    rotation = display_rotation(matrix[0], path) if matrix else 0
    if rotation in (90, 270):
        w, h = h, w
    return StreamProbe(int(w), int(h), rotation, time_base, duration)


def annotation_frame_count(end_s: float, fps: float, resolution_s: float) -> int:
    """Annotation frames ``n = 1, 2, ...`` whose time ``(n - 1) / fps`` lies before the end of the video.

    Args:
        end_s: end of the last decoded frame, seconds from the first frame.
        fps: annotation frame rate.
        resolution_s: how precisely ``end_s`` is known (half a timestamp tick, or the float32
            rounding of decord's timestamps): a frame time within it of the end counts as the
            end, not before it. Without it a 59.94 fps clip of 240 frames, whose end 4.004 s
            decord reports as float32 4.0040002, would get a 241st frame.
    """
    # 1e-6 frame of slack for an fps that is itself rounded (a table's 59.9400599400599).
    return max(0, int(np.ceil((end_s - resolution_s) * fps - 1e-6)))


class VideoFrameSource:
    """Frames of a video file decoded with decord (see the module docstring for the mapping).

    Args:
        path: the video file.
        video_id: its id.
        fps: annotation frame rate.
        height: output height (width follows the aspect ratio, even).
        threads: decoder threads (0: automatic).
    """

    def __init__(self, path: str | Path, video_id: str, fps: float, height: int, threads: int = 0) -> None:
        import decord  # imported here so that archive-only users do not need it

        self.path = Path(path)
        self.video_id = video_id
        if not fps > 0:
            raise FrameSourceError(f"{self.path}: annotation fps must be positive, got {fps}")
        self.fps = float(fps)
        if not self.path.is_file():
            raise FrameSourceError(f"{self.path}: video file not found")
        if self.path.stat().st_size == 0:
            raise FrameSourceError(f"{self.path}: video file is empty (0 bytes)")
        probe = probe_stream(self.path)
        #: counter-clockwise rotation applied to the decoded frames (the display matrix's).
        self.rotation = probe.rotation
        # decord applies a pure display rotation itself (CPU context) and scales to the size
        # asked for, so the size asked for is the upright one.
        self.size = output_size(probe.width, probe.height, height)
        try:
            self._reader = decord.VideoReader(
                str(self.path), ctx=decord.cpu(0), width=self.size[0], height=self.size[1], num_threads=threads
            )
            n_decoded = len(self._reader)
            if n_decoded == 0:
                raise FrameSourceError(f"{self.path}: the video stream has no frames")
            stamps = self._reader.get_frame_timestamp(np.arange(n_decoded))
        except FrameSourceError:
            raise
        except Exception as exc:  # decord raises RuntimeError / DECORDError with ffmpeg's text
            raise FrameSourceError(f"{self.path}: cannot open video (missing, truncated or corrupt): {exc}") from exc
        stamps = np.asarray(stamps, dtype=np.float64).reshape(n_decoded, 2)
        start = stamps[:, 0]
        if np.any(np.diff(start) < 0):
            raise FrameSourceError(f"{self.path}: frame timestamps are not increasing; cannot map frame numbers")
        t0 = start[0]
        #: ``(F,)`` presentation time of each decoded frame, seconds from the first frame.
        self.timestamps = start - t0
        end = stamps[-1, 1] - t0
        if not end > self.timestamps[-1]:  # unknown last-frame duration: assume the median step
            step = float(np.median(np.diff(self.timestamps))) if n_decoded > 1 else 1.0 / self.fps
            end = self.timestamps[-1] + step
        # decord's timestamps are float32 seconds: ~5e-7 s off at 4 s, ~2e-4 s at an hour.
        resolution = 4.0 * float(np.spacing(np.float32(max(abs(stamps[-1, 1]), abs(t0), 1.0))))
        tb = probe.time_base
        if tb is not None and probe.duration_ticks is not None:
            # The header's duration in ticks is exact (MP4/MOV); take it where it agrees with the
            # decoded end, from the first frame (t0 is a few ticks at most, exact after rounding).
            exact = float(probe.duration_ticks * tb - round(Fraction(float(t0)) / tb) * tb)
            if abs(exact - end) <= resolution:
                end, resolution = exact, 0.0
        if tb is not None:  # containers round timestamps to whole ticks
            resolution = max(resolution, float(tb) / 2)
        #: end of the last frame (seconds from the first frame).
        self.duration = float(end)
        # Annotation frame n exists while its time (n-1)/fps falls before the end of the video.
        self.n_frames = annotation_frame_count(self.duration, self.fps, resolution)

    def frame_indices(self, frame_numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decoded-frame index (0-based) shown at each annotation frame number; ``(N,)`` int64."""
        arr = _check_numbers(frame_numbers, self.n_frames, self.path)
        return nearest_frame_indices(self.timestamps, (arr - 1) / self.fps)

    def get(self, frame_numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``frame_numbers`` as ``(N, H, W, 3)`` uint8 RGB (see :class:`FrameSource`)."""
        idx = self.frame_indices(frame_numbers)
        w, h = self.size
        if idx.size == 0:
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            batch = self._reader.get_batch(unique.tolist()).asnumpy()
        except Exception as exc:
            raise FrameSourceError(
                f"{self.path}: decoding frames {unique[:3].tolist()}... failed (truncated or corrupt video): {exc}"
            ) from exc
        if batch.shape != (len(unique), h, w, 3):
            raise FrameSourceError(f"{self.path}: decoder returned shape {batch.shape}, expected {(len(unique), h, w, 3)}")
        return np.ascontiguousarray(batch[inverse.reshape(-1)])

    def __repr__(self) -> str:
        return f"VideoFrameSource({self.path}, fps={self.fps}, n_frames={self.n_frames}, size={self.size})"


class TarIndex:
    """Where each numbered member of an uncompressed tar lies, for random access by number.

    Keeps two ``int64`` arrays (offset and size of member ``n``'s data) instead of one
    ``TarInfo`` per member: EPIC archives hold up to ~10^5-10^6 members and several of them are
    open at once in data-loader workers. Members are read with a plain ``seek`` + ``read``.

    Args:
        path: the tar file (uncompressed, like EPIC's releases).
        pattern: regex with named groups ``n`` (the 1-based number) and optionally ``key``
            (e.g. ``u`` or ``v``), searched in each member name.
        keys: the values of ``key`` every number must have (``("",)`` without a key group).
        what: the kind of archive, for messages.
        layout: the members expected, for messages (e.g. ``frame_%010d.jpg files``).
        error: the exception class raised (its message names the file).
    """

    def __init__(self, path: str | Path, pattern: re.Pattern, keys: tuple[str, ...], what: str, layout: str,
                 error: type[Exception]) -> None:
        self.path = Path(path)
        self._error = error
        if not self.path.is_file():
            raise error(f"{self.path}: {what} not found")
        with open(self.path, "rb") as fh:
            magic = fh.read(6)
        if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
            raise error(f"{self.path}: compressed {what}s are not supported (EPIC's are plain tar; "
                        "random access needs an uncompressed tar)")
        found: dict[str, dict[int, tuple[int, int]]] = {k: {} for k in keys}
        self._names: dict[str, str] = {}  # one member name per key, e.g. "./u/frame_0000000001.jpg"
        try:
            with tarfile.open(self.path, mode="r:") as tar:
                while (m := tar.next()) is not None:
                    tar.members.clear()  # tarfile caches every TarInfo; memory must stay flat
                    match = pattern.search(m.name)
                    if m.isfile() and match:
                        key = match.groupdict().get("key") or ""
                        if key in found:
                            found[key][int(match.group("n"))] = (m.offset_data, m.size)
                            self._names.setdefault(key, m.name)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise error(f"{self.path}: unreadable {what} (not a tar archive, truncated or corrupt): {exc}") from exc
        first = found[keys[0]]
        if not first:
            raise error(f"{self.path}: {what} holds no {layout}")
        for k in keys[1:]:
            if set(found[k]) != set(first):
                diff = sorted(set(found[k]) ^ set(first))[:5]
                raise error(f"{self.path}: {'/ and '.join(keys)}/ hold different frames, e.g. {diff}")
        #: number of members per key; numbers run 1..n.
        self.n = max(first)
        if len(first) != self.n:
            missing = sorted(set(range(1, self.n + 1)) - set(first))[:5]
            raise error(f"{self.path}: {what} is not contiguous from 1: missing frame(s) {missing}")
        self._offset = {k: np.zeros(self.n + 1, np.int64) for k in keys}
        self._size = {k: np.zeros(self.n + 1, np.int64) for k in keys}
        for k in keys:
            for n, (off, size) in found[k].items():
                self._offset[k][n], self._size[k][n] = off, size
        del found
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def name(self, n: int, key: str = "") -> str:
        """The member name of number ``n`` (reconstructed from the first one's pattern)."""
        return re.sub(r"\d+(?=\.jpe?g$)", lambda m: f"{n:0{len(m.group(0))}d}", self._names[key])

    def read(self, n: int, key: str = "") -> bytes:
        """The bytes of member ``n`` (under ``key``)."""
        off, size = int(self._offset[key][n]), int(self._size[key][n])
        try:
            self._fh.seek(off)
            data = self._fh.read(size)
        except OSError as exc:
            raise self._error(f"{self.path}: cannot read {self.name(n, key)}: {exc}") from exc
        if len(data) != size:
            raise self._error(f"{self.path}: {self.name(n, key)} is cut short (truncated archive)")
        return data

    def close(self) -> None:
        self._fh.close()


class ArchiveFrameSource:
    """Frames from an official RGB frame archive: a tar of 1-based ``frame_%010d.jpg`` (any folder prefix).

    Args:
        path: the tar file (uncompressed).
        video_id: its video id.
        fps: annotation frame rate (frame ``n`` of the archive is annotation frame ``n``).
        height: output height; frames of another height are resized (INTER_AREA, even width).
            ``None`` keeps the archive's size.
    """

    def __init__(self, path: str | Path, video_id: str, fps: float, height: int | None = None) -> None:
        self.path = Path(path)
        self.video_id = video_id
        self.fps = float(fps)
        self._index = TarIndex(self.path, _FRAME_NAME, ("",), "frame archive", "frame_%010d.jpg files",
                               FrameSourceError)
        self.n_frames = self._index.n
        first = self._decode(1)
        self._native = (first.shape[1], first.shape[0])
        self.size = self._native if height is None else output_size(first.shape[1], first.shape[0], height)

    def _decode(self, n: int) -> np.ndarray:
        data = self._index.read(n)
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise FrameSourceError(f"{self.path}: {self._index.name(n)} is not a readable JPEG")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def get(self, frame_numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``frame_numbers`` as ``(N, H, W, 3)`` uint8 RGB (see :class:`FrameSource`)."""
        arr = _check_numbers(frame_numbers, self.n_frames, self.path)
        w, h = self.size
        out = np.empty((len(arr), h, w, 3), dtype=np.uint8)
        cache: dict[int, np.ndarray] = {}
        for i, n in enumerate(arr.tolist()):
            if n not in cache:
                img = self._decode(n)
                if (img.shape[1], img.shape[0]) != self._native:
                    raise FrameSourceError(f"{self.path}: frame {n} is {img.shape[1]}x{img.shape[0]}, "
                                           f"frame 1 is {self._native[0]}x{self._native[1]}")
                if self.size != self._native:
                    img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
                cache[n] = img
            out[i] = cache[n]
        return out

    def close(self) -> None:
        self._index.close()

    def __repr__(self) -> str:
        return f"ArchiveFrameSource({self.path}, fps={self.fps}, n_frames={self.n_frames}, size={self.size})"


def open_frames(
    video_id: str,
    *,
    fps: float,
    height: int | None,
    video_path: str | Path | None = None,
    frames_archive: str | Path | None = None,
    threads: int = 0,
) -> FrameSource:
    """Open the frames of one video from exactly one of a video file or an official frame archive.

    Args:
        video_id: the video id.
        fps: annotation frame rate (:func:`annotation_fps`).
        height: output frame height (required for video files; ``None`` keeps an archive's size).
        video_path: a video file decodable by ffmpeg (MP4/H.264/HEVC...).
        frames_archive: a tar of ``frame_%010d.jpg``.
        threads: decoder threads for video files.
    """
    if (video_path is None) == (frames_archive is None):
        raise ValueError(f"{video_id}: give exactly one of video_path and frames_archive")
    if video_path is not None:
        if height is None:
            raise ValueError(f"{video_id}: decoding a video file needs an output height")
        return VideoFrameSource(video_path, video_id, fps, height, threads=threads)
    return ArchiveFrameSource(frames_archive, video_id, fps, height)


def iter_frame_batches(
    source: FrameSource, frame_numbers: Sequence[int] | np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(numbers, frames)`` chunks of at most ``batch_size`` frames, in the given order.

    ``frames`` is ``(n, H, W, 3)`` uint8; memory stays bounded by one chunk.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    arr = np.asarray(frame_numbers, dtype=np.int64)
    for i in range(0, len(arr), batch_size):
        chunk = arr[i : i + batch_size]
        yield chunk, source.get(chunk)

"""Flow files in the official EPIC-KITCHENS release layout: quantisation, pairing, archive I/O.

One tar per video holding ``u/frame_%010d.jpg`` (horizontal flow) and ``v/frame_%010d.jpg``
(vertical flow), 1-based, 8-bit greyscale JPEGs. A flow value ``f`` (pixels) is stored as

    pixel = round(255 * (f + B) / (2 B)),  0 if f < -B,  255 if f > B

(EPIC's ``furnari-flow``: computed in float32, rounded half to even like ``cvRound``, so zero flow
is 127.5 -> 128), and read back as ``f = pixel / 255 * 2B - B`` (:func:`dequantise_flow`). EPIC
used B = 25 for EPIC-55 and B = 8 for the extension (``reference/epic_data.md`` section 3.2):
de-quantise official archives with the bound they were written with.

Pairing (DESIGN section 3): flow frame ``k`` (1-based) is the flow from RGB frame
``(k - 1) * stride + 1`` to RGB frame ``(k - 1) * stride + 1 + dilation`` (annotation frame
numbers); :func:`flow_pairs`, :func:`n_flow_frames`, :func:`rgb_to_flow_index`.

:class:`FlowArchiveWriter` appends frames to the tar as they are computed (memory stays flat
whatever the video length) under a temporary name, renamed when complete (``m3em.epic.atomic``).
:func:`open_flow` reads our archives and the official ones alike.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from extractors.video import TarIndex
from m3em.epic.atomic import atomic_output
from m3em.epic.errors import InputError

_FLOW_NAME = re.compile(r"(?:^|/)(?P<key>[uv])/frame_(?P<n>\d+)\.jpe?g$")


class FlowArchiveError(RuntimeError, InputError):
    """An unreadable or inconsistent flow archive, or bad flow values; the message names the file."""


# ---------------------------------------------------------------------------------------------
# quantisation


def quantise_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Float flow ``(N, 2, H, W)`` (pixels; channel 0 = x) -> ``(N, H, W, 2)`` uint8 (EPIC's mapping).

    Non-finite values are an error (a solver bug must not turn into saturated pixels).
    """
    if not bound > 0:
        raise ValueError(f"flow bound must be > 0, got {bound}")
    f = np.asarray(flow)
    if f.ndim != 4 or f.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise FlowArchiveError("flow contains NaN or inf values; refusing to quantise")
    b = np.float32(bound)
    scaled = np.float32(255.0) * (f.astype(np.float32) + b) / (np.float32(2.0) * b)
    q = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(q.transpose(0, 2, 3, 1))


def dequantise_flow(pixels: np.ndarray, bound: float) -> np.ndarray:
    """uint8 flow pixels (any shape) -> float32 pixels of flow: ``pixel / 255 * 2B - B``."""
    if not bound > 0:
        raise ValueError(f"flow bound must be > 0, got {bound}")
    p = np.asarray(pixels)
    if p.dtype != np.uint8:
        raise TypeError(f"flow pixels must be uint8, got {p.dtype}")
    return (p.astype(np.float32) / np.float32(255.0) * np.float32(2.0 * bound) - np.float32(bound)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# pairing


def _check_stride_dilation(stride: int, dilation: int) -> None:
    if stride < 1 or dilation < 1:
        raise ValueError(f"stride ({stride}) and dilation ({dilation}) must be >= 1")


def n_flow_frames(n_rgb: int, stride: int, dilation: int) -> int:
    """Flow frames of a video with ``n_rgb`` RGB frames: every ``k`` whose pair fits in the video."""
    _check_stride_dilation(stride, dilation)
    return 0 if n_rgb <= dilation else (n_rgb - 1 - dilation) // stride + 1


def flow_pairs(flow_frames: Sequence[int] | np.ndarray, stride: int, dilation: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB frame numbers ``(first, second)`` of 1-based flow frames; two ``(N,)`` int64 arrays."""
    _check_stride_dilation(stride, dilation)
    k = np.asarray(flow_frames, dtype=np.int64)
    if k.size and k.min() < 1:
        raise ValueError(f"flow frame numbers are 1-based, got {int(k.min())}")
    first = (k - 1) * stride + 1
    return first, first + dilation


def rgb_to_flow_index(rgb_frames: Sequence[int] | np.ndarray | int, stride: int) -> np.ndarray:
    """Flow frame whose pair starts at or just before each RGB frame: ``(rgb - 1) // stride + 1``.

    The official conversion (``C1-Action-Recognition-TSN-TRN-TSM``,
    ``convert_rgb_to_flow_frame_idxs.py``). Near the end of a video the result can exceed the
    archive's frame count (the last ``dilation`` RGB frames start no pair); clamp with
    ``min(index, flow.n_frames)`` where a flow frame is needed for every RGB frame.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rgb = np.asarray(rgb_frames, dtype=np.int64)
    if rgb.size and rgb.min() < 1:
        raise ValueError(f"RGB frame numbers are 1-based, got {int(rgb.min())}")
    return (rgb - 1) // stride + 1


# ---------------------------------------------------------------------------------------------
# writing


def _member_name(component: str, k: int) -> str:
    return f"{component}/frame_{k:010d}.jpg"


class FlowArchiveWriter:
    """Append quantised flow frames to ``path`` (a tar in the official layout), atomically.

    Usage::

        with FlowArchiveWriter(out, jpeg_quality=95) as w:
            for chunk in ...:
                w.write(quantised_chunk)      # (n, H, W, 2) uint8, frames numbered 1, 2, ...

    Frames get consecutive numbers from 1. Nothing exists at ``path`` until the ``with`` block
    ends without error; on error the temporary file is removed.
    """

    def __init__(self, path: str | Path, jpeg_quality: int = 95) -> None:
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.path = Path(path)
        self.jpeg_quality = int(jpeg_quality)
        self.n_written = 0
        self._size: tuple[int, int] | None = None
        self._stack: ExitStack | None = None
        self._fh = None
        self._bytes = 0

    def __enter__(self) -> FlowArchiveWriter:
        # The tar stream is written by hand (headers from TarInfo.tobuf, data padded to 512-byte
        # blocks): tarfile.TarFile keeps a TarInfo per member in memory, ~0.4 kB each, which grows
        # without bound on long videos (EPIC: 2 x 100k members).
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.path))
        self._fh = self._stack.enter_context(open(tmp, "wb"))
        self._bytes = 0
        for d in ("u/", "v/"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            self._add(info, b"")
        return self

    def _add(self, info: tarfile.TarInfo, data: bytes) -> None:
        info.size = len(data)
        info.mtime = 0  # reproducible archives
        header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        pad = -len(data) % tarfile.BLOCKSIZE
        self._fh.write(header + data + b"\0" * pad)
        self._bytes += len(header) + len(data) + pad

    def _finish(self) -> None:
        # end-of-archive: two zero blocks, then zeros up to a whole record (as tarfile does)
        end = 2 * tarfile.BLOCKSIZE
        end += -(self._bytes + end) % tarfile.RECORDSIZE
        self._fh.write(b"\0" * end)

    def write(self, pixels: np.ndarray) -> None:
        """Append ``(n, H, W, 2)`` uint8 frames (channel 0 -> ``u/``, 1 -> ``v/``)."""
        if self._fh is None:
            raise RuntimeError("FlowArchiveWriter.write outside its with-block")
        p = np.asarray(pixels)
        if p.dtype != np.uint8 or p.ndim != 4 or p.shape[3] != 2:
            raise ValueError(f"{self.path}: flow pixels must be (n, H, W, 2) uint8, got {p.shape} {p.dtype}")
        size = (p.shape[2], p.shape[1])
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"{self.path}: frame size changed from {self._size} to {size}")
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        for frame in p:
            k = self.n_written + 1
            for c, comp in enumerate(("u", "v")):
                ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, c]), params)
                if not ok:
                    raise FlowArchiveError(f"{self.path}: JPEG encoding of flow frame {k} failed")
                info = tarfile.TarInfo(_member_name(comp, k))
                info.mode = 0o644
                self._add(info, buf.tobytes())
            self.n_written = k

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        stack = self._stack
        if exc_type is None and self.n_written == 0:
            self._stack = self._fh = None
            err = FlowArchiveError(f"{self.path}: no flow frames were written; refusing an empty archive")
            stack.__exit__(FlowArchiveError, err, None)  # removes the temporary file
            raise err
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:
                self._stack = self._fh = None
                stack.__exit__(type(err), err, err.__traceback__)  # removes the temporary file
                raise
        self._stack = self._fh = None
        return bool(stack.__exit__(exc_type, exc, tb))


# ---------------------------------------------------------------------------------------------
# reading


class FlowSource:
    """Flow frames of one archive (ours or an official one) by 1-based flow frame number.

    Attributes:
        path: the tar file.
        n_frames: flow frames in the archive (``1..n_frames``).
        size: ``(width, height)`` of the frames.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index = TarIndex(self.path, _FLOW_NAME, ("u", "v"), "flow archive",
                               "u/frame_%010d.jpg and v/frame_%010d.jpg files", FlowArchiveError)
        self.n_frames = self._index.n
        first = self._decode("u", 1)
        self.size = (first.shape[1], first.shape[0])

    def _decode(self, comp: str, k: int) -> np.ndarray:
        data = self._index.read(k, comp)
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FlowArchiveError(f"{self.path}: {self._index.name(k, comp)} is not a readable JPEG")
        return img

    def get(self, flow_frames: Sequence[int] | np.ndarray) -> np.ndarray:
        """Flow frames (any order, repeats allowed) as ``(N, H, W, 2)`` uint8 (channel 0 = u = x)."""
        k = np.asarray(flow_frames)
        if k.ndim != 1:
            raise FlowArchiveError(f"{self.path}: flow frame numbers must be 1-D, got shape {k.shape}")
        k = k.astype(np.int64)
        bad = (k < 1) | (k > self.n_frames)
        if bad.any():
            raise FlowArchiveError(
                f"{self.path}: flow frame number(s) {k[bad][:5].tolist()} outside 1..{self.n_frames}"
            )
        w, h = self.size
        out = np.empty((len(k), h, w, 2), dtype=np.uint8)
        for i, n in enumerate(k.tolist()):
            for c, comp in enumerate(("u", "v")):
                img = self._decode(comp, n)
                if img.shape != (h, w):
                    raise FlowArchiveError(f"{self.path}: {comp}/frame_{n:010d}.jpg is {img.shape[1]}x{img.shape[0]}, "
                                           f"expected {w}x{h}")
                out[i, :, :, c] = img
        return out

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> FlowSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FlowSource({self.path}, n_frames={self.n_frames}, size={self.size})"


def open_flow(path: str | Path) -> FlowSource:
    """Open a flow archive (``u/``, ``v/`` ``frame_%010d.jpg`` in one tar, any folder prefix)."""
    return FlowSource(path)

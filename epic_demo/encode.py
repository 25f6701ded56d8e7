"""MP4 writing through the ffmpeg binary that imageio-ffmpeg ships (H.264 video + AAC audio).

Raw RGB frames are piped to ffmpeg's stdin; the audio goes through a temporary 16-bit WAV. The
encode is made reproducible: one thread everywhere (x264's frame threads and lookahead otherwise
make the bitstream depend on scheduling), bit-exact flags on the muxer and both encoders, and no
metadata (no creation time, no encoder string), so the same frames give the same file.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from m3em.epic.atomic import atomic_output
from m3em.epic.errors import InputError


class EncodeError(RuntimeError, InputError):
    """ffmpeg failed; the message carries the file and ffmpeg's own error output."""


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.tobytes())


def ffmpeg_command(out: Path, wav: Path, width: int, height: int, fps: int, crf: int) -> list[str]:
    """The ffmpeg command line that reads raw RGB frames from stdin and writes ``out``."""
    return [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
        "-i", str(wav),
        "-map", "0:v:0", "-map", "1:a:0",
        "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
        # One key frame per second keeps random access (decord seeks) cheap, like camera footage.
        "-g", str(fps), "-threads", "1", "-sws_flags", "bicubic+accurate_rnd+bitexact",
        "-c:a", "aac", "-b:a", "96k",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-f", "mp4", str(out),
    ]


class Mp4Writer:
    """Context manager: ``with Mp4Writer(path, ...) as w: w.write(frame)``; atomic on success.

    Args:
        path: final ``.MP4`` path (written under a temporary name, renamed when ffmpeg succeeded).
        width, height, fps: video geometry; every frame must be ``(height, width, 3)`` uint8 RGB.
        audio: mono samples in [-1, 1] for the whole video.
        sample_rate: of ``audio``.
        crf: x264 quality (lower = better; 18 keeps the sensor noise visible).
    """

    def __init__(self, path: str | Path, *, width: int, height: int, fps: int, audio: np.ndarray,
                 sample_rate: int, crf: int = 18) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.audio, self.sample_rate, self.crf = audio, sample_rate, crf
        self.n_written = 0

    def __enter__(self) -> Mp4Writer:
        self._atomic = atomic_output(self.path)
        tmp_video = self._atomic.__enter__()
        self._tmpdir = tempfile.TemporaryDirectory(prefix=".demo-audio-", dir=self.path.parent)
        wav = Path(self._tmpdir.name) / "audio.wav"
        write_wav(wav, self.audio, self.sample_rate)
        self._stderr = open(Path(self._tmpdir.name) / "ffmpeg.log", "w+b")
        cmd = ffmpeg_command(tmp_video, wav, self.width, self.height, self.fps, self.crf)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        return self

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: frame {self.n_written + 1} is {frame.shape} {frame.dtype}, "
                             f"expected ({self.height}, {self.width}, 3) uint8")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError as exc:
            raise EncodeError(f"{self.path}: ffmpeg exited early: {self._log()}") from exc
        self.n_written += 1

    def _log(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace").strip() or "(no output)"

    def __exit__(self, exc_type, exc, tb) -> None:
        failure: EncodeError | None = None
        try:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = self._proc.wait()
            if exc_type is None and rc != 0:
                failure = EncodeError(f"{self.path}: ffmpeg failed with exit code {rc}: {self._log()}")
        finally:
            self._stderr.close()
            self._tmpdir.cleanup()
        if exc_type is None and failure is None:
            self._atomic.__exit__(None, None, None)  # rename onto the final path
        elif failure is not None:
            self._atomic.__exit__(EncodeError, failure, None)  # removes the partial file
            raise failure
        else:
            self._atomic.__exit__(exc_type, exc, tb)  # removes the partial file; the error propagates

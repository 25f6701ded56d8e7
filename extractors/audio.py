"""Audio: the video's soundtrack as mono 24 kHz samples and TBN's log-spectrograms.

Follows TBN / EPIC-Fusion (``ekazakos/temporal-binding-network``: ``extract_audio.py`` writes mono
24 kHz 16-bit WAVs with ``ffmpeg -vn -acodec pcm_s16le -ac 1 -ar 24000``; ``dataset.py`` loads
them with librosa, cuts a 1.279 s window and takes ``log(|STFT|^2 + 1e-6)``). :func:`load_audio`
runs that same ffmpeg command (the binary of the ``imageio-ffmpeg`` package) and reads its 16-bit
output from a pipe instead of a WAV file, so the samples are the ones TBN's WAV holds, bit for bit:

* mono is the mean of the two channels of a stereo track, ``(L + R) / 2`` (ffmpeg's down-mix,
  normalised so that the gains sum to 1 because the output is 16-bit; other layouts get ffmpeg's
  standard down-mix to mono, as TBN's WAVs did);
* resampling is ffmpeg's default (swresample), with ffmpeg's own alignment and encoder-delay handling;
* the samples are the 16-bit values / 32768, as librosa reads a 16-bit WAV.

An in-process decoder does not give this: decord's ``AudioReader(mono=True)`` asks swresample for
float output, for which ffmpeg does not normalise the down-mix, so stereo comes out as
``(L + R) / sqrt(2)`` (+log 2 on every spectrogram bin), and its resampled signal lags by 16
samples at 24 kHz (docs/decoding.md).

For a time ``t`` (annotation frame ``n`` is at ``t = (n - 1) / fps``):

* window (TBN's rule, exactly): samples ``round((t - h) * sr)`` to ``round((t + h) * sr)``
  with ``h`` = ``window_s / 2`` rounded down to the ms = 0.639 s (30,672 samples at 24 kHz). If ``t - h < 0`` the first
  ``round(window_s * sr)`` samples (``window_s`` = 1.279 s, 30,696) are used instead; if
  ``t + h`` is past the end of the file, the last ``round(window_s * sr)``. A file shorter than
  that is zero-padded at the end.
* STFT (librosa): ``n_fft`` 511, Hann window of ``win_length`` 240 (10 ms), ``hop_length`` 120
  (5 ms), centred frames, ``pad_mode='constant'`` (zeros).
* ``log(|S|^2 + eps)``, eps 1e-6: ``(n_fft // 2 + 1) x T`` = 256 x 256. With the defaults T is
  exactly 256 for both window lengths (``1 + 30672 // 120 = 1 + 30696 // 120``); for other
  settings the time axis is cut to ``n_time`` from the right, or padded on the right with
  ``log(eps)`` (silence).

The first/last-window rule is for windows near the real ends of a complete file. A truncated file
is an error: if the decoded audio is more than :data:`END_TOLERANCE_S` shorter than the duration
the container states for the track, :func:`load_audio` raises :class:`AudioError` naming the file;
and a spectrogram centred more than :data:`END_TOLERANCE_S` past the end of the decoded samples
is an error, never a repeat of the last window. (The tolerance absorbs the legitimate mismatch
of a few ms between the ends of a file's audio and video tracks: codec frame sizes, the last video
frame.)

A file without an audio track raises :class:`AudioError` naming the file (turn audio off in the
config with ``audio.enabled: false`` to run such videos).
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from m3em.epic.errors import InputError

#: Seconds by which decoded audio may fall short of the track's stated duration, and by which a
#: spectrogram's centre may lie past the end of the decoded audio, before either is an error.
END_TOLERANCE_S = 0.1


class AudioError(RuntimeError, InputError):
    """A missing or unreadable file, or one without an audio track; the message names the file."""


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """The ``audio:`` config section (defaults: TBN / EPIC-Fusion).

    Attributes:
        enabled: whether the audio stream is computed at all.
        sample_rate: resampling rate in Hz.
        window_s: window length, seconds (TBN: 1.279). Windows centred on a frame time span
            +- :attr:`half_window_s`; windows at the start and end of a file are ``window_s`` long.
        n_fft: FFT size (frequency bins = n_fft // 2 + 1).
        win_length: Hann window length in samples (10 ms at 24 kHz).
        hop_length: hop in samples (5 ms at 24 kHz).
        n_time: time frames kept per spectrogram.
        eps: added to the power before the log.
    """

    enabled: bool = True
    sample_rate: int = 24000
    window_s: float = 1.279
    n_fft: int = 511
    win_length: int = 240
    hop_length: int = 120
    n_time: int = 256
    eps: float = 1e-6

    @property
    def half_window_s(self) -> float:
        """Half-width of a centred window: ``window_s / 2`` rounded down to the millisecond.

        TBN hard-codes +-0.639 s around the centre with 1.279 s edge windows; this rule gives
        exactly that and scales to other window lengths.
        """
        return float(np.floor(self.window_s * 500 + 1e-9) / 1000)

    @property
    def window_samples(self) -> int:
        """Samples of an edge window: ``round(window_s * sample_rate)``."""
        return int(round(self.window_s * self.sample_rate))

    @property
    def n_freq(self) -> int:
        """Frequency bins of a spectrogram."""
        return self.n_fft // 2 + 1


def _stated_duration(path: Path) -> tuple[int, float | None]:
    """Index and stated duration (seconds, ``None`` if unstated) of the audio stream ffmpeg picks.

    Reads the container header only (PyAV). The stream is the one ffmpeg's automatic selection
    (TBN's command has no ``-map``) takes: a stream marked default first, then the most channels,
    then the lowest index; :func:`load_audio` decodes exactly that stream.
    """
    import av

    try:
        with av.open(str(path)) as container:
            streams = list(container.streams.audio)
            if not streams:
                raise AudioError(f"{path}: the file has no audio track "
                                 "(set audio.enabled: false in the config to run without audio)")
            default = av.stream.Disposition.default
            stream = max(streams, key=lambda st: (bool(st.disposition & default), st.codec_context.channels,
                                                  -st.index))
            if stream.duration is not None and stream.time_base is not None:
                return stream.index, float(Fraction(stream.duration) * stream.time_base)
            if container.duration is not None:  # e.g. Matroska states only the file's duration
                return stream.index, container.duration / 1_000_000
            return stream.index, None
    except AudioError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends carry ffmpeg's message
        raise AudioError(f"{path}: cannot decode audio (truncated or corrupt file?): {exc}") from exc


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode the audio track of ``path`` to mono float32 samples at ``sample_rate``; shape ``(S,)``.

    Runs TBN's ``ffmpeg -vn -ac 1 -ar <rate> -acodec pcm_s16le`` (module docstring) and returns
    the 16-bit samples / 32768. Raises :class:`AudioError` naming the file if it is missing,
    empty, without an audio track, undecodable, or decodes to more than :data:`END_TOLERANCE_S`
    less than the duration its container states (a truncated file).
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    index, stated = _stated_duration(path)
    # "file:" keeps a name with a colon from being read as a protocol.
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-i", f"file:{path}", "-map", f"0:{index}", "-vn", "-ac", "1", "-ar", str(int(sample_rate)),
           "-acodec", "pcm_s16le", "-f", "s16le", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    log = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise AudioError(f"{path}: cannot decode audio (truncated or corrupt file?): {log[-500:]}")
    samples = np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / np.float32(32768)
    if samples.size == 0:
        raise AudioError(f"{path}: the audio track has no samples")
    decoded = samples.size / sample_rate
    if stated is not None and decoded < stated - END_TOLERANCE_S:
        detail = f" (ffmpeg: {log.splitlines()[0][:200]})" if log else ""
        raise AudioError(f"{path}: the audio track decodes to {decoded:.3f} s but the container states "
                         f"{stated:.3f} s: truncated or corrupt file{detail}")
    return samples


def window_bounds(n_samples: int, centre_s: float, cfg: AudioConfig) -> tuple[int, int]:
    """``[start, stop)`` sample range of the window centred on ``centre_s`` (TBN's rule, see module doc)."""
    sr = cfg.sample_rate
    left_s, right_s = centre_s - cfg.half_window_s, centre_s + cfg.half_window_s
    n_edge = min(cfg.window_samples, n_samples)
    if left_s < 0:
        return 0, n_edge
    if right_s > n_samples / sr:
        return n_samples - n_edge, n_samples
    return int(round(left_s * sr)), int(round(right_s * sr))


def log_spectrogram(window: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """TBN's log-power spectrogram of one window; ``(n_freq, n_time)`` float32 (256 x 256)."""
    import librosa

    x = np.asarray(window, dtype=np.float32)
    spec = librosa.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                        window="hann", center=True, pad_mode="constant")
    logp = np.log(np.abs(spec) ** 2 + cfg.eps).astype(np.float32)
    t = logp.shape[1]
    if t >= cfg.n_time:
        return np.ascontiguousarray(logp[:, : cfg.n_time])
    pad = np.full((logp.shape[0], cfg.n_time - t), np.log(cfg.eps), dtype=np.float32)
    return np.concatenate([logp, pad], axis=1)


class AudioTrack:
    """The soundtrack of one video, ready to cut spectrograms from.

    Args:
        samples: ``(S,)`` mono samples at ``cfg.sample_rate`` (:func:`load_audio`).
        cfg: the audio section.
        path: the media file they came from (for messages), if any.

    Attributes:
        samples: ``(S,)`` float32.
        duration: ``S / sample_rate`` seconds.
    """

    def __init__(self, samples: np.ndarray, cfg: AudioConfig, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.cfg = cfg
        self.samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.samples.size == 0:
            raise AudioError(f"{self.path or '<samples>'}: no audio samples")
        self.duration = self.samples.size / cfg.sample_rate

    def spectrograms(self, times_s: Sequence[float] | np.ndarray) -> np.ndarray:
        """Log-spectrograms centred on ``times_s`` (seconds); ``(N, n_freq, n_time)`` float32.

        A centre more than :data:`END_TOLERANCE_S` past :attr:`duration` is an :class:`AudioError`.
        """
        times = np.asarray(times_s, dtype=np.float64).reshape(-1)
        late = times > self.duration + END_TOLERANCE_S
        if late.any():
            raise AudioError(
                f"{self.path or '<samples>'}: spectrogram(s) centred at {times[late][:3].round(3).tolist()} s "
                f"past the end of the audio ({self.duration:.3f} s decoded): the audio track is shorter "
                "than the video (truncated file?)"
            )
        out = np.empty((times.size, self.cfg.n_freq, self.cfg.n_time), dtype=np.float32)
        for i, t in enumerate(times.tolist()):
            start, stop = window_bounds(self.samples.size, t, self.cfg)
            window = self.samples[start:stop]
            if window.size < self.cfg.window_samples and self.samples.size < self.cfg.window_samples:
                window = np.pad(window, (0, self.cfg.window_samples - window.size))  # file shorter than a window
            out[i] = log_spectrogram(window, self.cfg)
        return out

    def spectrograms_at_frames(self, frame_numbers: Sequence[int] | np.ndarray, fps: float) -> np.ndarray:
        """Spectrograms at 1-based annotation frames (time ``(n - 1) / fps``); ``(N, n_freq, n_time)``."""
        numbers = np.asarray(frame_numbers, dtype=np.int64).reshape(-1)
        if numbers.size and numbers.min() < 1:
            raise AudioError(f"{self.path}: frame numbers are 1-based, got {int(numbers.min())}")
        return self.spectrograms((numbers - 1) / float(fps))


def open_audio(path: str | Path, cfg: AudioConfig) -> AudioTrack:
    """Decode the audio of ``path``; an error if ``cfg.enabled`` is false (callers check it first)."""
    if not cfg.enabled:
        raise AudioError(f"{path}: audio is disabled in the config (audio.enabled: false)")
    return AudioTrack(load_audio(path, cfg.sample_rate), cfg, path)

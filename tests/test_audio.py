"""Audio decoding (TBN's ffmpeg command, 24 kHz mono) and TBN's 256 x 256 log-spectrograms."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from test_video import FFMPEG, write_pattern_video

from extractors.audio import (
    END_TOLERANCE_S,
    AudioConfig,
    AudioError,
    AudioTrack,
    load_audio,
    log_spectrogram,
    open_audio,
    window_bounds,
)

CFG = AudioConfig()


def sine_file(path, freq: float, seconds: float, rate: int = 48000, fmt: str = "aac"):
    codec = ["-c:a", "aac"] if fmt == "aac" else ["-c:a", "pcm_s16le"]
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:sample_rate={rate}", "-t", str(seconds), *codec, str(path)], check=True)
    return path


def test_defaults_are_tbn():
    assert CFG.window_samples == 30696 and CFG.n_freq == 256
    assert (CFG.win_length, CFG.hop_length, CFG.n_fft) == (240, 120, 511)


def test_window_bounds_centre_and_edges():
    n = CFG.window_samples
    total = 24000 * 10
    assert window_bounds(total, 5.0, CFG) == (120000 - 15336, 120000 + 15336)  # +-0.639 s
    assert window_bounds(total, 0.3, CFG) == (0, n)  # crosses the start: first 1.279 s
    assert window_bounds(total, 9.9, CFG) == (total - n, total)  # crosses the end: last 1.279 s
    assert window_bounds(total, 10 - 0.639, CFG) == (total - 30672, total)  # ends exactly at the end
    assert window_bounds(1000, 0.0, CFG) == (0, 1000)  # file shorter than one window


def test_resampled_mono_track_and_spectrogram_peak(tmp_path):
    # 48 kHz stereo WAV with a 1500 Hz tone -> 24 kHz mono; the peak bin is 1500 * 511 / 24000 ~ 32
    path = tmp_path / "tone.wav"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=1500:sample_rate=48000", "-ac", "2", "-t", "3", "-c:a", "pcm_s16le", str(path)],
                   check=True)
    track = open_audio(path, CFG)
    assert abs(track.samples.size - 3 * 24000) <= 1 and track.samples.dtype == np.float32
    specs = track.spectrograms([0.0, 1.5, 3.0])
    assert specs.shape == (3, 256, 256) and specs.dtype == np.float32
    assert np.bincount(specs[1].argmax(axis=0)).argmax() == round(1500 * 511 / 24000)
    # windows crossing the start / end equal the first / last 1.279 s window
    np.testing.assert_array_equal(specs[0], track.spectrograms([0.1])[0])
    np.testing.assert_array_equal(specs[2], track.spectrograms([2.9])[0])
    # annotation frames: frame 76 at 50 fps is t = 1.5 s
    np.testing.assert_array_equal(track.spectrograms_at_frames([76], 50.0)[0], specs[1])


def test_log_spectrogram_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(CFG.window_samples).astype(np.float32)
    got = log_spectrogram(x, CFG)
    # direct numpy STFT: centred frames, zero padding of n_fft // 2, 240-sample periodic Hann
    # centred in the 511-sample frame (librosa pads the window to n_fft symmetrically)
    pad = np.pad(x, (255, 255))
    win = np.zeros(511)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(240) / 240)
    off = (511 - 240) // 2
    win[off : off + 240] = hann
    frames = np.stack([pad[j * 120 : j * 120 + 511] * win for j in range(256)], axis=1)
    ref = np.log(np.abs(np.fft.rfft(frames, axis=0)) ** 2 + 1e-6)
    assert got.shape == ref.shape == (256, 256)
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-3)


def test_window_is_centred_on_the_frame_time():
    # one click at t = 2.0 s in 4 s of silence: the spectrogram centred on 2.0 s has it in the
    # middle column (window start 2.0 - 0.639 s -> click at sample 15336 -> frame 15336 / 120 ~ 128)
    samples = np.zeros(4 * 24000, np.float32)
    samples[48000] = 1.0
    spec = AudioTrack(samples, CFG).spectrograms([2.0, 2.1])
    assert int(spec[0].mean(axis=0).argmax()) == 128
    assert int(spec[1].mean(axis=0).argmax()) == 128 - 20  # 0.1 s later: 20 hops of 5 ms earlier


def test_short_file_is_zero_padded(tmp_path):
    track = open_audio(sine_file(tmp_path / "short.wav", 440, 0.5, fmt="wav"), CFG)
    spec = track.spectrograms([0.25])[0]
    assert spec.shape == (256, 256)
    assert np.allclose(spec[:, -20:], np.log(1e-6), atol=1e-3)  # the padding is silence


def test_video_with_audio(tmp_path):
    path = write_pattern_video(tmp_path / "av.mp4", 50, 50, size=(64, 36), audio_hz=2000)
    track = open_audio(path, CFG)
    assert abs(track.duration - 1.0) < 0.15  # -shortest stops at an AAC frame boundary
    assert np.bincount(track.spectrograms([0.5])[0].argmax(axis=0)).argmax() == round(2000 * 511 / 24000)


def test_errors_name_the_file(tmp_path):
    silent = write_pattern_video(tmp_path / "silent.mp4", 10, 50, size=(64, 36))
    with pytest.raises(AudioError, match=r"silent\.mp4: the file has no audio track .*audio\.enabled: false"):
        open_audio(silent, CFG)
    with pytest.raises(AudioError, match=r"missing\.mp4: file not found"):
        open_audio(tmp_path / "missing.mp4", CFG)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.mp4: file is empty"):
        open_audio(tmp_path / "empty.mp4", CFG)
    (tmp_path / "junk.mp4").write_bytes(b"\x00junk" * 500)
    with pytest.raises(AudioError, match=r"junk\.mp4"):
        open_audio(tmp_path / "junk.mp4", CFG)
    with pytest.raises(AudioError, match="disabled"):
        open_audio(silent, AudioConfig(enabled=False))


def test_half_window_follows_window_length():
    assert CFG.half_window_s == 0.639  # TBN's hard-coded value
    assert AudioConfig(window_s=0.5).half_window_s == 0.25
    small = AudioConfig(sample_rate=8000, window_s=0.5)
    assert window_bounds(8000 * 3, 1.5, small) == (10000, 14000)


# ---------------------------------------------------------------------------------------------
# audio as TBN reads it: its ffmpeg command, a WAV, librosa


def _ffmpeg(*args):
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _av_clip(path, rate: int, channels: int, seconds: float = 3.0):
    """A tiny MP4 (64x36 H.264 + AAC at ``rate`` Hz): stereo has a tone left and pink noise right."""
    noise = f"anoisesrc=color=pink:sample_rate={rate}:duration={seconds}:amplitude=0.3:seed=3"
    tone = f"sine=frequency=700:sample_rate={rate}:duration={seconds}"
    mix = f"{tone}[l];{noise}[r];[l][r]" + ("amerge=inputs=2[a]" if channels == 2 else "amix=inputs=2[a]")
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x36:rate=25:duration={seconds}", "-filter_complex", mix,
            "-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", str(path))
    return path


def _tbn_reference(src, tmp_path) -> np.ndarray:
    """TBN's preprocessing (``extract_audio.py``: ffmpeg to a mono 24 kHz 16-bit WAV) read by librosa."""
    import librosa

    wav = tmp_path / f"{src.stem}_ref.wav"
    _ffmpeg("-i", str(src), "-vn", "-acodec", "pcm_s16le", "-ac", "1", "-ar", "24000", str(wav))
    ref, sr = librosa.load(wav, sr=None, mono=True)
    assert sr == 24000
    return ref


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 2), (48000, 1), (44100, 1)])
def test_samples_and_spectrograms_match_tbn_preprocessing(tmp_path, rate, channels):
    src = _av_clip(tmp_path / f"clip_{rate}_{channels}.mp4", rate, channels)
    ref = _tbn_reference(src, tmp_path)
    track = open_audio(src, CFG)
    assert track.samples.size == ref.size  # same resampler, same start and end
    assert np.sqrt(np.mean((track.samples - ref) ** 2)) < 1e-3
    times = [0.2, 1.0, 1.5, 2.3, 2.9]
    ref_track = AudioTrack(ref, CFG)
    diff = np.abs(track.spectrograms(times) - ref_track.spectrograms(times))
    assert np.median(diff) < 0.01


def test_stereo_is_mixed_to_the_channel_mean(tmp_path):
    # 24 kHz in, so no resampling: mono must be exactly (L + R) / 2 (decord gave (L + R) / sqrt(2))
    rng = np.random.default_rng(1)
    left = (rng.uniform(-0.4, 0.4, 24000) * 32767).astype(np.int16)
    right = (np.sin(np.arange(24000) * 0.05) * 0.3 * 32767).astype(np.int16)
    raw = tmp_path / "lr.raw"
    raw.write_bytes(np.stack([left, right], axis=1).tobytes())
    wav = tmp_path / "lr.wav"
    _ffmpeg("-f", "s16le", "-ar", "24000", "-ac", "2", "-i", str(raw), "-c:a", "pcm_s16le", str(wav))
    got = load_audio(wav, 24000)
    want = (left.astype(np.float64) + right) / 2 / 32768
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1.01 / 32768  # one 16-bit step of rounding


# ---------------------------------------------------------------------------------------------
# truncated files and spectrograms past the end


def test_truncated_faststart_mp4_is_an_error(tmp_path):
    # index (moov) at the front: the header still states 5 s, the second half of the data is gone
    tmp = _av_clip(tmp_path / "tmp.mp4", 48000, 2, seconds=5.0)
    full = tmp_path / "full.mp4"
    _ffmpeg("-i", str(tmp), "-c", "copy", "-movflags", "+faststart", str(full))
    assert abs(open_audio(full, CFG).duration - 5.0) < END_TOLERANCE_S  # the complete file is fine
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioError, match=r"cut\.mp4: the audio track decodes to \d\.\d+ s but the container "
                                         r"states 5\.000 s: truncated"):
        open_audio(cut, CFG)


def test_spectrogram_past_the_end_is_an_error_not_the_last_window():
    samples = np.random.default_rng(0).standard_normal(2 * 24000).astype(np.float32)
    track = AudioTrack(samples, CFG, path="two_seconds.mp4")
    last = track.spectrograms([1.9])[0]  # crosses the real end: the last 1.279 s (TBN's rule)
    np.testing.assert_array_equal(track.spectrograms([2.0 + END_TOLERANCE_S / 2])[0], last)
    with pytest.raises(AudioError, match=r"two_seconds\.mp4: spectrogram\(s\) centred at \[2\.5\] s past the end"):
        track.spectrograms([1.0, 2.5])
    with pytest.raises(AudioError, match=r"two_seconds\.mp4: .*past the end"):
        track.spectrograms_at_frames([1, 126], fps=50.0)  # frame 126 is at 2.5 s

"""The soundtrack of a demo video: room noise plus a verb-dependent sound during each segment.

Each verb has its own sound (chirps, scrubbing noise, chops, pouring gurgle, ...) whose rhythm is
locked to the visible motion (``scene.verb_pose`` uses the same rates); each noun shifts the
pitch a little and adds its own steady resonance (:data:`NOUN_TONE_HZ`, the "material" of the
object ringing while it is handled), so the audio carries verb and noun evidence, as in EPIC where
the sound of an action (water, a knife on a board, a metal pan) is informative. The target domain records with another microphone: more noise, a duller
frequency response, a different appliance hum and a lower level.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from epic_demo.scene import Segment
from epic_demo.spec import NOUNS, VERBS, VideoSpec

SAMPLE_RATE = 48000  # Hz, mono; EPIC's GoPro audio is 48 kHz

#: Each noun's resonance, geometrically spaced from 250 Hz to 4 kHz (ratio ~1.36): below both
#: microphones' corners (9 / 5.5 kHz) and apart by several bins of the demo's 64-bin spectrogram
#: at 12 kHz. Without it, randomly initialised backbones (the demo has no pretrained weights)
#: carry no noun evidence at all: their RGB features do not separate the object kinds.
NOUN_TONE_HZ: tuple[float, ...] = tuple(250.0 * 16.0 ** (i / max(len(NOUNS) - 1, 1)) for i in range(len(NOUNS)))
NOUN_TONE_LEVEL = 0.06


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    sos = signal.butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal(n))
    return x / (np.std(x) + 1e-12)


def _chirp(t: np.ndarray, f0: float, f1: float, length: float) -> np.ndarray:
    # Linear chirp: instantaneous frequency f0 + (f1 - f0) t / length.
    return np.sin(2 * math.pi * (f0 * t + 0.5 * (f1 - f0) * t * t / length))


def _impact(t: np.ndarray, at: float, freq: float, decay: float) -> np.ndarray:
    dt = t - at
    return np.where(dt >= 0, np.exp(-np.maximum(dt, 0) / decay) * np.sin(2 * math.pi * freq * dt), 0.0)


def verb_sound(verb: str, pitch: float, length: float, phase: float, rng: np.random.Generator) -> np.ndarray:
    """The sound of one segment (``length`` seconds), before the room and microphone."""
    n = max(int(round(length * SAMPLE_RATE)), 1)
    t = np.arange(n) / SAMPLE_RATE
    if verb == "take":
        x = 0.25 * _chirp(t, 400 * pitch, 1200 * pitch, length)
    elif verb == "put":
        x = 0.2 * _chirp(t, 1200 * pitch, 400 * pitch, length) + 0.5 * _impact(t, 0.85 * length, 90.0, 0.05)
    elif verb == "wash":
        scrub = (0.5 + 0.5 * np.sin(2 * math.pi * 2.5 * t + phase)) ** 2
        x = 0.3 * _band_noise(rng, n, 2000, 6000) * scrub + 0.08 * _band_noise(rng, n, 800, 3000)
    elif verb in ("open", "close"):
        creak = np.sin(2 * math.pi * 300 * pitch * t + 3.0 * np.sin(2 * math.pi * 8 * t))
        window = ((t > 0.15 * length) & (t < 0.8 * length)).astype(float)
        x = 0.12 * creak * window
        if verb == "open":
            x = x + 0.4 * _impact(t, 0.6 * length, 1500 * pitch, 0.02)
            x = x + 0.3 * _band_noise(rng, n, 500, 8000) * np.exp(-np.abs(t - 0.6 * length) / 0.01)
        else:
            x = x + 0.6 * _impact(t, 0.92 * length, 90.0, 0.06) + 0.3 * _impact(t, 0.92 * length, 2000 * pitch, 0.01)
    elif verb == "cut":
        # The knife touches the board when |sin(3 pi t + phase)| = 0 (see scene.verb_pose).
        x = np.zeros(n)
        k0 = math.ceil(phase / math.pi)
        burst = _band_noise(rng, n, 1000, 9000)
        for k in range(k0, k0 + int(3 * length) + 2):
            at = (k * math.pi - phase) / (3 * math.pi)
            if 0 <= at < length:
                env = np.where(t >= at, np.exp(-np.maximum(t - at, 0) / 0.015), 0.0)
                x += 0.4 * burst * env + 0.3 * _impact(t, at, 2500 * pitch, 0.03)
    elif verb == "pour":
        bubbles = signal.sosfilt(signal.butter(2, 12, fs=SAMPLE_RATE, output="sos"), rng.standard_normal(n))
        bubbles = np.abs(bubbles) / (np.abs(bubbles).max() + 1e-12)
        window = ((t > 0.3 * length) & (t < 0.85 * length)).astype(float)
        x = 0.35 * _band_noise(rng, n, 300 * pitch, 1200 * pitch) * (0.3 + bubbles) * window
    elif verb == "mix":
        stir = 0.5 + 0.5 * np.sin(2 * math.pi * 3.0 * t + 2 * phase)  # two scrapes per turn at 1.5 Hz
        x = 0.25 * _band_noise(rng, n, 1000, 3000) * stir + 0.06 * np.sin(2 * math.pi * 700 * pitch * t)
    else:
        raise ValueError(f"unknown verb {verb!r}")
    fade = np.minimum(1.0, np.minimum(t, length - t) / 0.03)
    return x * np.clip(fade, 0.0, 1.0)


def soundtrack(video: VideoSpec, segments: tuple[Segment, ...], rng: np.random.Generator) -> np.ndarray:
    """The mono track of a video, ``(seconds * SAMPLE_RATE,)`` float32 in [-1, 1].

    Segment ``[start_frame, stop_frame]`` sounds from ``(start_frame - 1) / fps`` to
    ``(stop_frame - 1) / fps``, the times those frames show.
    """
    style = video.domain
    n = video.seconds * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    room = style.audio_noise * _band_noise(rng, n, 40, min(style.audio_lowpass_hz, 0.45 * SAMPLE_RATE))
    room += 0.004 * np.sin(2 * math.pi * style.hum_hz * t) + 0.002 * np.sin(2 * math.pi * 2 * style.hum_hz * t)
    action = np.zeros(n)
    for seg in segments:
        start = int(round((seg.start_frame - 1) / style.fps * SAMPLE_RATE))
        length = (seg.stop_frame - seg.start_frame) / style.fps
        pitch = 0.8 + 0.45 * seg.noun / max(len(NOUNS) - 1, 1)
        snd = verb_sound(VERBS[seg.verb].key, pitch, length, seg.phase, rng)
        ts = np.arange(len(snd)) / SAMPLE_RATE
        fade = np.clip(np.minimum(ts, length - ts) / 0.05, 0.0, 1.0)
        snd = snd + NOUN_TONE_LEVEL * fade * np.sin(2 * math.pi * NOUN_TONE_HZ[seg.noun] * ts + seg.phase)
        end = min(start + len(snd), n)
        action[start:end] += snd[: end - start]
    mix = room + style.audio_gain * float(rng.uniform(0.85, 1.15)) * action
    # The microphone: a gentle low-pass (the target camera's is duller).
    sos = signal.butter(2, min(style.audio_lowpass_hz, 0.45 * SAMPLE_RATE), fs=SAMPLE_RATE, output="sos")
    mix = signal.sosfilt(sos, mix)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)

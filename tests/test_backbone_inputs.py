"""Sampling, geometry and bad-input rules of extractors.backbones.inputs."""

from __future__ import annotations

import numpy as np
import pytest
from _backbone_fixtures import FPS, N_FRAMES, H, W, frames_array, write_dataset

from extractors.audio import AudioConfig
from extractors.backbones.inputs import (
    InputError,
    VideoInputs,
    VideoSpec,
    binding_window_positions,
    clip_frames,
    crop_resize,
    random_crop_flip,
    resize_center_crop,
    tsn_train_positions,
)
from extractors.flow_archive import FlowArchiveWriter

AUDIO = AudioConfig(sample_rate=8000, window_s=0.5, n_fft=127, win_length=100, hop_length=60, n_time=64)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("video"))


def _inputs(data, **kw) -> VideoInputs:
    spec = dict(video_id="P01_01", fps=FPS, video_path=data["audio"], frames_archive=data["frames"],
                flow_path=data["flow"], crops_path=data["crops"], audio=AUDIO)
    spec.update(kw)
    return VideoInputs(VideoSpec(**spec))


def test_tsn_train_positions_one_per_chunk():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = tsn_train_positions(11, 40, 3, rng)  # 30 frames, chunks of 10
        assert [11 <= p <= 20 for p in pos[:1]] == [True]
        assert ((pos - 11) // 10).tolist() == [0, 1, 2]
    assert tsn_train_positions(5, 6, 3, rng).tolist() == [5, 5, 5]  # shorter than K: the first frame


def test_binding_window_shuffles_across_segments():
    rng = np.random.default_rng(0)
    orders = {tuple(np.argsort(binding_window_positions(1, 300, 3, rng))) for _ in range(30)}
    assert len(orders) > 1  # not always in temporal order


def test_clip_frames_pad_short_segments_with_edge_frames():
    assert clip_frames(20, 8, 1, 100).tolist() == list(range(16, 24))
    assert clip_frames(31, 8, 30, 33).tolist() == [30, 30, 30, 30, 31, 32, 33, 33]


def test_resize_center_crop_and_crop_resize_geometry():
    img = np.zeros((1, 48, 80, 3), np.uint8)
    img[0, :, 40:] = 255  # right half white
    out = resize_center_crop(img, 32)
    assert out.shape == (1, 32, 32, 3)
    assert out[0, :, :8].max() == 0 and out[0, :, -8:].min() == 255
    box = np.array([[40, 0, 80, 48]])
    assert crop_resize(img, box, 16).min() == 255  # only the white half
    flow = np.zeros((2, 48, 80, 10), np.uint8)
    flow[..., 0::2] = 100
    rng = np.random.default_rng(3)
    outs = [random_crop_flip(flow, 32, rng, flow=True) for _ in range(8)]
    assert {int(o[0, 0, 0, 0]) for o in outs} == {100, 155}  # x inverted on flip, y untouched
    assert all(int(o[0, 0, 0, 1]) == 0 for o in outs)


def test_flow_stacks_interleave_and_clamp_at_the_end(data):
    v = _inputs(data)
    n_flow = v.flow.n_frames
    assert n_flow == N_FRAMES - 1
    assert v.flow_stacks(np.array([1, 58, 60])).tolist() == [[1, 2, 3, 4, 5], [58, 59, 59, 59, 59], [59] * 5]
    raw = v.flow.get(np.arange(1, 6))
    stack = v.flow_stack(np.array([1]), 32)
    expected = resize_center_crop(np.concatenate([raw[i] for i in range(5)], axis=-1)[None], 32)
    assert np.array_equal(stack, expected)  # channels x1, y1, ..., x5, y5


def test_short_flow_archive_is_an_error(data, tmp_path):
    short = tmp_path / "short.tar"
    with FlowArchiveWriter(short) as w:
        w.write(np.full((30, H, W, 2), 128, np.uint8))
    v = _inputs(data, flow_path=short)
    v.flow_stack(np.array([31]), 32)  # frame 31 -> flow 31: one past the end is the tail rule
    with pytest.raises(InputError, match="shorter than the video"):
        v.flow_stack(np.array([45]), 32)


def test_rgb_and_crops(data):
    v = _inputs(data)
    frames = v.rgb(np.array([1, 40]), 32)
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8
    crops = v.rgb(np.array([1, 40]), 32, crop=True)
    raw = v.frames.get(np.array([1]))
    x1, y1, x2, y2 = int(0.1 * W), int(0.2 * H), int(np.ceil(0.6 * W)), int(np.ceil(0.9 * H))
    assert np.array_equal(crops[0], crop_resize(raw, np.array([[x1, y1, x2, y2]]), 32)[0])
    assert v.flow_stack(np.array([2]), 32, crop=True).shape == (1, 32, 32, 10)
    assert frames_array().shape == (N_FRAMES, H, W, 3)


def test_clips(data):
    v = _inputs(data)
    assert v.rgb_clips(np.array([31]), 30, 33, 8, 32).shape == (1, 8, 32, 32, 3)
    assert v.flow_clips(np.array([59, 60]), 41, 60, 8, 32).shape == (2, 8, 32, 32, 2)


def test_spectrogram_nan_is_an_error(data, monkeypatch):
    assert _inputs(data).spectrogram(np.array([1, 30])).shape == (2, 64, 64)
    v = _inputs(data)
    samples = v.audio.samples.copy()
    samples[100] = np.nan
    monkeypatch.setattr(v.audio, "samples", samples)
    with pytest.raises(InputError, match="P01_01.wav: the sound track contains NaN"):
        v.spectrogram(np.array([30]))


def test_missing_sources_are_named(data):
    v = _inputs(data, flow_path=None, crops_path=None)
    with pytest.raises(InputError, match="no flow archive"):
        v.flow_stack(np.array([1]), 32)
    with pytest.raises(InputError, match="crop table"):
        v.rgb(np.array([1]), 32, crop=True)

"""Feature extraction of the fixture video into the feature contract (m3em.epic.features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _backbone_fixtures import FPS, SEGMENTS, _one_thread, write_config, write_dataset  # noqa: F401 (autouse fixture)

from extractors import extract
from extractors.audio import AudioConfig
from extractors.backbones.i3d import I3DTwoStream, normalise_i3d
from extractors.backbones.inputs import VideoInputs, VideoSpec
from extractors.backbones.tbn import TBN, Modality, normalise, pool_vector
from m3em.epic.features import FeatureFile, segment_positions

TBN_STREAMS = ["tbn_rgb", "tbn_flow", "tbn_audio", "tbn_crop_rgb", "tbn_crop_flow"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    paths = write_dataset(root)
    cfg = write_config(root, paths)
    torch.manual_seed(0)
    tbn = TBN((Modality.RGB, Modality.FLOW, Modality.SPEC), 3, 4).eval()
    meta = {"num_verbs": 3, "num_nouns": 4, "input_size": 64, "clip_length": 8, "epoch": 1}
    torch.save({"state_dict": tbn.state_dict(), "meta": {**meta, "backbone": "tbn", "modalities": ["rgb", "flow", "spec"]}},
               root / "tbn.pt")
    i3d = I3DTwoStream(3, 4).eval()
    torch.save({"state_dict": i3d.state_dict(), "meta": {**meta, "backbone": "i3d", "modalities": ["rgb", "flow"]}},
               root / "i3d.pt")
    return root, paths, cfg, tbn, i3d


def _args(setup, ckpt, streams, outs=None, **flags):
    root, paths, cfg, _, _ = setup
    args = ["--config", str(cfg), "--video-id", "P01_01"]
    for c in [ckpt] if isinstance(ckpt, str) else ckpt:
        args += ["--checkpoint", str(root / c)]
    for i, s in enumerate(streams):
        args += ["--stream", s]
        if outs is not None:
            args += ["--out", str(outs[i])]
    for k, v in flags.items():
        args += [f"--{k}", str(paths[v])]
    return args


def test_tbn_streams_in_one_job(setup):
    root, paths, _, tbn, _ = setup
    outs = [root / "f" / s / "P01_01.safetensors" for s in TBN_STREAMS]
    # One job, five streams: RGB from the frame archive, the sound track from --video.
    assert extract.main(_args(setup, "tbn.pt", TBN_STREAMS, outs, frames="frames", video="audio", flow="flow",
                              crops="crops")) == 0
    order = sorted(SEGMENTS, key=lambda s: (s[2], s[0]))
    nids = [s[0] for s in order]  # source_train and source_val rows, by start frame
    frames = np.stack([segment_positions(s[2], s[3], 3) for s in order])
    for s, out in zip(TBN_STREAMS, outs):
        ff = FeatureFile(out)
        assert ff.narration_ids == nids and np.array_equal(ff.frames, frames) and ff.stream == s
        assert ff.shape == ((5, 3, 1024) if s == "tbn_audio" else (5, 3, 1024, 2, 2))
        assert ff.read().dtype == np.float16
        assert ff.producer["backbone"] == "tbn" and ff.producer["input_size"] == 64
    # The stored features are the model's outputs on the documented inputs.
    v = VideoInputs(VideoSpec("P01_01", FPS, video_path=paths["audio"], frames_archive=paths["frames"],
                              flow_path=paths["flow"], crops_path=paths["crops"], flow_stride=1, flow_dilation=1,
                              audio=AudioConfig(sample_rate=8000, window_s=0.5, n_fft=127, win_length=100,
                                                hop_length=60, n_time=64)))
    pos = frames[1]
    with torch.no_grad():
        rgb = tbn.spatial(Modality.RGB, normalise(Modality.RGB, torch.from_numpy(v.rgb(pos, 64))))
        crop_flow = tbn.spatial(Modality.FLOW, normalise(Modality.FLOW, torch.from_numpy(v.flow_stack(pos, 64, crop=True))))
        audio = pool_vector(tbn.spatial(Modality.SPEC, normalise(Modality.SPEC, torch.from_numpy(v.spectrogram(pos)))))
    for out, ref in ((outs[0], rgb), (outs[4], crop_flow), (outs[2], audio)):
        got = torch.from_numpy(FeatureFile(out)[1].astype(np.float32))
        assert torch.allclose(got, ref, rtol=2e-3, atol=2e-3)


def test_i3d_streams_and_short_segment(setup):
    root, paths, _, _, i3d = setup
    outs = [root / "g" / s / "P01_01.safetensors" for s in ("i3d_rgb", "i3d_flow")]
    assert extract.main(_args(setup, "i3d.pt", ["i3d_rgb", "i3d_flow"], outs, frames="frames", flow="flow")) == 0
    ff = FeatureFile(outs[0])
    assert ff.shape == (5, 3, 1024, 2, 2)
    row = ff.row_of["P01_01_3"]  # 4 frames (30..33): the 8-frame clip repeats its edge frames
    v = VideoInputs(VideoSpec("P01_01", FPS, frames_archive=paths["frames"], flow_path=paths["flow"]))
    clip = v.rgb_clips(ff.frames[row], 30, 33, 8, 64)
    with torch.no_grad():
        ref = i3d.rgb.spatial(normalise_i3d(torch.from_numpy(clip))).mean(2)
    assert torch.allclose(torch.from_numpy(ff[row].astype(np.float32)), ref, rtol=2e-3, atol=2e-3)


def test_bad_requests_are_errors(setup, tmp_path, capsys):
    root, paths, cfg, _, _ = setup

    def error(args: list[str]) -> str:
        """The one stderr line of a refused request (exit status 1)."""
        capsys.readouterr()
        assert extract.main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("python -m extractors.extract: error: ") and err.count("\n") == 1, err
        return err

    assert "need a i3d checkpoint" in error(_args(setup, "tbn.pt", ["tbn_rgb", "i3d_rgb"], frames="frames"))
    assert "two tbn checkpoints given" in error(_args(setup, ["tbn.pt", "tbn.pt"], ["tbn_rgb"], frames="frames"))
    assert "need --flow" in error(_args(setup, "tbn.pt", ["tbn_flow"], [tmp_path / "x.safetensors"]))
    assert "cannot extract" in error(_args(setup, "i3d.pt", ["tbn_rgb"], [tmp_path / "y.safetensors"], frames="frames"))
    assert not (tmp_path / "x.safetensors").exists()
    if not torch.cuda.is_available():
        cfg2 = write_config(tmp_path, paths, features={"device": "cuda"})
        args = _args(setup, "tbn.pt", ["tbn_rgb"], [tmp_path / "z.safetensors"], frames="frames")
        args[1] = str(cfg2)
        assert "CUDA is not available" in error(args)


@pytest.mark.slow  # four extractions, two of them I3D (~25 s idle)
def test_one_job_for_both_backbones_writes_the_one_stream_files(setup):
    """Streams of both backbones in one process (RGB frames shared by TBN and I3D, flow by the crop)
    give exactly the features and metadata a job extracting each stream alone writes. (Not the same
    bytes: safetensors writes its metadata keys in a per-process random order.)"""
    root, _, _, _, _ = setup
    streams = ["tbn_rgb", "tbn_crop_flow", "i3d_rgb"]
    flags = {"frames": "frames", "flow": "flow", "crops": "crops"}
    together = [root / "both" / s / "P01_01.safetensors" for s in streams]
    assert extract.main(_args(setup, ["i3d.pt", "tbn.pt"], streams, together, **flags)) == 0
    for s, out in zip(streams, together):
        alone = root / "alone" / s / "P01_01.safetensors"
        assert extract.main(_args(setup, f"{s[:3]}.pt", [s], [alone], **flags)) == 0
        a, b = FeatureFile(out), FeatureFile(alone)
        assert np.array_equal(a.read().view(np.uint16), b.read().view(np.uint16)), s  # bit for bit
        assert (a.stream, a.narration_ids, a.producer) == (b.stream, b.narration_ids, b.producer)
        assert np.array_equal(a.frames, b.frames) and a.producer["checkpoint"] == str(root / f"{s[:3]}.pt")


def test_shared_decode_decodes_each_frame_once(setup):
    _, paths, _, _, _ = setup
    spec = VideoSpec("P01_01", FPS, frames_archive=paths["frames"], flow_path=paths["flow"], crops_path=paths["crops"])
    plain, shared = VideoInputs(spec), VideoInputs(spec)
    decoded: dict[str, list[int]] = {"rgb": [], "flow": []}
    for kind, src in (("rgb", shared.frames), ("flow", shared.flow)):
        get = src.get

        def counting(numbers, get=get, kind=kind):
            decoded[kind] += np.asarray(numbers).tolist()
            return get(numbers)

        src.get = counting
    pos = segment_positions(20, 40, 3)
    calls = [lambda v: v.rgb(pos, 64), lambda v: v.rgb(pos, 64, crop=True), lambda v: v.rgb_clips(pos, 20, 40, 8, 64),
             lambda v: v.flow_stack(pos, 64), lambda v: v.flow_stack(pos, 64, crop=True),
             lambda v: v.flow_clips(pos, 20, 40, 8, 64)]
    with shared.shared_decode():
        got = [f(shared) for f in calls]
    for g, f in zip(got, calls):
        assert np.array_equal(g, f(plain))
    assert sorted(decoded["rgb"]) == sorted(set(decoded["rgb"])) and len(decoded["rgb"]) >= 3 * 8 - 3
    assert sorted(decoded["flow"]) == sorted(set(decoded["flow"])) and len(decoded["flow"]) >= 3 * 5
    assert shared._memo is None  # dropped after the block: outside it every call decodes again
    n = len(decoded["rgb"])
    shared.rgb(pos, 64)
    assert len(decoded["rgb"]) == n + 3

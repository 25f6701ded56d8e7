"""Synthetic features: contract, determinism, class signal, controllable shift."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.features import FeatureFile, feature_path
from m3em.synthetic import MechanismSpec, SyntheticSpec, _MechanismWorld, generate, main, mechanism_data

SMALL = dict(n_verbs=3, n_nouns=4, channels=8, vector_channels=6, map_size=3, positions=4,
             videos=(2, 2, 1, 1), segments_per_video=30)


def _read(ann_dir, feat_dir, split, stream):
    df = EpicAnnotations.open(ann_dir).split(split)
    parts = []
    for video, g in df.groupby("video_id", sort=False):
        ff = FeatureFile(feature_path(feat_dir, stream, video))
        parts.append(ff.read().astype(np.float64)[[ff.row_of[n] for n in g["narration_id"]]])
    return df, np.concatenate(parts)


def test_layout_and_contract(tmp_path):
    spec = SyntheticSpec(seed=3, streams=("tbn_rgb", "tbn_flow", "tbn_audio", "object"), **SMALL)
    ann, feat = generate(spec, tmp_path)
    a = EpicAnnotations.open(ann)
    assert len(a.verbs) == 3 and len(a.nouns) == 4
    src = a.split("source_train")
    assert len(src) == 60 and {"verb_class", "noun_class"} <= set(src.columns)
    tt = a.split("target_train")
    assert "verb_class" not in tt.columns and len(a.split("target_test")) == 30
    assert set(src["video_id"]).isdisjoint(tt["video_id"])
    assert a.fps(src["video_id"].iloc[0]) == 60.0 and a.fps(tt["video_id"].iloc[0]) == 50.0
    video = src["video_id"].iloc[0]
    rgb = FeatureFile(feature_path(feat, "tbn_rgb", video))
    assert rgb.shape == (30, 4, 8, 3, 3)
    assert FeatureFile(feature_path(feat, "tbn_audio", video)).shape == (30, 4, 6)
    assert FeatureFile(feature_path(feat, "object", video)).shape == (30, 4, 6)
    assert rgb.narration_ids == src[src["video_id"] == video]["narration_id"].tolist()
    seg = src.iloc[0]
    assert (rgb.frames[0] >= seg["start_frame"]).all() and (rgb.frames[0] <= seg["stop_frame"]).all()


def test_deterministic(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode())
                h.update(FeatureFile(p).read().tobytes() if p.suffix == ".safetensors" else p.read_bytes())
        return h.hexdigest()

    generate(SyntheticSpec(seed=1, **SMALL), tmp_path / "a")
    generate(SyntheticSpec(seed=1, **SMALL), tmp_path / "b")
    generate(SyntheticSpec(seed=2, **SMALL), tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_motion_marks_the_object_cell_and_carries_the_verb(tmp_path):
    spec = SyntheticSpec(seed=0, noise=0.5, shift=0.0, **SMALL)
    ann, feat = generate(spec, tmp_path)
    df, flow = _read(ann, feat, "source_train", "tbn_flow")
    # Energy per cell: the object cell stands out in the flow map.
    energy = (flow ** 2).mean(axis=(1, 2)).reshape(len(flow), -1)
    peak_ratio = np.sort(energy, axis=1)[:, -1] / np.median(energy, axis=1)
    assert np.median(peak_ratio) > 2
    # Pooled flow predicts the verb by nearest class mean far above chance (1/3).
    pooled = flow.mean(axis=(1, 3, 4))
    y = df["verb_class"].to_numpy()
    means = np.stack([pooled[y == v].mean(0) for v in range(3)])
    pred = np.argmin(((pooled[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() > 0.8


@pytest.mark.parametrize("shift", [0.0, 2.0])
def test_shift_controls_the_domain_gap(tmp_path, shift):
    ann, feat = generate(SyntheticSpec(seed=0, shift=shift, **SMALL), tmp_path)
    _, src = _read(ann, feat, "source_train", "tbn_rgb")
    _, tgt = _read(ann, feat, "target_val", "tbn_rgb")
    gap = np.abs(src.mean(axis=(0, 1, 3, 4)) - tgt.mean(axis=(0, 1, 3, 4))).mean()
    spread = np.abs(src.std(axis=(0, 1, 3, 4)) - tgt.std(axis=(0, 1, 3, 4))).mean()
    if shift == 0:
        assert gap < 0.3 and spread < 0.3
    else:
        assert gap > 0.5 or spread > 0.5


def test_cli_and_bad_spec(tmp_path):
    assert main(["--out-dir", str(tmp_path), "--videos", "1", "1", "1", "1", "--segments-per-video", "3",
                 "--channels", "4", "--map-size", "2", "--streams", "i3d_rgb", "i3d_flow"]) == 0
    assert (tmp_path / "features" / "i3d_flow").is_dir()
    with pytest.raises(ValueError, match="unknown stream"):
        SyntheticSpec(streams=("depth",))


# --- mechanism_data (in-memory features of benchmarks/synthetic_mechanism.py) ---

MECH = dict(n_verbs=3, n_nouns=4, content_channels=6, nuisance_channels=5, audio_channels=4, positions=3)
MECH_SIZES = {"source_train": 40, "target_val": 30}


def _object_content(split, stream, cc):
    """``(N, P, cc)`` content channels of the first object cell, and ``(N, P, c - cc)`` its nuisance."""
    x = getattr(split, stream)
    n = len(split)
    first = split.object_mask.reshape(n, -1).argmax(1)
    cells = x.reshape(*x.shape[:3], -1)[np.arange(n), :, :, first]  # (N, P, c)
    return cells[..., :cc], cells[..., cc:]


def test_mechanism_shapes_objects_and_determinism():
    spec = MechanismSpec(seed=0, shift=1.0, **MECH)
    data = mechanism_data(spec, MECH_SIZES)
    s = data["source_train"]
    assert s.rgb.shape == s.flow.shape == (40, 3, 11, 7, 7) and s.rgb.dtype == np.float32
    assert s.audio.shape == (40, 3, 4) and s.object_mask.shape == (40, 7, 7)
    assert not s.target and data["target_val"].target
    k = s.object_mask.sum(axis=(1, 2))
    assert k.min() >= 1 and k.max() <= 4
    for m in s.object_mask:  # one rectangle of 1-4 cells
        rows, cols = np.nonzero(m)
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    again = mechanism_data(spec, {"target_val": 30})["target_val"]  # a split's draw ignores the others
    np.testing.assert_array_equal(again.rgb, data["target_val"].rgb)
    assert not np.array_equal(mechanism_data(MechanismSpec(seed=1, shift=1.0, **MECH), MECH_SIZES)["source_train"].rgb, s.rgb)
    with pytest.raises(ValueError, match="noise"):
        MechanismSpec(noise=1.5)
    with pytest.raises(ValueError, match="unknown split"):
        mechanism_data(spec, {"validation": 3})


def test_mechanism_rgb_and_flow_share_a_class_independent_code_on_the_object():
    kw = dict(MECH, content_channels=32)
    spec = MechanismSpec(seed=2, shift=1.0, noise=0.0, **kw)
    world = _MechanismWorld(spec)
    for split in mechanism_data(spec, MECH_SIZES).values():
        rgb_c, rgb_n = _object_content(split, "rgb", 32)
        flow_c, flow_n = _object_content(split, "flow", 32)
        rgb_code = rgb_c / spec.object_amp - world.noun[split.noun][:, None, :]
        flow_code = flow_c / spec.object_amp - world.verb[split.verb][:, None, :] - 0.7 * (
            world.profile[split.verb][:, :, None] * world.verb_t[split.verb][:, None, :])
        # The same vector in both modalities, whatever the class and the domain; nothing in the
        # nuisance channels of the object.
        np.testing.assert_allclose(rgb_code, np.broadcast_to(world.code, rgb_code.shape), atol=1e-5)
        np.testing.assert_allclose(flow_code, np.broadcast_to(world.code, flow_code.shape), atol=1e-5)
        assert np.abs(rgb_n).max() == 0 and np.abs(flow_n).max() == 0
    # Off the object (source: scene and distractor nouns) RGB carries no code: its projection on
    # the code is near 0, on the object near object_amp.
    src = mechanism_data(spec, {"source_train": 40})["source_train"]
    content = src.rgb[:, :, :32].transpose(0, 1, 3, 4, 2)  # (N, P, h, w, 32)
    proj = content @ world.code / (world.code @ world.code)
    on = src.object_mask[:, None].repeat(spec.positions, 1)
    assert proj[on].mean() > 0.8 * spec.object_amp and np.abs(proj[~on]).mean() < 0.3


def test_mechanism_shift_moves_pooling_but_not_the_object():
    base = mechanism_data(MechanismSpec(seed=0, shift=0.0, **MECH), MECH_SIZES)
    shifted = mechanism_data(MechanismSpec(seed=0, shift=2.0, **MECH), MECH_SIZES)
    # Source is the same draw; in the target every object cell is bit-identical ...
    for stream in ("rgb", "flow", "audio"):
        np.testing.assert_array_equal(getattr(base["source_train"], stream), getattr(shifted["source_train"], stream))
    b, s = base["target_val"], shifted["target_val"]
    np.testing.assert_array_equal(b.object_mask, s.object_mask)
    obj = b.object_mask[:, None, None].repeat(3, 1).repeat(11, 2)  # (N, P, c, h, w)
    np.testing.assert_array_equal(b.rgb[obj], s.rgb[obj])
    np.testing.assert_array_equal(b.flow[obj], s.flow[obj])
    # ... while average pooling moves, in content and nuisance channels of both modalities.
    for stream in ("rgb", "flow"):
        gap = np.abs(getattr(s, stream).mean(axis=(0, 1, 3, 4)) - getattr(b, stream).mean(axis=(0, 1, 3, 4)))
        assert gap[:6].mean() > 0.5 and gap[6:].mean() > 0.5
    # With no shift the target's pooled features sit where the source's do.
    src, tgt = base["source_train"].rgb.mean(axis=(1, 3, 4)), b.rgb.mean(axis=(1, 3, 4))
    assert np.abs(src.mean(0) - tgt.mean(0)).mean() < 0.5

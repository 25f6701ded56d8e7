"""The organisers' pooled-feature pickles: layout checks, position selection, safety, export."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.features import FeatureFile, feature_path
from m3em.epic.official_features import (
    OfficialFeaturesError,
    export_feature_files,
    load_official_features,
    official_features_path,
    stored_clip_positions,
)
from m3em.epic.safe_pickle import UnsafePickleError


def _official(ids, order=("RGB", "Flow", "Audio"), d=16, t=25, seed=0):
    rng = np.random.default_rng(seed)
    # Each value encodes (modality, row, clip) so a wrong selection is visible.
    feats = {}
    for m in order:
        arr = rng.random((len(ids), t, d)).astype(np.float32)
        arr[:, :, 0] = np.arange(t)[None, :]
        arr[:, :, 1] = np.arange(len(ids))[:, None]
        arr[:, :, 2] = {"RGB": 0, "Flow": 1, "Audio": 2}.get(m, 9)
        feats[m] = arr
    return {"features": feats, "narration_ids": list(ids)}


def _dump(path, obj, protocol=4):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("order", [("RGB", "Flow", "Audio"), ("Audio", "RGB", "Flow")])
def test_keyed_access_and_positions(tmp_path, order):
    ids = [f"P01_101_{i}" for i in range(6)]
    f = load_official_features(_dump(tmp_path / "source_train.pkl", _official(ids, order)))
    assert f.narration_ids == tuple(ids)
    assert list(f.features) == ["RGB", "Flow", "Audio"]  # our order, whatever the file's
    assert f.file_modality_order == order
    for code, m in enumerate(["RGB", "Flow", "Audio"]):
        a = f.features[m]
        assert a.shape == (6, 5, 16) and a.dtype == np.float32
        np.testing.assert_array_equal(a[0, :, 0], [2, 7, 12, 17, 22])
        np.testing.assert_array_equal(a[:, 0, 1], np.arange(6))
        assert (a[:, :, 2] == code).all()
    g = load_official_features(tmp_path / "source_train.pkl", positions=(0, 24), modalities=("RGB", "Flow", "Audio"))
    np.testing.assert_array_equal(g.features["Flow"][0, :, 0], [0, 24])
    assert official_features_path(tmp_path, "source_train") == tmp_path / "source_train.pkl"


def test_ids_as_numpy_array_and_protocol_2(tmp_path):
    data = _official(["a", "b"])
    data["narration_ids"] = np.array(["a", "b"])
    f = load_official_features(_dump(tmp_path / "x.pkl", data, protocol=2))
    assert f.narration_ids == ("a", "b")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["features"].pop("Audio"), r"missing \['Audio'\]"),
        (lambda d: d["features"].__setitem__("Depth", d["features"]["RGB"]), r"unknown \['Depth'\]"),
        (lambda d: d.pop("narration_ids"), "'narration_ids' missing"),
        (lambda d: d.__setitem__("narration_ids", ["a", "a", "b"]), "duplicate"),
        (lambda d: d["features"].__setitem__("Flow", d["features"]["Flow"][:2]), "2 rows but there are 3"),
        (lambda d: d["features"].__setitem__("RGB", d["features"]["RGB"][:, :20]), "outside the 20 stored clips"),
        (lambda d: d["features"].__setitem__("RGB", d["features"]["RGB"][:, :, 0]), r"must be an array \[N, T, D\]"),
        (lambda d: d["features"]["Audio"].__setitem__((1, 7, 3), np.nan), r"NaN or inf for narration id\(s\) \['b'\]"),
        (lambda d: d["features"].__setitem__("RGB", d["features"]["RGB"].astype(str)), r"features\['RGB'\] must hold real numbers, got dtype <U"),
        (lambda d: d["features"].__setitem__("Flow", d["features"]["Flow"].astype(object)), r"features\['Flow'\] must hold real numbers, got dtype object"),
    ],
)
def test_layout_errors_name_the_problem(tmp_path, mutate, match):
    data = _official(["a", "b", "c"])
    mutate(data)
    with pytest.raises(OfficialFeaturesError, match=match):
        load_official_features(_dump(tmp_path / "x.pkl", data))


def test_not_a_dict_and_missing_file(tmp_path):
    with pytest.raises(OfficialFeaturesError, match="expected a dict"):
        load_official_features(_dump(tmp_path / "x.pkl", [1, 2]))
    with pytest.raises(OfficialFeaturesError, match="not found"):
        load_official_features(tmp_path / "none.pkl")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    data = _official(["a"])
    data["features"]["RGB"] = _Evil()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load_official_features(path)
    assert not _Evil.marker.exists()


def test_export_to_feature_contract(tmp_path, epic_slice):
    segs = EpicAnnotations.open(epic_slice).split("target_val", labelled=False)
    ids = segs["narration_id"].tolist()
    f = load_official_features(_dump(tmp_path / "target_val.pkl", _official(ids[::-1], d=8)))
    written = export_feature_files(f, segs, tmp_path / "features", progress=False)
    videos = sorted(segs["video_id"].unique())
    assert len(written) == 3 * len(videos)
    rgb = FeatureFile(feature_path(tmp_path / "features", "tbn_rgb", videos[0]))
    audio = FeatureFile(feature_path(tmp_path / "features", "tbn_audio", videos[0]))
    assert rgb.shape[1:] == (5, 8, 1, 1) and audio.shape[1:] == (5, 8)
    row = rgb.narration_ids[0]
    src = f.features["RGB"][f.row_of()[row]]
    np.testing.assert_allclose(rgb[0][:, :, 0, 0], src.astype(np.float16))
    seg = segs.set_index("narration_id").loc[row]
    assert (rgb.frames[0] >= seg["start_frame"]).all() and (rgb.frames[0] <= seg["stop_frame"]).all()
    assert rgb.producer["source"] == "official_pooled_features"


def test_cli_keeps_the_p_stored_clips_of_features_positions(tmp_path, epic_slice):
    import yaml
    from workflow_util import REPO as REPO_ROOT

    from m3em.epic.official_features import main

    cfg = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    cfg["data"]["annotations_dir"] = str(epic_slice)
    cfg["inputs"]["official_features_dir"] = str(tmp_path / "official")
    cfg["features"]["positions"] = 3  # TSN centres of 3 chunks of the 25 stored clips: 4, 12, 20
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    ids = EpicAnnotations.open(epic_slice).split("target_test", labelled=False)["narration_id"].tolist()
    (tmp_path / "official").mkdir()
    _dump(tmp_path / "official" / "target_test.pkl", _official(ids, d=4))
    assert main(["--config", str(tmp_path / "c.yaml"), "--split", "target_test",
                 "--features-dir", str(tmp_path / "features")]) == 0
    ff = FeatureFile(next((tmp_path / "features" / "tbn_flow").iterdir()))
    assert ff.shape[1:] == (3, 4, 1, 1)
    np.testing.assert_array_equal(ff.read()[0, :, 0, 0, 0], [4, 12, 20])
    assert stored_clip_positions(5) == (2, 7, 12, 17, 22)  # the official TA3N loader's int(2.5 + 5x)
    assert stored_clip_positions(25) == tuple(range(25))

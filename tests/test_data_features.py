"""Feature datasets: joins by narration id, position choice, lazy reads, and bad-input errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _m3em_fixtures import CHANNELS, P, write_dataset

from m3em.data import (
    ArraySplit,
    FeatureDataError,
    FeatureSplit,
    ModalityInput,
    epoch_batches,
    make_loader,
)
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.features import FeatureFile, feature_path, select_positions, write_features

MODS = [ModalityInput("rgb", "tbn_rgb", 16, "models.A.modalities.rgb"),
        ModalityInput("audio", "tbn_audio", 8, "models.A.modalities.audio")]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    write_dataset(root, streams=("tbn_rgb", "tbn_flow", "tbn_audio"))
    return root


def split(root, name="source_train", labelled=True, mods=MODS, **kw):
    table = EpicAnnotations.open(root / "annotations").split(name, labelled=labelled)
    return FeatureSplit(root / "features", table, mods, positions=P, labelled=labelled, split_name=name, **kw), table


def test_items_join_by_narration_id(dataset_root):
    ds, table = split(dataset_root)
    assert len(ds) == len(table) and ds.spatial == {"rgb": True, "audio": False}
    inputs, verb, noun, idx = ds[7]
    nid = table["narration_id"][7]
    ff = FeatureFile(feature_path(dataset_root / "features", "tbn_rgb", table["video_id"][7]))
    np.testing.assert_array_equal(inputs["rgb"], ff[ff.row_of[nid]])
    assert inputs["rgb"].dtype == np.float16 and inputs["rgb"].shape == (P, 16, 3, 3)
    assert inputs["audio"].shape == (P, 8)
    assert (verb, noun, idx) == (table["verb_class"][7], table["noun_class"][7], 7)
    unl, _ = split(dataset_root, "target_train", labelled=False)
    assert unl[0][1] == -1 and unl[0][2] == -1


def test_loader_batches_and_worker_pickling(dataset_root):
    ds, _ = split(dataset_root)
    _ = ds[0]  # opens a memory-mapped handle, which must not be pickled
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0]["rgb"], ds[3][0]["rgb"])
    batches = epoch_batches(len(ds), 5, seed=1, epoch=2, shuffle=True)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    assert batches == epoch_batches(len(ds), 5, seed=1, epoch=2, shuffle=True)
    assert batches != epoch_batches(len(ds), 5, seed=1, epoch=3, shuffle=True)
    inputs, verb, _, idx = next(iter(make_loader(ds, batches, num_workers=0)))
    assert inputs["rgb"].shape == (5, P, 16, 3, 3) and inputs["rgb"].dtype == torch.float16
    assert idx.tolist() == batches[0]


def test_select_positions_reference_centres():
    assert select_positions(25, 5).tolist() == [2, 7, 12, 17, 22]
    assert select_positions(5, 5).tolist() == [0, 1, 2, 3, 4]
    jit = select_positions(25, 5, np.random.default_rng(0))
    assert all(5 * i <= j < 5 * (i + 1) for i, j in enumerate(jit))


def test_missing_modality_file_names_file_and_key(dataset_root):
    mods = MODS + [ModalityInput("object", "object", 7, "models.B.modalities.object")]
    with pytest.raises(FeatureDataError, match=r"object/P01_01\.safetensors.*models\.B\.modalities\.object"):
        split(dataset_root, mods=mods)


def test_channel_mismatch_names_key(dataset_root):
    mods = [ModalityInput("rgb", "tbn_rgb", 1024, "models.A.modalities.rgb")]
    with pytest.raises(FeatureDataError, match=r"16 channels but models\.A\.modalities\.rgb\.channels = 1024"):
        split(dataset_root, mods=mods)


def test_missing_narration_id_names_file_and_id(tmp_path):
    root = tmp_path
    write_dataset(root, streams=("tbn_rgb", "tbn_audio"), per_video=3)
    path = feature_path(root / "features", "tbn_audio", "P01_02")
    ff = FeatureFile(path)
    keep = ff.narration_ids[1:]
    write_features(path, ff.read()[1:], keep, ff.frames[1:], stream="tbn_audio", video_id="P01_02")
    with pytest.raises(FeatureDataError, match=r"tbn_audio/P01_02\.safetensors: narration id 'P01_02_0'"):
        split(root)


def test_nan_features_name_file_and_segment(tmp_path):
    root = tmp_path
    write_dataset(root, streams=("tbn_rgb", "tbn_audio"), per_video=3)
    path = feature_path(root / "features", "tbn_rgb", "P01_01")
    # write_features refuses NaN, so corrupt the stored bytes as a broken copy would.
    raw = bytearray(path.read_bytes())
    nan16 = np.array([np.nan], dtype=np.float16).tobytes()
    row_bytes = P * 16 * 9 * 2
    raw[-row_bytes:-row_bytes + 2] = nan16  # first value of the last row
    path.write_bytes(bytes(raw))
    ds, _ = split(root)
    with pytest.raises(FeatureDataError, match=r"tbn_rgb/P01_01\.safetensors.*NaN.*'P01_01_2'"):
        ds.check_finite(progress=False)


def test_array_split_for_pooled_features(dataset_root):
    table = EpicAnnotations.open(dataset_root / "annotations").split("source_train")
    ids = list(table["narration_id"])[::-1] + ["extra"]
    arrays = {"rgb": np.random.rand(len(ids), 25, 16).astype(np.float32)}
    ds = ArraySplit(arrays, ids, table, positions=5, labelled=True, channels={"rgb": 16})
    inputs, *_ = ds[0]
    np.testing.assert_allclose(inputs["rgb"], arrays["rgb"][ids.index(table["narration_id"][0])][[2, 7, 12, 17, 22]],
                               rtol=1e-3)
    assert ds.spatial == {"rgb": False}
    with pytest.raises(FeatureDataError, match="narration id"):
        ArraySplit(arrays, ids[1:], table, positions=5, labelled=True)
    assert CHANNELS["tbn_rgb"] == 16


def test_open_file_budget_is_respected(dataset_root):
    ds, table = split(dataset_root, max_open_files=1)
    ref, _ = split(dataset_root)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i][0]["rgb"], ref[i][0]["rgb"])
        assert len(ds._open) <= 1


def test_distributed_batches_split_every_global_batch():
    world = 3
    per_rank = [epoch_batches(10, 4, seed=0, epoch=1, shuffle=True, rank=r, world=world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # same step count on every rank
    glob = epoch_batches(10, 4, seed=0, epoch=1, shuffle=True)
    # The last global batch (2 clips < 3 ranks) is dropped, the others are shared out.
    assert len(per_rank[0]) == 2
    for step in range(2):
        assert sorted(i for r in range(world) for i in per_rank[r][step]) == sorted(glob[step])


@pytest.mark.parametrize("odd_video", ["P01_01", "P02_103"])
def test_map_size_mismatch_names_the_odd_file(tmp_path, odd_video):
    import pandas as pd

    write_dataset(tmp_path, streams=("tbn_rgb", "tbn_audio"), per_video=2)
    path = feature_path(tmp_path / "features", "tbn_rgb", odd_video)
    ff = FeatureFile(path)
    write_features(path, ff.read()[:, :, :, :2, :2], ff.narration_ids, ff.frames, stream="tbn_rgb", video_id=odd_video)
    ann = EpicAnnotations.open(tmp_path / "annotations")
    table = pd.concat([ann.split("source_train"), ann.split("target_val")], ignore_index=True)
    with pytest.raises(FeatureDataError) as err:
        FeatureSplit(tmp_path / "features", table, MODS, positions=P, labelled=True, split_name="mixed")
    msg = str(err.value)
    assert msg.startswith(f"{path} (1 file(s)) have ({P}, 16, 2, 2)"), msg
    assert f"2 other file(s) of stream tbn_rgb, which have ({P}, 16, 3, 3)" in msg

"""detectron2 backend: models built from detectron2's own Faster R-CNN config with random weights.

The tests that need detectron2 skip where it is not installed (it is an optional extra:
``pip install 'git+https://github.com/facebookresearch/detectron2.git'``). The model is
detectron2's ``COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml`` shrunk for a 2-core CPU: a
ResNet-18 body (an R50 body with random weights and frozen BN overflows, so it detects nothing),
32 FPN channels and 64-pixel inputs.
"""

from __future__ import annotations

import io
import re
import sys
import tarfile

import cv2
import numpy as np
import pytest
import torch
from _detections_fixtures import N_NOUNS, write_config

from extractors.detections import detectron2_backend as backend
from extractors.detections.config import ClassRole


def test_missing_detectron2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2", None)
    with pytest.raises(ImportError, match=r"pip install 'git\+https://github.com/facebookresearch/detectron2.git'"):
        backend.import_detectron2()


def _make_detector(tmp_path, name: str, n_classes: int, seed: int, fc_dim: int = 64):
    """Write a detectron2 config + random-weight checkpoint; return their paths."""
    pytest.importorskip("detectron2", reason="detectron2 not installed (optional extra)")
    from detectron2 import model_zoo
    from detectron2.modeling import build_model

    cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = fc_dim
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = n_classes
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    config_file = tmp_path / f"{name}.yaml"
    config_file.write_text(cfg.dump(), encoding="utf-8")
    torch.manual_seed(seed)
    model = build_model(cfg)
    weights = tmp_path / f"{name}.pth"
    torch.save({"model": model.state_dict()}, weights)
    return config_file, weights, model


def _frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 48, 80, 3), dtype=np.uint8)


def test_detector_runs_and_rows_follow_roles(tmp_path):
    cfg_file, weights, _ = _make_detector(tmp_path, "hand", 3, seed=0)
    det = backend.build_detector(backend.load_detector_config(cfg_file), weights, config_file=cfg_file,
                                 device="cpu", expected_classes=3)
    frames = _frames(3)
    out = backend.run_detector(det, frames)
    assert len(out) == 3
    boxes, scores, classes = out[0]
    assert len(scores) > 0, "random detector should still output boxes at score threshold 0"
    assert boxes.shape == (len(scores), 4) and (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and set(classes.tolist()) <= {0, 1, 2}
    # Batched and one-by-one inference agree.
    single = backend.run_detector(det, frames[1:2])[0]
    np.testing.assert_allclose(single[1], out[1][1], rtol=1e-4, atol=1e-5)

    roles = (ClassRole.LEFT_HAND, ClassRole.OBJECT, ClassRole.IGNORE)
    df = backend.detect_batches([(np.array([4, 5, 6]), frames)], hand=det, class_roles=roles,
                                hand_threshold=0.0, hand_object_threshold=0.0)
    n_left = sum(int((c == 0).sum()) for _, _, c in out)
    n_obj = sum(int((c == 1).sum()) for _, _, c in out)
    assert (df["kind"] == "hand").sum() == n_left and (df["kind"] == "object").sum() == n_obj
    assert set(df["frame"]) <= {4, 5, 6}
    assert (df.loc[df["kind"] == "hand", "side"] == 0).all() and (df["label"] == -1).all()
    assert (df["state"] == -1).all() and df["offset_x"].isna().all()


def test_class_count_and_weight_mismatch_errors(tmp_path):
    cfg_file, weights, model = _make_detector(tmp_path, "obj", 3, seed=1)
    cfg = backend.load_detector_config(cfg_file)
    with pytest.raises(backend.DetectorConfigError, match=r"obj\.yaml: MODEL.ROI_HEADS.NUM_CLASSES is 3, but 4"):
        backend.build_detector(cfg, weights, config_file=cfg_file, device="cpu", expected_classes=4)
    # Weights of another architecture (different FC width) do not fit.
    _, other, _ = _make_detector(tmp_path, "other", 3, seed=1, fc_dim=32)
    with pytest.raises(backend.DetectorConfigError, match=r"other\.pth: does not fit"):
        backend.build_detector(cfg, other, config_file=cfg_file, device="cpu", expected_classes=3)
    with pytest.raises(backend.DetectorConfigError, match="not found"):
        backend.build_detector(cfg, tmp_path / "none.pth", config_file=cfg_file, device="cpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    with pytest.raises(backend.DetectorConfigError, match=r"bad\.yaml: not a valid detectron2 config"):
        backend.load_detector_config(bad)
    # detectron2 model-zoo .pkl format (numpy arrays) loads through the restricted unpickler.
    import pickle

    pkl = tmp_path / "obj.pkl"
    pkl.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in model.state_dict().items()}, "__author__": "t"}))
    a = backend.build_detector(cfg, pkl, config_file=cfg_file, device="cpu", expected_classes=3)
    b = backend.build_detector(cfg, weights, config_file=cfg_file, device="cpu", expected_classes=3)
    frames = _frames(1)
    np.testing.assert_allclose(backend.run_detector(a, frames)[0][1], backend.run_detector(b, frames)[0][1], rtol=1e-5)


def _archive(path, n: int) -> None:
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w") as tar:
        for i in range(1, n + 1):
            ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, size=(48, 80, 3), dtype=np.uint8))
            info = tarfile.TarInfo(f"frame_{i:010d}.jpg")
            info.size = len(buf)
            tar.addfile(info, io.BytesIO(buf.tobytes()))


def test_detect_cli_writes_a_class_aware_table(tmp_path, capsys):
    from extractors.detections import detect
    from extractors.detections.table import read_detection_table

    hand_cfg, hand_w, _ = _make_detector(tmp_path, "hand", 2, seed=0)
    obj_cfg, obj_w, _ = _make_detector(tmp_path, "obj", N_NOUNS, seed=1)
    det_section = {
        "device": "cpu", "batch_size": 2, "frame_step": 40, "object_classes": "nouns",
        "hand_detector": {"config_file": str(hand_cfg), "weights": str(hand_w), "class_roles": ["hand", "object"],
                          "hand_score_threshold": 0.0, "object_score_threshold": 0.0},
        "object_detector": {"config_file": str(obj_cfg), "weights": str(obj_w), "score_threshold": 0.0},
    }
    config = write_config(tmp_path, detections=det_section, decode={"height": 48})
    _archive(tmp_path / "P02_101.tar", 100)  # the video table's 50 fps * 2 s
    out = tmp_path / "P02_101.parquet"
    assert detect.main(["--config", str(config), "--video-id", "P02_101", "--frames-archive",
                        str(tmp_path / "P02_101.tar"), "--out", str(out)]) == 0
    table = read_detection_table(out, video_id="P02_101", n_frames=100)
    assert table.n_object_classes == N_NOUNS and table.producer["frame_step"] == 40
    assert set(table.boxes["frame"]) <= {1, 41, 81} and len(table.boxes) > 0
    labelled = table.objects()["label"]
    assert (labelled >= -1).all() and (labelled >= 0).any() and (labelled < N_NOUNS).all()

    # An object detector whose class count is not the vocabulary is refused, naming its config:
    # one line on stderr, exit status 1.
    det_section["object_detector"]["config_file"] = str(hand_cfg)
    det_section["object_detector"]["weights"] = str(hand_w)
    config = write_config(tmp_path, detections=det_section, decode={"height": 48})
    capsys.readouterr()
    assert detect.main(["--config", str(config), "--video-id", "P02_101", "--frames-archive",
                        str(tmp_path / "P02_101.tar"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m extractors.detections.detect: error: ") and err.count("\n") == 1, err
    assert re.search(r"hand\.yaml: MODEL.ROI_HEADS.NUM_CLASSES is 2, but 4", err), err

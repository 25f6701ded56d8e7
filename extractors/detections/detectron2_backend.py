"""Hand and object detection with any detectron2 ``GeneralizedRCNN`` (Faster R-CNN family).

Two detectors, both given as a detectron2 yacs config file (``.yaml``) plus a weights file:

* the **hand detector** finds hands (and, like the EPIC release's hand-object detector,
  class-agnostic objects); ``detections.hand_detector.class_roles`` says what each of its class
  ids is (``hand``, ``left_hand``, ``right_hand``, ``object`` or ``ignore``). A plain detectron2
  model predicts no contact state or hand->object offset: such hands get ``state = -1`` and null
  offsets (the official converter fills them);
* the **object detector** is class-aware; its class ids become the table's ``label`` and its
  class count must equal the object vocabulary (``detections.object_classes``).

detectron2 is imported only here, with an install hint when missing. Weights are read by this
module (``.pth``/``.pt`` with ``torch.load(weights_only=True)``; detectron2/Detectron1 ``.pkl``
through the restricted unpickler) and loaded with detectron2's checkpoint key matching; missing
or mis-shaped parameters are an error naming the file.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from extractors.detections.config import ClassRole
from extractors.detections.table import COLUMNS, SCHEMA
from m3em.epic.errors import InputError
from m3em.epic.safe_pickle import safe_load
from m3em.runtime import resolve_device

log = logging.getLogger("extractors.detections.detectron2_backend")

INSTALL_HINT = (
    "detectron2 is not installed; install it with "
    "pip install 'git+https://github.com/facebookresearch/detectron2.git' "
    "(needs torch and a C++ compiler; see https://detectron2.readthedocs.io/en/latest/tutorials/install.html)"
)


class DetectorConfigError(ValueError, InputError):
    """A detector config / weights file that cannot serve its role; names the file."""


def import_detectron2() -> Any:
    """Import detectron2 or raise ImportError with the install command."""
    try:
        import detectron2  # noqa: F401
        import detectron2.checkpoint
        import detectron2.config
        import detectron2.data.transforms
        import detectron2.modeling
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return detectron2


@dataclass
class Detector:
    """A loaded detectron2 GeneralizedRCNN in eval mode plus its test-time input settings."""

    model: torch.nn.Module
    num_classes: int
    input_format: str      # "RGB" or "BGR", what the model expects
    min_size_test: int
    max_size_test: int
    config_file: Path
    weights: Path


def load_detector_config(config_file: str | Path, *, overrides: Sequence[str] = ()) -> Any:
    """Read a detectron2 yacs config (``_BASE_`` chains resolved by detectron2)."""
    import_detectron2()
    from detectron2.config import get_cfg

    config_file = Path(config_file)
    if not config_file.is_file():
        raise DetectorConfigError(f"{config_file}: detector config file not found")
    if config_file.suffix not in (".yaml", ".yml"):
        raise DetectorConfigError(f"{config_file}: only detectron2 yacs configs (.yaml) are supported")
    cfg = get_cfg()
    try:
        cfg.merge_from_file(str(config_file))
        cfg.merge_from_list(list(overrides))
    except Exception as exc:  # yacs raises KeyError/AssertionError/ValueError for bad configs
        raise DetectorConfigError(f"{config_file}: not a valid detectron2 config: {exc}") from exc
    return cfg


def _load_checkpoint(weights: Path) -> dict:
    """The checkpoint dict detectron2's ``_load_model`` expects, read without arbitrary unpickling."""
    if not weights.is_file():
        raise DetectorConfigError(f"{weights}: detector weights not found")
    if weights.suffix == ".pkl":
        try:
            data = safe_load(weights)
        except pickle.UnpicklingError as exc:  # includes UnsafePickleError; the message names the file
            raise DetectorConfigError(f"{weights}: cannot load detector weights: {exc}") from exc
        if not isinstance(data, dict):
            raise DetectorConfigError(f"{weights}: expected a dict of arrays, got {type(data).__name__}")
        if "model" in data and "__author__" in data:  # detectron2 model-zoo format
            return {"model": data["model"], "__author__": data["__author__"], "matching_heuristics": True}
        blobs = data.get("blobs", data)  # Caffe2 / Detectron1 format
        return {"model": {k: v for k, v in blobs.items() if not k.endswith("_momentum")}, "__author__": "Caffe2",
                "matching_heuristics": True}
    try:
        loaded = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises UnpicklingError, RuntimeError, EOFError...
        raise DetectorConfigError(f"{weights}: not a weights-only torch checkpoint: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise DetectorConfigError(f"{weights}: expected a state dict, got {type(loaded).__name__}")
    return loaded if "model" in loaded else {"model": loaded}


def build_detector(cfg: Any, weights: str | Path, *, config_file: str | Path, device: str,
                   expected_classes: int | None = None, score_threshold: float = 0.0) -> Detector:
    """Build a GeneralizedRCNN from a detectron2 config and load ``weights``.

    Args:
        cfg: detectron2 ``CfgNode`` (from :func:`load_detector_config`).
        weights: checkpoint file (``.pth``/``.pt`` state dict or ``{"model": ...}``, or ``.pkl``).
        config_file: the config's path, for error messages.
        device: ``cpu`` or ``cuda[:i]``.
        expected_classes: required ``MODEL.ROI_HEADS.NUM_CLASSES`` (object vocabulary / number of
            hand-detector class roles).
        score_threshold: boxes below this score are not produced (``SCORE_THRESH_TEST``).
    """
    import_detectron2()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    config_file, weights = Path(config_file), Path(weights)
    dev = resolve_device(device, "detections.device")
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise DetectorConfigError(f"{config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}; "
                                  "only GeneralizedRCNN detectors are supported")
    n_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    if expected_classes is not None and n_classes != expected_classes:
        raise DetectorConfigError(f"{config_file}: MODEL.ROI_HEADS.NUM_CLASSES is {n_classes}, but {expected_classes} "
                                  "classes are expected (object vocabulary / hand-detector class roles)")
    if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
        raise DetectorConfigError(f"{config_file}: INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
    if not weights.is_file():
        raise DetectorConfigError(f"{weights}: detector weights file not found")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = str(dev)
    cfg.MODEL.WEIGHTS = ""  # loaded below, by this module
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
    cfg.freeze()
    model = build_model(cfg)
    model.eval()
    try:
        checkpoint = _load_checkpoint(weights)
        incompatible = DetectionCheckpointer(model)._load_model(checkpoint)
    except DetectorConfigError:
        raise
    except Exception as exc:
        raise DetectorConfigError(f"{weights}: cannot load detector weights: {exc}") from exc
    if incompatible.missing_keys or incompatible.incorrect_shapes:
        raise DetectorConfigError(
            f"{weights}: does not fit {config_file}: missing {incompatible.missing_keys[:5]}"
            f"{'...' if len(incompatible.missing_keys) > 5 else ''}, wrong shapes {incompatible.incorrect_shapes[:5]}"
        )
    if incompatible.unexpected_keys:
        log.warning("%s: %d parameters not used by the model, e.g. %s", weights, len(incompatible.unexpected_keys),
                    incompatible.unexpected_keys[:5])
    return Detector(model, n_classes, cfg.INPUT.FORMAT, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST),
                    config_file, weights)


@torch.no_grad()
def run_detector(det: Detector, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run one batch of frames.

    Args:
        det: the detector.
        frames: ``(N, H, W, 3)`` uint8 RGB.

    Returns:
        Per frame ``(boxes (K, 4) float64 normalised x1, y1, x2, y2 clipped to [0, 1],
        scores (K,) float64, classes (K,) int64)``.
    """
    from detectron2.data import transforms as T

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    n, h, w, _ = frames.shape
    aug = T.ResizeShortestEdge([det.min_size_test, det.min_size_test], det.max_size_test)
    inputs = []
    for img in frames:
        if det.input_format == "BGR":
            img = img[:, :, ::-1]
        img = aug.get_transform(img).apply_image(img)
        inputs.append({"image": torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))).float(),
                       "height": h, "width": w})
    out = []
    scale = np.array([w, h, w, h], dtype=np.float64)
    for result in det.model(inputs):
        inst = result["instances"].to("cpu")
        boxes = np.clip(inst.pred_boxes.tensor.numpy().astype(np.float64) / scale, 0.0, 1.0)
        out.append((boxes, inst.scores.numpy().astype(np.float64), inst.pred_classes.numpy().astype(np.int64)))
    return out


def _rows(frame: int, boxes: np.ndarray, scores: np.ndarray, kind: str, labels: np.ndarray,
          sides: np.ndarray) -> dict[str, np.ndarray]:
    k = len(scores)
    hand = kind == "hand"
    return {
        "frame": np.full(k, frame, np.int32), "kind": np.full(k, kind, object),
        "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3], "score": scores,
        "label": labels.astype(np.int32), "side": sides.astype(np.int8) if hand else np.full(k, -1, np.int8),
        "state": np.full(k, -1, np.int8), "offset_x": np.full(k, np.nan), "offset_y": np.full(k, np.nan),
    }


_SIDE = {ClassRole.HAND: -1, ClassRole.LEFT_HAND: 0, ClassRole.RIGHT_HAND: 1}


def detect_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    hand: Detector | None,
    class_roles: Sequence[ClassRole] = (),
    hand_threshold: float = 0.1,
    hand_object_threshold: float = 0.01,
    objects: Detector | None = None,
    object_threshold: float = 0.01,
) -> pd.DataFrame:
    """Detection-table rows for batches of frames.

    Args:
        batches: iterable of ``(frame_numbers (N,), frames (N, H, W, 3) uint8 RGB)``.
        hand: hand(-object) detector, or None.
        class_roles: role of each hand-detector class id.
        hand_threshold, hand_object_threshold: minimum scores of the hand detector's hands / objects.
        objects: class-aware object detector, or None.
        object_threshold: its minimum score.

    Returns:
        DataFrame with the table's :data:`COLUMNS` (not yet sorted).
    """
    if hand is None and objects is None:
        raise ValueError("no detector given")
    if hand is not None and len(class_roles) != hand.num_classes:
        raise DetectorConfigError(f"{hand.config_file}: {hand.num_classes} classes but {len(class_roles)} class_roles")
    roles = [ClassRole(r) for r in class_roles]
    parts: list[dict[str, np.ndarray]] = []
    for frame_numbers, frames in batches:
        frame_numbers = np.asarray(frame_numbers, dtype=np.int64)
        if len(frame_numbers) != len(frames):
            raise ValueError(f"{len(frame_numbers)} frame numbers for {len(frames)} frames")
        hand_out = run_detector(hand, frames) if hand is not None else [None] * len(frames)
        obj_out = run_detector(objects, frames) if objects is not None else [None] * len(frames)
        for f, h_res, o_res in zip(frame_numbers, hand_out, obj_out):
            if h_res is not None:
                boxes, scores, classes = h_res
                role = np.array([roles[c].value for c in classes], dtype=object)
                is_hand = np.isin(role, [r.value for r in _SIDE]) & (scores >= hand_threshold)
                side = np.array([_SIDE.get(ClassRole(r), -1) for r in role[is_hand]], dtype=np.int64)
                parts.append(_rows(int(f), boxes[is_hand], scores[is_hand], "hand", np.full(is_hand.sum(), -1), side))
                is_obj = (role == ClassRole.OBJECT.value) & (scores >= hand_object_threshold)
                parts.append(_rows(int(f), boxes[is_obj], scores[is_obj], "object", np.full(is_obj.sum(), -1),
                                   np.empty(0)))
            if o_res is not None:
                boxes, scores, classes = o_res
                keep = scores >= object_threshold
                parts.append(_rows(int(f), boxes[keep], scores[keep], "object", classes[keep], np.empty(0)))
    if not parts:
        return SCHEMA.empty_table().to_pandas()
    df = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COLUMNS})
    return df.astype({"frame": "int32", "x1": "float32", "y1": "float32", "x2": "float32", "y2": "float32",
                      "score": "float32", "label": "int32", "side": "int8", "state": "int8",
                      "offset_x": "float32", "offset_y": "float32"})


def producer_info(hand: Detector | None, objects: Detector | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """What made a table, for its metadata."""
    info: dict[str, Any] = {"source": "detectron2", **extra}
    for name, det in (("hand_detector", hand), ("object_detector", objects)):
        if det is not None:
            info[name] = {"config_file": str(det.config_file), "weights": str(det.weights),
                          "num_classes": det.num_classes}
    return info

"""Tiny synthetic EPIC-like annotations + feature files for the model/training/data tests.

Features are class prototypes plus noise (so a few steps of training already learn something),
written through :func:`m3em.epic.features.write_features` with tiny sizes: spatial streams 16 x 3 x 3,
audio 8, object 7, P = 5 positions, 3 verbs and 4 nouns.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from m3em.epic.config import validate_config
from m3em.epic.features import feature_path, write_features
from m3em.epic.streams import SPATIAL_STREAMS

REPO = Path(__file__).resolve().parents[1]
N_VERBS, N_NOUNS, P = 3, 4, 5
CHANNELS = {"tbn_rgb": 16, "tbn_flow": 16, "tbn_crop_rgb": 16, "tbn_crop_flow": 16, "i3d_rgb": 16, "i3d_flow": 16,
            "tbn_audio": 8, "object": 7}
SPLIT_FILES = {"source_train": "EPIC_100_uda_source_train", "target_train": "EPIC_100_uda_target_train_timestamps",
               "target_val": "EPIC_100_uda_target_val", "target_test": "EPIC_100_uda_target_test_timestamps"}
VIDEOS = {"source_train": ["P01_01", "P01_02"], "target_train": ["P02_101", "P02_102"],
          "target_val": ["P02_103"], "target_test": ["P02_104"]}


def write_dataset(root: Path, *, per_video: int = 6, streams=tuple(CHANNELS), hw: int = 3, seed: int = 0) -> dict:
    """Write annotations under ``root/annotations`` and features under ``root/features``; return a config."""
    rng = np.random.default_rng(seed)
    ann = root / "annotations"
    (ann / "UDA_annotations").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": range(N_VERBS), "key": [f"v{i}" for i in range(N_VERBS)]}).to_csv(ann / "EPIC_100_verb_classes.csv", index=False)
    pd.DataFrame({"id": range(N_NOUNS), "key": [f"n{i}" for i in range(N_NOUNS)]}).to_csv(ann / "EPIC_100_noun_classes.csv", index=False)
    all_videos = [v for vs in VIDEOS.values() for v in vs]
    pd.DataFrame({"video_id": all_videos, "duration": 60.0, "fps": 50.0, "resolution": "456x256"}).to_csv(
        ann / "EPIC_100_video_info.csv", index=False)
    protos = {s: rng.normal(size=(N_VERBS, N_NOUNS, CHANNELS[s])) for s in streams}
    for split, videos in VIDEOS.items():
        rows = []
        for video in videos:
            nids, feats = [], {s: [] for s in streams}
            for k in range(per_video):
                nid = f"{video}_{k}"
                verb, noun = int(rng.integers(N_VERBS)), int(rng.integers(N_NOUNS))
                start = 1 + 100 * k
                rows.append(dict(narration_id=nid, participant_id=video[:3], video_id=video, start_frame=start,
                                 stop_frame=start + 60, start_timestamp="00:00:00.00", stop_timestamp="00:00:01.00",
                                 verb_class=verb, noun_class=noun))
                nids.append(nid)
                shift = 0.5 if split.startswith("target") else 0.0  # a domain shift
                for s in streams:
                    base = protos[s][verb, noun] + shift
                    if s in SPATIAL_STREAMS:
                        x = base[None, :, None, None] + rng.normal(size=(P, CHANNELS[s], hw, hw))
                    else:
                        x = base[None, :] + rng.normal(size=(P, CHANNELS[s]))
                    feats[s].append(x)
            frames = np.tile(np.arange(1, P + 1), (len(nids), 1))
            for s in streams:
                write_features(feature_path(root / "features", s, video), np.stack(feats[s]), nids, frames,
                               stream=s, video_id=video)
        df = pd.DataFrame(rows)
        if split in ("target_train", "target_test"):
            df = df.drop(columns=["verb_class", "noun_class"])
        df.to_csv(ann / "UDA_annotations" / f"{SPLIT_FILES[split]}.csv", index=False)
    return tiny_config(root)


def tiny_config(root: Path) -> dict:
    """The repository config with tiny models pointed at ``root``."""
    with open(REPO / "config.yaml", encoding="utf-8") as fh:
        cfg = copy.deepcopy(yaml.safe_load(fh))
    cfg["data"]["annotations_dir"] = str(root / "annotations")
    cfg["inputs"]["official_features_dir"] = None
    cfg["models"]["ta3n"] = {"fc_dim": 32, "num_bottleneck": 16}
    for name, m in cfg["models"].items():
        if name == "ta3n":
            continue
        for mod in m["modalities"].values():
            mod["channels"] = CHANNELS[mod["stream"]]
        m["smr_reduction"] = 4
        m["cmc_latent_channels"] = 8
        m["cmc_scales"] = 1
    cfg["features"].update(features_dir=str(root / "features"), positions=P)
    cfg["train"].update(epochs=2, batch_size_source=4, batch_size_target=6, batch_size_eval=8, num_workers=0,
                        device="cpu", lr=0.01)
    validate_config(cfg)
    return cfg

"""Tiny annotation directory + config for the detection tests (tests/test_detections_*.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from m3em.epic.annotations import SPLIT_FILES

REPO = Path(__file__).resolve().parents[1]
N_NOUNS = 4
# video -> (fps, duration): 50 fps * 2 s = 100 frames, 60 fps * 1.5 s = 90 frames.
VIDEOS = {"P02_101": (50.0, 2.0), "P01_01": (60.0, 1.5)}
# (narration_id, video, split, start, stop)
SEGMENTS = [
    ("P02_101_0", "P02_101", "target_train", 1, 30),
    ("P02_101_1", "P02_101", "target_test", 41, 45),
    ("P02_101_2", "P02_101", "target_val", 50, 100),
    ("P01_01_0", "P01_01", "source_train", 10, 80),
]


def write_annotations(root: Path) -> Path:
    ann = root / "annotations"
    (ann / "UDA_annotations").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": range(3), "key": ["take", "put", "wash"]}).to_csv(ann / "EPIC_100_verb_classes.csv", index=False)
    pd.DataFrame({"id": range(N_NOUNS), "key": ["cup", "knife", "tap", "pan"]}).to_csv(
        ann / "EPIC_100_noun_classes.csv", index=False)
    pd.DataFrame({"video_id": list(VIDEOS), "duration": [d for _, d in VIDEOS.values()],
                  "fps": [f for f, _ in VIDEOS.values()], "resolution": "456x256"}).to_csv(
        ann / "EPIC_100_video_info.csv", index=False)
    for split in ("source_train", "target_train", "target_val", "target_test"):
        rows = [dict(narration_id=n, participant_id=v[:3], video_id=v, start_timestamp="00:00:00.00",
                     stop_timestamp="00:00:01.00", start_frame=s, stop_frame=e, verb_class=0, noun_class=1)
                for n, v, sp, s, e in SEGMENTS if sp == split]
        df = pd.DataFrame(rows, columns=["narration_id", "participant_id", "video_id", "start_timestamp",
                                         "stop_timestamp", "start_frame", "stop_frame", "verb_class", "noun_class"])
        if split in ("target_train", "target_test"):
            df = df.drop(columns=["verb_class", "noun_class"])
        df.to_csv(ann / "UDA_annotations" / f"{SPLIT_FILES[split]}.csv", index=False)
    return ann


def write_config(root: Path, **sections) -> Path:
    """The repository config pointed at a tiny annotation dir; ``sections`` update sub-keys."""
    with open(REPO / "config.yaml", encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg["data"]["annotations_dir"] = str(write_annotations(root))
    for name, values in sections.items():
        cfg[name].update(values)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path

"""A tiny video with frames, flow, audio, crops and annotations for the backbone tests.

One video ``P01_01`` at 25 fps, 60 frames of 80x48 (a frame archive), a stride-1 flow archive
(59 frames), a 2.4 s WAV sound track and a crop table; annotations with 3 verbs / 4 nouns, four
source_train segments (one shorter than an I3D clip) and one source_val segment.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

from extractors.detections.config import CropsConfig
from extractors.detections.crops import CropTable, write_crops
from extractors.flow_archive import FlowArchiveWriter, n_flow_frames
from m3em.epic.annotations import SPLIT_FILES

REPO = Path(__file__).resolve().parents[1]
VIDEO = "P01_01"
FPS = 25.0
N_FRAMES = 60
W, H = 80, 48
SR = 8000
# (narration_id, split, start, stop, verb, noun)
SEGMENTS = [
    ("P01_01_0", "source_train", 1, 20, 0, 1),
    ("P01_01_1", "source_train", 15, 40, 1, 2),
    ("P01_01_2", "source_train", 41, 60, 2, 0),
    ("P01_01_3", "source_train", 30, 33, 0, 3),  # 4 frames: shorter than an 8-frame clip
    ("P01_01_4", "source_val", 50, 58, 1, 1),
]
COLUMNS = ["narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp",
           "start_frame", "stop_frame", "verb_class", "noun_class"]


def frames_array(seed: int = 0) -> np.ndarray:
    """``(N_FRAMES, H, W, 3)`` uint8: a moving bright square on noise."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 60, size=(N_FRAMES, H, W, 3), dtype=np.uint8)
    for i in range(N_FRAMES):
        x = 5 + i % (W - 20)
        out[i, 10:26, x : x + 16] = (200, 120, 40)
    return out


def write_dataset(root: Path) -> dict[str, Path]:
    """Write every input under ``root``; returns their paths."""
    ann = root / "annotations"
    (ann / "UDA_annotations").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": range(3), "key": ["take", "put", "wash"]}).to_csv(ann / "EPIC_100_verb_classes.csv", index=False)
    pd.DataFrame({"id": range(4), "key": ["cup", "knife", "tap", "pan"]}).to_csv(ann / "EPIC_100_noun_classes.csv",
                                                                                 index=False)
    pd.DataFrame({"video_id": [VIDEO], "duration": [N_FRAMES / FPS], "fps": [FPS], "resolution": [f"{W}x{H}"]}).to_csv(
        ann / "EPIC_100_video_info.csv", index=False)
    for split in ("source_train", "source_val", "target_train", "target_val", "target_test"):
        rows = [dict(narration_id=n, participant_id="P01", video_id=VIDEO, start_timestamp="00:00:00.00",
                     stop_timestamp="00:00:01.00", start_frame=s, stop_frame=e, verb_class=v, noun_class=c)
                for n, sp, s, e, v, c in SEGMENTS if sp == split]
        df = pd.DataFrame(rows, columns=COLUMNS)
        if split in ("target_train", "target_test"):
            df = df.drop(columns=["verb_class", "noun_class"])
        df.to_csv(ann / "UDA_annotations" / f"{SPLIT_FILES[split]}.csv", index=False)

    frames_dir = root / "frames"
    frames_dir.mkdir()
    frames_tar = frames_dir / f"{VIDEO}.tar"
    with tarfile.open(frames_tar, "w") as tar:
        for i, img in enumerate(frames_array(), start=1):
            ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            info = tarfile.TarInfo(f"frame_{i:010d}.jpg")
            info.size = len(buf)
            tar.addfile(info, io.BytesIO(buf.tobytes()))

    results = root / "results"
    flow_tar = results / "flow" / f"{VIDEO}.tar"
    flow_tar.parent.mkdir(parents=True)
    rng = np.random.default_rng(1)
    with FlowArchiveWriter(flow_tar) as writer:
        writer.write(rng.integers(100, 156, size=(n_flow_frames(N_FRAMES, 1, 1), H, W, 2), dtype=np.uint8))

    videos = root / "videos"
    videos.mkdir()
    wav = videos / f"{VIDEO}.wav"
    t = np.arange(int(N_FRAMES / FPS * SR)) / SR
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32), SR)

    crops = results / "crops" / f"{VIDEO}.parquet"
    boxes = np.tile(np.array([[0.1, 0.2, 0.6, 0.9]]), (N_FRAMES, 1))
    boxes[N_FRAMES // 2 :, 0] = 0.3  # crops move half-way through
    write_crops(crops, CropTable(VIDEO, N_FRAMES, boxes, np.array(["detected"] * N_FRAMES, dtype=object)), CropsConfig())
    return {"annotations": ann, "frames": frames_tar, "flow": flow_tar, "audio": wav, "crops": crops,
            "results": results, "videos": videos, "frames_dir": frames_dir}


def write_config(root: Path, paths: dict[str, Path], **sections: dict) -> Path:
    """The repository config pointed at the tiny dataset, small backbones; ``sections`` update sub-keys."""
    with open(REPO / "config.yaml", encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg["data"].update(annotations_dir=str(paths["annotations"]), videos_dir=str(paths["videos"]), video_ext=".wav",
                       results_dir=str(paths["results"]))
    cfg["inputs"]["official_frames_dir"] = str(paths["frames_dir"])
    cfg["flow"].update(stride=1, dilation=1)
    cfg["audio"].update(sample_rate=SR, window_s=0.5, n_fft=127, win_length=100, hop_length=60, n_time=64)
    cfg["backbones"]["tbn"].update(input_size=64, tbn_checkpoint=None, imagenet_checkpoint=None,
                                   kinetics_flow_checkpoint=None)
    cfg["backbones"]["i3d"].update(input_size=64, clip_length=8, rgb_checkpoint=None, flow_checkpoint=None)
    cfg["finetune"].update(device="cpu", num_workers=0, max_train_segments=None)
    cfg["finetune"]["tbn"].update(epochs=2, batch_size=2, num_segments=2, lr_steps=[1])
    cfg["finetune"]["i3d"].update(epochs=1, batch_size=2, num_segments=1, lr_steps=[1])
    cfg["features"].update(features_dir=str(paths["results"] / "features"), positions=3, batch_size=6, device="cpu",
                           num_workers=0)
    for name, values in sections.items():
        for k, v in values.items():
            if isinstance(v, dict):
                cfg[name][k].update(v)
            else:
                cfg[name][k] = v
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread per test module: two OpenMP threads on a shared, oversubscribed 2-core
    machine run far slower than one. Imported (hence autouse) by the backbone test modules."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

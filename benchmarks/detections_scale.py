"""Speed of the detection-table path on a synthetic EPIC-sized video, side by side with baselines.

* reading an official pickle: our reader (restricted unpickler + validation) vs a bare
  ``pickle.load`` + protobuf parse with no checks;
* crops: the vectorised :func:`compute_crops` vs a per-frame Python loop of the same recipe
  (also a parity check: the two must agree).

``python benchmarks/detections_scale.py [--n-frames 20000]`` (EPIC-100 videos have up to ~214k
frames; P01_09 has 214,270). Writes nothing; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from extractors.detections import proto_schema
from extractors.detections.config import CropsConfig
from extractors.detections.crops import compute_crops
from extractors.detections.official import (
    FrameDetections,
    HandBox,
    ObjectBox,
    read_official_columns,
    read_official_detections,
    write_official_detections,
)
from extractors.detections.table import boxes_from_official, read_detection_table, write_detection_table


def synthetic(n: int, seed: int = 0) -> list[FrameDetections]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hands, objects = [], []
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 0.8, 2)
            hands.append(HandBox(x, y, x + 0.2, y + 0.2, rng.uniform(), int(rng.integers(2)), int(rng.integers(5)),
                                 0.1, -0.1))
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 0.7, 2)
            objects.append(ObjectBox(x, y, x + 0.3, y + 0.3, rng.uniform()))
        out.append(FrameDetections(i + 1, tuple(hands), tuple(objects)))
    return out


def loop_crops(frames: np.ndarray, boxes: np.ndarray, n: int, cfg: CropsConfig) -> np.ndarray:
    """The crop recipe frame by frame in plain Python (baseline and parity reference)."""
    by_frame: dict[int, list] = {}
    for f, b in zip(frames.tolist(), boxes.tolist()):
        by_frame.setdefault(f, []).append(b)
    own = [None] * n
    for f, bs in by_frame.items():
        x1, y1 = min(b[0] for b in bs), min(b[1] for b in bs)
        x2, y2 = max(b[2] for b in bs), max(b[3] for b in bs)
        w, h = x2 - x1, y2 - y1
        g = [max(0.0, x1 - cfg.margin * w), max(0.0, y1 - cfg.margin * h),
             min(1.0, x2 + cfg.margin * w), min(1.0, y2 + cfg.margin * h)]
        for lo, hi, a, b in ((0, 2, x1, x2), (1, 3, y1, y2)):
            if g[hi] - g[lo] < cfg.min_size:
                c = (g[lo] + g[hi]) / 2
                new_lo, new_hi = c - cfg.min_size / 2, c + cfg.min_size / 2
                if new_lo < 0:
                    new_lo, new_hi = 0.0, new_hi - new_lo
                if new_hi > 1:
                    new_lo, new_hi = new_lo - (new_hi - 1), 1.0
                g[lo], g[hi] = min(max(new_lo, 0.0), a), max(min(new_hi, 1.0), b)
        own[f - 1] = g
    det = sorted(by_frame)
    filled = []
    for i in range(n):
        if own[i] is not None:
            filled.append(own[i])
            continue
        best = None
        for d in det:
            dist = abs(d - 1 - i)
            if dist <= cfg.borrow_window and (best is None or dist < best[0]):
                best = (dist, d)
        filled.append(own[best[1] - 1] if best else [0.0, 0.0, 1.0, 1.0])
    arr = np.array(filled)
    half = cfg.smoothing_window // 2
    out = np.empty_like(arr)
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + cfg.smoothing_window - half)
        m = arr[lo:hi].mean(0)
        out[i] = [min(m[0], arr[i, 0]), min(m[1], arr[i, 1]), max(m[2], arr[i, 2]), max(m[3], arr[i, 3])]
    return np.clip(out, 0, 1)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-frames", type=int, default=20000)
    args = parser.parse_args()
    n = args.n_frames
    frames = synthetic(n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pkl, parquet = Path(tmp) / "v.pkl", Path(tmp) / "v.parquet"
        _, t = timed(write_official_detections, pkl, "v", frames)
        rows.append(("write official pickle", t, None))
        ours, t_ours = timed(read_official_detections, pkl, video_id="v", n_frames=n)

        def bare():
            with open(pkl, "rb") as fh:
                return [proto_schema.Detections.FromString(b) for b in pickle.load(fh)]

        _, t_bare = timed(bare)
        rows.append(("read official pickle to dataclasses (checked) vs bare pickle.load + parse", t_ours, t_bare))
        assert len(ours) == n
        cols, t_cols = timed(read_official_columns, pkl, video_id="v", n_frames=n)
        boxes, t_rows = timed(boxes_from_official, cols)
        rows.append((f"read official pickle to table rows, the converter's path ({len(boxes)} boxes) vs bare",
                     t_cols + t_rows, t_bare))
        _, t = timed(write_detection_table, parquet, boxes, video_id="v", n_frames=n, n_object_classes=0)
        rows.append(("write table (validated)", t, None))
        table, t = timed(read_detection_table, parquet, video_id="v", n_frames=n)
        rows.append(("read table (validated)", t, None))
    cfg = CropsConfig()
    b = table.boxes
    keep = ((b["kind"] == "hand") & (b["score"] >= 0.5)) | ((b["kind"] == "object") & (b["score"] >= 0.5))
    kf, kb = b["frame"].to_numpy()[keep], b[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)[keep]
    (vec, _), t_vec = timed(compute_crops, kf, kb, n, cfg)
    ref, t_loop = timed(loop_crops, kf, kb, n, cfg)
    assert np.allclose(vec, ref, atol=1e-12), "vectorised crops differ from the loop reference"
    rows.append(("crops: vectorised vs per-frame Python loop (parity checked)", t_vec, t_loop))
    print(f"n_frames = {n}\n\n| step | ours (s) | baseline (s) | baseline/ours |\n|---|---|---|---|")
    for name, ours_t, base in rows:
        ratio = f"{base / ours_t:.2f}x" if base else "-"
        print(f"| {name} | {ours_t:.3f} | {'-' if base is None else f'{base:.3f}'} | {ratio} |")


if __name__ == "__main__":
    main()

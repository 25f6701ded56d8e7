"""Is the demo's domain gap real, and is its task learnable? A shallow probe answers both.

Features per segment, from frames decoded with decord at the segment's annotation frames:
a 4x4x4 RGB colour histogram (mean over the segment) and a motion profile (at 8 evenly spaced
instants: mean absolute frame difference over 1/25 s, and the difference-weighted centroid, whose
path separates up/down, side-to-side and circular motion). A multinomial logistic regression
(L2, LBFGS) and a nearest-centroid classifier are trained on source_train verbs (features
standardised with source_train statistics) and scored on held-out source segments (source_val,
other videos) and on the target domain (target_val, and target_test with its answers file). A
last column standardises target features with the unlabelled target_train statistics instead, the
simplest unsupervised adaptation, to show how much of the gap is a shift of feature statistics.

Usage::

    python benchmarks/demo_domain_gap.py --data-dir results/demo [--data-dir other_seed_dir ...]

Several ``--data-dir`` (e.g. the same size generated with different seeds) are pooled per split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import decord
import numpy as np
import pandas as pd
import torch

from m3em.epic.annotations import EpicAnnotations, read_annotation_file

K = 16  # sampled instants per segment


def segment_features(vr: decord.VideoReader, start: int, stop: int, fps: float) -> np.ndarray:
    """Colour and motion statistics of one segment (1-based inclusive frame range).

    Motion is measured by the mean absolute difference between frames 1/25 s apart at K instants
    and by the difference-weighted centroid and spread; summarised by statistics that do not
    depend on where in the frame the action happens (trends, jitter, spread).
    """
    lag = max(int(round(fps / 25)), 1)
    n = len(vr)
    centres = np.linspace(start, max(stop - lag, start), K).round().astype(int)
    idx = np.clip(np.concatenate([centres, centres + lag]) - 1, 0, n - 1)
    frames = vr.get_batch(list(idx)).asnumpy().astype(np.float32)  # (2K, H, W, 3)
    a, b = frames[:K], frames[K:]
    q = np.clip((a / 128).astype(int), 0, 1)
    codes = q[..., 0] * 4 + q[..., 1] * 2 + q[..., 2]
    hist = np.bincount(codes.ravel(), minlength=8).astype(np.float32)
    hist /= hist.sum()
    diff = np.abs(b - a).mean(axis=-1)  # (K, H, W)
    # Remove the noise floor (sensor noise makes every pixel "move" a little).
    diff = np.maximum(diff - 2.0 * np.median(diff, axis=(1, 2), keepdims=True), 0.0)
    h, w = diff.shape[1:]
    energy = diff.mean(axis=(1, 2))
    ys, xs = np.mgrid[0:h, 0:w]
    mass = diff.sum(axis=(1, 2)) + 1e-6
    cx = (diff * xs).sum(axis=(1, 2)) / mass / w
    cy = (diff * ys).sum(axis=(1, 2)) / mass / h
    sx = np.sqrt((diff * (xs / w - cx[:, None, None]) ** 2).sum(axis=(1, 2)) / mass)
    sy = np.sqrt((diff * (ys / h - cy[:, None, None]) ** 2).sum(axis=(1, 2)) / mass)
    q4 = K // 4
    motion = [
        energy.mean(), energy.std(), energy[-q4:].mean() - energy[:q4].mean(),
        cx.std(), cy.std(), np.abs(np.diff(cx)).mean(), np.abs(np.diff(cy)).mean(),
        cx[-q4:].mean() - cx[:q4].mean(), cy[-q4:].mean() - cy[:q4].mean(),
        sx.mean(), sy.mean(), (stop - start) / fps,
    ]
    return np.concatenate([hist, np.asarray(motion, np.float32)]).astype(np.float64)


def split_features(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, verb labels) of every segment of a labelled split (target_test via its answers)."""
    ann = EpicAnnotations.open(data_dir / "annotations")
    if split.endswith("_test"):
        df = read_annotation_file(data_dir / f"{split}_labels.csv", labelled=True)
    else:
        df = ann.split(split)
    feats, labels = [], []
    for video_id, rows in df.groupby("video_id", sort=True):
        vr = decord.VideoReader(str(data_dir / "videos" / f"{video_id}.MP4"), num_threads=1)
        fps = ann.fps(video_id)
        for r in rows.itertuples():
            feats.append(segment_features(vr, r.start_frame, r.stop_frame, fps))
            labels.append(getattr(r, "verb_class", -1))
    return np.stack(feats), np.asarray(labels)


def logistic_regression(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], n_classes, dtype=torch.float64)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, action="append", required=True, help="a generated demo dataset")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    n_verbs = len(EpicAnnotations.open(args.data_dir[0] / "annotations").verbs)
    splits = ("source_train", "source_val", "target_val", "target_test")
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in splits + ("target_train",):
        parts = [split_features(d, split) for d in args.data_dir]
        data[split] = (np.concatenate([f for f, _ in parts]), np.concatenate([y for _, y in parts]))
    n_colour = 8  # the first features are the colour histogram, the rest motion statistics
    feature_sets = {"all": slice(0, None), "motion": slice(n_colour, None)}
    rows = [{"split": split, "domain": split.split("_")[0], "segments": len(data[split][1])} for split in splits]
    for name, cols in feature_sets.items():
        xs, ys = data["source_train"][0][:, cols], data["source_train"][1]
        mu, sd = xs.mean(0), xs.std(0) + 1e-6
        model = logistic_regression((xs - mu) / sd, ys, n_verbs)
        centroids = np.stack([((xs[ys == c] - mu) / sd).mean(0) if (ys == c).any() else np.full(xs.shape[1], np.inf)
                              for c in range(n_verbs)])
        # The simplest unsupervised adaptation: standardise each domain with its own statistics
        # (target statistics from the unlabelled target_train features; its labels are never read).
        xt = data["target_train"][0][:, cols]
        mu_t, sd_t = xt.mean(0), xt.std(0) + 1e-6
        for row, split in zip(rows, splits):
            x, y = data[split][0][:, cols], data[split][1]
            z = (x - mu) / sd
            za = z if split.startswith("source") else (x - mu_t) / sd_t
            with torch.no_grad():
                lr_pred = model(torch.from_numpy(z)).argmax(1).numpy()
                ad_pred = model(torch.from_numpy(za)).argmax(1).numpy()
            nc_pred = np.argmin(((z[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
            row[f"{name}:logreg"] = float((lr_pred == y).mean())
            row[f"{name}:centroid"] = float((nc_pred == y).mean())
            row[f"{name}:logreg+domain_std"] = float((ad_pred == y).mean())
    table = pd.DataFrame(rows)
    print(f"data: {', '.join(map(str, args.data_dir))}; chance = {1 / n_verbs:.3f} ({n_verbs} verbs)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"probe time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

"""Which extracted feature streams carry verb and noun evidence, within the source domain and across the gap.

For every stream, a multinomial logistic regression on the segment's pooled feature (mean over
positions and cells, standardised with the training part's statistics) is trained on one
source_train video and scored on the other source_train video (held-out source) and on target_val.
A stream that fails the held-out source test carries no label evidence at all; one that passes it
but fails target_val is hit by the domain gap. This is how we found what the demo's backbones can
and cannot give without pretrained weights (docs/benchmarks_demo.md).

    python benchmarks/demo_feature_probe.py --results results \
        --streams tbn_rgb tbn_flow tbn_audio tbn_crop_rgb tbn_crop_flow i3d_rgb i3d_flow object

(scikit-learn comes with librosa, a project dependency.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from m3em.epic.annotations import EpicAnnotations
from m3em.epic.features import FeatureFile, feature_path


def pooled(results: Path, annotations: EpicAnnotations, split: str, stream: str,
           videos: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (N, c), verb (N,), noun (N,))``: each segment's feature averaged over positions and cells."""
    df = annotations.split(split, labelled=True)
    if videos is not None:
        df = df[df.video_id.isin(videos)]
    rows: dict[str, dict[str, np.ndarray]] = {}
    x = []
    for r in df.itertuples():
        if r.video_id not in rows:
            ff = FeatureFile(feature_path(results / "features", stream, r.video_id))
            rows[r.video_id] = {n: ff[i] for i, n in enumerate(ff.narration_ids)}
        f = np.asarray(rows[r.video_id][r.narration_id], dtype=np.float32)
        x.append(f.reshape(f.shape[0], f.shape[1], -1).mean(axis=(0, 2)))
    return np.stack(x), df.verb_class.to_numpy(), df.noun_class.to_numpy()


def transfer_probe(fit: tuple[np.ndarray, np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray, np.ndarray],
                   target: tuple[np.ndarray, np.ndarray, np.ndarray], c: float = 0.1,
                   max_iter: int = 1000) -> dict[str, tuple[float, float]]:
    """The probe: fit on ``fit``, score on ``held`` (held-out source) and ``target``.

    Each part is ``(X (N, c), verb (N,), noun (N,))``; features are standardised with the fit
    part's statistics, then a multinomial logistic regression (inverse L2 strength ``c``) is fit
    per task. Also used by ``demo_signal_probe.py``.

    Returns:
        ``{"verb" | "noun": (held-out top-1, target top-1)}`` as fractions.
    """
    scaler = StandardScaler().fit(fit[0])
    out = {}
    for k, task in ((1, "verb"), (2, "noun")):
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(fit[0]), fit[k])
        out[task] = (clf.score(scaler.transform(held[0]), held[k]), clf.score(scaler.transform(target[0]), target[k]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=Path("results"), help="the DAG's results directory")
    p.add_argument("--streams", nargs="+", required=True)
    p.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the logistic regression")
    args = p.parse_args()
    ann = EpicAnnotations.open(args.results / "demo" / "annotations")
    src_videos = sorted(ann.split("source_train")["video_id"].unique())
    if len(src_videos) < 2:
        raise SystemExit("the probe needs two source_train videos (fit on one, test on the other)")
    fit_v, held_v = src_videos[:1], src_videos[1:]
    print(f"fit on {fit_v}, held-out source {held_v}, target target_val; top-1 accuracy")
    print("| stream | verb: held-out source | verb: target_val | noun: held-out source | noun: target_val |")
    print("|---|---:|---:|---:|---:|")
    for stream in args.streams:
        fit = pooled(args.results, ann, "source_train", stream, fit_v)
        held = pooled(args.results, ann, "source_train", stream, held_v)
        tgt = pooled(args.results, ann, "target_val", stream)
        r = transfer_probe(fit, held, tgt, c=args.c)
        print(f"| {stream} | " + " | ".join(f"{c:.2f}" for c in (*r["verb"], *r["noun"])) + " |")
    print(f"chance: verb {1 / len(ann.verbs):.3f}, noun {1 / len(ann.nouns):.3f}; "
          f"segments: fit {len(fit[1])}, held-out {len(held[1])}, target {len(tgt[1])}")


if __name__ == "__main__":
    main()

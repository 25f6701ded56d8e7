"""Score annotation splits with a trained model and write one score file per split (:mod:`m3em.epic.scores`).

    python -m m3em.predict --config config.yaml --checkpoint results/train/A_m3em/model.pt \\
        --split target_val target_test --out results/scores/A_m3em/target_val.npz results/scores/A_m3em/target_test.npz

Several splits in one process: the workflow scores every split a run needs in one job, so torch
starts once per run instead of once per (run, split).

Works for labelled and unlabelled splits (labels are never read). The network is rebuilt from
the config's ``models.<name>`` (name and method from the checkpoint) and must match the
checkpoint's recorded architecture; the scores are the fused verb/noun logits (dropout off,
domain attention on, as the reference test script runs TA3N).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from m3em.checkpoint import check_architecture, load_checkpoint, load_model_state
from m3em.epic.annotations import LABELLED_SPLITS, EpicAnnotations
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.scores import write_scores
from m3em.epic.streams import stream_info
from m3em.models import Method, build_model, model_config
from m3em.runtime import resolve_device
from m3em.train import TrainJobConfig, architecture, open_split, predict_logits, trn_positions

log = logging.getLogger("m3em.predict")


def run_prediction(job: TrainJobConfig, checkpoint: str | Path, split: str, out: str | Path, *,
                   progress: bool = True) -> Path:
    """Write the scores of ``split`` to ``out`` (an ``.npz``) and return ``out``."""
    return run_predictions(job, checkpoint, [(split, out)], progress=progress)[0]


def run_predictions(job: TrainJobConfig, checkpoint: str | Path, outputs: Sequence[tuple[str, str | Path]], *,
                    progress: bool = True) -> list[Path]:
    """Score each ``(split, out)`` of ``outputs`` with one loaded model; returns the ``out`` paths.

    The checkpoint, annotations and network are loaded once; every split's feature files are still
    checked against the checkpoint's architecture. Scores are ``(N, n_verbs)`` / ``(N, n_nouns)``
    logits in the split's annotation order.
    """
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    model_name, method = str(ckpt["model_name"]), Method(ckpt["method"])
    mcfg, arch = model_config(job.models, model_name)
    tc = job.train
    positions = trn_positions(job.features)
    device = resolve_device(tc.device, "train.device")
    annotations = EpicAnnotations.open(job.data.annotations_dir)
    n_verbs, n_nouns = len(annotations.verbs), len(annotations.nouns)
    model = None
    written = []
    for split, out in outputs:
        out = Path(out)
        # Labels are not needed to score; reading the split unlabelled also works for test splits.
        dataset = open_split(job, annotations, split, model_name, mcfg, labelled=False)
        if tc.check_finite:
            dataset.check_finite(progress=progress)
        check_architecture(checkpoint, ckpt["architecture"],
                           architecture(model_name, method, mcfg, arch, n_verbs, n_nouns, positions, dataset.shapes,
                                        tc.standardise_features))
        if model is None:  # the architecture check above makes every split's maps agree with the first's
            model = build_model(mcfg, arch, method, n_verbs=n_verbs, n_nouns=n_nouns, num_frames=positions,
                                dropout_i=tc.dropout_i, dropout_v=tc.dropout_v, spatial=dataset.spatial,
                                standardise=tc.standardise_features)
            load_model_state(checkpoint, model, ckpt["model"])
            model.to(device)
        idx, verb, noun = predict_logits(model, dataset, tc.batch_size_eval, device, tc.num_workers,
                                         progress=progress, desc=f"{model_name}/{method.value} {split}")
        order = np.argsort(np.asarray(idx, dtype=np.int64), kind="stable")
        ids = [dataset.narration_ids[idx[i]] for i in order]
        write_scores(out, ids, verb.numpy()[order], noun.numpy()[order], meta={
            "kind": "logits", "model": model_name, "method": method.value, "split": split,
            "checkpoint": str(checkpoint), "epoch": int(ckpt["epoch"]),
            "git_revision": str(ckpt.get("git_revision", "")),
            "labelled_split": split in LABELLED_SPLITS,
            # Crops and object features come from hand-object boxes: SLS training-labels level 4.
            "uses_hand_object_boxes": any(stream_info(m.stream).uses_hand_object_boxes for m in mcfg.modalities.values()),
        })
        log.info("%s: %d segments of %s", out, len(ids), split)
        written.append(out)
    return written


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3em.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="config.yaml (models:, train:, features:, data:, inputs:)")
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt (or checkpoint.pt) written by m3em.train")
    p.add_argument("--split", nargs="+", required=True, help="annotation split(s) to score (target_val, target_test, ...)")
    p.add_argument("--out", type=Path, nargs="+", required=True, help="score file (.npz), one per --split, same order")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()

    def run(args: argparse.Namespace) -> None:
        if len(args.out) != len(args.split):
            parser.error(f"--out needs one file per --split: {len(args.split)} split(s), {len(args.out)} file(s)")
        job = load_job_config(args.config, TrainJobConfig)
        # A context, not torch.set_grad_enabled(False): main() is also called in-process (tests).
        with torch.no_grad():
            run_predictions(job, args.checkpoint, list(zip(args.split, args.out)), progress=not args.no_progress)

    return run_entry_point("python -m m3em.predict", parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

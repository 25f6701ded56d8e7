"""detectron2 inference throughput: batched frames vs one frame per forward pass, side by side.

Builds detectron2's ``COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml`` (random weights written to a
temporary checkpoint and loaded through the backend, as a real run would), with ``--classes``
classes, and runs ``--n-frames`` random 456x256 RGB frames (EPIC's frame size) through
:func:`extractors.detections.detectron2_backend.run_detector` in batches of ``--batch-size`` and
in batches of 1. Needs detectron2; ``--device cuda`` without CUDA is an error.

``python benchmarks/detections_detectron2_speed.py --device cuda --batch-size 16 --n-frames 256``
``python benchmarks/detections_detectron2_speed.py --device cpu --batch-size 4 --n-frames 8 --min-size 128``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from extractors.detections import detectron2_backend as backend
from m3em.runtime import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-frames", type=int, default=256)
    parser.add_argument("--classes", type=int, default=300, help="object vocabulary (EPIC-100 nouns: 300)")
    parser.add_argument("--min-size", type=int, default=256, help="INPUT.MIN_SIZE_TEST (EPIC frames are 256 high)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    resolve_device(args.device, "--device")
    backend.import_detectron2()
    from detectron2 import model_zoo
    from detectron2.modeling import build_model

    cfg = model_zoo.get_config("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = args.classes
    cfg.INPUT.MIN_SIZE_TEST = args.min_size
    cfg.INPUT.MAX_SIZE_TEST = 2 * args.min_size
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file, weights = Path(tmp) / "det.yaml", Path(tmp) / "det.pth"
        cfg_file.write_text(cfg.dump(), encoding="utf-8")
        torch.save(build_model(cfg).state_dict(), weights)
        det = backend.build_detector(backend.load_detector_config(cfg_file), weights, config_file=cfg_file,
                                     device=args.device, expected_classes=args.classes, score_threshold=0.01)
    frames = np.random.default_rng(0).integers(0, 256, size=(args.n_frames, 256, 456, 3), dtype=np.uint8)
    backend.run_detector(det, frames[: min(2, args.n_frames)])  # warm-up (cuDNN autotune, allocator)

    def run(batch: int) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, args.n_frames, batch):
            backend.run_detector(det, frames[i: i + batch])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    t_batch, t_single = run(args.batch_size), run(1)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"device: {dev}; Faster R-CNN R50-FPN, {args.classes} classes, 456x256 frames, MIN_SIZE_TEST {args.min_size}")
    print("| mode | frames/s | speed-up |\n|---|---|---|")
    print(f"| batch 1 | {args.n_frames / t_single:.2f} | 1.00x |")
    print(f"| batch {args.batch_size} | {args.n_frames / t_batch:.2f} | {t_single / t_batch:.2f}x |")


if __name__ == "__main__":
    main()

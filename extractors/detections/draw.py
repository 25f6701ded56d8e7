"""Visual check: draw the detected boxes and the crop on sampled frames into one PNG.

``python -m extractors.detections.draw --config config.yaml --video-id V
(--video V.MP4 | --frames-archive V.tar) --detections V.parquet --crops V.crops.parquet
--out check.png [--frames 10 200 ...] [--n-samples 6] [--columns 3] [--scale 2]``

Colours: hands kept for the crop green (left), blue (right), cyan (side unknown); objects kept
for the crop yellow; boxes under the crop thresholds thin grey; the crop thick magenta. Each
tile is labelled with the frame number and whether the crop was detected, borrowed or the full
frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from extractors.detections.cli import open_annotations, run_video_command, video_fps, video_parser
from extractors.detections.config import CropsConfig
from extractors.detections.crops import CropTable, read_crops
from extractors.detections.table import DetectionTable, read_detection_table
from extractors.video import DecodeConfig, open_frames
from m3em.epic.atomic import atomic_write_bytes
from m3em.epic.cli import load_job_config
from m3em.epic.config import DataConfig

log = logging.getLogger("extractors.detections.draw")
#: The module run by ``python -m`` (``__name__`` is then ``__main__``).
COMMAND = "extractors.detections.draw"

# RGB colours.
HAND_COLOURS = {0: (40, 200, 40), 1: (40, 90, 255), -1: (0, 220, 220)}
OBJECT_COLOUR = (255, 215, 0)
WEAK_COLOUR = (150, 150, 150)
CROP_COLOUR = (230, 0, 230)


def _px(box: np.ndarray, w: int, h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    x1, y1, x2, y2 = (np.asarray(box, dtype=np.float64) * [w - 1, h - 1, w - 1, h - 1]).round().astype(int)
    return (int(x1), int(y1)), (int(x2), int(y2))


def draw_frame(image: np.ndarray, frame: int, table: DetectionTable, crops: CropTable, cfg: CropsConfig) -> np.ndarray:
    """One annotated tile: ``image`` (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB copy with boxes."""
    img = np.ascontiguousarray(image.copy())
    h, w = img.shape[:2]
    thick = max(1, round(h / 128))
    rows = table.boxes[table.boxes["frame"] == frame]
    for _, r in rows.iterrows():
        box = r[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
        is_hand = r["kind"] == "hand"
        kept = r["score"] >= (cfg.hand_threshold if is_hand else cfg.object_threshold)
        colour = (HAND_COLOURS[int(r["side"])] if is_hand else OBJECT_COLOUR) if kept else WEAK_COLOUR
        p1, p2 = _px(box, w, h)
        cv2.rectangle(img, p1, p2, colour, thick if kept else 1)
        if kept:
            label = f"{'H' if is_hand else 'O'} {r['score']:.2f}"
            cv2.putText(img, label, (p1[0] + 2, max(p1[1] - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3 * thick, colour, 1,
                        cv2.LINE_AA)
    p1, p2 = _px(crops.boxes([frame])[0], w, h)
    cv2.rectangle(img, p1, p2, CROP_COLOUR, thick + 1)
    caption = f"frame {frame} ({crops.source[frame - 1]})"
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thick, 1)
    cv2.rectangle(img, (2, h - 8 - th), (6 + tw, h - 6 + base), (0, 0, 0), -1)
    cv2.putText(img, caption, (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thick, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def sample_frames(table: DetectionTable, n_samples: int) -> np.ndarray:
    """Frames spread over the video, preferring frames that have boxes (half) and evenly spaced ones."""
    with_boxes = np.unique(table.boxes["frame"].to_numpy())
    even = np.linspace(1, table.n_frames, n_samples).round().astype(int)
    picked = with_boxes[np.linspace(0, len(with_boxes) - 1, n_samples // 2).round().astype(int)] if len(
        with_boxes) else np.zeros(0, int)
    frames = np.unique(np.concatenate([picked, even]))
    return frames[np.linspace(0, len(frames) - 1, min(n_samples, len(frames))).round().astype(int)]


def contact_sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Tiles (same size) in a grid with 2-pixel white gutters; (H', W', 3) uint8 RGB."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + 2) - 2, columns * (w + 2) - 2, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (h + 2): r * (h + 2) + h, c * (w + 2): c * (w + 2) + w] = t
    return sheet


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


@dataclasses.dataclass(frozen=True)
class DrawJobConfig:
    """The config sections ``python -m extractors.detections.draw`` reads."""

    data: DataConfig
    crops: CropsConfig
    decode: DecodeConfig


def _parser() -> argparse.ArgumentParser:
    parser = video_parser(COMMAND, __doc__, config_help="config.yaml (crops:, decode:, data.annotations_dir)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path)
    src.add_argument("--frames-archive", type=Path)
    parser.add_argument("--detections", required=True, type=Path)
    parser.add_argument("--crops", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output .png")
    parser.add_argument("--frames", type=int, nargs="*", default=None, help="1-based frames to draw")
    parser.add_argument("--n-samples", type=int, default=6, help="frames to sample when --frames is not given")
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="resize frames by this factor before drawing")
    return parser


def _run(args: argparse.Namespace) -> None:
    job = load_job_config(args.config, DrawJobConfig)
    cfg, decode = job.crops, job.decode
    ann = open_annotations(job.data)
    fps = video_fps(ann, args.video_id, decode)
    source = open_frames(args.video_id, fps=fps, height=decode.height, video_path=args.video,
                         frames_archive=args.frames_archive, threads=decode.threads)
    table = read_detection_table(args.detections, video_id=args.video_id, n_frames=source.n_frames)
    crops = read_crops(args.crops, video_id=args.video_id, n_frames=source.n_frames)
    frames = np.asarray(args.frames, dtype=np.int64) if args.frames else sample_frames(table, args.n_samples)
    images = source.get(frames)
    if args.scale != 1.0:
        h, w = images.shape[1:3]
        size = (max(1, round(w * args.scale)), max(1, round(h * args.scale)))
        images = np.stack([cv2.resize(img, size, interpolation=cv2.INTER_CUBIC) for img in images])
    tiles = [draw_frame(img, int(f), table, crops, cfg) for img, f in zip(images, frames)]
    write_png(args.out, contact_sheet(tiles, min(args.columns, len(tiles))))
    log.info("%s: frames %s", args.out, frames.tolist())


def main(argv: Sequence[str] | None = None) -> int:
    return run_video_command(COMMAND, _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

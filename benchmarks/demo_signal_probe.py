"""How much verb and noun evidence the demo's audio and RGB carry through random-weight backbones.

Unlike ``demo_feature_probe.py`` (which reads a DAG run's feature files), this regenerates the
demo's segments in memory, so the demo's design can be varied without a DAG run: the target
domain's style (``--target key=value``, any ``epic_demo.spec.DomainStyle`` field), the held
object's size (``--object-scale``) or the target drawn with the source look (``--source-look``).

* ``audio``: each segment's soundtrack as ``epic_demo.audio.soundtrack`` writes it (the demo's
  own code, so the probe follows any change to it), resampled to the config's rate, 5
  spectrograms per segment (``extractors.audio``), a randomly initialised BN-Inception audio
  stream with batch-statistics BN, features averaged over cells and positions.
* ``visual``: 4 rendered frames around each segment's centre (``epic_demo.scene.Scene``), the
  64-px centre crop the extractor takes, BN-Inception (``tbn_rgb``, the 2nd frame) and I3D
  (``i3d_rgb``, the 4-frame clip), random weights, batch-statistics BN.

Probe: multinomial logistic regression (C = 0.1) on standardised features, fit on the first
source_train video and scored on the other one (held-out source) and on target_val. Results and
their reading: docs/benchmarks_demo.md ("Nouns: what the demo's data allow").

    python benchmarks/demo_signal_probe.py audio --seeds 0 1 2 --target audio_noise=0.012
    python benchmarks/demo_signal_probe.py visual --seeds 0 --object-scale 2.6 --source-look
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import numpy as np
import torch
from demo_feature_probe import transfer_probe
from scipy import signal

import epic_demo.scene as scene_module
from epic_demo.audio import SAMPLE_RATE, soundtrack
from epic_demo.generate import VideoRng
from epic_demo.scene import Scene, Segment, plan_segments
from epic_demo.spec import SIZES, SOURCE, VideoSpec, plan_videos
from extractors.audio import AudioConfig, AudioTrack
from extractors.backbones.bninception import BNInception
from extractors.backbones.i3d import I3D, normalise_i3d
from extractors.backbones.inputs import resize_center_crop
from extractors.backbones.tbn import Modality, normalise
from m3em.epic.config import load_config

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("source_train", "target_val")
POSITIONS = 5


@dataclasses.dataclass
class Probed:
    """Per segment of the probed splits: video id, verb, noun, and the split it belongs to."""

    video: list[str] = dataclasses.field(default_factory=list)
    verb: list[int] = dataclasses.field(default_factory=list)
    noun: list[int] = dataclasses.field(default_factory=list)
    split: list[str] = dataclasses.field(default_factory=list)

    def add(self, video: VideoSpec, seg: Segment) -> None:
        self.video.append(video.video_id)
        self.verb.append(seg.verb)
        self.noun.append(seg.noun)
        self.split.append(video.split)


def demo_videos(size: str, seed: int, target: dict, source_look: bool) -> list[tuple[VideoSpec, tuple[Segment, ...], VideoRng]]:
    """The probed splits' videos with their segment plans, the target styled as asked."""
    out = []
    for v in plan_videos(SIZES[size]):
        if v.split not in SPLITS:
            continue
        rng = VideoRng.for_video(seed, v.video_id)
        segments = plan_segments(v, rng.plan)  # planned with the real target style (segment lengths)
        if v.domain.name == "target" and source_look:
            v = dataclasses.replace(v, domain=dataclasses.replace(
                SOURCE, name="target", fps=v.domain.fps, segment_seconds=v.domain.segment_seconds))
        if v.domain.name == "target" and target:
            v = dataclasses.replace(v, domain=dataclasses.replace(v.domain, **target))
        out.append((v, segments, rng))
    return out


def audio_features(videos, cfg: AudioConfig, seed: int) -> tuple[np.ndarray, Probed]:
    """``(N, 1024)`` pooled random-weight BN-Inception features of the segments' spectrograms."""
    specs, probed = [], Probed()
    for v, segments, rng in videos:
        track = soundtrack(v, segments, rng.audio)
        g = np.gcd(SAMPLE_RATE, cfg.sample_rate)
        audio = AudioTrack(signal.resample_poly(track, cfg.sample_rate // g, SAMPLE_RATE // g), cfg)
        for seg in segments:
            frames = seg.start_frame + (np.arange(POSITIONS) + 0.5) * (seg.stop_frame - seg.start_frame) / POSITIONS
            specs.append(audio.spectrograms((frames - 1) / v.domain.fps))
            probed.add(v, seg)
    x = torch.from_numpy(np.stack(specs))  # (N, P, F, T)
    torch.manual_seed(seed)
    net = BNInception(1).train()  # batch statistics: what BN recalibration gives the demo's extractor
    with torch.no_grad():
        f = net(x.reshape(-1, 1, *x.shape[2:])).mean((2, 3))
    return f.reshape(x.shape[0], POSITIONS, -1).mean(1).numpy(), probed


def visual_features(videos, object_scale: float, size: int, seed: int) -> tuple[dict[str, np.ndarray], Probed]:
    """``{"tbn_rgb", "i3d_rgb"}: (N, 1024)`` pooled random-weight features of 4 frames per segment."""
    clips, probed = [], Probed()
    paint = scene_module.paint_object
    scale = {"held": 1.0}

    def scaled_paint(canvas, noun, x, y, angle, s, unit, *args, **kwargs):
        return paint(canvas, noun, x, y, angle, s * scale["held"], unit, *args, **kwargs)

    scene_module.paint_object = scaled_paint  # the held object is painted per frame, clutter at init
    try:
        for v, segments, rng in videos:
            scale["held"] = 1.0
            sc = Scene(v, segments, rng.scene)
            scale["held"] = object_scale
            for seg in segments:
                c = (seg.start_frame + seg.stop_frame) // 2
                frames = np.stack([sc.render(int(n))[0] for n in range(c - 2, c + 2)])
                clips.append(resize_center_crop(frames, size))
                probed.add(v, seg)
    finally:
        scene_module.paint_object = paint
    x = np.stack(clips)  # (N, 4, size, size, 3)
    torch.manual_seed(seed)
    tbn = BNInception(3).train()
    torch.manual_seed(seed)
    i3d = I3D(3).train()
    with torch.no_grad():
        f_tbn = tbn(normalise(Modality.RGB, torch.from_numpy(np.ascontiguousarray(x[:, 1])))).mean((2, 3)).numpy()
        f_i3d = i3d.spatial(normalise_i3d(torch.from_numpy(x))).mean(dim=(2, 3, 4)).numpy()
    return {"tbn_rgb": f_tbn, "i3d_rgb": f_i3d}, probed


def probe(features: np.ndarray, probed: Probed) -> dict[str, tuple[float, float]]:
    """``{"verb"/"noun": (held-out source top-1, target_val top-1)}`` (``demo_feature_probe``'s probe)."""
    video, split = np.array(probed.video), np.array(probed.split)
    verb, noun = np.array(probed.verb), np.array(probed.noun)
    source = split == "source_train"
    fit_video = sorted(set(video[source]))[0]
    parts = [source & (video == fit_video), source & (video != fit_video), split == "target_val"]
    fit, held, tgt = ((features[m], verb[m], noun[m]) for m in parts)
    return transfer_probe(fit, held, tgt, c=0.1, max_iter=3000)


def style_value(text: str) -> object:
    """``0.012`` -> float, ``(1.05,1.0,0.92)`` -> tuple: a DomainStyle field value from the command line."""
    return ast.literal_eval(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("audio", "visual"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--size", default="default", choices=sorted(SIZES))
    p.add_argument("--config", type=Path, default=REPO / "config.yaml", help="audio: section and backbone input size")
    p.add_argument("--target", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override fields of the target domain style, e.g. audio_noise=0.025")
    p.add_argument("--source-look", action="store_true", help="draw the target with the source style (no shift)")
    p.add_argument("--object-scale", type=float, default=1.0, help="visual: size factor of the held object")
    args = p.parse_args()
    torch.set_num_threads(1)
    target = {}
    for item in args.target:
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(SOURCE)}:
            raise SystemExit(f"--target {item}: DomainStyle has no field {key!r}")
        target[key] = style_value(value)
    cfg = load_config(args.config)
    audio_cfg = AudioConfig(**{k: v for k, v in cfg["audio"].items()})
    size = int(cfg["backbones"]["tbn"]["input_size"])
    print(f"{args.kind}: target overrides {target or 'none'}, source look {args.source_look}, "
          f"object scale {args.object_scale:g}; top-1 held-out source / target_val (chance verb 0.125, noun 0.100)")
    for seed in args.seeds:
        videos = demo_videos(args.size, seed, target, args.source_look)
        if args.kind == "audio":
            feats, probed = audio_features(videos, audio_cfg, seed)
            streams = {"tbn_audio": feats}
        else:
            streams, probed = visual_features(videos, args.object_scale, size, seed)
        for stream, f in streams.items():
            r = probe(f, probed)
            print(f"seed {seed} {stream:9s} verb {r['verb'][0]:.2f} / {r['verb'][1]:.2f}   "
                  f"noun {r['noun'][0]:.2f} / {r['noun'][1]:.2f}   ({len(probed.video)} segments)", flush=True)


if __name__ == "__main__":
    main()

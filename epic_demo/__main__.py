"""``python -m epic_demo --config config.yaml [--out-dir DIR] [--size SIZE] [--seed N] [--jobs N]``.

Generates the demo dataset described by the ``demo:`` section of the config; the flags override
that section (for tests and benchmarks).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from epic_demo.generate import DemoConfig, generate_dataset
from epic_demo.spec import SIZES
from m3em.epic.config import ConfigError, build_dataclass, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m epic_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="config.yaml (its demo: section is used)")
    p.add_argument("--out-dir", type=Path, default=None, help="override demo.out_dir")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="override demo.size")
    p.add_argument("--seed", type=int, default=None, help="override demo.seed")
    p.add_argument("--jobs", type=int, default=1, help="videos rendered in parallel (output does not depend on it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_dataclass(DemoConfig, load_config(args.config)["demo"], "demo")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("out_dir", args.out_dir), ("size", args.size), ("seed", args.seed))
                 if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if not cfg.enabled:
        print(f"error: {args.config}: demo.enabled is false; nothing to generate "
              "(point data.* at your EPIC-KITCHENS-100 copy instead)", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    manifest = generate_dataset(cfg.out_dir, cfg.size, cfg.seed, jobs=args.jobs, show_progress=not args.no_progress)
    n_seg = sum(v["n_segments"] for v in manifest["videos"].values())
    print(f"demo dataset ({cfg.size}, seed {cfg.seed}): {len(manifest['videos'])} videos, {n_seg} segments "
          f"-> {cfg.out_dir} in {manifest['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

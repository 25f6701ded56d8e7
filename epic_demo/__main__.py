"""``python -m epic_demo --config config.yaml [--out-dir DIR] [--size SIZE] [--seed N] [--jobs N]``.

Generates the demo dataset described by the ``demo:`` section of the config; the flags override
that section (for tests and benchmarks).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from epic_demo.generate import DemoConfig, generate_dataset
from epic_demo.spec import SIZES
from m3em.epic.cli import load_job_config, run_entry_point
from m3em.epic.config import ConfigError

log = logging.getLogger("epic_demo")


@dataclasses.dataclass(frozen=True)
class DemoJobConfig:
    """The config sections ``python -m epic_demo`` reads."""

    demo: DemoConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m epic_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="config.yaml (its demo: section is used)")
    p.add_argument("--out-dir", type=Path, default=None, help="override demo.out_dir")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="override demo.size")
    p.add_argument("--seed", type=int, default=None, help="override demo.seed")
    p.add_argument("--jobs", type=int, default=1, help="videos rendered in parallel (output does not depend on it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _run(args: argparse.Namespace) -> None:
    cfg = load_job_config(args.config, DemoJobConfig).demo
    overrides = {k: v for k, v in (("out_dir", args.out_dir), ("size", args.size), ("seed", args.seed))
                 if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if not cfg.enabled:
        raise ConfigError(f"{args.config}: demo.enabled is false; nothing to generate "
                          "(point data.* at your EPIC-KITCHENS-100 copy instead)")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    manifest = generate_dataset(cfg.out_dir, cfg.size, cfg.seed, jobs=args.jobs, show_progress=not args.no_progress)
    n_seg = sum(v["n_segments"] for v in manifest["videos"].values())
    log.info("demo dataset (%s, seed %d): %d videos, %d segments -> %s in %.1f s", cfg.size, cfg.seed,
             len(manifest["videos"]), n_seg, cfg.out_dir, manifest["seconds"])


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("python -m epic_demo", _parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
EPIC_SLICE = TEST_DATA / "epic"


def _official_epic_dir() -> Path | None:
    """The full official annotation files: $M3EM_EPIC_DIR, else ../shared/epic beside the checkout."""
    env = os.environ.get("M3EM_EPIC_DIR")
    cand = Path(env) if env else REPO.parent / "shared" / "epic" / "epic-kitchens-100-annotations"
    return cand if (cand / "EPIC_100_video_info.csv").exists() else None


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Tests share 2 cores; keep torch from oversubscribing them."""
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    yield


@pytest.fixture
def epic_slice() -> Path:
    """40-row slices of the official UDA files plus the full class files and video table."""
    return EPIC_SLICE


@pytest.fixture
def official_epic() -> Path:
    """The complete official annotation directory; skips where it is not available."""
    path = _official_epic_dir()
    if path is None:
        pytest.skip("full official EPIC annotations not found (set M3EM_EPIC_DIR or provide ../shared/epic)")
    return path

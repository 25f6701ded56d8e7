"""Training checkpoints (``m3em.train``): one file with everything needed to resume bit-for-bit,
loadable with ``torch.load(weights_only=True)`` (no code runs when reading). This module is the
format; the bytes are written by the one atomic writer, :func:`m3em.runtime.save_checkpoint`
(fine-tuning's checkpoints go through it too, in their own format).

Format (a dict; only tensors, numbers, strings, lists and dicts):

* ``format``: ``"m3em-checkpoint/1"``
* ``model``: the model's state dict (never with a DDP ``module.`` prefix)
* ``optimizer``, ``scheduler``: their state dicts
* ``epoch``: last completed epoch (1-based); ``global_step``: optimisation steps so far
* ``rng``: ``torch`` (ByteTensor), ``cuda`` (list of ByteTensors, may be empty)
* ``model_name``, ``method``: e.g. ``"A"``, ``"m3em"``
* ``architecture``: what the network was built from (modalities, channels, branches, classes,
  positions, map sizes), checked against the current config when loading
* ``config``: the resolved config sections used (``models.<name>``, ``models.ta3n``, ``train``,
  ``features`` (where the files are, P), ``data``), defaults filled in (:func:`plain`)
* ``git_revision``: ``git describe --always --dirty`` of the code, or ``"unknown"``
* ``metrics``: the ``metrics.csv`` rows of epochs 1..``epoch`` (dicts of numbers and strings);
  ``metrics.csv`` is rewritten from them on resume, so the epoch's row and its weights commit together
"""

from __future__ import annotations

import dataclasses
import enum
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m3em.epic.errors import InputError
from m3em.runtime import save_checkpoint

FORMAT = "m3em-checkpoint/1"


class CheckpointError(ValueError, InputError):
    """A checkpoint that cannot be used; the message names the file and the key."""


def git_revision(repo: Path | None = None) -> str:
    """``git describe --always --dirty`` of the source tree, or ``"unknown"`` outside a checkout."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=repo, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (dropout draws from them)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(value: Any) -> Any:
    """``value`` with dataclasses and mappings as dicts, tuples as lists and paths as strings: what a
    weights-only checkpoint can hold (the ``config`` record of resolved dataclass sections)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Path):
        return str(value)
    return value


def save_training_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (see module docstring) with the format marker, atomically."""
    save_checkpoint(path, {"format": FORMAT, **payload})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; check its format marker and required keys."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises many types
        raise CheckpointError(f"{path}: not a weights-only torch checkpoint: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: key 'format' is {got!r}, expected {FORMAT!r}")
    for key in ("model", "epoch", "model_name", "method", "architecture"):
        if key not in data:
            raise CheckpointError(f"{path}: key {key!r} missing")
    return data


def check_architecture(path: str | Path, saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Fail, naming the first differing key, when a checkpoint was built for another network."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"{path}: key 'architecture.{key}' is {saved.get(key)!r} in the checkpoint but "
                f"{current.get(key)!r} for this model/method/config (a checkpoint of another architecture)"
            )


def load_model_state(path: str | Path, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict strictly; a missing, unexpected or mis-shaped key is an error naming it."""
    own = model.state_dict()
    for k in own:
        if k not in state:
            raise CheckpointError(f"{path}: key 'model.{k}' missing (a checkpoint of another architecture?)")
    for k in state:
        if k not in own:
            raise CheckpointError(f"{path}: unexpected key 'model.{k}' (a checkpoint of another architecture?)")
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{path}: key 'model.{k}' has shape {tuple(state[k].shape)}, the network has {tuple(own[k].shape)}"
            )
    model.load_state_dict(state, strict=True)

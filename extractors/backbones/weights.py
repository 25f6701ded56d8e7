"""Checkpoint reading and strict state-dict loading for the backbones.

Every loader in :mod:`extractors.backbones` ends in :func:`load_strict`: it compares the incoming
state dict with the module's and raises :class:`CheckpointError` naming *every* missing key,
unexpected key and shape mismatch at once (``torch.nn.Module.load_state_dict`` stops at shapes and
hides the list behind ``strict=False``). Adaptations a loader is allowed to make are explicit and
named at the call site:

* ``module.`` prefixes (DataParallel / DistributedDataParallel saves) are stripped;
* keys under named ``drop_prefixes`` (a released classifier we replace, e.g. BN-Inception's
  ImageNet ``fc.``) are removed and reported back;
* BatchNorm ``num_batches_tracked`` buffers may be absent (checkpoints saved before PyTorch 0.4.1,
  such as piergiaj's I3D files); they are the only keys allowed to be missing;
* a first convolution may be adapted to another input channel count by averaging over the input
  channels and replicating (TSN/TBN's cross-modality initialisation), see :func:`adapt_first_conv`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m3em.epic.errors import InputError


class CheckpointError(ValueError, InputError):
    """A checkpoint that does not fit the module; the message names the file and every bad key."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file on the CPU with ``weights_only=True`` (no arbitrary pickles).

    Args:
        path: a ``.pt``/``.pth``/``.pth.tar`` file holding either a plain state dict or a dict with
            a ``state_dict`` (TBN, TA3N, our fine-tuning) or ``model`` (torchvision style) entry.

    Returns:
        The raw object (a dict).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    return dict(obj)


def state_dict_of(obj: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint object, with ``module.`` prefixes stripped.

    Args:
        obj: what :func:`read_checkpoint` returned.
        source: file name used in error messages.
    """
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    elif "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
    else:
        sd = obj
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: not a state dict; non-tensor entries {bad[:10]}")
    return strip_module_prefix(sd)


def strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading ``module.`` from every key that has it (DataParallel/DDP saves)."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def select_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` (e.g. ``"rgb."``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-conv kernel to ``in_channels`` inputs by averaging over its input channels.

    This is TSN/TBN's cross-modality initialisation (``_construct_flow_model``: the RGB kernel's
    mean over channels, replicated to 10 flow channels; ``_construct_spec_model``: the mean, 1
    channel). Unlike timm's rescaled repeat, the replicated mean is *not* divided by the channel
    count, to match the released TBN initialisation.

    Args:
        weight: ``(C_out, C_in, kH, kW)`` or ``(C_out, C_in, kT, kH, kW)``.
        in_channels: the new ``C_in``.

    Returns:
        ``(C_out, in_channels, ...)`` contiguous tensor.
    """
    mean = weight.mean(dim=1, keepdim=True)
    return mean.expand(weight.shape[0], in_channels, *weight.shape[2:]).contiguous()


def describe_mismatch(
    expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]], allow_missing: Iterable[str] = ()
) -> list[str]:
    """Every difference between two ``name -> shape`` maps, one line each (empty when they agree).

    Args:
        expected: what the module (or the stored key list) has.
        got: what the checkpoint has.
        allow_missing: keys of ``expected`` that may be absent from ``got``.
    """
    allowed = set(allow_missing)
    missing = [k for k in expected if k not in got and k not in allowed]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: checkpoint {list(got[k])} vs model {list(expected[k])}"
        for k in expected
        if k in got and tuple(got[k]) != tuple(expected[k])
    ]
    lines = []
    if missing:
        lines.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        lines.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if shapes:
        lines.append(f"shape mismatches ({len(shapes)}): {shapes}")
    return lines


def shapes_of(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` of a state dict."""
    return {k: tuple(v.shape) for k, v in sd.items()}


def load_strict(
    module: nn.Module,
    sd: Mapping[str, torch.Tensor],
    source: str,
    *,
    drop_prefixes: tuple[str, ...] = (),
) -> list[str]:
    """Load ``sd`` into ``module`` strictly; raise one error listing every problem.

    Args:
        module: the target.
        sd: state dict (``module.`` prefixes are stripped here too).
        source: file name / description for the error message.
        drop_prefixes: key prefixes the caller knowingly discards (e.g. ``("fc.",)`` for the
            ImageNet classifier of BN-Inception); dropped keys are returned, never silently lost.

    Returns:
        The sorted list of dropped keys.
    """
    sd = strip_module_prefix(sd)
    dropped = sorted(k for k in sd if k.startswith(drop_prefixes)) if drop_prefixes else []
    sd = {k: v for k, v in sd.items() if k not in set(dropped)}
    own = module.state_dict()
    # Old checkpoints predate BatchNorm's num_batches_tracked buffer; it only drives momentum=None.
    optional = [k for k in own if k.endswith("num_batches_tracked")]
    problems = describe_mismatch(shapes_of(own), shapes_of(sd), allow_missing=optional)
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match {type(module).__name__}:\n  " + "\n  ".join(problems))
    module.load_state_dict(sd, strict=False)  # strictness checked above, incl. tolerated BN counters
    return dropped


def save_expected_keys(path: str | Path, sd: Mapping[str, torch.Tensor]) -> None:
    """Write a ``{name: shape}`` JSON (test data; see ``expected_keys/README.md``)."""
    from m3em.epic.atomic import atomic_write_text

    lines = [f"  {json.dumps(k)}: {json.dumps(list(v.shape))}" for k, v in sd.items()]
    atomic_write_text(path, "{\n" + ",\n".join(lines) + "\n}\n")


def read_expected_keys(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Read a ``{name: shape}`` JSON written by :func:`save_expected_keys`."""
    with open(path, encoding="utf-8") as fh:
        return {k: tuple(v) for k, v in json.load(fh).items()}

"""Reading a torch state-dict file safely (``weights_only=True``: no pickle code runs) and checking it strictly.

Shared by the plugins that load users' torch weights (FaceNet, VGG-Face, ArcFace); imports torch, so import it only
where a model is built.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facekit.errors import FacekitError


class WeightsFormatError(FacekitError):
    """A weight file that is not the state dict the model expects (unsafe pickle, wrong keys or shapes)."""


#: Buffers an older torch did not save; filled with their default (they do not affect inference).
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of the state-dict file at ``path``; anything but plain tensors in a dict is refused.

    ``torch.load(weights_only=True)`` only: a pickle that would run code (or build any object but tensors and
    containers) is a :class:`WeightsFormatError`, and nothing in it is executed.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsFormatError(
            f"{what}: {path} cannot be read as a plain torch state dict (torch.load(weights_only=True) refused it: "
            f"{reason}). Use the original weight file; facekit never unpickles arbitrary objects"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, Mapping) else []
        raise WeightsFormatError(
            f"{what}: {path} holds a {type(state).__name__}{f' with keys {keys}' if keys else ''}, not a flat "
            "state dict of tensors; use the original weight file"
        )
    return dict(state)


def load_strict(module: nn.Module, state: Mapping[str, Any], what: str, path: Path) -> None:
    """Load ``state`` into ``module`` requiring exactly its keys and shapes; a mismatch lists every difference."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if items:
                shown = ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsFormatError(
            f"{what}: {path} does not match the network: " + "; ".join(parts) + ". Is it the right file (and variant)?"
        )
    full = dict(state)
    for key, value in expected.items():
        full.setdefault(key, value)
    module.load_state_dict(full, strict=True)

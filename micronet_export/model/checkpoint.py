"""Reading official-format MicroNet checkpoints.

Accepted: a bare state_dict, ``{"state_dict": ...}`` or ``{"model": ...}`` wrappers, and a
``module.`` prefix (the released checkpoints were saved from ``nn.DataParallel``). Files are
read with ``torch.load(weights_only=True)``: a checkpoint that needs pickled code is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from micronet_export.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model")
_SHOWN_KEYS = 3


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and without a ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "This file can still be loaded" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} contains pickled Python code, which is not loaded for safety "
                "(torch.load weights_only=True); re-save it as a plain state_dict"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (unpickling failed)") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({first})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no state_dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; expected a MicroNet state_dict")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    return shown + more


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load with one message naming every kind of mismatch and its first keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} keys with the wrong shape (file vs model): {_first(wrong_shape)}")
    if problems:
        variant = getattr(model, "variant", "the model")
        raise CheckpointError(
            f"checkpoint {source} does not fit MicroNet-{variant}: " + "; ".join(problems)
            + " (is it a checkpoint of another variant or num_classes?)"
        )
    model.load_state_dict(dict(state_dict), strict=True)

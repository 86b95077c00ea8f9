"""Reading official-format MicroNet checkpoints.

Accepted: a bare state_dict, ``{"state_dict": ...}`` or ``{"model": ...}`` wrappers, and a
``module.`` prefix (the released checkpoints were saved from ``nn.DataParallel``). Files are
read with ``torch.load(weights_only=True)``: a checkpoint that needs pickled code is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from micronet_export.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model")
_SHOWN_KEYS = 3
_BLOCKED_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_refusal(path: Path, exc: Exception) -> CheckpointError:
    """One line for a file ``torch.load(weights_only=True)`` refused or could not parse."""
    text = str(exc)
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        # torch words this "Unsupported global: GLOBAL x.Y was not an allowed global" (zip
        # format) or "unsupported GLOBAL x.Y whose module x is blocked" (legacy format):
        # either way the file needs code execution to load, which we refuse on purpose.
        return CheckpointError(
            f"checkpoint {path} is refused for safety: it holds pickled Python code ({blocked.group(1)}), which "
            "torch.load(weights_only=True) does not run; re-save it as a plain state_dict "
            "(torch.save(model.state_dict(), PATH)) where you trust the code"
        )
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(exc).__name__
    if "PytorchStreamReader" in text:
        first = "a damaged or truncated torch.save archive"
    elif isinstance(exc, EOFError):
        first = "empty or truncated file"
    elif isinstance(exc, (pickle.UnpicklingError, KeyError, IndexError, TypeError, AttributeError)):
        first = "not a torch.save file"  # the unpickler's own words (e.g. "KeyError: 101") mean nothing to a user
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({first})")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and without a ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": the error below says it better
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any file torch cannot read is the same user error
        raise _load_refusal(path, exc) from None
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
    check_finite(tensors, path)
    return tensors


def check_finite(tensors: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Refuse NaN / inf weights before any work: every artifact made from them would compute
    NaN, and NaN logits still "agree" on top-1 (argmax of an all-NaN row is index 0)."""
    bad = {}
    for key, value in tensors.items():
        if value.is_floating_point() or value.is_complex():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad[key] = count
    if bad:
        first = ", ".join(f"{k} ({n} of {tensors[k].numel()})" for k, n in list(bad.items())[:_SHOWN_KEYS])
        more = f" (+{len(bad) - _SHOWN_KEYS} more)" if len(bad) > _SHOWN_KEYS else ""
        raise CheckpointError(f"checkpoint {source} holds non-finite (NaN or inf) weights in {len(bad)} tensors: "
                              f"{first}{more}; it cannot be exported or evaluated (was training diverging?)")


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

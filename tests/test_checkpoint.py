"""Checkpoint formats the loader accepts, and the messages for those it refuses."""

from __future__ import annotations

import collections

import pytest
import torch

from micronet_export import create_model
from micronet_export.model import variants_fitting
from micronet_export.errors import CheckpointError

from conftest import reference_checkpoint, reference_logits, rel_l2

LOGITS_REL_L2 = 1e-3


@pytest.fixture(scope="module")
def official_sd():
    return torch.load(reference_checkpoint("m0"), weights_only=True)


def _logits_ok(path, reference_inputs):
    with torch.no_grad():
        out = create_model("m0", checkpoint=path)(reference_inputs)
    return rel_l2(out, reference_logits("m0")) <= LOGITS_REL_L2


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module_prefix", "state_dict+module_prefix"])
def test_accepted_layouts(tmp_path, official_sd, reference_inputs, wrap):
    sd = official_sd
    if "module_prefix" in wrap:
        sd = collections.OrderedDict((f"module.{k}", v) for k, v in sd.items())
    obj = {"state_dict": sd, "epoch": 3} if wrap.startswith("state_dict") else {"model": sd} if wrap == "model" else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert _logits_ok(path, reference_inputs)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


# torch 2.13 words the refusal "Unsupported global: GLOBAL builtins.print was not an allowed
# global" for the zip format and "unsupported GLOBAL builtins.print whose module builtins is
# blocked" for the legacy one: both are refused for safety, naming the global.
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickled_code_is_refused_for_safety(tmp_path, official_sd, capsys, zip_format):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": official_sd, "hook": _Evil()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match=r"is refused for safety: it holds pickled Python code \(\S*print\)"):
        create_model("m0", checkpoint=path)
    assert "pickled code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("content,reason", [
    (b"", "empty or truncated file"),
    (b"hello\n", "not a torch.save file"),  # was KeyError: 101 (the unpickler's memo lookup of 'e')
    (b"not a checkpoint at all\n", "not a torch.save file"),
    (b"PK\x03\x04garbage", "a damaged or truncated torch.save archive"),
])
def test_not_a_checkpoint(tmp_path, content, reason):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"is not a readable PyTorch checkpoint \(.*{reason}.*\)$"):
        create_model("m0", checkpoint=path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("m0", checkpoint=tmp_path / "nope.pth")


def test_no_tensors(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        create_model("m0", checkpoint=path)


def test_mismatch_message_names_each_kind(tmp_path, official_sd):
    sd = dict(official_sd)
    del sd["features.1.layers.4.conv.0.weight"]
    sd["features.9.extra.weight"] = torch.zeros(1)
    sd["classifier.2.linear.0.bias"] = torch.zeros(10)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        create_model("m0", checkpoint=path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "1 missing keys: features.1.layers.4.conv.0.weight" in msg
    assert "1 unexpected keys: features.9.extra.weight" in msg
    assert "1 keys with the wrong shape (file vs model): classifier.2.linear.0.bias (10,) vs (1000,)" in msg


def test_other_variant_is_refused_with_the_variant_that_fits():
    with pytest.raises(CheckpointError, match=r"holds MicroNet-m1 weights, not m0 .*: pass --variant m1$"):
        create_model("m0", checkpoint=reference_checkpoint("m1"))
    assert variants_fitting(torch.load(reference_checkpoint("m1"), weights_only=True)) == ["m1"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, official_sd, bad):
    sd = dict(official_sd)
    key = "features.1.layers.4.conv.0.weight"
    weight = sd[key].clone()
    weight.view(-1)[:3] = bad
    sd[key] = weight
    path = tmp_path / "diverged.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=rf"holds non-finite \(NaN or inf\) weights in 1 tensors: "
                                              rf"{key} \(3 of {weight.numel()}\)"):
        create_model("m0", checkpoint=path)

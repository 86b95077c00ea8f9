"""Checkpoint formats the loader accepts, and the messages for those it refuses."""

from __future__ import annotations

import collections

import pytest
import torch

from micronet_export import create_model
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


def test_pickled_code_is_refused(tmp_path, official_sd, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": official_sd, "hook": _Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled Python code"):
        create_model("m0", checkpoint=path)
    assert "pickled code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", b"PK\x03\x04garbage"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint|not a PyTorch checkpoint"):
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


def test_other_variant_is_refused():
    with pytest.raises(CheckpointError, match="does not fit MicroNet-m0"):
        create_model("m0", checkpoint=reference_checkpoint("m1"))

"""MicroNet M0–M3 is the official network: sizes, keys and outputs."""

from __future__ import annotations

import pytest
import torch

from micronet_export import create_model, list_variants
from micronet_export.errors import UserError
from micronet_export.model.blocks import DYShiftMax
from micronet_export.model.stats import count_madds, count_params

from conftest import (
    REFERENCE,
    REFERENCE_VARIANTS,
    VARIANTS,
    randomize,
    reference_checkpoint,
    reference_logits,
    rel_l2,
)

# Issue 2's bars.
PARAMS = {"m0": 1_019_590, "m1": 1_777_587, "m2": 2_393_876, "m3": 2_622_960}
MADDS_TOTAL_M = {"m0": 4.05, "m1": 6.12, "m2": 12.74, "m3": 20.81}
MADDS_CONV_LINEAR_M = {"m0": 3.45, "m1": 5.31, "m2": 10.34, "m3": 18.24}
MADDS_REL_TOL = 0.01
LOGITS_REL_L2 = 1e-3
# Two formulations of the same network, compared in float64: round-off only.
FORMULATION_REL_L2_FP64 = 1e-9
FEATURE_REL_L2 = 1e-5


def test_list_variants():
    assert list_variants() == list(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_is_exact(variant, manifest):
    model = create_model(variant)
    assert count_params(model) == PARAMS[variant]
    assert count_params(model) == manifest["summary_all_variants"][variant]["num_params"]
    assert len(model.state_dict()) == manifest["summary_all_variants"][variant]["state_dict_num_keys"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_madds_match_the_official_count(variant, manifest):
    madds = count_madds(create_model(variant), 224)
    assert madds.total / 1e6 == pytest.approx(MADDS_TOTAL_M[variant], rel=MADDS_REL_TOL)
    assert madds.conv_linear / 1e6 == pytest.approx(MADDS_CONV_LINEAR_M[variant], rel=MADDS_REL_TOL)
    official = manifest["summary_all_variants"][variant]["madds_224"]
    assert madds.conv == official["conv"]
    assert madds.linear_classifier == official["linear_classifier"]
    assert madds.linear_dynamic == official["linear_dynamic"]
    assert madds.dyshiftmax_elementwise == official["dyshiftmax_elementwise_extra"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_structure_matches_the_manifest(variant, manifest):
    summary = manifest["summary_all_variants"][variant]
    shift_maxes = [m for m in create_model(variant).modules() if isinstance(m, DYShiftMax)]
    assert sum(m.exp == 4 for m in shift_maxes) == summary["dyshiftmax_exp4_count"]
    assert sum(m.exp == 2 for m in shift_maxes) == summary["dyshiftmax_exp2_count"]
    assert sorted({(m.g, m.gc) for m in shift_maxes}) == sorted(map(tuple, summary["dyshiftmax_distinct_g_gc"]))


@pytest.mark.parametrize("variant", REFERENCE_VARIANTS)
def test_keys_and_dyshiftmax_settings_match_the_manifest(variant, manifest):
    model = create_model(variant)
    ref = manifest["variants"][variant]
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [
        (name, shape) for name, shape, _dtype in ref["state_dict_keys"]
    ]
    modules = dict(model.named_modules())
    for entry in ref["dyshiftmax"]["per_module"]:
        m = modules[entry["name"]]
        assert (m.channels, m.g, m.gc, m.exp) == (entry["channels"], entry["g"], entry["gc"], entry["exp"])
        assert m.fc[0].out_features == entry["squeeze"]
        assert m.act_max == entry["act_max_internal"]


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v in ("m2", "m3")])
def test_residual_blocks(variant):
    expected = {"m2": 1, "m3": 4}[variant]
    assert sum(block.identity for block in create_model(variant).features[1:]) == expected


@pytest.mark.parametrize("formulation", ["export", "official"])
@pytest.mark.parametrize("variant", REFERENCE_VARIANTS)
def test_reference_logits_are_reproduced(variant, formulation, reference_inputs):
    model = create_model(variant, checkpoint=reference_checkpoint(variant), formulation=formulation)
    with torch.no_grad():
        logits = model(reference_inputs)
    assert rel_l2(logits, reference_logits(variant)) <= LOGITS_REL_L2


def test_m0_stage_features_are_reproduced(reference_inputs):
    features = torch.load(REFERENCE / "official_features_m0.pt", weights_only=True)
    model = create_model("m0", checkpoint=reference_checkpoint("m0"))
    x = reference_inputs[:1]
    with torch.no_grad():
        for i, stage in enumerate(model.features):
            x = stage(x)
            assert rel_l2(x, features[str(i)] if str(i) in features else features[i]) <= FEATURE_REL_L2, f"stage {i}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_formulation_equals_official_formulation(variant, reference_inputs):
    # M2 and M3 have no official logits in shared/: their residual blocks and M3's ReLU6-only
    # first activation are checked here against our reading of the official arithmetic.
    model = randomize(create_model(variant), seed=11).double()
    x = reference_inputs.double()
    with torch.no_grad():
        export_out = model.set_formulation("export")(x)
        official_out = model.set_formulation("official")(x)
    assert export_out.std() > 0.01
    assert rel_l2(export_out, official_out) <= FORMULATION_REL_L2_FP64


def test_a_wrong_shift_would_be_caught(reference_inputs, monkeypatch):
    # The logits bar is meaningful only if a broken shift breaks it.
    import micronet_export.model.blocks as blocks

    model = create_model("m0", checkpoint=reference_checkpoint("m0"))
    monkeypatch.setattr(blocks, "shift_channels", lambda x, g: x)
    with torch.no_grad():
        logits = model(reference_inputs)
    assert rel_l2(logits, reference_logits("m0")) > 0.3


@pytest.mark.parametrize("size", [128, 160, 192])
def test_other_input_sizes(size):
    with torch.no_grad():
        out = create_model("m0")(torch.randn(2, 3, size, size))
    assert out.shape == (2, 1000)


def test_num_classes():
    with torch.no_grad():
        out = create_model("m1", num_classes=10)(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown variant 'm7'; valid variants: m0, m1, m2, m3"):
        create_model("m7")


def test_unknown_formulation():
    with pytest.raises(UserError, match="formulation"):
        create_model("m0", formulation="fast")

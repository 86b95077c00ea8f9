"""Every variant lowers to a Gather-free, rank <= 4 ONNX graph at opset 17."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from micronet_export import create_model
from micronet_export.onnx_export import export_onnx, summarize_graph, to_onnx_model

from conftest import REFERENCE_VARIANTS, VARIANTS, reference_checkpoint

ORT_VS_TORCH_MAX_ABS = 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_raw_torch_onnx_export_has_no_gather_and_rank_le_4(variant):
    summary = summarize_graph(to_onnx_model(create_model(variant), opset=17))
    assert summary.gather_nodes == 0, summary.ops
    assert summary.max_rank <= 4, summary.high_rank_tensors
    assert summary.ops.get("Conv", 0) > 20


def test_official_formulation_does_have_gathers_and_5d():
    # The baseline the export formulation is measured against.
    summary = summarize_graph(to_onnx_model(create_model("m0", formulation="official"), opset=17))
    assert summary.gather_nodes == 15
    assert summary.max_rank == 5


@pytest.mark.parametrize("variant", REFERENCE_VARIANTS)
def test_simplified_graph_matches_torch_in_onnxruntime(variant, reference_inputs):
    model = create_model(variant, checkpoint=reference_checkpoint(variant))
    proto = export_onnx(model, dynamic_batch=True)
    summary = summarize_graph(proto)
    assert summary.gather_nodes == 0 and summary.max_rank <= 4
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": reference_inputs.numpy()})[0]
    with torch.no_grad():
        want = model(reference_inputs).numpy()
    assert np.abs(got - want).max() <= ORT_VS_TORCH_MAX_ABS

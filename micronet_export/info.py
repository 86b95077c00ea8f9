"""``micronet-export info``: what a variant is (parameters, MAdds, layers, exported ops)."""

from __future__ import annotations

import collections

import torch.nn as nn

from micronet_export.model import create_model, get_variant
from micronet_export.model.blocks import DYShiftMax
from micronet_export.model.stats import count_madds, count_params
from micronet_export.onnx_export import DEFAULT_OPSET, check_input_size, export_onnx, summarize_graph


def layer_counts(model: nn.Module) -> dict[str, int]:
    counts = collections.Counter()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            counts["conv"] += 1
        elif isinstance(m, nn.Linear):
            counts["linear"] += 1
        elif isinstance(m, DYShiftMax):
            counts[f"dyshiftmax_exp{m.exp}"] += 1
    counts["blocks"] = len(model.features) - 1
    return dict(sorted(counts.items()))


def variant_info(variant: str, *, input_size: int = 224, opset: int = DEFAULT_OPSET) -> dict:
    cfg = get_variant(variant)
    check_input_size(input_size)
    model = create_model(cfg.name)
    madds = count_madds(model, input_size)
    graph = summarize_graph(export_onnx(model, input_size=input_size, opset=opset))
    return {
        "variant": cfg.name,
        "net_config": cfg.NET_CONFIG,
        "input_size": input_size,
        "params": count_params(model),
        "madds": madds.as_dict(),
        "layers": layer_counts(model),
        "onnx": {"opset": opset, **graph.as_dict()},
    }


def format_info(info: dict) -> str:
    m = info["madds"]
    lines = [
        f"MicroNet-{info['variant'].upper()} ({info['net_config']}) at {info['input_size']}x{info['input_size']}",
        f"  parameters        {info['params']:,}",
        f"  MAdds total       {m['total'] / 1e6:.2f} M  (conv+linear {m['conv_linear'] / 1e6:.2f} M"
        f" + Dynamic Shift-Max elementwise {m['dyshiftmax_elementwise'] / 1e6:.2f} M)",
        "  layers            " + ", ".join(f"{k} {v}" for k, v in info["layers"].items()),
        f"  ONNX (opset {info['onnx']['opset']}) {info['onnx']['num_nodes']} nodes, "
        f"{info['onnx']['gather_nodes']} Gather, max rank {info['onnx']['max_rank']}",
    ]
    ops = info["onnx"]["ops"]
    lines += [f"    {op:<20} {n}" for op, n in ops.items()]
    return "\n".join(lines)

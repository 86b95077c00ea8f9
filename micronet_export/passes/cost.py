"""Which rewrite pays off on which runtime: the per-target cost model of the passes.

Each pass is applied where it made that runtime faster (or kept it equal while simplifying
the graph), in measurements of M0-M3 at 224 px, 1 thread (benchmarks/results/ort_passes.md
and latency.md); the reasons are the rules, the numbers live there.
"""

from __future__ import annotations

TARGETS = ("onnxruntime", "tflite")

# pass name -> (targets it runs for, why)
PASS_TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "channel_permutations": (TARGETS, "a view chain of 3-8 copying nodes becomes one Gather: ONNX Runtime copies "
                             "whole channel planes once; the TFLite emitter relabels channels without an op"),
    "spatial_means_as_pooling": (TARGETS, "GlobalAveragePool runs in ONNX Runtime's NCHWc layout without reorders; "
                                 "the TFLite emitter lowers both forms to one MEAN"),
    "separable_pairs_composed": (("onnxruntime",), "ONNX Runtime pads a dense conv with < 16 inputs to 16 NCHWc "
                                 "outputs: the stem's (3,1) + (1,3) pair as one 3x3 conv pads once, on a quarter "
                                 "of the pixels. XNNPACK runs the pair well and the emitter lets the stem emit "
                                 "the next conv's channel repeats, which a composite conv would not. A pair "
                                 "reading <= 4 channels (one input per group) is composed dense for the same kernel"),
    "gathers_folded_into_convs": (TARGETS, "a permutation next to a dense (or group-keeping) conv is free in its "
                                  "weights on both runtimes"),
    "clip_scales_folded": (("onnxruntime",), "ONNX Runtime pays a fixed cost per node, a large share on Dynamic "
                           "Shift-Max's coefficient vectors: the hard sigmoid's scale goes into the conv and the "
                           "clip, which ONNX Runtime then fuses. The TFLite emitter folds the whole affine itself"),
    "hard_swish_as_op": (("onnxruntime",), "h-swish's four nodes as one HardSwish kernel in ONNX Runtime; the "
                         "TFLite emitter lowers h-swish in the form XNNPACK delegates in int8 and refuses "
                         "operators it does not map"),
    "channel_scales_as_batchnorm": (("onnxruntime",), "ONNX Runtime broadcasts a (1,C,1,1) factor as one short "
                                    "loop per channel; its BatchNormalization kernel scales channels faster on "
                                    "7x7-28x28 maps. XNNPACK's MUL broadcasts well and the emitter maps Mul"),
    "pixel_fcs_as_gemm": (("onnxruntime",), "ONNX Runtime runs a 1x1 conv on a pooled pixel in NCHWc, with "
                          "reorders around it; a Gemm on the flattened vector needs none. The TFLite emitter "
                          "lowers those convs to XNNPACK's fully connected kernels itself"),
}
# Passes measured and left out: Dynamic Shift-Max as a grouped conv with the coefficients as
# runtime weights (ONNX Runtime runs a 2-in/2-out-per-group conv as one tiny GEMM per group:
# no faster than the seven elementwise ops it replaces on M0), and channel-multiplier
# depthwise convs as repeat + plain depthwise (the repeat's NCHWc reorders cost what the
# faster depthwise kernel saves).


def passes_for(target: str) -> list[str]:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    return [name for name, (targets, _) in PASS_TARGETS.items() if target in targets]

"""What an artifact says about itself: written into every .onnx and .tflite, read back by
``micronet-export info ARTIFACT``.

ONNX: ``metadata_props`` (string key/value). TFLite: a ``micronet_export`` entry of the
flatbuffer's ``metadata`` list whose buffer holds the same keys as JSON (interpreters ignore
unknown metadata), and beside it the standard ``TFLITE_METADATA`` entry that app frameworks
read (:mod:`micronet_export.tflite_metadata`: its schema has no room for the keys above, so
both are written).
"""

from __future__ import annotations

import json
from pathlib import Path

from micronet_export import __version__
from micronet_export.errors import UserError
from micronet_export.images import IMAGENET_MEAN, IMAGENET_STD
from micronet_export.tflite_metadata import (
    LABELS_FILE, STANDARD_METADATA_NAME, ClassScores, ImageInput, StandardMetadata, append_files, associated_files,
    metadata_flatbuffer,
)

TFLITE_METADATA_NAME = "micronet_export"


RAW_PIXELS = "raw RGB 0..255 (normalisation inside the model)"
NORMALISED_PIXELS = "normalised: (x / 255 - mean) / std"


def artifact_metadata(*, variant: str, input_size: int, layout: str, precision: str, num_classes: int,
                      checkpoint_sha256: str | None, quantization: str, labels: str,
                      raw_pixels: bool = False, weights_license: str | None = None) -> dict[str, str]:
    """Flat string map (ONNX metadata_props are strings)."""
    crop = f"resize shorter side to {round(input_size * 256 / 224)} (bilinear), centre crop {input_size}"
    meta = {
        "micronet.variant": variant,
        "micronet.input_size": str(input_size),
        "micronet.input_layout": layout,
        "micronet.input_shape": json.dumps([1, 3, input_size, input_size] if layout == "NCHW" else [1, input_size, input_size, 3]),
        "micronet.mean": json.dumps(list(IMAGENET_MEAN)),
        "micronet.std": json.dumps(list(IMAGENET_STD)),
        "micronet.preprocessing": (f"{crop}, then the RGB bytes as they are (mean/std folded into the model)"
                                   if raw_pixels else f"{crop}, /255, (x - mean) / std"),
        "micronet.input_pixels": RAW_PIXELS if raw_pixels else NORMALISED_PIXELS,
        "micronet.num_classes": str(num_classes),
        "micronet.labels": labels,
        "micronet.precision": precision,
        "micronet.quantization": quantization,
        "micronet.tool": f"micronet-export {__version__}",
        "micronet.checkpoint_sha256": checkpoint_sha256 or "none (random initialisation)",
    }
    if weights_license:
        meta["micronet.weights_license"] = weights_license
    return meta


def set_onnx_metadata(model, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "micronet-export"
    model.producer_version = __version__


def tflite_takes_raw_pixels(path: str | Path) -> bool:
    """Whether a .tflite written by this tool takes raw RGB values (``--raw-pixels``). Reads
    the metadata with LiteRT's own schema: no TensorFlow import on this hot path."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == TFLITE_METADATA_NAME:
            meta = json.loads(bytes(model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy()).decode())
            return meta.get("micronet.input_pixels") == RAW_PIXELS
    return False


def _tflite_schema():
    from micronet_export.quiet import import_tensorflow

    import_tensorflow()
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    return schema, flatbuffer_utils


INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY = "input", "logits", "serving_default"


def _name_io(model, schema) -> None:
    """The tensors and signature named as in the ONNX model: ``input`` -> ``logits`` (the
    converter names the output after the traced function's ``Identity``)."""
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].name = INPUT_NAME.encode()
    graph.tensors[graph.outputs[0]].name = OUTPUT_NAME.encode()
    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    signature.inputs, signature.outputs = [], []
    for names, name, index in ((signature.inputs, INPUT_NAME, graph.inputs[0]),
                               (signature.outputs, OUTPUT_NAME, graph.outputs[0])):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        names.append(entry)
    model.signatureDefs = [signature]


def _set_metadata_entry(model, schema, name: str, data: bytes) -> None:
    model.metadata = [m for m in (model.metadata or []) if m.name not in (name, name.encode())]
    buffer = schema.BufferT()
    buffer.data = list(data)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)


def add_tflite_metadata(flatbuffer: bytes, meta: dict[str, str], standard: StandardMetadata | None = None) -> bytes:
    """``flatbuffer`` carrying ``meta`` (JSON in a ``micronet_export`` metadata entry), with its
    input and output named ``input`` / ``logits`` in the tensors and a signature; with
    ``standard``, also the ``TFLITE_METADATA`` entry and its files (labels) appended as a zip."""
    schema, flatbuffer_utils = _tflite_schema()

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    _name_io(model, schema)
    _set_metadata_entry(model, schema, TFLITE_METADATA_NAME, json.dumps(meta, sort_keys=True).encode())
    if standard is not None:
        _set_metadata_entry(model, schema, STANDARD_METADATA_NAME, metadata_flatbuffer(standard))
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return append_files(out, associated_files(standard)) if standard is not None else out


def standard_metadata(meta: dict[str, str], *, labels: tuple[str, ...] | None, author: str) -> StandardMetadata:
    """The standard metadata of a TFLite artifact whose ``micronet.*`` entry is ``meta``: what
    MediaPipe and the Task Library need to feed it an image and name its classes."""
    size, precision = int(meta["micronet.input_size"]), meta["micronet.precision"]
    raw = meta["micronet.input_pixels"] == RAW_PIXELS
    if raw:  # the model normalises itself: the app passes the pixel values through
        mean, std, value_range = (0.0,), (1.0,), (0.0, 255.0)
        pixels = "RGB values 0..255 as they are (the ImageNet mean/std are folded into the model)"
    else:
        mean, std, value_range = (tuple(round(255.0 * m, 4) for m in IMAGENET_MEAN),
                                  tuple(round(255.0 * s, 4) for s in IMAGENET_STD), None)
        pixels = "RGB normalised per channel, (x - mean) / std with the ImageNet mean/std in pixel units"
    image = ImageInput(name=INPUT_NAME, size=size, mean=mean, std=std, value_range=value_range,
                       description=f"{size}x{size} RGB image, NHWC, {pixels}. Trained on the centre crop of "
                                   f"{meta['micronet.preprocessing'].split(',')[0]}: pass a centred square "
                                   "(MediaPipe stretches the whole image to the input size).")
    classes = meta["micronet.num_classes"]
    scores = ClassScores(name=OUTPUT_NAME, labels=labels,
                         description=f"{classes} class logits (no softmax: rank them; they are not probabilities, "
                                     "so a score threshold is a logit threshold)"
                                     + (f", class names in {LABELS_FILE}" if labels is not None else ""))
    variant = meta["micronet.variant"].upper()
    return StandardMetadata(
        name=f"MicroNet-{variant} image classifier ({precision})",
        description=(f"MicroNet-{variant} (Li et al., ICCV 2021), {classes} classes, {size}x{size} RGB input, "
                     f"{precision}: {meta['micronet.quantization']}. "
                     + (f"Weights {meta['micronet.int8_weights']}. " if "micronet.int8_weights" in meta else "")
                     + f"Exported by {meta['micronet.tool']}."),
        version=f"{meta['micronet.tool']}; checkpoint sha256 {meta['micronet.checkpoint_sha256']}",
        author=author,
        license=meta.get("micronet.weights_license") or "no licence recorded for these weights",
        input=image, output=scores)


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 - any parse failure is "not an ONNX model"
            raise UserError(f"{path} is not a readable ONNX model (truncated or not an .onnx file?)") from None
        return {p.key: p.value for p in model.metadata_props}
    if path.suffix == ".tflite":
        schema, _ = _tflite_schema()

        from micronet_export.tflite_inspect import litert_interpreter

        try:  # the interpreter verifies the whole flatbuffer; our reads below are lazy (struct.error)
            litert_interpreter(path, xnnpack=False)
            model = schema.Model.GetRootAs(path.read_bytes(), 0)
            for i in range(model.MetadataLength()):
                if model.Metadata(i).Name().decode() == TFLITE_METADATA_NAME:
                    return json.loads(bytes(model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy()).decode())
        except Exception:  # noqa: BLE001 - any parse failure is "not a TFLite model"
            raise UserError(f"{path} is not a readable TFLite model (truncated or not a .tflite file?)") from None
        return {}
    raise UserError(f"{path.name}: info reads .onnx and .tflite artifacts (or --variant m0..m3)")

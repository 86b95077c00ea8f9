"""The standard TFLite metadata (TFLITE_METADATA, metadata_schema.fbs) of every TFLite artifact,
read back with MediaPipe's own generated schema module (an independent reader)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from micronet_export.export import ExportOptions, artifact_names, export
from micronet_export.images import project_path
from micronet_export.metadata import read_metadata
from micronet_export.runtimes import run_in_runner, run_tflite
from micronet_export.tflite_metadata import (
    LABELS_FILE, STANDARD_METADATA_NAME, ClassScores, ImageInput, StandardMetadata, append_files,
    associated_files, metadata_flatbuffer, read_associated_files,
)

SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")
FASHION_CLASSES = json.loads(SHIPPED.with_suffix(".json").read_text())["classes"]


def schema():
    from mediapipe.tasks.metadata import metadata_schema_py_generated

    return metadata_schema_py_generated


def standard_entry(artifact: bytes):
    """The ModelMetadataT of an artifact's TFLITE_METADATA entry."""
    from ai_edge_litert import schema_py_generated as tflite

    model = tflite.Model.GetRootAs(artifact, 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    entry = model.Metadata(names.index(STANDARD_METADATA_NAME))
    data = bytes(model.Buffers(entry.Buffer()).DataAsNumpy())
    ms = schema()
    assert ms.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)  # "M001"
    return ms.ModelMetadataT.InitFromObj(ms.ModelMetadata.GetRootAs(data, 0)), names


def example(labels=("cat", "dog", "bird")) -> StandardMetadata:
    return StandardMetadata(
        name="n", description="d", version="v", author="a", license="MIT",
        input=ImageInput(name="input", description="img", size=64, mean=(0.0,), std=(1.0,), value_range=(0.0, 255.0)),
        output=ClassScores(name="logits", description="scores", labels=labels))


def test_flatbuffer_reads_back_field_by_field():
    md = schema().ModelMetadataT.InitFromObj(schema().ModelMetadata.GetRootAs(metadata_flatbuffer(example()), 0))
    ms = schema()
    assert (md.name, md.description, md.version, md.author, md.license) == (b"n", b"d", b"v", b"a", b"MIT")
    assert md.minParserVersion == b"1.0.0"
    (subgraph,) = md.subgraphMetadata
    (inp,), (out,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
    assert inp.name == b"input" and inp.content.contentPropertiesType == ms.ContentProperties.ImageProperties
    image = inp.content.contentProperties
    assert image.colorSpace == ms.ColorSpaceType.RGB and (image.defaultSize.width, image.defaultSize.height) == (64, 64)
    (unit,) = inp.processUnits
    assert unit.optionsType == ms.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] and list(unit.options.std) == [1.0]
    assert (list(inp.stats.min), list(inp.stats.max)) == ([0.0], [255.0])
    assert out.name == b"logits" and out.content.contentPropertiesType == ms.ContentProperties.FeatureProperties
    (labels,) = out.associatedFiles
    assert labels.name == LABELS_FILE.encode() and labels.type == ms.AssociatedFileType.TENSOR_AXIS_LABELS


def test_files_are_appended_as_a_stored_zip_and_leave_the_model_bytes_alone():
    model = bytes(range(256)) * 8
    files = associated_files(example())
    out = append_files(model, files)
    assert out[:len(model)] == model
    archive = zipfile.ZipFile(io.BytesIO(out))
    assert [(i.filename, i.compress_type) for i in archive.infolist()] == [(LABELS_FILE, zipfile.ZIP_STORED)]
    assert read_associated_files(out) == {LABELS_FILE: b"cat\ndog\nbird\n"}
    assert append_files(model, files) == out  # fixed timestamps: byte-identical
    assert read_associated_files(model) == {} and associated_files(example(labels=None)) == {}


def test_labels_with_line_breaks_are_refused():
    with pytest.raises(ValueError):
        associated_files(example(labels=("a\nb",)))


@pytest.fixture(scope="module")
def fashion_fp32(fashion_fp32_run):
    return fashion_fp32_run / artifact_names("m0")["tflite_fp32"]


def test_artifact_carries_both_metadata_entries_and_its_labels(fashion_fp32):
    artifact = fashion_fp32.read_bytes()
    md, names = standard_entry(artifact)
    assert "micronet_export" in names  # the tool's own entry is kept beside the standard one
    assert read_metadata(fashion_fp32)["micronet.variant"] == "m0"
    assert md.author.decode() == json.loads(SHIPPED.with_suffix(".json").read_text())["author"]
    assert b"MicroNet-M0" in md.name and md.subgraphMetadata[0].outputTensorMetadata[0].name == b"logits"
    labels = read_associated_files(artifact)[LABELS_FILE].decode().splitlines()
    assert labels == FASHION_CLASSES  # one per class, in index order


def test_runtimes_still_load_the_artifact_with_the_zip(fashion_fp32):
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    litert = run_tflite(fashion_fp32, x)
    pi, info = run_in_runner(fashion_fp32, x, "tflite_runtime")
    assert info["runtime_version"] == "2.14.0"
    # Same artifact, two runtimes: float32 kernels that sum in different orders.
    assert np.abs(pi - litert).max() <= 1e-4 * np.abs(litert).max()


def test_labels_txt_lies_beside_the_artifacts_with_the_embedded_names(fashion_fp32):
    beside = (fashion_fp32.parent / LABELS_FILE).read_bytes()
    assert beside == read_associated_files(fashion_fp32.read_bytes())[LABELS_FILE]
    assert beside.decode().splitlines() == FASHION_CLASSES


def test_labels_txt_is_replaced_only_with_force(fashion_fp32, tmp_path):
    from micronet_export.errors import OutputExistsError

    (tmp_path / LABELS_FILE).write_text("an earlier run's\n")
    with pytest.raises(OutputExistsError, match=LABELS_FILE):
        export(ExportOptions(variant="m0", format="onnx", checkpoint=SHIPPED, output=tmp_path))
    export(ExportOptions(variant="m0", format="onnx", checkpoint=SHIPPED, output=tmp_path, force=True))
    assert (tmp_path / LABELS_FILE).read_text().splitlines() == FASHION_CLASSES

"""The standard TFLite model metadata that app frameworks read: MediaPipe Tasks, the TFLite Task
Library, Android Studio's ML Model Binding and Netron.

They look for a ``TFLITE_METADATA`` entry in the model's ``metadata`` list whose buffer holds a
``ModelMetadata`` flatbuffer (TFLite Support's ``metadata_schema.fbs``, file identifier ``M001``),
and for the files it names (the labels) in a zip archive appended to the model, its entries
stored uncompressed (MediaPipe maps them in place and refuses deflated ones). Interpreters
ignore both: the model bytes before the zip are the flatbuffer they always read.

The schema is small, so the few tables used here are written with ``flatbuffers`` directly
(the table and field order below is the schema's; every field is optional). Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import flatbuffers

STANDARD_METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
# The oldest parser that reads every field written here (all of them date from 1.0.0).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

# Enum values of metadata_schema.fbs.
COLOR_SPACE_RGB = 1
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2  # ContentProperties union
PROCESS_UNIT_NORMALIZATION = 1  # ProcessUnitOptions union
TENSOR_AXIS_LABELS = 2  # AssociatedFileType
# A fixed timestamp: the appended zip (and so the artifact) is byte-identical across runs.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ImageInput:
    """What the input tensor takes: an RGB image of ``size`` x ``size`` whose pixel values
    (0..255) an app normalises as ``(x - mean) / std`` per channel (one value: all channels)."""

    name: str
    description: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_range: tuple[float, float] | None = None  # of the tensor after normalisation


@dataclass(frozen=True)
class ClassScores:
    """What the output tensor holds: one score per class, labels in ``labels`` order."""

    name: str
    description: str
    labels: tuple[str, ...] | None  # None: no class names known, no labels file


@dataclass(frozen=True)
class StandardMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    input: ImageInput
    output: ClassScores


def labels_text(labels: tuple[str, ...]) -> bytes:
    """One name per line, in class-index order (the TENSOR_AXIS_LABELS file format)."""
    if any("\n" in name or "\r" in name for name in labels):
        raise ValueError("a class name contains a line break")
    return ("\n".join(labels) + "\n").encode()


class _Writer:
    """Bottom-up flatbuffer writing: every child (string, vector, table) is finished before
    the table that points to it is started, as the flatbuffers format requires."""

    def __init__(self) -> None:
        self.builder = flatbuffers.Builder(1024)

    def strings(self, values) -> int:
        return self.offsets([self.builder.CreateString(v) for v in values])

    def offsets(self, offsets: list[int]) -> int:
        self.builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            self.builder.PrependUOffsetTRelative(offset)
        return self.builder.EndVector()

    def floats(self, values) -> int:
        self.builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.builder.PrependFloat32(float(value))
        return self.builder.EndVector()

    def table(self, slots: int, offsets: dict[int, int] | None = None, uint8: dict[int, int] | None = None,
              uint32: dict[int, int] | None = None) -> int:
        """A table of ``slots`` fields: ``offsets`` (strings, vectors, tables), ``uint8`` (enums,
        union types), ``uint32`` values, each by field index."""
        b = self.builder
        b.StartObject(slots)
        for slot, value in (offsets or {}).items():
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        for slot, value in (uint32 or {}).items():
            b.PrependUint32Slot(slot, value, 0)
        for slot, value in (uint8 or {}).items():
            b.PrependUint8Slot(slot, value, 0)
        return b.EndObject()

    def string_fields(self, **values: str | None) -> dict[str, int]:
        return {key: self.builder.CreateString(value) for key, value in values.items() if value is not None}


def _input_tensor(w: _Writer, spec: ImageInput) -> int:
    text = w.string_fields(name=spec.name, description=spec.description)
    size = w.table(2, uint32={0: spec.size, 1: spec.size})  # ImageSize: width, height
    image = w.table(2, offsets={1: size}, uint8={0: COLOR_SPACE_RGB})  # ImageProperties
    content = w.table(3, offsets={1: image}, uint8={0: CONTENT_IMAGE})  # Content
    normalization = w.table(2, offsets={0: w.floats(spec.mean), 1: w.floats(spec.std)})
    unit = w.table(2, offsets={1: normalization}, uint8={0: PROCESS_UNIT_NORMALIZATION})  # ProcessUnit
    fields = {0: text["name"], 1: text["description"], 3: content, 4: w.offsets([unit])}
    if spec.value_range is not None:  # Stats: max, min
        low, high = spec.value_range
        fields[5] = w.table(2, offsets={0: w.floats([high]), 1: w.floats([low])})
    return w.table(7, offsets=fields)  # TensorMetadata


def _output_tensor(w: _Writer, spec: ClassScores) -> int:
    text = w.string_fields(name=spec.name, description=spec.description)
    content = w.table(3, offsets={1: w.table(0)}, uint8={0: CONTENT_FEATURE})
    fields = {0: text["name"], 1: text["description"], 3: content}
    if spec.labels is not None:
        file_text = w.string_fields(name=LABELS_FILE, description=f"{len(spec.labels)} class names, one per line, "
                                                                  "in output index order")
        labels = w.table(4, offsets={0: file_text["name"], 1: file_text["description"]},
                         uint8={2: TENSOR_AXIS_LABELS})  # AssociatedFile
        fields[6] = w.offsets([labels])
    return w.table(7, offsets=fields)


def metadata_flatbuffer(meta: StandardMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier M001) describing one subgraph."""
    w = _Writer()
    inputs = w.offsets([_input_tensor(w, meta.input)])
    outputs = w.offsets([_output_tensor(w, meta.output)])
    subgraph = w.table(7, offsets={2: inputs, 3: outputs})  # SubGraphMetadata
    text = w.string_fields(name=meta.name, description=meta.description, version=meta.version, author=meta.author,
                           license=meta.license, min_parser_version=MIN_PARSER_VERSION)
    root = w.table(8, offsets={0: text["name"], 1: text["description"], 2: text["version"],
                               3: w.offsets([subgraph]), 4: text["author"], 5: text["license"],
                               7: text["min_parser_version"]})
    w.builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(w.builder.Output())


def associated_files(meta: StandardMetadata) -> dict[str, bytes]:
    """The files the metadata names, by name (what goes into the appended zip)."""
    return {LABELS_FILE: labels_text(meta.output.labels)} if meta.output.labels is not None else {}


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with ``files`` appended as a zip of stored (uncompressed) entries; offsets in
    the zip count from the start of the model, as TFLite Support's own writer does."""
    if not files:
        return model
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def read_associated_files(artifact: bytes) -> dict[str, bytes]:
    """The files appended to a model (empty when there are none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(artifact)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}

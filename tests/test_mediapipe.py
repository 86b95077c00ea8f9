"""The default TFLite artifacts in the real MediaPipe Tasks ImageClassifier (the test-only
``[mediapipe]`` extra), as an app developer uses them: no pre- or post-processing code.

MediaPipe stretches the whole image to the input size; the photos here are centred squares at
the model's input size (the centre crop our preprocessing takes), so MediaPipe and our own
runtime see the same pixels and differ only in their kernels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from micronet_export.export import ExportOptions, artifact_names, export
from micronet_export.images import load_folder, project_path
from micronet_export.input_normalization import from_raw_pixels, to_raw_pixels
from micronet_export.runtimes import run_tflite
from micronet_export.tflite_metadata import LABELS_FILE, read_associated_files

SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")
FASHION_CLASSES = json.loads(SHIPPED.with_suffix(".json").read_text())["classes"]
# fp32 / fp16 take pixels by default; int8 with --raw-pixels (its default stays normalised input)
PRECISIONS = {"fp32": {}, "fp16": {"fp16": True}, "int8": {"int8": True, "raw_pixels": True}}
KEYS = {"fp32": "tflite_fp32", "fp16": "tflite_fp16", "int8": "tflite_int8"}
# The bar: MediaPipe's top-1 is our runtime's on at least 97 % of the photos.
MIN_TOP1_AGREEMENT = 0.97


def classifier(path):
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    return vision.ImageClassifier.create_from_options(options)


def squares(folder, size: int) -> np.ndarray:
    """Centre-cropped photos at ``size`` as the RGB bytes an app has (N, size, size, 3) uint8."""
    normalised = load_folder(folder, input_size=size).arrays
    return to_raw_pixels(normalised).transpose(0, 2, 3, 1).astype(np.uint8)


def classify_all(path, images: np.ndarray) -> list[list]:
    """MediaPipe's categories per image, best first."""
    import mediapipe as mp

    with classifier(path) as model:
        return [model.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
                .classifications[0].categories for image in images]


def ours(path, images: np.ndarray) -> np.ndarray:
    """Our runtime (LiteRT through runtimes.run_tflite) on the same bytes."""
    return run_tflite(path, from_raw_pixels(images.transpose(0, 3, 1, 2).astype(np.float32)))


def top1_agreement(categories: list[list], scores: np.ndarray) -> float:
    return float(np.mean([c[0].index == s.argmax() for c, s in zip(categories, scores)]))


@pytest.fixture(scope="module")
def fashion_artifacts(tmp_path_factory):
    paths = {}
    for precision, flags in PRECISIONS.items():
        out = tmp_path_factory.mktemp(precision)
        export(ExportOptions(variant="m0", format="tflite", checkpoint=SHIPPED, output=out, per_layer=False, **flags))
        paths[precision] = out / artifact_names("m0")[KEYS[precision]]
    return paths


@pytest.fixture(scope="module")
def fashion_squares():
    return squares(project_path("models/fashion_mnist_calibration"), 64)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_artifact_classifies_in_mediapipe_with_names(precision, fashion_artifacts, fashion_squares):
    path = fashion_artifacts[precision]
    categories = classify_all(path, fashion_squares)
    names = read_associated_files(path.read_bytes())[LABELS_FILE].decode().splitlines()
    assert names == FASHION_CLASSES
    for per_image in categories:  # every class, each with the model's own name for its index
        assert sorted(c.index for c in per_image) == list(range(len(FASHION_CLASSES)))
        assert all(c.category_name == FASHION_CLASSES[c.index] for c in per_image)
    assert top1_agreement(categories, ours(path, fashion_squares)) >= MIN_TOP1_AGREEMENT


def test_float_scores_are_the_logits(fashion_artifacts, fashion_squares):
    # MediaPipe applies no softmax: its scores are the output tensor, which the metadata says
    # are logits. Two float32 runtimes summing in different orders: 1e-4 of the logit range.
    path = fashion_artifacts["fp32"]
    categories = classify_all(path, fashion_squares[:8])
    want = ours(path, fashion_squares[:8])
    for per_image, logits in zip(categories, want):
        got = np.asarray([c.score for c in sorted(per_image, key=lambda c: c.index)])
        assert np.abs(got - logits).max() <= 1e-4 * np.abs(logits).max()


def test_int8_takes_uint8_pixels_and_floats_take_pixel_values(fashion_artifacts):
    from micronet_export.metadata import read_metadata
    from micronet_export.tflite_inspect import io_details

    for precision, path in fashion_artifacts.items():
        io = io_details(path)
        want = "uint8" if precision == "int8" else "float32"
        assert io["input"]["dtype"] == want and io["output"]["dtype"] == want
        assert "raw" in read_metadata(path)["micronet.input_pixels"]
        if precision == "int8":  # the bytes as they are
            assert (io["input"]["scale"], io["input"]["zero_point"]) == (1.0, 0)


def test_normalized_input_is_one_flag_away_and_mediapipe_says_why_it_refuses(tmp_path):
    export(ExportOptions(variant="m0", format="tflite", checkpoint=SHIPPED, output=tmp_path, raw_pixels=False))
    path = tmp_path / artifact_names("m0")["tflite_fp32"]
    with pytest.raises(Exception, match="[Pp]er-channel"):
        classifier(path)


@pytest.mark.slow  # the ImageNet M0 at 224 px, 1000 classes
def test_imagenet_default_fp32_in_mediapipe(tmp_path):
    from micronet_export.class_names import imagenet_names

    export(ExportOptions(variant="m0", format="tflite", output=tmp_path, per_layer=False))
    path = tmp_path / artifact_names("m0")["tflite_fp32"]
    images = squares(project_path("calibration"), 224)
    categories = classify_all(path, images)
    assert len(categories[0]) == 1000
    assert all(c.category_name == imagenet_names().names[c.index] for c in categories[0])
    assert top1_agreement(categories, ours(path, images)) >= MIN_TOP1_AGREEMENT


def test_readme_python_snippet_runs_on_a_real_artifact(fashion_artifacts, fashion_squares, tmp_path, monkeypatch):
    # README's MediaPipe snippet, as written, against the int8 artifact under its real name.
    import re

    from PIL import Image

    readme = (project_path("README.md")).read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "ImageClassifier" in b)
    name = artifact_names("m0")["tflite_int8"]
    assert f'"models/m0/{name}"' in snippet and f'"{name}"' in readme  # the Kotlin snippet too
    (tmp_path / "models" / "m0").mkdir(parents=True)
    (tmp_path / "models" / "m0" / name).write_bytes(fashion_artifacts["int8"].read_bytes())
    Image.fromarray(fashion_squares[0]).save(tmp_path / "square_photo.jpg")
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(compile(snippet, "README.md", "exec"), {"print": lambda *a: printed.append(a)})
    assert len(printed) == 5 and all(a[0] in FASHION_CLASSES for a in printed)

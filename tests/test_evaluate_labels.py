"""evaluate maps labels to the model's own classes: class-named folders by name, numbered ones
by number, CSV numbers as given, and says which rule it used; input size from the card."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from micronet_export import create_model
from micronet_export.class_names import ClassNames, imagenet_names, map_labels
from micronet_export.errors import UserError
from micronet_export.evaluate import evaluate
from micronet_export.export import artifact_names
from micronet_export.images import load_image, project_path
from micronet_export.runtimes import run_torch

from conftest import skip_unless_ci
from test_cli import run_main

SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")
# The official ImageNet M0 as ../shared/reference/imagenet/README.md gives it.
IMAGENET_SHA256 = "94b3026a839ce1b338620ca88fb7072c52ac3b9b13dbf4ddc91097f524f04de0"
CARD = json.loads(SHIPPED.with_suffix(".json").read_text())
CLASSES = CARD["classes"]
SLICE = Path(__file__).parent / "data" / "fashion_mnist_slice"  # 10 test images per class, N_name folders
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TRAINED_MIN_TEST_TOP1 = 0.85  # the issue's bar; the card measured 0.9099 on all 10,000 test images
FASHION_NAMES = ClassNames(tuple(CLASSES), "the card")


def slice_images() -> list[tuple[Path, int]]:
    """(image, true class) of the committed slice; the folder's number is the class."""
    return [(p, int(p.parent.name.split("_")[0])) for p in sorted(SLICE.rglob("*.png"))]


def copy_as(folder: Path, name_of_class, images: list[tuple[Path, int]]) -> Path:
    for path, index in images:
        (folder / name_of_class(index)).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name_of_class(index) / path.name)
    return folder


def torch_top1(images: list[tuple[Path, int]]) -> float:
    """The shipped checkpoint's top-1 on ``images``, computed here without evaluate."""
    model = create_model("m0", checkpoint=SHIPPED, num_classes=None)
    batch = np.stack([load_image(p, CARD["input_size"]) for p, _ in images])
    truth = np.array([index for _, index in images])
    return float(np.mean(run_torch(model, batch).argmax(1) == truth))


# -- the rules, on labels alone ------------------------------------------------------------

def test_class_names_match_ignoring_case_spaces_and_punctuation():
    labels = ["Bag", "trouser", "T-shirt top", "ANKLE_BOOT", "t_shirt-top"]
    mapping = map_labels(labels, FASHION_NAMES)
    assert mapping.indices.tolist() == [8, 1, 0, 9, 0]
    assert mapping.rule == "folder names matched to the class names of the card"


def test_numbers_are_class_indices_as_given():
    # A CSV with the labels 8 and 1 was re-ranked among the labels present (8 -> 1, 1 -> 0).
    mapping = map_labels(["8", "1", "8"], FASHION_NAMES, "CSV label")
    assert mapping.indices.tolist() == [8, 1, 8]
    assert mapping.rule == "CSV label numbers (N or N_name) are class indices, as given"
    assert map_labels(["1_Trouser", "8_Bag"], None).indices.tolist() == [1, 8]


def test_unidentified_labels_fall_back_to_sorted_names_and_say_so():
    mapping = map_labels(["dogs", "cats", "dogs"], FASHION_NAMES)
    assert mapping.indices.tolist() == [1, 0, 1]
    assert mapping.rule.startswith("no folder is a class name of the card or a number: mapped by sorted folder name")
    assert "cats→0, dogs→1" in mapping.rule and "--labels names.txt" in mapping.rule


def test_imagenet_folders_by_wordnet_id_synonym_or_name():
    names = imagenet_names()
    assert map_labels(["n01440764", "goldfish", "Carassius auratus"], names).indices.tolist() == [0, 1, 1]
    with pytest.raises(UserError, match=r"'crane' names 2 classes of ImageNet-1k .*134, 517"):
        map_labels(["crane", "goldfish"], names)


def test_out_of_range_number_is_an_error():
    with pytest.raises(UserError, match=r"unknown label '12': class 12 is beyond the 10 classes of the card"):
        map_labels(["12", "1"], FASHION_NAMES)


# -- evaluate on real images ---------------------------------------------------------------

@pytest.fixture(scope="module")
def expected_top1() -> float:
    return torch_top1(slice_images())


@pytest.mark.parametrize("name_of_class", [
    lambda i: CLASSES[i],  # Bag/, Trouser/: scored by sorted name before (T-shirt_top became 7)
    lambda i: CLASSES[i].lower().replace("_", " "),  # "t-shirt top/", "ankle boot/"
    lambda i: f"{i}_{CLASSES[i]}",
    lambda i: str(i),
], ids=["class-names", "lowercase-with-spaces", "N_name", "numbers"])
def test_folder_layouts_score_alike(tmp_path, expected_top1, name_of_class):
    data = copy_as(tmp_path, name_of_class, slice_images())
    result = evaluate([str(SHIPPED)], data)
    assert result["input_size"] == CARD["input_size"] and result["input_size_source"] == "the checkpoint card"
    assert result["results"][0]["images"] == len(slice_images())
    assert result["results"][0]["top1"] == expected_top1


def test_csv_numeric_labels_are_taken_as_given(tmp_path):
    chosen = [(p, i) for p, i in slice_images() if i in (1, 8)]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "".join(f"{p.relative_to(SLICE)},{i}\n" for p, i in chosen))
    result = evaluate([str(SHIPPED)], SLICE, labels=csv)
    assert result["results"][0]["top1"] == torch_top1(chosen)


def test_issue_example_bag_and_trouser_folders(tmp_path, capfd):
    chosen = [(p, i) for p, i in slice_images() if CLASSES[i] in ("Bag", "Trouser")]
    data = copy_as(tmp_path, lambda i: CLASSES[i], chosen)
    proc = run_main(capfd, "evaluate", str(SHIPPED), "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["top1"] == torch_top1(chosen)  # was 0.5
    assert proc.stderr.strip() == (f"evaluate: labels: folder names matched to the class names of the checkpoint card "
                                   f"{SHIPPED.with_suffix('.json')}; input 64x64 (the checkpoint card)")


def test_variant_target_says_which_weights(capfd):
    proc = run_main(capfd, "evaluate", "m0", "--checkpoint", "fashion-mnist", "--data", str(SLICE), "--limit", "10",
                    "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"m0: weights {SHIPPED}" in proc.stderr  # the shipped checkpoint by its name
    assert json.loads(proc.stdout)["input_size"] == CARD["input_size"]  # the card's 64, not 224 (10 % top-1)


def test_the_default_m0_is_the_official_imagenet_checkpoint():
    from micronet_export.model.checkpoint import sha256_file
    from micronet_export.options import ExportOptions

    opts = ExportOptions(variant="m0").normalized()
    card = json.loads(Path(opts.checkpoint).with_suffix(".json").read_text())
    assert sha256_file(opts.checkpoint) == card["sha256"] == IMAGENET_SHA256
    assert (opts.input_size, card["num_classes"], Path(opts.calibration)) == (224, 1000, project_path("calibration"))
    assert "MIT" in (Path(opts.checkpoint).parent / card["license_file"]).read_text()


# -- Fashion-MNIST test images in class-named folders, no --labels, no --input-size ----------

def write_fashion_mnist(folder: Path, per_class: int | None) -> Path:
    if not FASHION_MNIST.is_dir():
        skip_unless_ci("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (.ci/run does)")
    sys.path.insert(0, str(project_path("models")))
    from fashion_mnist_images import write_images

    write_images(folder, "test", per_class, folder_names="name")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(CLASSES)
    return folder


def assert_trained_accuracy(result: dict, images: int) -> None:
    assert result["input_size"] == CARD["input_size"] and "class names" in result["label_rule"]
    for row in result["results"]:
        assert row["images"] == images
        assert row["top1"] >= TRAINED_MIN_TEST_TOP1, row


@pytest.mark.slow  # exports the shipped int8 models first
def test_fashion_mnist_by_class_name(tmp_path, shipped_artifacts):
    # 50 per class: the card's 0.91 has a binomial standard error of sqrt(0.91 * 0.09 / 500) =
    # 0.013 on 500 images, so the 0.85 bar sits 4.7 standard errors below it.
    data = write_fashion_mnist(tmp_path / "test", per_class=50)
    tflite = shipped_artifacts / artifact_names("m0")["tflite_int8"]
    assert_trained_accuracy(evaluate([str(SHIPPED), str(tflite)], data), 500)


@pytest.mark.slow
def test_fashion_mnist_all_test_images_by_class_name(tmp_path, capfd, shipped_artifacts):
    data = write_fashion_mnist(tmp_path / "test", per_class=None)
    tflite = shipped_artifacts / artifact_names("m0")["tflite_int8"]
    proc = run_main(capfd, "evaluate", str(SHIPPED), str(tflite), "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    assert_trained_accuracy(json.loads(proc.stdout), 10_000)

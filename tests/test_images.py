"""The one preprocessing function, image modes, and unusable folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from micronet_export.errors import CalibrationError
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder, load_image, preprocess

from conftest import REFERENCE

REFERENCE_INDICES = (0, 50, 100, 150)
EXACT = 0.0


def test_preprocessing_reproduces_the_reference_inputs():
    # inputs.pt holds calibration photos 0, 50, 100, 150 preprocessed by the official pipeline.
    images = load_folder(DEFAULT_CALIBRATION_DIR)
    assert len(images.paths) == 200 and not images.skipped
    ref = torch.load(REFERENCE / "inputs.pt", weights_only=True).numpy()
    for i, k in enumerate(REFERENCE_INDICES):
        assert np.abs(images.arrays[k] - ref[i]).max() <= EXACT


def _rgb(seed=0, size=(300, 260)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1", "F"])
def test_every_mode_becomes_normalised_rgb(mode):
    img = _rgb().convert("L" if mode in ("I;16", "F", "1", "LA") else "RGB")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img, np.uint16) * 257)
    elif mode != "L":
        img = img.convert(mode)
    arr = preprocess(img, 224)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    assert np.isfinite(arr).all()
    assert -2.2 < arr.min() and arr.max() < 2.7  # inside ImageNet-normalised [0, 1]


def test_sixteen_bit_keeps_its_range():
    gray = _rgb().convert("L")
    wide = Image.fromarray(np.asarray(gray, np.uint16) * 257)
    assert wide.mode == "I;16"
    assert np.abs(preprocess(wide) - preprocess(gray)).max() < 0.02


@pytest.mark.parametrize("suffix", [".png", ".webp", ".bmp", ".jpg"])
def test_formats(tmp_path, suffix):
    path = tmp_path / f"img{suffix}"
    _rgb().save(path)
    assert load_image(path).shape == (3, 224, 224)


def test_other_input_sizes(tmp_path):
    path = tmp_path / "a.png"
    _rgb().save(path)
    assert load_image(path, 128).shape == (3, 128, 128)


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    for i in range(3):
        _rgb(i).save(tmp_path / f"ok{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (tmp_path / "fake.jpg").write_text("not a jpeg")
    good = tmp_path / "ok0.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:200])
    images = load_folder(tmp_path, min_images=2)
    assert len(images.paths) == 3
    assert sorted(p.name for p, _ in images.skipped) == ["fake.jpg", "truncated.png"]


def test_too_few_images(tmp_path):
    _rgb().save(tmp_path / "one.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(CalibrationError, match=r"has 1 readable image\(s\) \(1 unreadable\); at least 10 needed"):
        load_folder(tmp_path, min_images=10)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(CalibrationError, match="no images in"):
        load_folder(tmp_path)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_folder(tmp_path / "nope")


def test_warning_counts_unreadable_images_and_non_image_files(tmp_path, caplog):
    for i in range(3):
        _rgb(i).save(tmp_path / f"ok{i}.png")
    (tmp_path / "fake.jpg").write_text("not a jpeg")
    (tmp_path / "photo.heic").write_bytes(b"an image format we do not read")
    (tmp_path / "SOURCES.csv").write_text("file,licence\n")
    images = load_folder(tmp_path, min_images=2)
    assert [p.name for p in images.ignored] == ["SOURCES.csv", "photo.heic"]
    warning, = [r.getMessage() for r in caplog.records]
    assert warning == (f"warning: skipped 1 unreadable image(s) (fake.jpg) and 2 non-image file(s) "
                       f"(SOURCES.csv, photo.heic) in {tmp_path}")


def test_notes_beside_photos_alone_are_no_warning(tmp_path, caplog):
    for i in range(2):
        _rgb(i).save(tmp_path / f"ok{i}.png")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    assert len(load_folder(tmp_path).ignored) == 1
    assert caplog.records == []

"""The one preprocessing function, image modes, and unusable folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from micronet_export.errors import CalibrationError
from micronet_export.images import DEFAULT_CALIBRATION_DIR, ImageTooLarge, load_folder, load_image, preprocess

from conftest import REFERENCE, blank_bilevel_png

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


@pytest.mark.parametrize("width,height,reason", [
    (20_000, 10_000, "declares 200 megapixels, over Pillow's decompression-bomb limit"),  # DecompressionBombError
    (12_000, 12_000, "12000x12000 (144 megapixels, over the 64 MP the loader decodes)"),  # Pillow only warns
])
def test_huge_images_are_skipped_counted_and_never_decoded(tmp_path, caplog, width, height, reason):
    import warnings

    for i in range(2):
        _rgb(i).save(tmp_path / f"ok{i}.png")
    blank_bilevel_png(tmp_path / "huge.png", width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not reach the user
        images = load_folder(tmp_path, min_images=2)
    assert [p.name for p in images.paths] == ["ok0.png", "ok1.png"] and not images.skipped
    assert [(p.name, why) for p, why in images.too_large] == [("huge.png", f"too large: {reason}")]
    warning, = [r.getMessage() for r in caplog.records]
    assert warning == (f"warning: skipped 0 unreadable image(s), 1 too large to decode (huge.png) and 0 non-image "
                       f"file(s) in {tmp_path}")


def _smooth_rgb(size=(1600, 1200)):
    """A photo-like image without pixel-level detail: downscaling methods agree on it."""
    y, x = np.mgrid[0:size[1], 0:size[0]].astype(np.float64)
    rgb = np.stack([128 + 100 * np.sin(x / 150), 128 + 100 * np.cos(y / 130), 128 + 60 * np.sin((x + y) / 200)], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


# Decoding a JPEG at 1/8 scale averages 8x8 blocks in the DCT; Pillow's bilinear resize
# averages over its own (triangle) footprint. On a smooth image whose colour moves by at most
# 100/130 levels per pixel, every pixel lands within a couple of levels of the other
# (2/255/0.224 = 0.035 after normalisation).
DRAFT_MAX_ABS = 0.035


def test_jpeg_over_the_limit_is_decoded_at_reduced_scale(tmp_path, caplog):
    from micronet_export.images import read_image

    path = tmp_path / "big.jpg"
    _smooth_rgb().save(path, quality=95)
    full = read_image(path, 64)
    small = read_image(path, 64, max_pixels=500_000)  # 1.92 MP: decoded at 1/8, 200x150
    assert not full.downscaled and small.downscaled
    assert np.abs(small.array - full.array).max() <= DRAFT_MAX_ABS
    images = load_folder(tmp_path, input_size=64, max_pixels=500_000)
    assert [p.name for p in images.downscaled] == ["big.jpg"] and not images.too_large
    assert caplog.records[0].getMessage() == (f"warning: decoded 1 JPEG(s) over 0.5 megapixels at reduced scale "
                                              f"(big.jpg) in {tmp_path}")
    png = tmp_path / "big.png"
    _smooth_rgb().save(png)
    with pytest.raises(ImageTooLarge, match=r"1600x1200 \(2 megapixels, over the 0.5 MP the loader decodes\)"):
        read_image(png, 64, max_pixels=500_000)

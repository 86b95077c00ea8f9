"""Image loading and the one preprocessing function every stage uses.

Official MicroNet evaluation: shorter side resized to 256 (bilinear), centre crop 224, /255,
ImageNet mean/std. For other input sizes the 224/256 ratio is kept. Calibration, parity,
evaluation and the remote profiling runner all call :func:`preprocess`.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from micronet_export.errors import CalibrationError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 224 / 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
REPO_ROOT = Path(__file__).resolve().parent.parent


def project_path(relative: str) -> Path:
    """A path shipped at the project's top level (calibration/, models/): next to the package
    in a checkout or editable install, else under the working directory (Docker's /app)."""
    for base in (REPO_ROOT, Path.cwd()):
        if (base / relative).exists():
            return base / relative
    return REPO_ROOT / relative


DEFAULT_CALIBRATION_DIR = project_path("calibration")

# A truncated JPEG is an error we report, not an image we half-read.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The most pixels an image is decoded at: 192 MB as 8-bit RGB, room for any phone photo. A JPEG
# over it is decoded at 1/2, 1/4 or 1/8 scale (its codec scales while decoding, and the model
# sees 224 px anyway); any other image over it is skipped. Pillow refuses outright what declares
# over twice its own limit (DecompressionBombError, about 179 MP), before the size is known here.
MAX_PIXELS = 64_000_000
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageTooLarge(ValueError):
    """An image with more pixels than the loader decodes (memory bound), even at reduced scale."""


@dataclass
class LoadedImage:
    array: np.ndarray  # (3, S, S) float32, preprocessed
    downscaled: bool  # decoded at reduced scale (a JPEG over max_pixels)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB (grayscale, palette, RGBA, CMYK, 16-bit and float included)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def preprocess(image: Image.Image, input_size: int = 224) -> np.ndarray:
    """PIL image → float32 CHW array (3, input_size, input_size), ImageNet-normalised."""
    image = to_rgb(image)
    resize_to = int(round(input_size / CROP_RATIO))
    w, h = image.size
    # torchvision's Resize(int) arithmetic: the shorter side becomes `resize_to`, the longer
    # one is truncated, not rounded.
    if w <= h:
        new_w, new_h = resize_to, int(resize_to * h / w)
    else:
        new_w, new_h = int(resize_to * w / h), resize_to
    image = image.resize((new_w, new_h), Image.BILINEAR)
    # Floor, not round: reproduces the reference tensors made with the official pipeline
    # (round-half-even would move odd margins by a pixel).
    top = (new_h - input_size) // 2
    left = (new_w - input_size) // 2
    image = image.crop((left, top, left + input_size, top + input_size))
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image(path: str | Path, input_size: int = 224, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    return read_image(path, input_size, max_pixels).array


def read_image(path: str | Path, input_size: int = 224, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """One image, preprocessed, never decoded at more than ``max_pixels`` (raises
    :class:`ImageTooLarge` for one that cannot be read within them)."""
    try:
        with warnings.catch_warnings():
            # Pillow's own notice for images over its limit: this function bounds the size itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        declared = _BOMB_PIXELS.search(str(exc))
        size = f"{int(declared.group(1)) / 1e6:.0f} megapixels" if declared else "its size"
        raise ImageTooLarge(f"too large: declares {size}, over Pillow's decompression-bomb limit") from None
    with image:
        downscaled = _fit(image, input_size, max_pixels)
        image.load()
        return LoadedImage(preprocess(image, input_size), downscaled)


def _fit(image: Image.Image, input_size: int, max_pixels: int) -> bool:
    """Within ``max_pixels`` before decoding: a JPEG is set to decode at the smallest scale that
    keeps the shorter side at least the resize target; True when it was scaled."""
    w, h = image.size
    if w * h <= max_pixels:
        return False
    if image.format == "JPEG":
        scale = round(input_size / CROP_RATIO) / min(w, h)
        image.draft(None, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        if image.size[0] * image.size[1] <= max_pixels:
            return True
    raise ImageTooLarge(f"too large: {w}x{h} ({w * h / 1e6:.0f} megapixels, over the {max_pixels / 1e6:g} MP "
                        "the loader decodes)")


# Listings and notes that sit beside photos (SOURCES.csv, classes.txt): expected, so they alone
# trigger no warning; any other non-image file among photos (.heic, .tiff) was probably meant
# as one, and the warning says so.
NOTE_SUFFIXES = (".txt", ".md", ".csv", ".tsv", ".json", ".rst", ".yaml", ".yml")


@dataclass
class ImageSet:
    """Preprocessed images of a folder, with what was skipped and why, and what was ignored."""

    paths: list[Path]
    arrays: np.ndarray  # (N, 3, S, S) float32
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # image suffix, unreadable
    ignored: list[Path] = field(default_factory=list)  # no image suffix
    too_large: list[tuple[Path, str]] = field(default_factory=list)  # skipped: over max_pixels
    downscaled: list[Path] = field(default_factory=list)  # kept, decoded at reduced scale


@dataclass
class FolderListing:
    images: list[Path]  # files with an image suffix, sorted by path
    other_files: list[Path]  # every other file (hidden ones excluded)


def list_folder(folder: str | Path) -> FolderListing:
    folder = Path(folder)
    if not folder.exists():
        raise CalibrationError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise CalibrationError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return FolderListing(images, [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES])


def list_images(folder: str | Path) -> list[Path]:
    return list_folder(folder).images


def _examples(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:2]) + (", …" if len(paths) > 2 else "")


@dataclass
class _Read:
    kept: list[Path] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    too_large: list[tuple[Path, str]] = field(default_factory=list)
    downscaled: list[Path] = field(default_factory=list)


def _read_all(paths: list[Path], input_size: int, progress: bool, max_pixels: int) -> _Read:
    read = _Read()
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="images", unit="img", leave=False)
    for path in iterator:
        try:
            image = read_image(path, input_size, max_pixels)
        except ImageTooLarge as exc:
            read.too_large.append((path, str(exc)))
            continue
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            read.skipped.append((path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            continue
        read.kept.append(path)
        read.arrays.append(image.array)
        if image.downscaled:
            read.downscaled.append(path)
    return read


def load_folder(
    folder: str | Path,
    *,
    input_size: int = 224,
    min_images: int = 1,
    limit: int | None = None,
    progress: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> ImageSet:
    """Every readable image under ``folder`` (sorted by path); unreadable and too large ones are
    skipped, non-image files ignored, and all counted in one warning."""
    listing = list_folder(folder)
    others = listing.other_files
    if not listing.images:
        found = f"; found {len(others)} other file(s): {_examples(others)}" if others else ""
        raise CalibrationError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}{found})")
    paths = listing.images[:limit] if limit is not None else listing.images
    read = _read_all(paths, input_size, progress, max_pixels)
    if len(read.kept) < min_images:
        ignored = f", {len(others)} non-image file(s) ignored" if others else ""
        large = f", {len(read.too_large)} too large" if read.too_large else ""
        raise CalibrationError(f"{folder} has {len(read.kept)} readable image(s) ({len(read.skipped)} unreadable"
                               f"{large}{ignored}); at least {min_images} needed")
    _warn(folder, read, others, max_pixels)
    return ImageSet(read.kept, np.stack(read.arrays).astype(np.float32), read.skipped, others, read.too_large,
                    read.downscaled)


def _warn(folder, read: _Read, others: list[Path], max_pixels: int) -> None:
    unexpected = [p for p in others if p.suffix.lower() not in NOTE_SUFFIXES]
    if read.skipped or unexpected or read.too_large:
        large = (f", {len(read.too_large)} too large to decode ({_examples([p for p, _ in read.too_large])})"
                 if read.too_large else "")
        log.warning("warning: skipped %d unreadable image(s)%s%s and %d non-image file(s)%s in %s", len(read.skipped),
                    f" ({_examples([p for p, _ in read.skipped])})" if read.skipped else "", large, len(others),
                    f" ({_examples(others)})" if others else "", folder)
    if read.downscaled:
        log.warning("warning: decoded %d JPEG(s) over %g megapixels at reduced scale (%s) in %s", len(read.downscaled),
                    max_pixels / 1e6, _examples(read.downscaled), folder)

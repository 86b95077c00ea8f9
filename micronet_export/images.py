"""Image loading and the one preprocessing function every stage uses.

Official MicroNet evaluation: shorter side resized to 256 (bilinear), centre crop 224, /255,
ImageNet mean/std. For other input sizes the 224/256 ratio is kept. Calibration, parity,
evaluation and the remote profiling runner all call :func:`preprocess`.
"""

from __future__ import annotations

import logging
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


def load_image(path: str | Path, input_size: int = 224) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return preprocess(image, input_size)


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


def _read_all(paths: list[Path], input_size: int, progress: bool):
    kept, arrays, skipped = [], [], []
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="images", unit="img", leave=False)
    for path in iterator:
        try:
            arrays.append(load_image(path, input_size))
            kept.append(path)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            skipped.append((path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return kept, arrays, skipped


def load_folder(
    folder: str | Path,
    *,
    input_size: int = 224,
    min_images: int = 1,
    limit: int | None = None,
    progress: bool = False,
) -> ImageSet:
    """Every readable image under ``folder`` (sorted by path); unreadable ones are skipped,
    non-image files ignored, and both counted in one warning."""
    listing = list_folder(folder)
    others = listing.other_files
    if not listing.images:
        found = f"; found {len(others)} other file(s): {_examples(others)}" if others else ""
        raise CalibrationError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}{found})")
    paths = listing.images[:limit] if limit is not None else listing.images
    kept, arrays, skipped = _read_all(paths, input_size, progress)
    if len(kept) < min_images:
        ignored = f", {len(others)} non-image file(s) ignored" if others else ""
        raise CalibrationError(f"{folder} has {len(kept)} readable image(s) ({len(skipped)} unreadable{ignored}); "
                               f"at least {min_images} needed")
    unexpected = [p for p in others if p.suffix.lower() not in NOTE_SUFFIXES]
    if skipped or unexpected:
        log.warning("warning: skipped %d unreadable image(s)%s and %d non-image file(s)%s in %s", len(skipped),
                    f" ({_examples([p for p, _ in skipped])})" if skipped else "", len(others),
                    f" ({_examples(others)})" if others else "", folder)
    return ImageSet(kept, np.stack(arrays).astype(np.float32), skipped, others)

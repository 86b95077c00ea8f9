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


@dataclass
class ImageSet:
    """Preprocessed images of a folder, with what was skipped and why."""

    paths: list[Path]
    arrays: np.ndarray  # (N, 3, S, S) float32
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise CalibrationError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise CalibrationError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(
    folder: str | Path,
    *,
    input_size: int = 224,
    min_images: int = 1,
    limit: int | None = None,
    progress: bool = False,
) -> ImageSet:
    """Every readable image under ``folder`` (sorted by path); unreadable ones are skipped."""
    paths = list_images(folder)
    if not paths:
        raise CalibrationError(
            f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); point --calibration at a folder of photos"
        )
    if limit is not None:
        paths = paths[:limit]
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
    if len(kept) < min_images:
        raise CalibrationError(
            f"{folder} has {len(kept)} readable image(s) ({len(skipped)} unreadable); at least {min_images} needed"
        )
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s, e.g. %s", len(skipped), folder, skipped[0][0].name)
    return ImageSet(kept, np.stack(arrays).astype(np.float32), skipped)

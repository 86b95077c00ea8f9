"""What to run after an export: ready-to-paste commands on the artifact just written."""

from __future__ import annotations

import shlex
from pathlib import Path

from micronet_export.images import DEFAULT_CALIBRATION_DIR, IMAGE_SUFFIXES
from micronet_export.report import Report


def _labelled(folder: Path) -> bool:
    """``folder`` is DIR/<class>/<image>, what ``evaluate --data`` reads without a labels file."""
    return any(p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()) for p in folder.iterdir())


def _first_image(folder: Path) -> Path | None:
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


def follow_up_commands(report: Report) -> list[str]:
    """Three lines: predict, evaluate and profile on the run's main artifact (the last written:
    the requested format and precision), with an image of the run's photos."""
    if not report.artifacts:
        return []
    artifact = shlex.quote(report.artifacts[-1].path)
    photos = Path(report.calibration.get("dir") or DEFAULT_CALIBRATION_DIR)
    photos = photos if photos.is_dir() else None
    image = _first_image(photos) if photos else None
    data = shlex.quote(str(photos)) if photos and _labelled(photos) else "DIR  # a DIR/<class>/<image> folder"
    # Indented shell lines, a comment the only prose: each pastes into a shell as it is.
    return [f"  micronet-export predict {artifact} {shlex.quote(str(image)) if image else 'IMAGE'}  # next steps",
            f"  micronet-export evaluate {artifact} --data {data}",
            f"  micronet-export profile {artifact}"]

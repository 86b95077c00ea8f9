"""The output folder as one transaction: no partial file, no stale artifact, nothing left behind.

An export writes every file into a staging folder inside the output folder and renames them into
place only when the whole run got that far. On any failure (an exception, Ctrl-C, a full disk)
the staging folder is removed, and so is every folder this run created; a folder that existed
before is left as it was.

A folder holds the output of one run, which its report.json describes. Without ``force`` a run
refuses a folder that already holds artifacts of this tool; with ``force`` it replaces them: the
tool's artifacts that the new run does not write (say an int8 model of another checkpoint next to
a new fp32 one) are removed after the new files are in place, and the report lists them.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from micronet_export.errors import OutputExistsError, UserError
from micronet_export.interrupt import raise_if_interrupted
from micronet_export.model.variants import VARIANTS
from micronet_export.report import REPORT_JSON, REPORT_MD
from micronet_export.tflite_metadata import LABELS_FILE

STAGING_PREFIX = ".micronet-export-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def artifact_names(variant: str) -> dict[str, str]:
    return {
        "onnx_fp32": f"micronet_{variant}.onnx",
        "onnx_int8": f"micronet_{variant}_int8.onnx",
        "tflite_fp32": f"micronet_{variant}_float32.tflite",
        "tflite_fp16": f"micronet_{variant}_float16.tflite",
        "tflite_int8": f"micronet_{variant}_int8.tflite",
    }


# Only files with these exact names are ever replaced or removed: never a user's own file.
TOOL_FILE_NAMES = frozenset([name for v in VARIANTS for name in artifact_names(v).values()]
                            + [REPORT_JSON, REPORT_MD, LABELS_FILE])


@dataclass
class StagedOutput:
    """Where a run writes (``staging``) and what it will replace in ``folder``."""

    folder: Path
    staging: Path
    files: list[str]
    stale: list[Path] = field(default_factory=list)  # earlier run's artifacts this run does not write
    writing: str | None = None  # the file being written, named in a disk-full error

    def path(self, name: str) -> Path:
        """Where to write ``name`` now (remembered for the disk-full message)."""
        self.writing = name
        return self.staging / name


def tool_files_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name in TOOL_FILE_NAMES and p.is_file())


def check_existing(folder: Path, files: list[str], force: bool) -> list[Path]:
    """Refuse a folder holding an earlier run's artifacts unless ``force``; returns those of
    them this run will not overwrite (removed once the run succeeded)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output path {folder} is not a folder")
    existing = tool_files_in(folder)
    if existing and not force:
        first = next((p for p in existing if p.name in files), existing[0])
        raise OutputExistsError(
            f"{first} already exists" + (f" (+{len(existing) - 1} more)" if len(existing) > 1 else "")
            + "; pass --force to replace that earlier run's artifacts or --output to write elsewhere"
        )
    return [p for p in existing if p.name not in files]


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (what mkdir creates)."""
    missing = None
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing = path
    return missing


def _make_folder(folder: Path, created: Path | None) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"output folder {folder} is not writable; pick another with --output")
    except (OSError, UserError) as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(exc, UserError):
            raise
        raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None


def _disk_full(exc: OSError, folder: Path, writing: str | None) -> UserError:
    name = Path(exc.filename).name if exc.filename else writing
    return UserError(f"no space left on device writing {folder / name if name else folder}; free space or pick --output")


@contextmanager
def staged_output(folder: Path, files: list[str], force: bool):
    """Yield a :class:`StagedOutput`; on a clean exit move ``files`` from staging into ``folder``
    and remove the stale artifacts, on any failure remove what this run created."""
    stale = check_existing(folder, files, force)
    created = _first_missing(folder)
    _make_folder(folder, created)
    staging = staged = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        staged = StagedOutput(folder, staging, files, stale)
        yield staged
        raise_if_interrupted()  # a Ctrl-C that a library swallowed still leaves nothing behind
        for name in files:
            os.replace(staging / name, folder / name)
        for path in stale:
            path.unlink(missing_ok=True)
    except BaseException as exc:  # Ctrl-C and a full disk included: leave nothing behind
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise _disk_full(exc, folder, staged.writing if staged else None) from None
        raise
    shutil.rmtree(staging, ignore_errors=True)

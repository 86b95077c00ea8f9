"""The aarch64 emulation environment: prepared once, cached, shared by every emulated run.

    $XDG_CACHE_HOME/micronet-export/emu-<key>/   (default ~/.cache/micronet-export/...)
      root/                 Debian bookworm arm64: Python 3.11 and the libraries it links
      site/                 aarch64 wheels: exactly docker/Dockerfile.rpi's pip line
      plugin/               the instruction-counting plugin, compiled against this qemu
      cores/<core>/         qemu -L roots: root/ through symlinks + that core's /proc/cpuinfo

``<key>`` hashes everything the folder depends on (package lists, pins, qemu version, plugin
source, core table), so a change builds a new folder instead of reusing a stale one. The
folder is built under a temporary name and renamed at the end: an interrupted preparation
leaves no half-built environment behind, and two concurrent preparations cannot mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from micronet_export.emulate import debian
from micronet_export.emulate.cores import CORES, Core
from micronet_export.emulate.progress import ProgressLine
from micronet_export.errors import UserError

# The Raspberry Pi runtime image's pip line (docker/Dockerfile.rpi; tests/test_docker.py
# checks that the two agree), so that emulated runs exercise what the image ships.
RUNTIME_REQUIREMENTS = ("numpy==1.26.4", "tflite-runtime==2.14.0", "ai-edge-litert==2.3.0")
PIP_PLATFORM = ("--platform", "manylinux_2_34_aarch64", "--platform", "manylinux_2_27_aarch64",
                "--platform", "manylinux2014_aarch64", "--python-version", "3.11", "--implementation", "cp",
                "--abi", "cp311", "--only-binary=:all:")
GUEST_PYTHON = "usr/bin/python3.11"
PLUGIN_SOURCES = Path(__file__).resolve().parent / "plugin"
PLUGIN_LIBRARY = "libinsn_count.so"
QEMU_PACKAGES = ("qemu-user", "qemu-user-static")
LAYOUT_VERSION = "1"
# A build folder this old was left by a killed preparation (a live one takes minutes).
STALE_BUILD_S = 6 * 3600


@dataclass(frozen=True)
class Environment:
    path: Path
    qemu: str
    qemu_version: str

    @property
    def python(self) -> Path:
        return self.path / "root" / GUEST_PYTHON

    @property
    def site(self) -> Path:
        return self.path / "site"

    @property
    def plugin(self) -> Path:
        return self.path / "plugin" / PLUGIN_LIBRARY

    def core_root(self, core: Core) -> Path:
        return self.path / "cores" / core.name


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "micronet-export"


def find_qemu() -> tuple[str, str]:
    """The qemu-aarch64 binary and its version line; a one-line error naming the package if absent."""
    for name in ("qemu-aarch64", "qemu-aarch64-static"):
        path = shutil.which(name)
        if path:
            proc = subprocess.run([path, "--version"], capture_output=True, text=True)
            return path, (proc.stdout.splitlines() or ["unknown"])[0].strip()
    raise UserError("qemu-aarch64 not found: install Debian's qemu-user (apt-get install qemu-user)")


def environment_key(qemu_version: str) -> str:
    digest = hashlib.sha256()
    for part in (LAYOUT_VERSION, qemu_version, *debian.ARM64_PACKAGES, *RUNTIME_REQUIREMENTS,
                 *(f"{c.name}:{c.midr:x}:{c.features}" for c in CORES.values())):
        digest.update(part.encode() + b"\0")
    for source in sorted(PLUGIN_SOURCES.glob("*.[ch]")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def prepare(progress: bool | None = None) -> Environment:
    """The cached environment, built on first use (a few minutes, ~250 MB)."""
    qemu, qemu_version = find_qemu()
    final = cache_dir() / f"emu-{environment_key(qemu_version)}"
    if (final / "manifest.json").is_file():
        return Environment(final, qemu, qemu_version)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(final.parent)
    line = ProgressLine(sys.stderr.isatty() if progress is None else progress, total=6)
    building = Path(tempfile.mkdtemp(prefix=".emu-building-", dir=final.parent))
    try:
        env = Environment(building, qemu, qemu_version)
        _build(env, building / "work", line)
        shutil.rmtree(building / "work")
        (building / "manifest.json").write_text(json.dumps(
            {"qemu": qemu_version, "arm64_packages": debian.ARM64_PACKAGES,
             "requirements": RUNTIME_REQUIREMENTS, "cores": list(CORES)}, indent=2) + "\n")
        try:
            building.rename(final)
        except OSError:  # another process finished first: keep its folder
            if not (final / "manifest.json").is_file():
                raise
        line.done(f"aarch64 emulation ready in {final}")
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return Environment(final, qemu, qemu_version)


def _remove_stale_builds(parent: Path) -> None:
    import time

    for folder in parent.glob(".emu-building-*"):
        try:
            if time.time() - folder.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def _build(env: Environment, work: Path, line: ProgressLine) -> None:
    line.step("reading Debian's arm64 package lists (private apt configuration)")
    apt = debian.PrivateApt(work / "apt", debian.system_mirrors())
    apt.update()
    line.step("downloading and unpacking an arm64 Python 3.11 (Debian bookworm)")
    debian.unpack(apt.download_closure(debian.ARM64_PACKAGES), env.path / "root")
    line.step(f"installing aarch64 wheels: {' '.join(RUNTIME_REQUIREMENTS)}")
    _install_wheels(env.site)
    line.step("fetching qemu-plugin.h from Debian's qemu source package")
    header = _plugin_header(apt, work / "include")
    line.step("compiling the instruction-counting plugin")
    _compile_plugin(header.parent, env.plugin)
    line.step("writing per-core roots and checking the runtimes import under emulation")
    for core in CORES.values():
        write_core_root(env.path, core)
    _smoke_test(env)


def _install_wheels(site: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location",
           "--target", str(site), *PIP_PLATFORM, *RUNTIME_REQUIREMENTS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [l for l in proc.stderr.splitlines() if l.startswith("ERROR")] or proc.stderr.strip().splitlines() or ["?"]
        raise UserError(f"pip could not fetch the aarch64 wheels: {errors[-1]}")


def _plugin_header(apt: debian.PrivateApt, include: Path) -> Path:
    version = None
    for package in QEMU_PACKAGES:
        version = version or debian.installed_source_version(package)
    # The header of the installed qemu's own source package: plugins are checked against
    # the API version of the qemu that loads them.
    return apt.source_file("qemu", version, debian.PLUGIN_HEADER, include / "qemu-plugin.h")


def _compile_plugin(header_dir: Path, library: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise UserError("gcc not found: the instruction-counting plugin is compiled on first use (apt-get install gcc)")
    library.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-Wall", "-I", str(header_dir), "-I", str(PLUGIN_SOURCES),
                           "-o", str(library), str(PLUGIN_SOURCES / "insn_count.c")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"compiling the qemu plugin failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def write_core_root(env_path: Path, core: Core) -> Path:
    """A -L root for one core: the shared userland through relative symlinks, its own cpuinfo
    (qemu looks a guest path up under -L first, so this one file shadows the host's)."""
    root = env_path / "cores" / core.name
    (root / "proc").mkdir(parents=True, exist_ok=True)
    for entry in sorted((env_path / "root").iterdir()):
        link = root / entry.name
        if not link.exists() and entry.name != "proc":
            link.symlink_to(Path("..") / ".." / "root" / entry.name)
    (root / "proc" / "cpuinfo").write_text(core.cpuinfo(os.cpu_count() or 1))
    return root


def _smoke_test(env: Environment) -> None:
    core = CORES["cortex-a72"]
    code = "import numpy, ai_edge_litert.interpreter, tflite_runtime.interpreter; print(numpy.__version__)"
    proc = subprocess.run(guest_command(env, core, ["-c", code]), capture_output=True, text=True,
                          env=guest_environment(env), timeout=600)
    if proc.returncode != 0:
        raise UserError(f"the emulated Python cannot import the runtimes: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def guest_environment(env: Environment, home: str | Path = "/tmp") -> dict[str, str]:
    """A clean environment: the host's variables (QEMU_*, PYTHON*) stay out, and the two that
    make counts repeat exactly are set (no idle OpenBLAS threads, fixed hash seed)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(env.site),
            "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
            "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def guest_command(env: Environment, core: Core, python_args: list[str], plugin_output: Path | None = None) -> list[str]:
    cmd = [env.qemu, "-L", str(env.core_root(core)), "-cpu", core.name]
    if plugin_output is not None:
        if "," in str(plugin_output):
            raise UserError(f"the plugin output path may not contain a comma: {plugin_output}")
        cmd += ["-plugin", f"{env.plugin},outfile={plugin_output}"]
    return [*cmd, str(env.python), *python_args]

"""Debian packages for the emulation environment, through a private apt configuration.

Two things come from Debian: an arm64 Python 3.11 with its shared libraries (a Raspberry Pi
OS / Debian bookworm userland, unpacked into a private root for ``qemu-aarch64 -L``), and
``qemu-plugin.h``, which Debian's qemu-user does not install (it lives only in the qemu source
package). ``apt-get install python3.11:arm64`` would conflict with the amd64 Python, and
adding an architecture or a deb-src line would change the system's apt configuration; so apt
runs here with its own config, sources list, state and cache under a work folder, pointing at
the same mirrors the system uses (read from /etc/apt/sources.list*), and we only download and
unpack (``dpkg-deb -x``), never install.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from micronet_export.errors import UserError

# The Python of the Pi image's base (bookworm) and libstdc++, which tflite-runtime and LiteRT link.
ARM64_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRRORS = (("http://deb.debian.org/debian", ("bookworm", "bookworm-updates")),
                   ("http://deb.debian.org/debian-security", ("bookworm-security",)))
SYSTEM_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
PLUGIN_HEADER = "include/qemu/qemu-plugin.h"


@dataclass(frozen=True)
class Mirror:
    uri: str
    suites: tuple[str, ...]


def _deb822_entries(text: str) -> list[dict[str, str]]:
    entries = []
    for block in re.split(r"\n\s*\n", text):
        fields = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            entries.append(fields)
    return entries


def system_mirrors(paths=SYSTEM_SOURCES) -> list[Mirror]:
    """The Debian archive mirrors (and suites) the system's apt uses; Debian's defaults if none."""
    mirrors: dict[str, list[str]] = {}
    files = []
    for path in paths:
        files += sorted(path.glob("*.sources")) + sorted(path.glob("*.list")) if path.is_dir() else [path]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            lines = [(e.get("types", ""), e.get("uris", ""), e.get("suites", ""))
                     for e in _deb822_entries(text) if e.get("enabled", "yes").lower() != "no"]
        else:
            lines = []
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3:
                    lines.append((words[0], words[1], words[2]))
        for types, uris, suites in lines:
            if "deb" not in types.split():
                continue
            for uri in uris.split():
                if re.search(r"/debian(-security)?/?$", uri):
                    known = mirrors.setdefault(uri.rstrip("/"), [])
                    known += [s for s in suites.split() if s not in known]
    found = [Mirror(uri, tuple(suites)) for uri, suites in mirrors.items() if suites]
    return found or [Mirror(uri, suites) for uri, suites in DEFAULT_MIRRORS]


class PrivateApt:
    """apt-get with its own configuration, lists and cache under ``workdir`` (arm64 native)."""

    def __init__(self, workdir: Path, mirrors: list[Mirror]) -> None:
        for tool in ("apt-get", "dpkg-deb", "dpkg-query"):
            if shutil.which(tool) is None:
                raise UserError(f"{tool} not found: preparing the aarch64 emulation needs a Debian system (apt, dpkg)")
        self.workdir = workdir
        etc, state, cache = workdir / "etc", workdir / "state", workdir / "cache"
        for d in (etc / "apt.conf.d", etc / "preferences.d", state / "lists" / "partial",
                  cache / "archives" / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        signed = f" signed-by={DEBIAN_KEYRING}" if Path(DEBIAN_KEYRING).is_file() else ""
        sources = [f"{kind} [arch=arm64{signed}] {m.uri} {suite} main"
                   for m in mirrors for suite in m.suites for kind in ("deb", "deb-src")]
        (etc / "sources.list").write_text("\n".join(sources) + "\n")
        self.config = workdir / "apt.conf"
        self.config.write_text("\n".join([
            'APT::Architecture "arm64";', 'APT::Architectures { "arm64"; };',
            f'Dir::Etc "{etc}";', f'Dir::Etc::sourcelist "{etc / "sources.list"}";', 'Dir::Etc::sourceparts "-";',
            f'Dir::State "{state}";', f'Dir::State::status "{state / "status"}";', f'Dir::Cache "{cache}";',
            # apt drops to the _apt user for downloads, which cannot write into our folders.
            f'APT::Sandbox::User "{getpass.getuser()}";',
            'Acquire::Languages "none";', 'Acquire::Retries "3";', ""]))
        self.archives = cache / "archives"

    def run(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.config), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        proc = subprocess.run(["apt-get", "-q", *args], capture_output=True, text=True, env=env, cwd=cwd)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
            raise UserError(f"apt-get {args[0]} (private arm64 configuration) failed: {last}")
        return proc.stdout

    def update(self) -> None:
        self.run("update")

    def download_closure(self, packages: tuple[str, ...]) -> list[Path]:
        """``packages`` and their dependencies (no recommends), as .deb files."""
        self.run("install", "--download-only", "--no-install-recommends", "-y", *packages)
        debs = sorted(self.archives.glob("*.deb"))
        if not debs:
            raise UserError(f"apt-get downloaded no package for {', '.join(packages)}")
        return debs

    def source_file(self, package: str, version: str | None, member: str, dest: Path) -> Path:
        """One file of a source package's upstream tarball (downloaded, never built)."""
        srcdir = self.workdir / "source"
        srcdir.mkdir(exist_ok=True)
        try:
            self.run("source", "--download-only", f"{package}={version}" if version else package, cwd=srcdir)
        except UserError:
            if version is None:
                raise
            self.run("source", "--download-only", package, cwd=srcdir)
        tarballs = sorted(srcdir.glob("*.orig.tar.*"))
        if not tarballs:
            raise UserError(f"the {package} source package has no upstream tarball")
        with tarfile.open(tarballs[0], "r|*") as tar:
            for info in tar:
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(tar.extractfile(info).read())
                    return dest
        raise UserError(f"{member} is not in {tarballs[0].name}")


def unpack(debs: list[Path], root: Path) -> None:
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"dpkg-deb could not unpack {deb.name}: {proc.stderr.strip()}")


def installed_source_version(package: str) -> str | None:
    """The Debian source version of an installed package (e.g. qemu-user → 1:7.2+dfsg-7+deb12u18)."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", package], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None

"""Dockerfiles: pinned, consistent with pyproject.toml, and lint-clean (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.rpi"]


def project_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, sep, version = dep.partition("==")
        assert sep, f"pyproject dependency {dep!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def pip_requirements(path: Path) -> list[str]:
    reqs = []
    for op, rest in instructions(path):
        if op != "RUN":
            continue
        for cmd in re.split(r"&&|;", rest):
            words = cmd.split()
            if len(words) >= 2 and words[0] in ("pip", "pip3") and words[1] == "install":
                skip = False
                for w in words[2:]:
                    if skip:
                        skip = False
                        continue
                    if w in ("--index-url", "--extra-index-url", "-i", "-r", "-c"):
                        skip = True
                    elif not w.startswith("-") and w != ".":
                        reqs.append(w)
    return reqs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_pip_package_is_pinned_like_pyproject(dockerfile):
    pins = project_pins()
    reqs = pip_requirements(dockerfile)
    assert reqs, "no pip install found"
    for req in reqs:
        name, sep, version = req.partition("==")
        assert sep, f"{dockerfile.name}: {req} is not pinned"
        assert name.lower() in pins, f"{dockerfile.name}: {name} is not a pyproject dependency"
        assert pins[name.lower()] == version, f"{dockerfile.name}: {name}=={version}, pyproject says {pins[name.lower()]}"


def test_toolchain_image_installs_every_dependency():
    installed = {r.partition("==")[0].lower() for r in pip_requirements(DOCKERFILES[0])}
    assert installed == set(project_pins())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_lint(dockerfile):
    ins = instructions(dockerfile)
    froms = [rest for op, rest in ins if op == "FROM"]
    assert froms and all(re.search(r":\d+\.\d+\.\d+", f) and "latest" not in f for f in froms), "pin the base image"
    assert any(op in ("ENTRYPOINT", "CMD") for op, _ in ins)
    for op, rest in ins:
        assert op in {"FROM", "ENV", "WORKDIR", "RUN", "COPY", "ENTRYPOINT", "CMD", "ARG", "LABEL", "USER"}, op
        if op == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists" in rest
        if op in ("ENTRYPOINT", "CMD"):
            assert rest.startswith("["), f"{op} should use the exec form"
    for _, rest in ins:
        if _ == "COPY":
            for src in rest.split()[:-1]:
                assert list(ROOT.glob(src)) or src.startswith("--"), f"{dockerfile.name}: COPY {src} matches nothing"


def test_runner_entrypoint_matches_its_cli():
    from micronet_export.profile import runner

    assert "--runtime" in Path(runner.__file__).read_text()
    assert "tflite_runtime" in runner.RUNTIMES


def test_emulated_pi_runs_what_the_pi_image_installs():
    from micronet_export.emulate.environment import RUNTIME_REQUIREMENTS

    assert sorted(pip_requirements(DOCKERFILES[1])) == sorted(RUNTIME_REQUIREMENTS)
    copies = [rest for op, rest in instructions(DOCKERFILES[1]) if op == "COPY"]
    assert any(c.split()[0] == "micronet_export/profile/runner.py" for c in copies)

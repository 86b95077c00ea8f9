"""README's commands are the ones CI runs and the code supports."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_test_command_is_what_ci_runs():
    readme_cmds = [line for b in _bash_blocks((ROOT / "README.md").read_text()) for line in b.splitlines()]
    test_cmd = next(c for c in readme_cmds if c.endswith("-m pytest"))
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert test_cmd in ci_lines


def test_readme_main_job_command():
    readme_cmds = [line for b in _bash_blocks((ROOT / "README.md").read_text()) for line in b.splitlines()]
    assert any(c.endswith("micronet-export --variant m0 --format tflite --int8") and "pip install" in c for c in readme_cmds)

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


def _flag_rows() -> set[tuple[str, str]]:
    """(command, flag) of every row of README's flag table: | `export` | `--variant V` | ..."""
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", (ROOT / "README.md").read_text(), flags=re.M)
    return {(command, flag.split()[0].rstrip("…")) for command, flag in rows}


def _parser_flags() -> set[tuple[str, str]]:
    from micronet_export.cli import SUBCOMMANDS

    flags = set()
    for command, (build_parser, _) in SUBCOMMANDS.items():
        for action in build_parser()._actions:
            if action.dest != "help":
                flags.add((command, action.option_strings[0] if action.option_strings
                           else (action.metavar or action.dest.upper())))
    return flags


def test_readme_flag_table_is_every_flag_of_every_subcommand():
    documented, real = _flag_rows(), _parser_flags()
    assert real - documented == set(), "flags missing from README's table"
    assert documented - real == set(), "README lists flags the CLI does not have"


def test_readme_command_table_lists_every_subcommand():
    from micronet_export.cli import SUBCOMMANDS

    text = (ROOT / "README.md").read_text()
    commands = set(re.findall(r"^\| `micronet-export \[?(\w+)", text, flags=re.M))
    assert commands == set(SUBCOMMANDS)

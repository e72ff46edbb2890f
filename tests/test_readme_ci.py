"""`.ci/run` must run exactly the README's two commands."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_ci_runs_exactly_the_two_readme_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    body = [line for line in ci if line.strip() and not line.startswith("#")
            and line.strip() not in {"set -euo pipefail", 'cd "$(dirname "$0")/.."'}]
    assert body == commands
    assert "torch==2.13.0" in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")

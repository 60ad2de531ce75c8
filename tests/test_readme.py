"""The README's commands and CI stay in step."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    blocks, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            blocks.append(line)
    return blocks


def test_ci_runs_the_readme_test_command():
    readme_lines = _bash_blocks((ROOT / "README.md").read_text())
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines and ci_lines[-1] in readme_lines
    assert "pytest" in ci_lines[-1]


def test_readme_first_command_sets_up_venv_and_runs_harness():
    first = _bash_blocks((ROOT / "README.md").read_text())[0]
    assert first.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert ".venv/bin/harness " in first

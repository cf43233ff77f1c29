"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    blocks, inside, cur = [], False, []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if inside:
                blocks.append("\n".join(cur))
                cur = []
            inside = not inside and line.strip() == "```bash"
            continue
        if inside and not line.startswith("#"):
            cur.append(line)
    return blocks


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [c.strip() for b in _bash_blocks(readme.split("## Two commands", 1)[1]) for c in b.splitlines() if c]
    test_cmd = next(c for c in commands if "pytest" in c)
    assert "rewind demo" in next(c for c in commands if "pytest" not in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, f"CI must run the README's test command verbatim: {test_cmd}"

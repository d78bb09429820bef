"""The README's quick start and CI stay in sync; the package declares its dependencies."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert len(blocks) >= 2, "README quick start needs two commands"
    build_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert "python -m hdlgen build --board ulx3s" in build_cmd
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == test_cmd


def test_dependencies_are_pinned_with_reasons():
    text = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(text)["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    for dep in deps:
        assert re.search(r"[<>]=?", dep) and "<" in dep, f"{dep!r} needs a version range"
        # each dependency line is preceded by a one-line comment giving the reason
        idx = text.index(f'"{dep}"')
        previous = text[:idx].rstrip().splitlines()[-1].strip()
        assert previous.startswith("#"), f"{dep!r} has no reason comment"

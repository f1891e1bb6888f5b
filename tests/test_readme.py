"""Every `mirrorlearn ...` command README.md shows runs as shown (with tiny budgets appended)."""

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# Appended to each command (argparse keeps the last value of an option): the README's own budgets take
# minutes; these check that every shown option parses and the command runs through to its outputs.
TINY = {
    "train": ["--timesteps", "1024", "--seeds", "1", "--eval-episodes", "2", "--quiet"],
    "compare": ["--timesteps", "1024", "--seeds", "1", "--eval-episodes", "2", "--quiet"],
    "check-drift": [],
    "plot-drift": ["--dpi", "40"],
    # 4096 steps: Acrobot's 500-step episodes must end within a run for the curve fitness to score it
    "meta-train": ["--generations", "1", "--population", "2", "--timesteps", "4096", "--eval-episodes", "2",
                   "--eval-every", "0", "--tasks", "1", "--quiet",
                   "--set", "num_envs=4", "num_steps=32", "num_minibatches=2", "update_epochs=1"],
    "distill": ["--budget", "2", "--record-steps", "1024", "--n-samples", "400", "--max-front", "2"],
}


def readme_commands() -> list[str]:
    """The `mirrorlearn ...` commands of README.md: inline code spans and code-block lines (joined over `\\`)."""
    text = README.read_text()
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if block is None:
                block = [] if line.strip() in ("```", "```bash", "```sh") else ["<not shell>"]
            else:
                if block[:1] != ["<not shell>"]:
                    blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line)
    lines = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split("#", 1)[0].strip() for line in joined.splitlines()]
    lines += re.findall(r"`(mirrorlearn [^`]+)`", "\n".join(prose))
    commands = []
    for line in lines:
        found = re.search(r"(?:^|&& |\.venv/bin/)(mirrorlearn (?:[a-z-]+).*)$", line)
        if found:
            commands.append(found.group(1).strip())
    return list(dict.fromkeys(commands))


def test_readme_shows_the_commands_we_run():
    subcommands = {shlex.split(c)[1] for c in readme_commands()}
    assert {"compare", "train", "check-drift", "plot-drift", "meta-train", "distill"} <= subcommands


# Not run: the multi-process examples (tests/test_distributed.py runs two processes) and the list of commands.
@pytest.mark.parametrize("command", [c for c in readme_commands() if "..." not in c and " / " not in c])
def test_readme_command_runs(command, tmp_path, monkeypatch):
    from mirrorlearn.cli import main

    argv = shlex.split(command)[1:]
    if argv[0] not in TINY:
        pytest.fail(f"README shows a command this test does not know: {command!r}; add its tiny budget to TINY")
    monkeypatch.chdir(tmp_path)  # relative --out folders (runs/lpo, pics) land in the test's folder
    extra = TINY[argv[0]] + ([] if argv[0] == "check-drift" else ["--out", str(tmp_path / "out")])
    assert main(argv + extra) == 0, command

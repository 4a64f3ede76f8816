"""Small things users expect (issue 20): shell completion through typer's own mechanism, working
through the fast entry path, and --json on every command that prints data."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer

from conftest import ROOT, run_cli

# Commands that print no data: the daemon and the MCP server (its stdout is the protocol).
NO_DATA = {"serve", "mcp"}


def _commands(group, prefix: str = ""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_that_prints_data_has_json():
    from edgellama.cli import app

    commands = dict(_commands(typer.main.get_command(app)))
    assert {"show", "export", "import", "mcp"} <= set(commands)
    missing = [name for name, command in commands.items()
               if name not in NO_DATA and not any("--json" in p.opts for p in command.params)]
    assert missing == []


@pytest.fixture
def shell(tmp_path):
    """A PATH where ``edgellama`` runs this checkout, and a HOME of its own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "edgellama"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m edgellama "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "SHELL": "/bin/bash"}


def _complete(env: dict, *words: str) -> list[str]:
    script = subprocess.run(["edgellama", "--show-completion", "bash"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _edgellama_completion edgellama" in script.stdout
    line = " ".join(words)
    run = subprocess.run(
        ["bash", "-c", f'eval "$(cat)"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
                       '_edgellama_completion edgellama; printf "%s\\n" "${COMPREPLY[@]}"'],
        input=script.stdout, capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_bash_completion_of_commands_and_options(shell):
    assert _complete(shell, "edgellama", "sh") == ["show"]
    assert {"status", "summarize", "search", "selftest", "serve", "service", "show"} == set(_complete(shell, "edgellama", "s"))
    assert "--mode" in _complete(shell, "edgellama", "search", "--m")
    # status and ask are what the fast path answers: completion goes through it to typer all the same
    assert "--errors" in _complete(shell, "edgellama", "status", "--e")


def test_install_completion_writes_the_users_shell_config(shell):
    done = subprocess.run(["edgellama", "--install-completion", "bash"], capture_output=True, text=True, env=shell,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    home = shell["HOME"]
    script = os.path.join(home, ".bash_completions", "edgellama.sh")
    assert "_edgellama_completion" in open(script).read()
    assert "edgellama.sh" in open(os.path.join(home, ".bashrc")).read()


def test_help_lists_the_completion_options():
    assert "--install-completion" in run_cli("--help").stdout

"""The command line as a user meets it: fast help, one-line errors, exit codes 1 and 2."""

import subprocess
import sys

import pytest

from conftest import ROOT, run_cli

HEAVY = ("torch", "llama_cpp", "sentence_transformers", "transformers", "numpy")


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"], ["index", "--help"], ["config"]])
def test_help_and_config_do_not_import_heavy_libraries(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['edgellama', *{argv!r}]\n"
        "from edgellama import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_every_command_is_documented_in_the_readme():
    from edgellama.cli import app

    readme = (ROOT / "README.md").read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert f"edgellama {name}" in readme, f"README does not show 'edgellama {name}'"


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["search"],
    ["search", "pumps", "--top-k", "0"],
    ["search", "pumps", "--mode", "fuzzy"],
    ["ask", "why", "--max-tokens", "-3"],
])
def test_usage_errors_exit_2(argv):
    result = run_cli(*argv)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv, message", [
    (["search", "pumps"], "run 'edgellama index PATH' first"),
    (["ask", "why?"], "run 'edgellama index PATH' first"),
    (["status"], "run 'edgellama index PATH' first"),
    (["index", "/no/such/folder"], "path not found: /no/such/folder"),
])
def test_runtime_errors_are_one_line_and_exit_1(argv, message):
    result = run_cli(*argv)
    assert result.returncode == 1, result
    assert result.stderr.strip() == f"edgellama: error: {message}" or message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not sqlite at all " * 100)
    result = run_cli("status", "--db", str(bad))
    assert result.returncode == 1
    assert "is not a database" in result.stderr and result.stderr.count("\n") == 1


def test_a_missing_model_file(tmp_path):
    result = run_cli("ask", "why?", "--model", str(tmp_path / "missing.gguf"), "--db", str(tmp_path / "x.db"))
    assert result.returncode == 1
    # no index yet: the store error comes first, still one line
    assert result.stderr.count("\n") == 1

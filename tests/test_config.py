from pathlib import Path

import pytest

from edgellama.config import resolve_settings
from edgellama.errors import ConfigError

from conftest import run_cli


def test_defaults_file_env_flags_in_that_order(tmp_path):
    cfg = tmp_path / "config" / "edgellama" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('top_k = 7\ncontext_tokens = 800\nmax_tokens = 20\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "EDGELLAMA_CONTEXT_TOKENS": "600", "EDGELLAMA_MAX_TOKENS": "30"}
    s = resolve_settings(env=env, flags={"max_tokens": 40, "top_k": None})
    assert (s.top_k, s.context_tokens, s.max_tokens, s.n_ctx) == (7, 600, 40, 4096)
    assert s.origins["top_k"] == f"file {cfg}"
    assert s.origins["context_tokens"] == "env EDGELLAMA_CONTEXT_TOKENS"
    assert s.origins["max_tokens"] == "flag"
    assert s.origins["n_ctx"] == "default"
    assert s.db == tmp_path / "data" / "edgellama" / "edgellama.db"
    assert s.models_dir == tmp_path / "data" / "edgellama" / "models"


@pytest.mark.parametrize("env, message", [
    ({"EDGELLAMA_TOP_K": "many"}, "expected int"),
    ({"EDGELLAMA_TOP_K": "0"}, "must be positive"),
    ({"EDGELLAMA_PROMPT_STYLE": "poem"}, "expected one of"),
    ({"EDGELLAMA_REQUANTIZE": "perhaps"}, "expected bool"),
    ({"EDGELLAMA_CHUNK_OVERLAP": "500"}, "smaller than chunk_tokens"),
])
def test_bad_values_are_config_errors(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings(env={"XDG_CONFIG_HOME": str(tmp_path), **env})


def test_unknown_key_in_file_is_reported(tmp_path):
    cfg = tmp_path / "edgellama" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("topk = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_settings(env={"XDG_CONFIG_HOME": str(tmp_path)})


def test_config_command_shows_origins(tmp_path):
    result = run_cli("config", env={"EDGELLAMA_TOP_K": "9"})
    assert result.returncode == 0, result.stderr
    lines = {line.split("=")[0].strip(): line.split("=", 1)[1].strip() for line in result.stdout.splitlines()
             if not line.startswith("#")}
    assert lines["top_k"] == "9    # env EDGELLAMA_TOP_K"
    assert lines["n_ctx"] == "4096    # default"


def test_folders_from_file_and_environment(tmp_path):
    cfg = tmp_path / "edgellama" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('folders = ["/srv/docs", "~/notes"]\n')
    settings = resolve_settings(env={"XDG_CONFIG_HOME": str(tmp_path), "HOME": "/home/u"})
    assert settings.folders == (Path("/srv/docs"), Path("~/notes").expanduser())
    settings = resolve_settings(env={"XDG_CONFIG_HOME": str(tmp_path), "EDGELLAMA_FOLDERS": "/a:/b"})
    assert settings.folders == (Path("/a"), Path("/b"))
    assert settings.origins["folders"] == "env EDGELLAMA_FOLDERS"


def test_socket_lives_in_the_runtime_dir(tmp_path):
    settings = resolve_settings(env={"XDG_CONFIG_HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/run/user/7"})
    assert settings.socket == Path("/run/user/7/edgellama/edgellama.sock")
    with pytest.raises(ConfigError, match="too long"):
        resolve_settings(env={"XDG_CONFIG_HOME": str(tmp_path), "EDGELLAMA_SOCKET": "/x" * 60})


def test_broken_config_file_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "config" / "edgellama" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("top_k = = 3\n")
    result = run_cli("config")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("edgellama: error: cannot read config file")
    assert "Traceback" not in result.stderr

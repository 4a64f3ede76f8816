"""Settings, resolved once: defaults < TOML file < ``EDGELLAMA_*`` environment < command-line flags.

Owns where every setting comes from; it never opens the database or loads a model.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import ConfigError

__all__ = ["Settings", "resolve_settings", "config_file_path", "data_dir", "runtime_dir", "parse_loopback",
           "physical_cores", "SETTING_HELP", "SearchMode", "SEARCH_MODES", "METHODS", "DEFAULT_METHOD",
           "LengthPlan", "LENGTHS", "one_of"]

PROMPT_STYLES = ("completion", "chat")
EMBED_PRECISIONS = ("auto", "float32", "bfloat16")
EMBED_BACKENDS = ("auto", "llama", "torch")
SOCKET_ACCESS = ("auto", "user", "group")

# The allowed values of requests (CLI flags and the daemon's API), defined here once.
SearchMode = Literal["hybrid", "bm25", "dense"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "bm25", "dense")
METHODS = ("extract", "model")  # how a summary is made
# Measured on tests/longdoc.py (bench/summarize.py): extract keeps as many key facts as the 135M
# model in a thousandth of the time, so it is the default; the model method is there for bigger models.
DEFAULT_METHOD = "extract"


@dataclass(frozen=True)
class LengthPlan:
    """What a summary length means."""

    overview_points: int  # points in a document (or folder, or topic) overview
    section_points: int  # points shown per section (0: sections are not shown)
    overview_tokens: int  # the model's budget for the overview


LENGTHS: dict[str, LengthPlan] = {
    "short": LengthPlan(3, 0, 80),
    "medium": LengthPlan(5, 2, 140),
    "long": LengthPlan(8, 4, 220),
}


def one_of(values) -> str:
    """``a, b or c``: the allowed values as an error message names them."""
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def physical_cores() -> int:
    """Physical cores (not hyper-threads): llama.cpp runs slower with one thread per sibling."""
    try:
        pairs = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                phys = value.strip()
            elif key == "core id":
                core = value.strip()
            elif not key and core is not None:
                pairs.add((phys, core))
                phys = core = None
        if core is not None:
            pairs.add((phys, core))
        if pairs:
            return min(len(pairs), os.cpu_count() or len(pairs))
    except OSError:
        pass
    return os.cpu_count() or 1


def parse_loopback(value: str, origin: str = "setting") -> tuple[str, int]:
    """``host:port`` of the optional TCP listener; anything but a loopback address is refused."""
    import ipaddress

    host, _, port = value.strip().rpartition(":")
    host = host.strip("[]")
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise ConfigError(f"tcp_listen from {origin}: {host} is not a loopback address; "
                              "the daemon only listens on 127.0.0.1 or ::1")
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(port)
    except ValueError:
        raise ConfigError(f"tcp_listen from {origin}: expected host:port such as 127.0.0.1:8088, got {value!r}") from None
    return host, number


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgellama"


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the daemon's socket lives: ``$XDG_RUNTIME_DIR/edgellama`` (``/run/edgellama`` under
    the system unit), else the data dir."""
    env = os.environ if env is None else env
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "edgellama"
    return data_dir(env)


def _socket_access(socket: Path, env: Mapping[str, str]) -> str:
    """``auto``: share the socket with the daemon's group only under XDG_RUNTIME_DIR, which a login
    session keeps private (/run/user/UID, 0700) and the system unit sets to /run (its 0750 folder
    belongs to edgellama-clients). Anywhere else (the data folder, say, 0755 with a shared primary
    group such as ``users``) a personal daemon admits its own user only."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.abspath(socket).startswith(os.path.abspath(runtime).rstrip(os.sep) + os.sep):
        return "group"
    return "user"


def config_file_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("EDGELLAMA_CONFIG"):
        return Path(env["EDGELLAMA_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgellama" / "config.toml"


@dataclass(frozen=True)
class Settings:
    """The effective settings; ``origins`` says where each value came from."""

    db: Path
    model: Path | None  # None: the bundled SmolLM2, requantized to Q4_0 on first use
    embed_model: Path | None  # None: the bundled all-MiniLM-L6-v2
    embed_precision: str
    embed_backend: str
    threads: int
    n_ctx: int
    top_k: int
    context_tokens: int
    max_tokens: int
    chunk_tokens: int
    chunk_overlap: int
    max_file_mb: float
    min_relevance: float
    prompt_style: str
    requantize: bool
    folders: tuple[Path, ...]
    socket: Path
    socket_access: str  # "user" or "group" once resolved ("auto" is decided here)
    max_connections: int
    request_seconds: float
    max_queue: int
    settle_seconds: float
    reconcile_seconds: float
    tcp_listen: str
    token_file: Path | None
    summarize_background: bool
    max_extract_seconds: float
    n_batch: int
    embed_batch_size: int
    evidence_sentences: int
    evidence_chunks: int
    data_dir: Path
    config_file: Path
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def ask_options(self) -> dict[str, Any]:
        """The keyword arguments of ``answer.ask`` these settings decide: one mapping for every caller."""
        return {"top_k": self.top_k, "context_tokens": self.context_tokens, "max_tokens": self.max_tokens,
                "min_relevance": self.min_relevance, "style": self.prompt_style,
                "evidence_sentences": self.evidence_sentences, "evidence_chunks": self.evidence_chunks}

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("origins",)}


# name -> (type, help). Defaults live in _defaults() because some depend on the environment.
SETTING_HELP: dict[str, tuple[type, str]] = {
    "db": (Path, "SQLite database file"),
    "model": (Path, "GGUF model file (empty: the bundled SmolLM2, requantized to Q4_0)"),
    "embed_model": (Path, "sentence-transformers model folder (empty: bundled all-MiniLM-L6-v2)"),
    "embed_precision": (str, "auto (bfloat16 where the CPU has it natively, else float32), float32 or bfloat16"),
    "embed_backend": (str, "auto (llama.cpp in process for questions and small updates, torch in a worker process for bulk "
                           "indexing), llama (llama.cpp only: no torch at all) or torch (sentence-transformers in process)"),
    "threads": (int, "CPU threads for generation and embedding (default: physical cores, capped by the cgroup CPU quota)"),
    "n_ctx": (int, "model context window in tokens (a default is lowered when free memory cannot hold it)"),
    "top_k": (int, "chunks retrieved per question"),
    "context_tokens": (int, "token budget for retrieved text in the prompt"),
    "max_tokens": (int, "cap on answer length in tokens"),
    "chunk_tokens": (int, "target chunk size in embedder tokens"),
    "chunk_overlap": (int, "tokens of overlap between neighbouring chunks"),
    "max_file_mb": (float, "files larger than this are skipped"),
    "min_relevance": (float, "below this relevance (best evidence sentence's cosine + 0.3 x word overlap, moved by 0.5 x "
                             "(the IDF-weighted share of the question's words found in the evidence - 0.46)), ask says "
                             "the documents do not say (also below it + 0.35 when a question asking for a quantity finds "
                             "no number near the best passage); topic summaries keep sentences scoring this much"),
    "prompt_style": (str, "completion (one-shot Context/Question/Answer) or chat (the GGUF chat template)"),
    "requantize": (bool, "requantize the bundled model to Q4_0 on first use"),
    "folders": (list, "folders the daemon watches and keeps indexed (env: separated by ':')"),
    "socket": (Path, "the daemon's UNIX socket"),
    "socket_access": (str, "who may use the socket besides root: user (the daemon's own user; socket 0600), "
                           "group (also its primary group, as the system unit's edgellama-clients; 0660) or "
                           "auto (group when the socket is under XDG_RUNTIME_DIR, else user)"),
    "max_connections": (int, "open connections the daemon keeps; past it the longest-idle one is closed"),
    "request_seconds": (float, "time one request (an answer, a summary) may run before it is stopped with 504"),
    "max_queue": (int, "requests waiting for the model beyond the one running; more get 503"),
    "settle_seconds": (float, "quiet time after a file event before the daemon indexes the file"),
    "reconcile_seconds": (float, "interval of the daemon's full rescan that repairs missed events"),
    "tcp_listen": (str, "optional loopback TCP listener, host:port (empty: none); needs token_file"),
    "token_file": (Path, "file holding the bearer token the TCP listener requires (mode 0600)"),
    "summarize_background": (bool, "the daemon builds model summaries of indexed documents in the background, "
                                   "pausing while a query runs (off by default: small boxes)"),
    "max_extract_seconds": (float, "time one file may take to be read and chunked; slower files are skipped"),
    "n_batch": (int, "tokens llama.cpp evaluates per step of prompt eval (at most n_ctx)"),
    "embed_batch_size": (int, "texts per forward pass of the embedder (each of its threads runs its own)"),
    "evidence_sentences": (int, "completion style: the best sentences shown to the model (chosen by "
                                "python -m bench context_budget, bench/RESULTS.md)"),
    "evidence_chunks": (int, "completion style: the top chunks those sentences are picked from"),
}


def _defaults(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "db": data_dir(env) / "edgellama.db",
        "model": None,
        "embed_model": None,
        "embed_precision": "auto",
        "embed_backend": "auto",
        "threads": physical_cores(),
        "n_ctx": 4096,
        "top_k": 5,
        "context_tokens": 1000,
        "max_tokens": 48,
        "chunk_tokens": 200,
        "chunk_overlap": 30,
        "max_file_mb": 50.0,
        "min_relevance": 0.55,
        "prompt_style": "completion",
        "requantize": True,
        "folders": (),
        "socket": runtime_dir(env) / "edgellama.sock",
        "socket_access": "auto",
        "max_connections": 256,
        "request_seconds": 600.0,
        "max_queue": 4,
        "settle_seconds": 1.0,
        "reconcile_seconds": 300.0,
        "tcp_listen": "",
        "token_file": None,
        "summarize_background": False,
        "max_extract_seconds": 60.0,
        "n_batch": 512,
        "embed_batch_size": 16,
        "evidence_sentences": 4,
        "evidence_chunks": 3,
    }


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = SETTING_HELP[key][0]
    try:
        if kind is Path:
            if value is None or value == "":
                return None
            return Path(str(value)).expanduser()
        if kind is list:
            items = value.split(os.pathsep) if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError(value)
            return tuple(Path(str(item)).expanduser() for item in items if str(item).strip())
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            number = int(str(value).strip())
        elif kind is float:
            number = float(str(value).strip())
        else:
            number = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key!r} from {origin}: expected {kind.__name__}, got {value!r}") from None
    if key == "tcp_listen" and number:
        parse_loopback(number, origin)
    for name, choices in (("prompt_style", PROMPT_STYLES), ("embed_precision", EMBED_PRECISIONS),
                          ("embed_backend", EMBED_BACKENDS), ("socket_access", SOCKET_ACCESS)):
        if key == name and number not in choices:
            raise ConfigError(f"setting {name!r} from {origin}: expected one of {', '.join(choices)}")
    if kind in (int, float) and key not in ("min_relevance", "chunk_overlap", "max_queue") and number <= 0:
        raise ConfigError(f"setting {key!r} from {origin}: must be positive, got {value!r}")
    if key in ("chunk_overlap", "max_queue") and number < 0:
        raise ConfigError(f"setting {key!r} from {origin}: must not be negative")
    return number


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    unknown = sorted(set(data) - set(SETTING_HELP))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


def resolve_settings(
    *, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Merge defaults, the config file, the environment and flags (None flags are ignored)."""
    env = os.environ if env is None else env
    values = _defaults(env)
    origins = {key: "default" for key in values}
    cfg_path = config_file_path(env)
    for key, raw in _read_file(cfg_path).items():
        values[key] = _coerce(key, raw, f"file {cfg_path}")
        origins[key] = f"file {cfg_path}"
    for key in SETTING_HELP:
        name = f"EDGELLAMA_{key.upper()}"
        if name in env:
            values[key] = _coerce(key, env[name], f"env {name}")
            origins[key] = f"env {name}"
    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        if key not in SETTING_HELP:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, raw, "flag")
        origins[key] = "flag"
    for key, fallback in (("db", data_dir(env) / "edgellama.db"), ("socket", runtime_dir(env) / "edgellama.sock")):
        if values[key] is None:
            values[key] = fallback
    if values["tcp_listen"] and values["token_file"] is None:
        raise ConfigError("tcp_listen needs token_file: the TCP listener only serves requests with the bearer token")
    if values["socket_access"] == "auto":
        values["socket_access"] = _socket_access(values["socket"], env)
    if len(os.fsencode(values["socket"])) > 107:
        raise ConfigError(f"socket path is too long for a UNIX socket (107 bytes at most): {values['socket']}")
    if values["chunk_overlap"] >= values["chunk_tokens"]:
        raise ConfigError("chunk_overlap must be smaller than chunk_tokens")
    return Settings(**values, data_dir=data_dir(env), config_file=cfg_path, origins=origins)

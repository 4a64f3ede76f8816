"""``edgellama selftest``: the real index, search, ask (and summarize, when installed) on a small
temporary folder, with ``airgap=True`` under an audit hook that records, and blocks, every network
connection and name lookup. Owns the steps and the hook; never prints: it returns a report.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .config import Settings, resolve_settings

__all__ = ["StepResult", "SelftestReport", "STEPS", "run_selftest", "NetworkAudit"]

# Audit events that mean "talk to another machine" (or find one). A UNIX socket is local.
LOOKUP_EVENTS = ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                 "socket.gethostbyaddr", "socket.getnameinfo")
SEND_EVENTS = ("socket.connect", "socket.sendto", "socket.sendmsg")
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

FACT_FILE = "battery.md"
FACT_TEXT = """# Battery bank

The battery bank of the test station stores 210 kWh of energy.
It is charged by the solar panels on the roof and by the wind turbine.

## Checks

The battery room is inspected every Monday. The inspector writes the cell voltages in the log.
"""
OTHER_FILES = {
    "radio.txt": "Radio schedule\n\nThe radio check with the base is at 08:00 and at 20:00 every day.\n",
    "water.html": "<html><head><title>Water</title></head><body><h1>Water</h1>"
                  "<p>The water tank holds 900 litres and is refilled from the well.</p></body></html>\n",
}
QUESTION = "How much energy does the battery bank store?"


class NetworkAudit:
    """An audit hook (it cannot be removed, so it is installed once per process) that, while
    active, records every connection to a non-UNIX address and every name lookup, and makes them
    fail with ENETUNREACH so nothing leaves the machine even if something tries."""

    _installed: "NetworkAudit | None" = None

    def __init__(self) -> None:
        self.active = False
        self.attempts: list[str] = []

    @classmethod
    def install(cls) -> "NetworkAudit":
        if cls._installed is None:
            cls._installed = cls()
            sys.addaudithook(cls._installed._hook)
        return cls._installed

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event in SEND_EVENTS:
            sock, address = args[0], args[-1]
            if getattr(sock, "family", None) == socket.AF_UNIX:
                return
            attempt = f"{event} {address!r}"
        elif event in LOOKUP_EVENTS:
            attempt = f"{event} {args[0]!r}"
        else:
            return
        self.attempts.append(attempt)
        raise OSError(errno.ENETUNREACH, f"blocked by edgellama selftest --airgap: {attempt}")


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class SelftestReport:
    airgap: bool
    steps: tuple[StepResult, ...]
    network_attempts: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.network_attempts


@dataclass
class Context:
    """What the steps share: the settings, the temporary folder and database, loaded models."""

    settings: Settings
    folder: Path
    airgap: bool
    embedder: object = None
    store: object = None
    answer: dict = field(default_factory=dict)

    @functools.cached_property
    def models(self):
        """The models, loaded with one resource plan (resources.Models)."""
        from .resources import Models

        return Models(self.settings)

    def generator(self):
        return self.models.generator()


class StepFailed(Exception):
    pass


def _write_folder(ctx: Context) -> str:
    (ctx.folder / FACT_FILE).write_text(FACT_TEXT)
    for name, text in OTHER_FILES.items():
        (ctx.folder / name).write_text(text)
    return f"{1 + len(OTHER_FILES)} files in {ctx.folder}"


def _index(ctx: Context) -> str:
    from .indexer import IndexOptions, index_paths

    ctx.embedder = ctx.models.embedder()
    ctx.store = ctx.models.open_store(create=True)
    stats = index_paths(store=ctx.store, embedder=ctx.embedder, paths=[ctx.folder],
                        **IndexOptions.from_settings(ctx.settings).kwargs())
    if stats.added != 1 + len(OTHER_FILES) or stats.skipped:
        raise StepFailed(f"expected {1 + len(OTHER_FILES)} files indexed, got {stats.added} ({stats.skipped})")
    return f"{stats.added} files, {stats.chunks_written} chunks embedded by {ctx.embedder.name}"


def _search(ctx: Context) -> str:
    from .retrieve import search

    found = search(store=ctx.store, embedder=ctx.embedder, query="battery bank energy", k=3)
    if not found or not found[0].chunk.path.endswith(FACT_FILE):
        raise StepFailed(f"the battery note is not the best match: {[r.chunk.path for r in found]}")
    return f"best match {FACT_FILE}:{found[0].chunk.line_start}-{found[0].chunk.line_end}"


def _ask(ctx: Context) -> str:
    from .answer import answer_to_dict, ask

    answer = answer_to_dict(ask(question=QUESTION, store=ctx.store, embedder=ctx.embedder, generator=ctx.generator,
                                **ctx.settings.ask_options))
    ctx.answer = answer
    cited = [src["path"] for src in answer["sources"]]
    if answer["kind"] == "abstain" or not any(p.endswith(FACT_FILE) for p in cited):
        raise StepFailed(f"no answer citing {FACT_FILE}: {answer['kind']} {answer['answer']!r} {cited}")
    return f"{answer['kind']}: {answer['answer']!r}, cites {FACT_FILE}"


def _summarize(ctx: Context) -> str:
    from . import summarize  # present when the summaries feature is installed (see STEPS)

    summary = summarize.final_summary(summarize.summarize_document(store=ctx.store, path=str(ctx.folder / FACT_FILE)))
    points = getattr(summary, "points", None) or getattr(summary, "overview", None) or ()
    if not points:
        raise StepFailed("empty summary")
    return f"{len(points)} points"


def _offline_switches(ctx: Context) -> str:
    """The Hugging Face libraries must have been told to stay offline, before they were imported."""
    problems = [f"{k}={os.environ.get(k)!r}" for k in OFFLINE_SWITCHES if os.environ.get(k) != "1"]
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and not getattr(hub, "HF_HUB_OFFLINE", False):
        problems.append("huggingface_hub was imported before HF_HUB_OFFLINE was set")
    hub_utils = sys.modules.get("transformers.utils.hub")
    if hub_utils is not None and hasattr(hub_utils, "is_offline_mode") and not hub_utils.is_offline_mode():
        problems.append("transformers is not in offline mode")
    if problems:
        raise StepFailed(", ".join(problems))
    return ", ".join(f"{k}=1" for k in OFFLINE_SWITCHES)


def _has_summarize() -> bool:
    return importlib.util.find_spec(f"{__package__}.summarize") is not None


# (name, function, when it applies). A test may append a step: the report covers it like any other.
STEPS: list[tuple[str, Callable[[Context], str], Callable[[Context], bool]]] = [
    ("write a small folder", _write_folder, lambda ctx: True),
    ("index", _index, lambda ctx: True),
    ("search", _search, lambda ctx: True),
    ("ask", _ask, lambda ctx: True),
    ("summarize", _summarize, lambda ctx: _has_summarize()),
    ("offline switches", _offline_switches, lambda ctx: ctx.airgap),
]


def run_selftest(*, airgap: bool, settings: Settings | None = None,
                 on_step: Callable[[StepResult], None] | None = None) -> SelftestReport:
    """Run every step in a temporary folder with a temporary database (the user's index is not
    touched; the model cache in the data dir is used). A failed step fails the steps after it.
    The offline switches are not set here: the check is that the product itself set them."""
    base = settings or resolve_settings()
    audit = NetworkAudit.install() if airgap else None
    results: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="edgellama-selftest-") as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        ctx = Context(settings=replace(base, db=Path(tmp) / "selftest.db"), folder=folder, airgap=airgap)
        if audit is not None:
            audit.attempts.clear()
            audit.active = True
        try:
            failed = None
            for name, step, applies in STEPS:
                if not applies(ctx):
                    continue
                started = time.perf_counter()
                if failed is not None:
                    result = StepResult(name, False, f"not run: {failed} failed", 0.0)
                else:
                    try:
                        result = StepResult(name, True, step(ctx), time.perf_counter() - started)
                    except Exception as err:  # a step's failure is a result, never a traceback
                        detail = str(err) if isinstance(err, StepFailed) else f"{type(err).__name__}: {err}"
                        result = StepResult(name, False, detail, time.perf_counter() - started)
                        failed = name
                results.append(result)
                if on_step:
                    on_step(result)
        finally:
            if audit is not None:
                audit.active = False
            if ctx.store is not None:
                ctx.store.close()
    attempts = tuple(audit.attempts) if audit is not None else ()
    return SelftestReport(airgap=airgap, steps=tuple(results), network_attempts=attempts)

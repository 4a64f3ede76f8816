"""``edgellama mcp``: a Model Context Protocol server over stdio, built on the official ``mcp`` SDK
(``MCPServer``: the SDK owns the protocol, schemas and transport), with the tools search, ask, show,
summarize and status.

Each call goes to the running daemon when one serves this database (then this process never imports
torch or llama.cpp), else to the library in-process, models loaded once on first need. Errors reach
the client as MCP tool errors carrying the one-line message. stdout belongs to the protocol: nothing
here prints.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Literal
from urllib.parse import urlencode

from .config import Settings
from .errors import EdgeLlamaError

__all__ = ["build_server", "run_stdio", "DaemonTools", "LocalTools"]

SNIPPET_CHARS = 400

INSTRUCTIONS = (
    "EdgeLlama searches and answers from the user's own indexed documents, offline. Every passage and "
    "answer cites file and lines (and page for a PDF); call show with such a citation "
    "(e.g. 'docs/power.md:15-25' or 'manual.pdf:page 3') to read the exact lines."
)


def _passage(r: dict) -> dict:
    from .render import cite

    snippet = " ".join(r["text"].split())
    return {"file": r["path"], "lines": cite(r["line_start"], r["line_end"], None), "line_start": r["line_start"],
            "line_end": r["line_end"], "page": r["page"], "heading": r["heading"],
            "citation": cite(r["line_start"], r["line_end"], r["page"], path=r["path"]),  # what show takes
            "score": round(r["score"], 4),
            "snippet": snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else "")}


class DaemonTools:
    """The tools answered by the running daemon over its socket (standard library client only)."""

    backend = "daemon"
    models_loaded = False

    def __init__(self, client, settings: Settings):
        self.client, self.settings = client, settings

    def search(self, *, query: str, k: int, mode: str) -> list[dict]:
        return self.client.request("POST", "/search", {"query": query, "k": k, "mode": mode})["results"]

    def ask(self, *, question: str) -> dict:
        s = self.settings
        return self.client.request("POST", "/ask", {"question": question, "top_k": s.top_k, "max_tokens": s.max_tokens,
                                                    "context_tokens": s.context_tokens})

    def show(self, *, path: str, context: int) -> dict:
        return self.client.request("GET", "/show?" + urlencode({"path": path, "context": context}))

    def summarize(self, *, body: dict) -> dict:
        return self.client.request("POST", "/summarize", body)

    def status(self) -> dict:
        return self.client.request("GET", "/status")


class LocalTools:
    """The tools run in this process on the library; the models load on first need, once, and one
    call at a time uses them (the SDK runs each tool call in a worker thread)."""

    backend = "in-process"

    def __init__(self, settings: Settings):
        from .resources import Models

        self.settings = settings
        self._models = Models(settings)
        self._lock = threading.Lock()
        self._embedder = None
        self._generator = None

    @property
    def models_loaded(self) -> bool:
        return self._embedder is not None or self._generator is not None

    def _store(self):
        return self._models.open_store()

    def _embed(self):
        if self._embedder is None:
            self._embedder = self._models.embedder()
        return self._embedder

    def _generate(self):
        if self._generator is None:
            self._generator = self._models.generator()
        return self._generator

    def search(self, *, query: str, k: int, mode: str) -> list[dict]:
        from .retrieve import scored_chunk_to_dict, search

        with self._lock, self._store() as store:
            return [scored_chunk_to_dict(r) for r in search(store=store, embedder=self._embed(), query=query, k=k,
                                                             mode=mode)]

    def ask(self, *, question: str) -> dict:
        from .answer import answer_to_dict, ask

        with self._lock, self._store() as store:
            return answer_to_dict(ask(question=question, store=store, embedder=self._embed(), generator=self._generate,
                                      **self.settings.ask_options))

    def show(self, *, path: str, context: int) -> dict:
        from .show import excerpt_to_dict, show_citation

        with self._store() as store:
            return excerpt_to_dict(show_citation(store=store, cited=path, context=context))

    def summarize(self, *, body: dict) -> dict:
        from .summarize import final_summary, summarize_target, summary_to_dict

        with self._lock, self._store() as store:
            return summary_to_dict(final_summary(summarize_target(
                store=store, method=body["method"], length=body["length"], generator=self._generate,
                path=body.get("path"), topic=body.get("topic"), load_embedder=self._embed,
                min_relevance=self.settings.min_relevance)))

    def status(self) -> dict:
        from .status import status_report

        with self._store() as store:
            return status_report(settings=self.settings, store=store)


def _tools_for(settings: Settings, local: LocalTools):
    """The daemon when one is ready and serves our database; else (none, or one still loading) the
    in-process tools. Asked on every call: a daemon started or stopped meanwhile is followed."""
    from .client import find_daemon

    client = find_daemon(settings, ready=True, wait=False)
    return DaemonTools(client, settings) if client is not None else local


def build_server(settings: Settings, *, tools=None):
    """The MCP server with EdgeLlama's five tools. ``tools``: a fixed backend (tests); default: the
    daemon when it serves our database, else in-process."""
    from mcp.server import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from . import __version__
    from .show import cited_path, resolve_path

    local = LocalTools(settings)
    server = MCPServer("edgellama", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")

    def backend():
        return tools if tools is not None else _tools_for(settings, local)

    def run(call):
        try:
            return call(backend())
        except EdgeLlamaError as err:
            raise ToolError(str(err)) from None

    @server.tool()
    def search(query: str, k: int = 5, mode: Literal["hybrid", "bm25", "dense"] = "hybrid") -> dict[str, Any]:
        """Find the passages of the indexed documents that best match QUERY (hybrid BM25 + embeddings).
        Each passage has its file, lines (and page), heading, a snippet and a citation for show."""
        if not query.strip():
            raise ToolError("query must not be empty")
        if not 1 <= k <= 100:
            raise ToolError("k must be between 1 and 100")
        results = run(lambda t: t.search(query=query, k=k, mode=mode))
        return {"passages": [_passage(r) for r in results]}

    @server.tool()
    def ask(question: str) -> dict[str, Any]:
        """Answer QUESTION from the indexed documents with a small local model. kind is 'answer' (verified
        against a passage), 'quote' (the closest passage, no supported answer) or 'abstain' (the documents
        do not say); sources cite file and lines."""
        if not question.strip():
            raise ToolError("question must not be empty")
        return run(lambda t: t.ask(question=question))

    @server.tool()
    def show(path: str, context: int = 0) -> dict[str, Any]:
        """The lines a citation names, as indexed: 'docs/power.md:15-25', 'docs/power.md:15',
        'manual.pdf:page 3' or 'manual.pdf:page 3:4-9'; a bare path gives the whole document. context adds
        lines before and after. Relative paths are taken from the directory the server was started in."""
        try:
            cited = cited_path(path)
        except EdgeLlamaError as err:
            raise ToolError(str(err)) from None
        return run(lambda t: t.show(path=cited, context=context))

    @server.tool()
    def summarize(path: str | None = None, topic: str | None = None,
                  length: Literal["short", "medium", "long"] = "short") -> dict[str, Any]:
        """A cited summary of an indexed document or folder (path), or of what the documents say about a
        topic. Give exactly one of path and topic. Every point cites file and lines."""
        if (path is None) == (topic is None):
            raise ToolError("give exactly one of path and topic")
        body: dict[str, Any] = {"length": length, "method": "extract"}
        if path is not None:
            body["path"] = resolve_path(path)
        else:
            body["topic"] = topic
        return run(lambda t: t.summarize(body=body))

    @server.tool()
    def status() -> dict[str, Any]:
        """The index (documents, chunks, skipped files with reasons), the models, the daemon if one runs,
        and which backend this MCP server used: the daemon or in-process."""

        def call(t):
            report = t.status()
            report["mcp"] = {"backend": t.backend, "models_loaded_here": t.models_loaded,
                             "heavy_modules": sorted(m for m in ("torch", "llama_cpp", "sentence_transformers")
                                                     if m in sys.modules)}
            return report

        return run(call)

    return server


def run_stdio(settings: Settings) -> int:
    """Serve MCP on stdin/stdout until the client closes them."""
    build_server(settings).run("stdio")
    return 0

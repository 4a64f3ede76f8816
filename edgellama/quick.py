"""The fast path of the everyday client commands: ``edgellama status`` and ``edgellama ask
QUESTION`` (plain, or with --json / --errors) answered by a running daemon, with the standard
library only. typer builds a pydantic adapter for every parameter: importing and running it costs
more than all the rest of a status call (bench/client_start.py). Anything this path does not fully
understand, or no ready daemon serving our database, goes to the typer CLI (cli.py) unchanged.

It also holds the text both paths print for a status report and an answer, so they cannot drift.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

__all__ = ["main", "run_fast", "status_lines", "resource_lines", "answer_tail", "show_path", "source_lines"]


def show_path(path: str) -> str:
    try:
        return os.path.relpath(path) if Path(path).is_relative_to(Path.cwd()) else path
    except ValueError:
        return path


def source_lines(s: dict) -> str:
    lines = f"{s['line_start']}" if s["line_start"] == s["line_end"] else f"{s['line_start']}-{s['line_end']}"
    return lines + (f" (page {s['page']})" if s["page"] else "")


def status_lines(report: dict, *, errors: bool) -> list[str]:
    """``edgellama status`` as text."""
    skipped = report["skipped_files"]
    out = [
        f"database     {report['db']} ({report['db_bytes'] / 1e6:.1f} MB, schema {report['schema_version']})",
        f"documents    {report['documents']} indexed, {report['skipped']} skipped",
        f"chunks       {report['chunks']} ({report['embeddings']} embeddings)",
        f"model        {report['model']}",
        f"embedder     {report['embed_model']}",
    ]
    daemon = report.get("daemon")
    if daemon:
        watcher = daemon["watcher"] or {}
        out.append(f"daemon       pid {daemon['pid']} on {daemon['socket']}, "
                   f"{'ready' if daemon['ready'] else daemon['stage']}, up {daemon['uptime_seconds']:.0f} s, "
                   f"queue {daemon['queue']['active']}/{daemon['queue']['max_queue'] + 1}")
        if watcher:
            out.append(f"watching     {', '.join(watcher['folders']) or '(no folders)'}: {watcher['pending']} pending, "
                       f"{'indexing' if watcher['indexing'] else 'idle'}, {watcher['runs']} runs")
            out += [f"  error: {message}" for message in watcher["errors"]]
    else:
        out.append("daemon       not running")
    out += resource_lines(report.get("resources"))
    shown = skipped if errors else skipped[:5]
    out += [f"  skipped {show_path(item['path'])}: {item['reason']}" for item in shown]
    if len(skipped) > len(shown):
        out.append(f"  … {len(skipped) - len(shown)} more: edgellama status --errors")
    return out


def resource_lines(resources: dict | None) -> list[str]:
    """The resource plan (resources.py) of a status report: each value with its reason."""
    if not resources:
        return []  # a daemon from before the resource governor
    out = [f"resources    {resources['machine']['summary']}"]
    for name, planned in resources["values"].items():
        value = planned["value"]
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        out.append(f"  {name:<17}{shown:<10}{planned['reason']}")
    out += [f"  warning: {warning}" for warning in resources["warnings"]]
    return out


def marked_passage(answer: dict) -> str:
    """A quote's passage with the span that fits the question marked **like this** (Markdown, so
    chat clients show it in bold)."""
    passage, pointer = answer["answer"], answer.get("pointer") or ""
    at = passage.find(pointer) if pointer else -1
    return passage if at < 0 else f"{passage[:at]}**{pointer}**{passage[at + len(pointer):]}"


def answer_body(answer: dict) -> list[str]:
    """The outcome as the user reads it, without the sources (one wording for ask, /ask's
    clients and the chat completions): an answer with the sentence it stands in, the passage
    that answers, or "The documents do not say."."""
    if answer["kind"] == "abstain":
        return [answer["answer"]]
    if answer["kind"] == "quote":
        return ["The passage that answers (no short answer was verified):", f'  "{marked_passage(answer)}"']
    evidence = answer.get("evidence") or []
    return [answer["answer"]] + [f'  {"from" if n == 0 else "near"}: "{e["text"]}"' for n, e in enumerate(evidence)]


def answer_tail(answer: dict) -> tuple[list[str], list[str]]:
    """What ``edgellama ask`` prints after the streamed answer (only a verified answer streams):
    (stdout lines, stderr lines)."""
    body = answer_body(answer)
    out = [""] + body[1:] if answer["kind"] == "answer" else body
    if answer["sources"]:
        out.append("Sources:")
        out += [f"  {show_path(s['path'])}:{source_lines(s)}  ({s['heading']})" for s in answer["sources"]]
    return out, [f"note: passage {d['rank']} was {d['reason']}" for d in answer["dropped"]]


def stream_answer(client, body: dict, *, on_token: Callable[[str], None] | None) -> dict:
    """Ask the daemon, passing each streamed token to ``on_token``; the final answer dict."""
    from .client import DaemonError
    from .errors import EdgeLlamaError

    answer = None
    for event, data in client.events("/ask", body):
        if event == "token" and on_token is not None:
            on_token(data["text"])
        elif event == "answer":
            answer = data
        elif event == "error":
            raise DaemonError(data["error"]["message"])
    if answer is None:
        raise EdgeLlamaError("the daemon ended the answer early")
    return answer


def _flags(args: list[str], allowed: set[str]) -> tuple[list[str], set[str]] | None:
    positional, flags = [], set()
    for arg in args:
        if arg.startswith("-"):
            if arg not in allowed:
                return None
            flags.add(arg)
        else:
            positional.append(arg)
    return positional, flags


def _client(settings, *, ready: bool):
    from .client import DaemonClient, DaemonError

    if not settings.socket.exists():
        return None
    client = DaemonClient(settings.socket)
    try:
        if ready:
            health = client.health()
            if health["http_status"] != 200 or health.get("db") != str(settings.db):
                return None  # loading (the CLI waits for it), or serving another database
            return client, None
        report = client.request("GET", "/status")
    except DaemonError:
        return None
    return (client, report) if report.get("db") == str(settings.db) else None


def run_fast(argv: list[str]) -> int | None:
    """Handle ``argv`` through a ready daemon and return the exit code, or None: use the CLI."""
    if not argv or argv[0] not in ("status", "ask"):
        return None
    parsed = _flags(argv[1:], {"--json", "--errors"} if argv[0] == "status" else {"--json"})
    if parsed is None:
        return None
    positional, flags = parsed
    if (argv[0] == "status" and positional) or (argv[0] == "ask" and len(positional) != 1):
        return None
    from .config import resolve_settings
    from .errors import EdgeLlamaError

    try:
        settings = resolve_settings(flags={})
    except EdgeLlamaError:
        return None  # the CLI reports it
    found = _client(settings, ready=argv[0] == "ask")
    if found is None:
        return None
    client, report = found
    as_json = "--json" in flags
    if argv[0] == "status":
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str) if as_json
              else "\n".join(status_lines(report, errors="--errors" in flags)))
        return 0

    def echo(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    body = {"question": positional[0], "top_k": settings.top_k, "max_tokens": settings.max_tokens,
            "context_tokens": settings.context_tokens, "stream": True}
    answer = stream_answer(client, body, on_token=None if as_json else echo)
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False, default=str))
        return 0
    out, err = answer_tail(answer)
    print("\n".join(out))
    for line in err:
        print(line, file=sys.stderr)
    return 0


def main() -> None:
    """The ``edgellama`` entry point: the fast path when it applies, else the typer CLI. Errors
    become the same one-line message and exit code as in ``cli.main``."""
    from .errors import EdgeLlamaError

    try:
        code = run_fast(sys.argv[1:])
    except EdgeLlamaError as err:
        print(f"edgellama: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("edgellama: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    if code is not None:
        sys.exit(code)
    from .cli import main as cli_main

    cli_main()

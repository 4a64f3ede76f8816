"""The ``edgellama`` entry point: the fast path of the everyday client commands, ``edgellama status``
and ``edgellama ask QUESTION`` (plain, or with --json / --errors) answered by a running daemon, with
the standard library only. typer builds a pydantic adapter for every parameter: importing and running
it costs more than all the rest of a status call (bench/client_start.py). Anything this path does not
fully understand, or no ready daemon serving our database, goes to the typer CLI (``cli.main``)
unchanged. The text both paths print is in render.py; ``cli`` never imports this module.
"""

from __future__ import annotations

import json
import sys

__all__ = ["main", "run_fast"]


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
    from .client import ask_body, ask_stream, find_daemon
    from .config import resolve_settings
    from .errors import EdgeLlamaError
    from .render import answer_tail, status_lines

    try:
        settings = resolve_settings(flags={})
    except EdgeLlamaError:
        return None  # the CLI reports it
    client = find_daemon(settings, ready=argv[0] == "ask", wait=False)
    if client is None:
        return None
    as_json = "--json" in flags
    if argv[0] == "status":
        report = client.status
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str) if as_json
              else "\n".join(status_lines(report, errors="--errors" in flags)))
        return 0

    def echo(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    answer = ask_stream(client, ask_body(settings, positional[0]), on_token=None if as_json else echo)
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False, default=str))
        return 0
    out, err = answer_tail(answer)
    print("\n".join(out))
    for line in err:
        print(line, file=sys.stderr)
    return 0


def main() -> None:
    """The fast path when it applies, else the typer CLI; errors become the same one-line message and
    exit code in both (``errors.run_or_exit``)."""
    from .errors import run_or_exit

    code = run_or_exit(lambda: run_fast(sys.argv[1:]))
    if code is not None:
        sys.exit(code)
    from .cli import main as cli_main

    cli_main()

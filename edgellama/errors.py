"""The exceptions a user can see, each carrying a one-line message and an exit code.

Raised deep in the library; turned into a message and exit code in exactly one place:
``error_exit`` (``run_or_exit`` applies it), which both the fast path (entry.py) and the typer CLI
(cli.py) use.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")

__all__ = [
    "EdgeLlamaError",
    "ConfigError",
    "StoreError",
    "ModelError",
    "SourceError",
    "RequestError",
    "BusyError",
    "DeadlineError",
    "ClientGoneError",
    "ServiceError",
    "NotIndexedError",
    "DatasetError",
    "DaemonError",
    "error_exit",
    "run_or_exit",
]


class EdgeLlamaError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code: int = 1
    http_status: int = 500  # what the daemon answers when this reaches a request


class ConfigError(EdgeLlamaError):
    """A setting has a bad value, or the config file cannot be parsed."""

    exit_code = 2
    http_status = 400


class RequestError(EdgeLlamaError):
    """A request to the daemon is malformed or too large."""

    exit_code = 2

    def __init__(self, message: str, *, http_status: int = 400):
        super().__init__(message)
        self.http_status = http_status


class BusyError(EdgeLlamaError):
    """The daemon's queue is full: try again after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineError(EdgeLlamaError):
    """A request ran past its time limit (``request_seconds``) and was stopped."""

    http_status = 504


class ClientGoneError(EdgeLlamaError):
    """The client hung up while its request ran: the work stops, nobody gets an answer."""

    http_status = 499  # nginx's "client closed request", counted in /metrics


class StoreError(EdgeLlamaError):
    """The database cannot be opened, migrated or written."""


class ModelError(EdgeLlamaError):
    """A model file is missing, unreadable, or failed to load."""


class SourceError(EdgeLlamaError):
    """A document cannot be read or turned into text; the indexer records it as skipped."""


class ServiceError(EdgeLlamaError):
    """The systemd unit cannot be rendered, installed or removed."""


class NotIndexedError(EdgeLlamaError):
    """A path asked about (e.g. to summarize) is not in the index."""

    http_status = 404


class DatasetError(EdgeLlamaError):
    """An evaluation dataset (BEIR folder, QA file) is missing or malformed."""

    exit_code = 2


class DaemonError(EdgeLlamaError):
    """The daemon answered with an error; its message is shown as is."""


def error_exit(err: BaseException) -> tuple[str | None, int] | None:
    """What the ``edgellama`` command does with an error that reached it: (the line it prints on
    stderr, or None for none; the exit code). None: not one of ours, let it propagate."""
    if isinstance(err, EdgeLlamaError):
        return f"edgellama: error: {err}", err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return "edgellama: interrupted", 130
    if isinstance(err, BrokenPipeError):
        return None, 1
    return None


def run_or_exit(run: Callable[[], T]) -> T:
    """``run()``; an error ``error_exit`` knows ends the process with its line on stderr and its exit code."""
    try:
        return run()
    except (Exception, KeyboardInterrupt) as err:
        handled = error_exit(err)
        if handled is None:
            raise
        message, code = handled
        if message:
            print(message, file=sys.stderr, flush=True)
        sys.exit(code)

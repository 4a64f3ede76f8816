"""The ``edgellama`` command: parses, calls the library, prints. Nothing else.

Heavy libraries (torch, llama_cpp) are imported only inside the commands that need them, so
``--help`` and the client path start fast. Errors become one line and an exit code in ``main``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .config import SETTING_HELP, Settings, resolve_settings
from .errors import EdgeLlamaError
from .quick import answer_tail, show_path as _show_path, status_lines, stream_answer

app = typer.Typer(
    name="edgellama",
    help="Ask your own documents, offline: index files into SQLite, search them, get cited answers.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="SQLite database file [env EDGELLAMA_DB]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
TopKOption = Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, help="How many chunks to retrieve.")]


def _settings(**flags: Any) -> Settings:
    return resolve_settings(flags=flags)




def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _open_store(settings: Settings, *, create: bool = False):
    from .store import Store

    return Store.open(settings.db, create=create)


def _embedder(settings: Settings):
    from .embed import load_embedder

    return load_embedder(settings.embed_model, threads=settings.threads)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to index.")],
    db: DbOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Index files and folders: new and changed files are read, deleted ones removed."""
    from .indexer import index_paths

    settings = _settings(db=db)
    embedder = _embedder(settings)
    with _open_store(settings, create=True) as store:
        show_bar = not quiet and not as_json and sys.stderr.isatty()
        bar = None
        if show_bar:
            bar = typer.progressbar(length=1, label="Indexing", show_eta=True, show_pos=True, file=sys.stderr)
            bar.__enter__()

        def progress(p) -> None:
            if bar is not None:
                bar.length = p.total
                bar.update(1)

        try:
            stats = index_paths(
                store=store, embedder=embedder, paths=paths, chunk_tokens=settings.chunk_tokens,
                chunk_overlap=settings.chunk_overlap, max_file_bytes=int(settings.max_file_mb * 1e6),
                on_progress=progress,
            )
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    if as_json:
        _print_json({**{k: v for k, v in stats.__dict__.items() if k != "skipped"},
                     "skipped": [{"path": s.path, "reason": s.reason} for s in stats.skipped]})
        return
    typer.echo(
        f"Indexed in {stats.seconds:.1f} s: {stats.added} added, {stats.changed} changed, "
        f"{stats.unchanged} unchanged, {stats.removed} removed, {len(stats.skipped)} skipped"
        f"{f', {stats.ignored} of other types ignored' if stats.ignored else ''}; "
        f"{stats.chunks_written} chunks written, {stats.chunks_embedded} embedded."
    )
    for skipped in stats.skipped:
        typer.echo(f"  skipped {_show_path(skipped.path)}: {skipped.reason}")


NoDaemonOption = Annotated[bool, typer.Option("--no-daemon", help="Work in-process even if a daemon runs.")]


def _daemon(settings: Settings, no_daemon: bool):
    """The running daemon serving this database, or None: then the command works in-process."""
    if no_daemon:
        return None
    from .client import connect

    client = connect(settings.socket)
    if client is None:
        return None
    health = client.wait_ready()
    return client if health.get("db") == str(settings.db) else None


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: TopKOption = None,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or dense.")] = "hybrid",
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Show the chunks that best match QUERY, with file:lines."""
    if mode not in ("hybrid", "bm25", "dense"):
        raise typer.BadParameter("mode must be hybrid, bm25 or dense", param_hint="--mode")
    settings = _settings(db=db, top_k=top_k)
    client = _daemon(settings, no_daemon)
    if client is not None:
        results = client.request("POST", "/search", {"query": query, "k": settings.top_k, "mode": mode})["results"]
    else:
        from .retrieve import scored_chunk_to_dict, search as run_search

        with _open_store(settings) as store:
            found = run_search(store=store, embedder=_embedder(settings), query=query, k=settings.top_k, mode=mode)
        results = [scored_chunk_to_dict(r) for r in found]
    if as_json:
        _print_json(results)
        return
    if not results:
        typer.echo("No matches.")
    for n, r in enumerate(results, start=1):
        lines = f"{r['line_start']}-{r['line_end']}" + (f" page {r['page']}" if r["page"] else "")
        typer.echo(f"{n}. {_show_path(r['path'])}:{lines}  score {r['score']:.4f}  similarity {r['similarity']:.2f}")
        if r["heading"]:
            typer.echo(f"   {r['heading']}")
        snippet = " ".join(r["text"].split())
        typer.echo(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="Your question.")],
    top_k: TopKOption = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Cap on answer tokens.")] = None,
    context_tokens: Annotated[Optional[int], typer.Option(min=1, help="Token budget for retrieved text.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="A GGUF model file [env EDGELLAMA_MODEL].")] = None,
    prompt_style: Annotated[Optional[str], typer.Option(help="completion or chat.")] = None,
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Answer QUESTION from the indexed documents, streaming, then list the sources."""
    settings = _settings(db=db, top_k=top_k, max_tokens=max_tokens, context_tokens=context_tokens,
                         model=model, prompt_style=prompt_style)

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    # A daemon has its own model and prompt style: a flag that picks another one works in-process.
    client = None if model or prompt_style else _daemon(settings, no_daemon)
    if client is not None:
        body = {"question": question, "top_k": settings.top_k, "max_tokens": settings.max_tokens,
                "context_tokens": settings.context_tokens, "stream": True}
        answer = stream_answer(client, body, on_token=None if as_json else stream)
    else:
        from .answer import answer_to_dict, ask as run_ask
        from .generate import load_generator

        def generator():
            return load_generator(model=settings.model, models_dir=settings.models_dir,
                                  requantize_bundled=settings.requantize, threads=settings.threads,
                                  n_ctx=settings.n_ctx)

        with _open_store(settings) as store:
            answer = answer_to_dict(run_ask(
                question=question, store=store, embedder=_embedder(settings), generator=generator,
                top_k=settings.top_k, context_tokens=settings.context_tokens, max_tokens=settings.max_tokens,
                min_relevance=settings.min_relevance, style=settings.prompt_style,
                on_token=None if as_json else stream,
            ))
    if as_json:
        _print_json(answer)
        return
    out, err = answer_tail(answer)
    for line in out:
        typer.echo(line)
    for line in err:
        typer.echo(line, err=True)


@app.command()
def status(
    errors: Annotated[bool, typer.Option("--errors", help="List every skipped file with its reason.")] = False,
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Documents, chunks, skipped files, models, database size, and the daemon if one runs."""
    settings = _settings(db=db)
    client = None if no_daemon else _daemon_any_state(settings)
    if client is not None:
        report = client.request("GET", "/status")
    else:
        from .status import status_report

        with _open_store(settings) as store:
            report = status_report(settings=settings, store=store)
    if as_json:
        _print_json(report)
        return
    for line in status_lines(report, errors=errors):
        typer.echo(line)


def _daemon_any_state(settings: Settings):
    """The daemon on our socket even while it loads (status works then), if it serves our database."""
    from .client import connect

    client = connect(settings.socket)
    if client is None:
        return None
    report_db = client.request("GET", "/status").get("db")
    return client if report_db == str(settings.db) else None


@app.command()
def serve(
    folders: Annotated[Optional[list[Path]], typer.Option("--folder", help="Watch and index this folder (repeatable) [config: folders].")] = None,
    socket_path: Annotated[Optional[Path], typer.Option("--socket", help="UNIX socket to listen on [env EDGELLAMA_SOCKET].")] = None,
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Run the daemon: warm models, live index of the folders, HTTP API on a UNIX socket."""
    import logging

    from .daemon import serve as run_daemon

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("watchdog", "sentence_transformers", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    flags = {"folders": [str(f) for f in folders] if folders else None, "socket": socket_path, "db": db}
    raise typer.Exit(run_daemon(flags=flags))


@app.command("config")
def show_config(as_json: JsonOption = False) -> None:
    """Print every effective setting and where it came from."""
    settings = _settings()
    values = settings.as_dict()
    if as_json:
        _print_json({k: {"value": values[k], "from": settings.origins[k]} for k in SETTING_HELP}
                    | {"config_file": str(settings.config_file), "data_dir": str(settings.data_dir)})
        return
    typer.echo(f"# config file: {settings.config_file}{'' if settings.config_file.exists() else ' (absent)'}")
    typer.echo(f"# data dir:    {settings.data_dir}")
    width = max(len(k) for k in SETTING_HELP)
    for key in SETTING_HELP:
        value = values[key]
        shown = "(bundled)" if value is None else value
        typer.echo(f"{key:<{width}} = {shown}    # {settings.origins[key]}")


def main() -> None:
    """Entry point: the one place where library errors become a message and an exit code."""
    try:
        app()
    except EdgeLlamaError as err:
        typer.echo(f"edgellama: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("edgellama: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()

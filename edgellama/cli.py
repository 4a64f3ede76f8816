"""The ``edgellama`` command: parses, calls the library, prints. Nothing else.

Heavy libraries (torch, llama_cpp) are imported only inside the commands that need them, so
``--help`` and the client path start fast. Errors become one line and an exit code in ``main``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .config import SETTING_HELP, Settings, resolve_settings
from .errors import EdgeLlamaError

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


def _show_path(path: str) -> str:
    try:
        return os.path.relpath(path) if Path(path).is_relative_to(Path.cwd()) else path
    except ValueError:
        return path


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


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: TopKOption = None,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or dense.")] = "hybrid",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the chunks that best match QUERY, with file:lines."""
    from .retrieve import search as run_search

    if mode not in ("hybrid", "bm25", "dense"):
        raise typer.BadParameter("mode must be hybrid, bm25 or dense", param_hint="--mode")
    settings = _settings(db=db, top_k=top_k)
    with _open_store(settings) as store:
        results = run_search(store=store, embedder=_embedder(settings), query=query, k=settings.top_k, mode=mode)
    if as_json:
        _print_json([
            {"path": r.chunk.path, "line_start": r.chunk.line_start, "line_end": r.chunk.line_end,
             "page": r.chunk.page, "heading": r.chunk.context, "score": r.score, "similarity": r.similarity,
             "bm25_rank": r.bm25_rank, "dense_rank": r.dense_rank, "text": r.chunk.text}
            for r in results
        ])
        return
    if not results:
        typer.echo("No matches.")
    for n, r in enumerate(results, start=1):
        c = r.chunk
        lines = f"{c.line_start}-{c.line_end}" + (f" page {c.page}" if c.page else "")
        typer.echo(f"{n}. {_show_path(c.path)}:{lines}  score {r.score:.4f}  similarity {r.similarity:.2f}")
        if c.context:
            typer.echo(f"   {c.context}")
        snippet = " ".join(c.text.split())
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
    as_json: JsonOption = False,
) -> None:
    """Answer QUESTION from the indexed documents, streaming, then list the sources."""
    from .answer import ask as run_ask
    from .generate import load_generator

    settings = _settings(db=db, top_k=top_k, max_tokens=max_tokens, context_tokens=context_tokens,
                         model=model, prompt_style=prompt_style)

    def generator():
        return load_generator(model=settings.model, models_dir=settings.models_dir,
                              requantize_bundled=settings.requantize, threads=settings.threads,
                              n_ctx=settings.n_ctx)

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    with _open_store(settings) as store:
        answer = run_ask(
            question=question, store=store, embedder=_embedder(settings), generator=generator,
            top_k=settings.top_k, context_tokens=settings.context_tokens, max_tokens=settings.max_tokens,
            min_relevance=settings.min_relevance, style=settings.prompt_style,
            on_token=None if as_json else stream,
        )
    if as_json:
        _print_json(answer_json(answer))
        return
    streamed = answer.timings.completion_tokens > 0
    if answer.kind == "abstain":
        typer.echo(answer.text)
    elif answer.kind == "quote":
        if streamed:
            typer.echo("\n(no passage supports that answer)")
        typer.echo(f'The documents do not say it in so many words. Closest passage: "{answer.text}"')
    else:
        typer.echo("")
    if answer.citations:
        typer.echo("Sources:")
        for s in answer.citations:
            typer.echo(f"  {_show_path(s.path)}:{_lines(s)}  ({s.heading})")
    for d in answer.dropped:
        typer.echo(f"note: passage {d.index + 1} was {d.reason}", err=True)


def _lines(s) -> str:
    lines = f"{s.line_start}" if s.line_start == s.line_end else f"{s.line_start}-{s.line_end}"
    return lines + (f" (page {s.page})" if s.page else "")


def answer_json(answer) -> dict:
    def source(s) -> dict:
        return {"number": s.number, "path": s.path, "line_start": s.line_start, "line_end": s.line_end,
                "page": s.page, "heading": s.heading, "support": round(s.support, 3),
                "similarity": round(s.similarity, 4), "text": s.text}

    return {
        "question": answer.question,
        "answer": answer.text,
        "kind": answer.kind,
        "abstained": answer.abstained,
        "reason": answer.reason,
        "model_answer": answer.model_text,
        "verified": answer.verified,
        "sources": [source(s) for s in answer.citations],
        "context": [source(s) for s in answer.context],
        "dropped": [{"rank": d.index + 1, "reason": d.reason} for d in answer.dropped],
        "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in answer.timings.__dict__.items()},
    }


@app.command()
def status(
    errors: Annotated[bool, typer.Option("--errors", help="List every skipped file with its reason.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Documents, chunks, skipped files, models and database size."""
    from .generate import describe_model

    settings = _settings(db=db)
    with _open_store(settings) as store:
        stats = store.stats()
        skipped = store.skipped()
    model = describe_model(model=settings.model, models_dir=settings.models_dir,
                           requantize_bundled=settings.requantize)
    embed_model = str(settings.embed_model) if settings.embed_model else "bundled all-MiniLM-L6-v2"
    if as_json:
        _print_json({**stats.__dict__, "db": str(settings.db), "model": model, "embed_model": embed_model,
                     "skipped_files": [{"path": p, "reason": r} for p, r in skipped]})
        return
    typer.echo(f"database     {settings.db} ({stats.db_bytes / 1e6:.1f} MB, schema {stats.schema_version})")
    typer.echo(f"documents    {stats.documents} indexed, {stats.skipped} skipped")
    typer.echo(f"chunks       {stats.chunks} ({stats.embeddings} embeddings)")
    typer.echo(f"model        {model}")
    typer.echo(f"embedder     {embed_model}")
    shown = skipped if errors else skipped[:5]
    for path, reason in shown:
        typer.echo(f"  skipped {_show_path(path)}: {reason}")
    if len(skipped) > len(shown):
        typer.echo(f"  … {len(skipped) - len(shown)} more: edgellama status --errors")


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

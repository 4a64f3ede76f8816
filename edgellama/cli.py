"""The ``edgellama`` command (typer): parses, calls the library, prints the lines render.py makes.
Nothing else.

Heavy libraries (torch, llama_cpp) are imported only inside the commands that need them, so
``--help`` and the client path start fast. Errors become one line and an exit code in ``main``
(``errors.error_exit``). The fast path in front of it is entry.py, which this module never imports.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import render
from .config import DEFAULT_METHOD, LENGTHS, METHODS, SEARCH_MODES, SETTING_HELP, Settings, one_of, resolve_settings
from .errors import DaemonError, EdgeLlamaError, run_or_exit

__all__ = ["app", "main"]

app = typer.Typer(
    name="edgellama",
    help="Ask your own documents, offline: index files into SQLite, search them, get cited answers.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="SQLite database file [env EDGELLAMA_DB]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
TopKOption = Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, help="How many chunks to retrieve.")]


def _settings(**flags: Any) -> Settings:
    return resolve_settings(flags=flags)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _echo(lines: list[str], *, err: bool = False) -> None:
    for line in lines:
        typer.echo(line, err=err)


def _echo_split(lines: tuple[list[str], list[str]]) -> None:
    """(stdout lines, stderr lines), as render's answer and summary tails give them."""
    _echo(lines[0])
    _echo(lines[1], err=True)


def _models(settings: Settings):
    """The models of this command (resources.Models): one resource plan, shared by the embedder and the model."""
    return _models_for(settings, tuple(sorted(settings.origins.items())))


@functools.lru_cache(maxsize=4)
def _models_for(settings: Settings, origins: tuple):  # origins: Settings' hash leaves them out, plans use them
    from .resources import Models

    return Models(settings)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to index.")],
    db: DbOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Index files and folders: new and changed files are read, deleted ones removed."""
    from .indexer import IndexOptions, index_paths

    settings = _settings(db=db)
    models = _models(settings)
    embedder = models.embedder()
    with models.open_store(create=True) as store:
        store.acquire_writer(owner=f"edgellama index (pid {os.getpid()})")  # one indexer per database
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
            stats = index_paths(store=store, embedder=embedder, paths=paths,
                                **IndexOptions.from_settings(settings).kwargs(), on_progress=progress)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    if as_json:
        _print_json({**{k: v for k, v in stats.__dict__.items() if k not in ("skipped", "unavailable")},
                     "skipped": [{"path": s.path, "reason": s.reason} for s in stats.skipped],
                     "unavailable": [{"path": u.path, "reason": u.reason} for u in stats.unavailable]})
        return
    _echo(render.index_lines(stats))


NoDaemonOption = Annotated[bool, typer.Option("--no-daemon", help="Work in-process even if a daemon runs.")]


def _daemon(settings: Settings, no_daemon: bool, *, ready: bool = True):
    """The running daemon serving this database, or None: then the command works in-process."""
    if no_daemon:
        return None
    from .client import find_daemon

    return find_daemon(settings, ready=ready)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: TopKOption = None,
    mode: Annotated[str, typer.Option(help=f"{one_of(SEARCH_MODES)}.")] = "hybrid",
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Show the chunks that best match QUERY, with file:lines."""
    if mode not in SEARCH_MODES:
        raise typer.BadParameter(f"mode must be {one_of(SEARCH_MODES)}", param_hint="--mode")
    settings = _settings(db=db, top_k=top_k)
    client = _daemon(settings, no_daemon)
    if client is not None:
        results = client.request("POST", "/search", {"query": query, "k": settings.top_k, "mode": mode})["results"]
    else:
        from .retrieve import scored_chunk_to_dict, search as run_search

        models = _models(settings)
        with models.open_store() as store:
            found = run_search(store=store, embedder=models.embedder(), query=query, k=settings.top_k, mode=mode)
        results = [scored_chunk_to_dict(r) for r in found]
    if as_json:
        _print_json(results)
        return
    _echo(render.search_lines(results))


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
        from .client import ask_body, ask_stream

        answer = ask_stream(client, ask_body(settings, question), on_token=None if as_json else stream)
    else:
        from .answer import answer_to_dict, ask as run_ask

        models = _models(settings)
        with models.open_store() as store:
            answer = answer_to_dict(run_ask(
                question=question, store=store, embedder=models.embedder(), generator=models.generator,
                **settings.ask_options, on_token=None if as_json else stream,
            ))
    if as_json:
        _print_json(answer)
        return
    _echo_split(render.answer_tail(answer))


@app.command()
def status(
    errors: Annotated[bool, typer.Option("--errors", help="List every skipped file with its reason.")] = False,
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Documents, chunks, skipped files, models, database size, and the daemon if one runs."""
    settings = _settings(db=db)
    client = _daemon(settings, no_daemon, ready=False)
    if client is not None:
        report = client.status
    else:
        from .status import status_report

        with _models(settings).open_store() as store:
            report = status_report(settings=settings, store=store)
    if as_json:
        _print_json(report)
        return
    _echo(render.status_lines(report, errors=errors))


@app.command()
def serve(
    folders: Annotated[Optional[list[Path]], typer.Option("--folder", help="Watch and index this folder (repeatable) [config: folders].")] = None,
    socket_path: Annotated[Optional[Path], typer.Option("--socket", help="UNIX socket to listen on [env EDGELLAMA_SOCKET].")] = None,
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Run the daemon: warm models, live index of the folders, HTTP API on a UNIX socket."""
    import logging

    from .daemon import log_stream, serve as run_daemon

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=log_stream(),
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("watchdog", "sentence_transformers", "urllib3", "httpx", "uvicorn"):
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
    _echo(render.config_lines(config_file=settings.config_file, data_dir=settings.data_dir, values=values,
                              origins=settings.origins, keys=SETTING_HELP))


@app.command()
def selftest(
    airgap: Annotated[bool, typer.Option("--airgap", help="Also record and block every network connection and "
                                          "name lookup, and check the offline switches; any attempt fails.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Index, search, ask (and summarize) on a small temporary folder; exit 1 if any step fails."""
    from .selftest import run_selftest

    def show(step) -> None:
        if not as_json:
            typer.echo(render.selftest_step_line(step))

    report = run_selftest(airgap=airgap, settings=_settings(), on_step=show)
    if as_json:
        _print_json({"ok": report.ok, "airgap": report.airgap, "network_attempts": list(report.network_attempts),
                     "steps": [step.__dict__ for step in report.steps]})
    else:
        for attempt in report.network_attempts:
            typer.echo(f"FAIL  network attempt: {attempt}")
        if airgap and report.ok:
            typer.echo("airgap: no connection and no name lookup was attempted")
    if not report.ok:
        raise typer.Exit(1)


# -- edgellama service: the systemd unit ---------------------------------------------------------

service_app = typer.Typer(help="Install or remove the systemd unit that runs `edgellama serve`.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(service_app, name="service")
UserOption = Annotated[bool, typer.Option("--user", help="A user unit (systemctl --user) instead of the system unit.")]
RootOption = Annotated[Optional[Path], typer.Option("--root", help="Write under this directory instead of / (packaging, tests).")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the unit, files and commands; change nothing.")]


def _print_service_report(report) -> None:
    _echo(render.service_lines(report))


@service_app.command("install")
def service_install(
    user: UserOption = False,
    folders: Annotated[Optional[list[Path]], typer.Option("--folder", help="A folder the daemon watches (repeatable).")] = None,
    root: RootOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the unit with this machine's paths and the config with the folders; enable it."""
    from .service import install

    report = install(user=user, folders=folders or (), root=root, dry_run=dry_run)
    _print_json(report.__dict__) if as_json else _print_service_report(report)


@service_app.command("uninstall")
def service_uninstall(user: UserOption = False, root: RootOption = None, dry_run: DryRunOption = False,
                      as_json: JsonOption = False) -> None:
    """Disable the unit and remove exactly the files install wrote; the index is kept."""
    from .service import uninstall

    report = uninstall(user=user, root=root, dry_run=dry_run)
    _print_json(report.__dict__) if as_json else _print_service_report(report)


# -- summarize (issue 7) ------------------------------------------------------------------------


@app.command()
def summarize(
    target: Annotated[Optional[Path], typer.Argument(help="An indexed file or folder.")] = None,
    all_documents: Annotated[bool, typer.Option("--all", help="Summarize every indexed document.")] = False,
    topic: Annotated[Optional[str], typer.Option("--topic", help="Summarize what the documents say about TOPIC.")] = None,
    length: Annotated[str, typer.Option(help=f"{one_of(LENGTHS)}.")] = "medium",
    method: Annotated[Optional[str], typer.Option(
        help="extract (the most central sentences, fast; default) or model (the language model).")] = None,
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Summarize a document, a folder (one line per document, then an overview) or a topic,
    streaming, every point citing file and lines."""
    method = method or DEFAULT_METHOD
    if sum((target is not None, all_documents, topic is not None)) != 1:
        raise typer.BadParameter("give exactly one of FILE|DIR, --all or --topic", param_hint="TARGET")
    if length not in LENGTHS:
        raise typer.BadParameter(f"must be one of {', '.join(LENGTHS)}", param_hint="--length")
    if method not in METHODS:
        raise typer.BadParameter(f"must be one of {', '.join(METHODS)}", param_hint="--method")
    settings = _settings(db=db)
    body: dict[str, Any] = {"length": length, "method": method}
    if target is not None:
        if not target.exists():
            raise typer.BadParameter(f"{target} does not exist", param_hint="TARGET")
        body["path"] = os.path.abspath(target)
    elif topic is not None:
        body["topic"] = topic
    else:
        body["all"] = True
    client = _daemon(settings, no_daemon)
    if client is not None:
        events = client.events("/summarize", {**body, "stream": True})
    else:
        events = _summarize_in_process(settings, body)
    folder = "all" in body or ("path" in body and Path(body["path"]).is_dir())
    result = None
    for event, data in events:
        if event == "error":
            raise DaemonError(data["error"]["message"])
        if event == "summary":
            result = data
        elif not as_json:
            _print_summary_piece(event, data, folder=folder)
    if result is None:
        raise EdgeLlamaError("the summary ended early")
    if as_json:
        _print_json(result)
        return
    _echo_split(render.summary_end(result))


def _summarize_in_process(settings: Settings, body: dict):
    from .summarize import piece_to_event, summarize_target

    models = _models(settings)
    with models.open_store() as store:
        for piece in summarize_target(store=store, method=body["method"], length=body["length"],
                                      generator=models.generator, path=body.get("path"), topic=body.get("topic"),
                                      load_embedder=models.embedder, min_relevance=settings.min_relevance):
            yield piece_to_event(piece)


def _print_summary_piece(event: str, data: dict, *, folder: bool) -> None:
    if event == "progress":
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K[{data['done']}/{data['total']}] {data['label'][:60]}")
            sys.stderr.flush()
        return
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    _echo(render.summary_piece_lines(event, data, folder=folder))
    sys.stdout.flush()


# -- eval: retrieval and answer quality as numbers ---------------------------------------------------

eval_app = typer.Typer(help="Measure retrieval and answer quality.", no_args_is_help=True,
                       rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(eval_app, name="eval")
OutOption = Annotated[Optional[Path], typer.Option("--out", help="Write the JSON results here "
                      "[default: DATA_DIR/eval/KIND-NAME-TIME.json].")]


class _EvalBars:
    """One progress bar per stage on a terminal's stderr; nothing otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.stage = None

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if p.stage != self.stage:
            self.close()
            self.stage = p.stage
            self.bar = typer.progressbar(length=p.total, label=f"{p.stage:<7}", show_eta=True, show_pos=True,
                                         file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> "_EvalBars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@eval_app.command("retrieval")
def eval_retrieval(
    folder: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")],
    mode: Annotated[Optional[str], typer.Option(help="bm25, dense or hybrid [default: all three].")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", help="Index into (or reuse) this database instead of a temporary one.")] = None,
    rrf_k: Annotated[int, typer.Option(min=1, help="Reciprocal-rank constant.")] = 60,
    bm25_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the BM25 ranking in hybrid.")] = 1.0,
    dense_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the dense ranking in hybrid.")] = 1.0,
    candidates: Annotated[int, typer.Option(min=1, help="Chunks taken from each ranking before fusion.")] = 300,
    title: Annotated[str, typer.Option(help="context (title as chunk heading) or text (also in the text).")] = "context",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """nDCG@10, Recall@10/100 and MRR@10 of each search mode on a BEIR-format folder."""
    from .evaluate import MODES, RetrievalSettings, run_retrieval_eval, write_results

    if mode is not None and mode not in MODES:
        raise typer.BadParameter(f"mode must be {one_of(MODES)}", param_hint="--mode")
    if title not in ("context", "text"):
        raise typer.BadParameter("title must be context or text", param_hint="--title")
    settings = _settings()
    with _EvalBars(not quiet and not as_json) as bars:
        report = run_retrieval_eval(
            settings=settings, folder=folder, modes=(mode,) if mode else MODES, title=title, db=db, on_progress=bars,
            retrieval=RetrievalSettings(rrf_k=rrf_k, weights=(bm25_weight, dense_weight), candidates=candidates))
    result = report.as_dict()
    path = write_results(data_dir=settings.data_dir, out=out, kind="retrieval", name=report.dataset, data=result)
    _print_json(result) if as_json else _echo(render.retrieval_lines(report, str(path)))


@eval_app.command("qa")
def eval_qa(
    questions: Annotated[Path, typer.Argument(help="JSONL: {\"id\", \"question\", \"answers\": [...], \"doc\"?} a line.")],
    docs: Annotated[Path, typer.Option("--docs", help="Folder of documents the questions are about.")],
    db: Annotated[Optional[Path], typer.Option("--db", help="Index into (or reuse) this database instead of a temporary one.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Gold document counts as found within this many chunks.")] = 3,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Gold-document hit@k, exact match, token F1, citation precision, abstention and latency."""
    from .evaluate import run_qa_eval, write_results

    settings = _settings()
    if not docs.is_dir():
        raise typer.BadParameter(f"{docs} is not a folder", param_hint="--docs")
    with _EvalBars(not quiet and not as_json) as bars:
        report = run_qa_eval(settings=settings, questions=questions, docs=docs, k=k, db=db, on_progress=bars)
    result = report.as_dict()
    path = write_results(data_dir=settings.data_dir, out=out, kind="qa", name=questions.stem, data=result)
    _print_json(result) if as_json else _echo(render.qa_lines(report, str(path)))


# -- show, export / import, mcp (issue 20) ---------------------------------------------------------


@app.command()
def show(
    location: Annotated[str, typer.Argument(
        help="A citation: PATH, PATH:15-25, PATH:15, FILE.pdf:page 3 or FILE.pdf:page 3:4-9 (as search and ask print them).")],
    context: Annotated[int, typer.Option("--context", "-C", min=0, max=1000, help="Lines of context before and after.")] = 0,
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Print the lines a citation names, as they were indexed (PDF pages included)."""
    from .show import cited_path

    settings = _settings(db=db)
    cited = cited_path(location)
    client = _daemon(settings, no_daemon)
    if client is not None:
        from urllib.parse import urlencode

        data = client.request("GET", "/show?" + urlencode({"path": cited, "context": context}))
    else:
        from .show import excerpt_to_dict, show_citation

        with _models(settings).open_store() as store:
            data = excerpt_to_dict(show_citation(store=store, cited=cited, context=context))
    if as_json:
        _print_json(data)
        return
    _echo(render.excerpt_lines(data))


@app.command("export")
def export_index(
    bundle: Annotated[Path, typer.Argument(help="The bundle folder to write (must not exist).")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the index as a bundle: a consistent snapshot (safe while a daemon writes) and a manifest."""
    from .bundle import configured_chunking, configured_model, export_bundle

    settings = _settings(db=db)
    report = export_bundle(db=settings.db, bundle=bundle, model=configured_model(settings),
                           chunking=configured_chunking(settings), folders=[str(f) for f in settings.folders])
    if as_json:
        _print_json({"bundle": str(report.bundle), "seconds": report.seconds, "manifest": report.manifest.as_dict()})
        return
    _echo(render.export_lines(report))


@app.command("import")
def import_index(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by 'edgellama export'.")],
    roots: Annotated[Optional[list[str]], typer.Option("--root", help="OLD=NEW: move the paths under OLD to NEW (repeatable).")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replace the index with a bundle: verified first (integrity, SHA-256, embedding model, chunking),
    roots moved, swapped in at once; a running daemon serves it from its next request."""
    from .bundle import configured_chunking, configured_model, import_bundle, parse_root_map

    settings = _settings(db=db)
    report = import_bundle(bundle=bundle, db=settings.db, model=configured_model(settings),
                           chunking=configured_chunking(settings), root_map=parse_root_map(roots or []))
    if as_json:
        _print_json({"db": str(report.db), "seconds": report.seconds, "roots": list(report.roots),
                     "moved": [{"from": a, "to": b, "documents": n} for a, b, n in report.moved],
                     "replaced_documents": report.replaced_documents, "manifest": report.manifest.as_dict()})
        return
    _echo(render.import_lines(report))


@app.command()
def mcp(db: DbOption = None) -> None:
    """Serve the Model Context Protocol on stdin/stdout for agents and editors: tools search, ask, show,
    summarize and status (through the daemon when one serves this database)."""
    try:
        from .mcp_server import run_stdio
    except ImportError as err:
        raise EdgeLlamaError(f"the MCP server needs the mcp package: pip install 'mcp==2.3.0' ({err})") from None
    raise typer.Exit(run_stdio(_settings(db=db)))


def main() -> None:
    """Run the typer CLI; a library error becomes its message and exit code (``errors.run_or_exit``).
    prog_name: shell completion is keyed on it (_EDGELLAMA_COMPLETE, the shell function), however started."""
    run_or_exit(lambda: app(prog_name="edgellama"))


if __name__ == "__main__":
    main()

"""The ``edgellama`` command: parses, calls the library, prints. Nothing else.

Heavy libraries (torch, llama_cpp) are imported only inside the commands that need them, so
``--help`` and the client path start fast. Errors become one line and an exit code in ``main``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .config import SETTING_HELP, Settings, resolve_settings
from .errors import EdgeLlamaError
from .quick import answer_tail, show_path as _show_path, source_lines as _lines, status_lines, stream_answer

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


def _plan(settings: Settings):
    """The resource plan (resources.py), made once per command: the embedder and the model share it."""
    return _planned(settings, tuple(sorted(settings.origins.items())))


@functools.lru_cache(maxsize=4)
def _planned(settings: Settings, origins: tuple):  # origins: Settings' hash leaves them out, plans use them
    from .resources import current_plan

    return current_plan(settings)


def _embedder(settings: Settings):
    from .resources import load_planned_embedder

    return load_planned_embedder(settings=settings, plan=_plan(settings))


def _generator(settings: Settings):
    from .resources import load_planned_generator

    return load_planned_generator(settings=settings, plan=_plan(settings))


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
                max_extract_seconds=settings.max_extract_seconds, on_progress=progress,
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
        f"{f', {stats.vanished} deleted before they could be read' if stats.vanished else ''}"
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

        def generator():
            return _generator(settings)

        with _open_store(settings) as store:
            answer = answer_to_dict(run_ask(
                question=question, store=store, embedder=_embedder(settings), generator=generator,
                **settings.ask_options, on_token=None if as_json else stream,
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
            typer.echo(f"{'ok  ' if step.ok else 'FAIL'}  {step.name:<18} {step.seconds:6.1f} s  {step.detail}")

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
    verb = {("install", True): "would write", ("install", False): "wrote",
            ("uninstall", True): "would remove", ("uninstall", False): "removed"}[report.action, report.dry_run]
    if report.dry_run and report.unit_text:
        typer.echo(report.unit_text)
    for path in report.written:
        typer.echo(f"{verb} {path}")
    for path in report.kept:
        typer.echo(f"kept {path}")
    for command in report.commands:
        typer.echo(f"{'would run' if report.dry_run else 'ran'} {command}")
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.action == "install" and not report.dry_run:
        scope = " --user" if report.scope == "user" else ""
        typer.echo(f"start it with: systemctl{scope} start edgellama")


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
    length: Annotated[str, typer.Option(help="short, medium or long.")] = "medium",
    method: Annotated[Optional[str], typer.Option(
        help="extract (the most central sentences, fast; default) or model (the language model).")] = None,
    db: DbOption = None,
    no_daemon: NoDaemonOption = False,
    as_json: JsonOption = False,
) -> None:
    """Summarize a document, a folder (one line per document, then an overview) or a topic,
    streaming, every point citing file and lines."""
    from .summarize import DEFAULT_METHOD, LENGTHS, METHODS

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
            from .client import DaemonError

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
    if result["kind"] != "document" or not result["overview"]:
        if result["overview"]:
            typer.echo("Overview:")
        for point in result["overview"]:
            typer.echo(_point_line(point))
    if result["kind"] == "topic" and not result["overview"]:
        typer.echo("The documents do not say.")
    for note in result["notes"]:
        typer.echo(f"note: {note}", err=True)
    st = result["stats"]
    typer.echo(f"({result['method']}: {st['nodes']} nodes, {st['cached']} cached, {st['model_calls']} model calls, "
               f"{st['dropped_sentences']} unsupported sentences dropped, {st['seconds']:.1f} s)", err=True)


def _summarize_in_process(settings: Settings, body: dict):
    from .summarize import piece_to_event, summarize_document, summarize_folder, summarize_topic

    def generator():
        return _generator(settings)

    options = {"method": body["method"], "length": body["length"], "generator": generator}
    with _open_store(settings) as store:
        if "topic" in body:
            pieces = summarize_topic(store=store, topic=body["topic"], embedder=_embedder(settings),
                                     min_relevance=settings.min_relevance, **options)
        elif "all" in body or Path(body["path"]).is_dir():
            pieces = summarize_folder(store=store, folder=body.get("path"), **options)
        else:
            pieces = summarize_document(store=store, path=body["path"], **options)
        for piece in pieces:
            yield piece_to_event(piece)


def _point_line(point: dict) -> str:
    where = "; ".join(f"{_show_path(c['path'])}:{_lines(c)}" for c in point["citations"][:3])
    more = f" +{len(point['citations']) - 3} more" if len(point["citations"]) > 3 else ""
    return f"- {point['text']}  [{where}{more}]"


def _print_summary_piece(event: str, data: dict, *, folder: bool) -> None:
    if event == "progress":
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K[{data['done']}/{data['total']}] {data['label'][:60]}")
            sys.stderr.flush()
        return
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if event == "section":
        typer.echo(f"## {data['heading']}  (lines {data['line_start']}-{data['line_end']})")
        for point in data["points"]:
            typer.echo(_point_line(point))
    elif event == "document" and folder:
        first = data["overview"][0] if data["overview"] else None
        title = f" ({data['title']})" if data["title"] else ""
        typer.echo(f"- {_show_path(data['path'])}{title}: " + (
            f"{first['text']}  [{'; '.join(_lines(c) for c in first['citations'][:3])}]" if first else "(no text)"))
    elif event == "document":
        if data["overview"]:
            typer.echo("Overview:")
        for point in data["overview"]:
            typer.echo(_point_line(point))
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


def _eval_store(settings: Settings, db: Optional[Path], tmp: str):
    from .store import Store

    return Store.open(db if db is not None else Path(tmp) / "eval.db", create=True)


def _write_results(settings: Settings, out: Optional[Path], kind: str, name: str, data: dict) -> Path:
    import time

    path = out or settings.data_dir / "eval" / f"{kind}-{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    except OSError as err:
        raise EdgeLlamaError(f"cannot write results to {path}: {err.strerror or err}") from None
    return path


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
    import tempfile

    from .evaluate import MODES, RetrievalSettings, evaluate_retrieval, index_beir, load_beir

    if mode is not None and mode not in MODES:
        raise typer.BadParameter("mode must be bm25, dense or hybrid", param_hint="--mode")
    if title not in ("context", "text"):
        raise typer.BadParameter("title must be context or text", param_hint="--title")
    settings = _settings()
    data = load_beir(folder)
    bars = _EvalBars(not quiet and not as_json)
    with tempfile.TemporaryDirectory(prefix="edgellama-eval-") as tmp:
        embedder = _embedder(settings)
        try:
            with _eval_store(settings, db, tmp) as store:
                stats = index_beir(store=store, embedder=embedder, data=data, chunk_tokens=settings.chunk_tokens,
                                   chunk_overlap=settings.chunk_overlap, title=title, on_progress=bars)
                report = evaluate_retrieval(
                    store=store, embedder=embedder, data=data, modes=(mode,) if mode else MODES,
                    settings=RetrievalSettings(rrf_k=rrf_k, weights=(bm25_weight, dense_weight),
                                               candidates=candidates),
                    index_stats=stats, on_progress=bars)
        finally:
            bars.close()
    result = report.as_dict()
    path = _write_results(settings, out, "retrieval", report.dataset, result)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"{report.dataset}: {report.documents} documents ({report.chunks} chunks), {report.queries} queries; "
               f"indexed in {report.index_seconds:.1f} s ({report.chunks_embedded} chunks embedded)")
    typer.echo(f"{'mode':<8}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'queries/s':>11}")
    for m in report.modes:
        typer.echo(f"{m.mode:<8}{m.ndcg_at_10:>9.4f}{m.recall_at_10:>8.4f}{m.recall_at_100:>8.4f}"
                   f"{m.mrr_at_10:>8.4f}{m.queries_per_second:>11.1f}")
        if m.short_rankings:
            typer.echo(f"  note: {m.short_rankings} queries ranked fewer than {report.settings.depth} documents")
    typer.echo(f"results: {_show_path(str(path))}")


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
    import tempfile

    from .evaluate import evaluate_qa, load_qa, resolve_gold
    from .indexer import index_paths

    settings = _settings()
    if not docs.is_dir():
        raise typer.BadParameter(f"{docs} is not a folder", param_hint="--docs")
    items = load_qa(questions)
    gold = {item.id: resolve_gold(item.doc, docs=docs) for item in items if item.doc and item.answers}
    bars = _EvalBars(not quiet and not as_json)
    with tempfile.TemporaryDirectory(prefix="edgellama-eval-") as tmp:
        embedder = _embedder(settings)
        generator = _generator(settings)
        try:
            with _eval_store(settings, db, tmp) as store:
                index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=settings.chunk_tokens,
                            chunk_overlap=settings.chunk_overlap, max_file_bytes=int(settings.max_file_mb * 1e6))
                report = evaluate_qa(
                    store=store, embedder=embedder, generator=generator, items=items, gold_paths=gold, k=k,
                    ask_options=settings.ask_options,
                    on_progress=bars)
        finally:
            bars.close()
            generator.close()
    result = report.as_dict()
    path = _write_results(settings, out, "qa", questions.stem, result)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"{report.questions} questions: {report.answerable} answerable, {report.unanswerable} unanswerable")
    typer.echo(f"gold document in top {report.k}   {report.hit_at_k:.1%}")
    typer.echo(f"user reads the gold answer {report.reads_gold:.1%} of answerable (answer + its sentence, or the passage)")
    typer.echo(f"verified short answers    {report.answered:.1%} of answerable, F1 {report.short_answer_f1:.3f}")
    typer.echo(f"exact match / token F1    {report.exact_match:.1%} / {report.f1:.3f} (every answerable question)")
    names = {"answer": "short answer", "quote": "passage that answers", "abstain": "\"do not say\""}
    for kind, o in report.outcomes.items():
        typer.echo(f"  {names[kind]:<22}  {o.share:6.1%} of answerable; holds gold {o.reads_gold:6.1%}; F1 {o.f1:.3f}")
    typer.echo(f"citation precision        {report.citation_precision:.1%} of answers' citations contain the answer "
               f"({report.flagged_citations} shown passages flagged as not supporting)")
    typer.echo(f"citations with gold       {report.citation_gold:.1%} of all citations contain a gold answer")
    typer.echo(f"\"do not say\", unanswerable {report.abstained_outright:.1%} (no short answer: {report.abstention:.1%})")
    typer.echo(f"\"do not say\", answerable   {report.false_abstention:.1%}")
    typer.echo(f"seconds per question      mean {report.seconds_mean:.2f}, p50 {report.seconds_p50:.2f}, "
               f"p95 {report.seconds_p95:.2f}; first byte p50 {report.seconds_first_byte_p50:.2f}")
    typer.echo(f"results: {_show_path(str(path))}")


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

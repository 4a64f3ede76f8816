"""Every line of text the ``edgellama`` command prints: status, answers, search results, summaries,
index and evaluation reports, and the one citation formatter ("file:lines page") they all use.

Standard library only and pure (data in, lines out), so the fast path (entry.py) and the typer CLI
print the same text, and library code may format a citation without importing the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["show_path", "cite", "status_lines", "resource_lines", "answer_tail", "answer_body", "marked_passage",
           "search_lines",
           "index_lines", "point_line", "summary_piece_lines", "summary_end", "retrieval_lines", "qa_lines",
           "selftest_step_line", "service_lines", "config_lines", "excerpt_lines", "export_lines", "import_lines"]

PAGE = " page {}"  # the citation's page as the library and the daemon's API write it
PAGE_IN_PARENS = " (page {})"  # ... and as the CLI prints it after an answer or a summary point


def show_path(path: str) -> str:
    """``path`` relative to the current folder when it is below it, else as is."""
    try:
        return os.path.relpath(path) if Path(path).is_relative_to(Path.cwd()) else path
    except ValueError:
        return path


def cite(line_start: int, line_end: int, page: int | None, *, path: str | None = None,
         page_form: str = PAGE, full_range: bool = False) -> str:
    """The one citation formatter: ``path:lines`` and the page. ``lines`` is ``12`` or ``12-14``
    (``full_range``: always ``start-end``, as search results show it); no path: the lines alone."""
    lines = f"{line_start}" if line_start == line_end and not full_range else f"{line_start}-{line_end}"
    text = lines if path is None else f"{path}:{lines}"
    return text + (page_form.format(page) if page else "")


def _cite_shown(c: Mapping[str, Any], *, with_path: bool = True) -> str:
    """A citation dict (the API's form) as the CLI prints it: the path shortened, the page in parentheses."""
    return cite(c["line_start"], c["line_end"], c["page"], path=show_path(c["path"]) if with_path else None,
                page_form=PAGE_IN_PARENS)


# -- status ---------------------------------------------------------------------------------------


def status_lines(report: dict, *, errors: bool) -> list[str]:
    """``edgellama status`` as text."""
    skipped = report["skipped_files"]
    out = [
        f"database     {report['db']} ({report['db_bytes'] / 1e6:.1f} MB, schema {report['schema_version']})",
        f"documents    {report['documents']} indexed, {report['skipped']} skipped",
        f"chunks       {report['chunks']} ({report['embeddings']} embeddings"
        + (f"; {report['unit_vectors']} log or transcript chunks with their entries' vectors)" if report.get("unit_vectors")
           else ")"),
        f"model        {report['model']}",
        f"embedder     {report['embed_model']}",
    ]
    daemon = report.get("daemon")
    if daemon:
        watcher = daemon["watcher"] or {}
        out.append(f"daemon       pid {daemon['pid']} on {daemon['socket']}, "
                   f"{'ready' if daemon['ready'] else daemon['stage']}, up {daemon['uptime_seconds']:.0f} s, "
                   f"queue {daemon['queue']['active']}/{daemon['queue']['max_queue'] + 1}")
        if daemon.get("restart_needed"):
            out.append(f"  warning: changed in the config, applied at the next restart: {', '.join(daemon['restart_needed'])}")
        if watcher:
            out.append(f"watching     {', '.join(watcher['folders']) or '(no folders)'}: {watcher['pending']} pending, "
                       f"{'indexing' if watcher['indexing'] else 'idle'}, {watcher['runs']} runs")
            out += [f"  {message}" for message in watcher.get("not_watched", {}).values()]
            out += [f"  unavailable {folder}: {reason}" for folder, reason in watcher.get("unavailable", {}).items()]
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


# -- ask and search -------------------------------------------------------------------------------


def marked_passage(answer: dict) -> str:
    """A quote's passage with the span that fits the question marked **like this** (Markdown, so
    chat clients show it in bold)."""
    passage, pointer = answer["answer"], answer.get("pointer") or ""
    at = passage.find(pointer) if pointer else -1
    return passage if at < 0 else f"{passage[:at]}**{pointer}**{passage[at + len(pointer):]}"


def answer_body(answer: dict) -> list[str]:
    """The outcome as the user reads it, without the sources (one wording for ``ask``, /ask's
    clients and the chat completions): a short answer with the sentences it stands in, the
    passage that answers, or "The documents do not say."."""
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
        out += [f"  {_cite_shown(s)}  ({s['heading']})" for s in answer["sources"]]
    return out, [f"note: passage {d['rank']} was {d['reason']}" for d in answer["dropped"]]


def search_lines(results: list[dict]) -> list[str]:
    """``edgellama search``: each match with its place, scores, heading and the start of its text."""
    if not results:
        return ["No matches."]
    out = []
    for n, r in enumerate(results, start=1):
        where = cite(r["line_start"], r["line_end"], r["page"], path=show_path(r["path"]), full_range=True)
        out.append(f"{n}. {where}  score {r['score']:.4f}  similarity {r['similarity']:.2f}")
        if r["heading"]:
            out.append(f"   {r['heading']}")
        snippet = " ".join(r["text"].split())
        out.append(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")
    return out


def index_lines(stats) -> list[str]:
    """``edgellama index``: the counts of an ``indexer.IndexStats``, then each skipped file."""
    return [
        f"Indexed in {stats.seconds:.1f} s: {stats.added} added, {stats.changed} changed, "
        f"{stats.unchanged} unchanged, {stats.removed} removed, {len(stats.skipped)} skipped"
        f"{f', {stats.vanished} deleted before they could be read' if stats.vanished else ''}"
        f"{f', {stats.ignored} of other types ignored' if stats.ignored else ''}; "
        f"{stats.chunks_written} chunks written, {stats.chunks_embedded} embedded"
        f"{f' (and {stats.units_embedded} log or transcript entries)' if stats.units_embedded else ''}."
    ] + [f"  skipped {show_path(skipped.path)}: {skipped.reason}" for skipped in stats.skipped] + [
        f"  unavailable {show_path(folder.path)}: {folder.reason}" for folder in stats.unavailable]


# -- summarize ------------------------------------------------------------------------------------


def point_line(point: dict) -> str:
    """One summary point with up to three of its citations."""
    where = "; ".join(_cite_shown(c) for c in point["citations"][:3])
    more = f" +{len(point['citations']) - 3} more" if len(point["citations"]) > 3 else ""
    return f"- {point['text']}  [{where}{more}]"


def _overview_lines(points: list[dict]) -> list[str]:
    return (["Overview:"] if points else []) + [point_line(point) for point in points]


def summary_piece_lines(event: str, data: dict, *, folder: bool) -> list[str]:
    """The lines of one streamed summary event (``section``, ``document``) as it arrives."""
    if event == "section":
        return ([f"## {data['heading']}  (lines {data['line_start']}-{data['line_end']})"]
                + [point_line(point) for point in data["points"]])
    if event == "document" and folder:
        first = data["overview"][0] if data["overview"] else None
        title = f" ({data['title']})" if data["title"] else ""
        cited = "; ".join(_cite_shown(c, with_path=False) for c in first["citations"][:3]) if first else ""
        return [f"- {show_path(data['path'])}{title}: " + (f"{first['text']}  [{cited}]" if first else "(no text)")]
    if event == "document":
        return _overview_lines(data["overview"])
    return []


def summary_end(result: dict) -> tuple[list[str], list[str]]:
    """What ``edgellama summarize`` prints after the streamed pieces: (stdout lines, stderr lines)."""
    out: list[str] = []
    if result["kind"] != "document" or not result["overview"]:
        out += _overview_lines(result["overview"])
    if result["kind"] == "topic" and not result["overview"]:
        out.append("The documents do not say.")
    st = result["stats"]
    err = [f"note: {note}" for note in result["notes"]]
    err.append(f"({result['method']}: {st['nodes']} nodes, {st['cached']} cached, {st['model_calls']} model calls, "
               f"{st['dropped_sentences']} unsupported sentences dropped, {st['seconds']:.1f} s)")
    return out, err


# -- show, export, import ---------------------------------------------------------------------------


def excerpt_lines(data: dict) -> list[str]:
    """``edgellama show``: the citation, the document's title, then each line, ``N:`` cited and ``N-``
    context (as grep -C marks them); a PDF shown whole gets a line before each page."""
    ranged = data["line_end"] > 0  # 0: every page of a PDF
    head = (cite(data["line_start"], data["line_end"], data["page"], path=show_path(data["path"]),
                 page_form=PAGE_IN_PARENS) if ranged else show_path(data["path"]))
    out = [head + (f"  {data['title']}" if data["title"] else "")]
    page = data["page"]
    for line in data["lines"]:
        if line["page"] != page:
            out.append(f"-- page {line['page']}")
            page = line["page"]
        out.append(f"{line['line']}{':' if line['cited'] else '-'} {line['text']}".rstrip())
    return out


def export_lines(report) -> list[str]:
    """``edgellama export``: a ``bundle.ExportReport``."""
    m = report.manifest
    c = m.counts
    return [f"Exported {c['documents']} documents ({c['chunks']} chunks, {c['embeddings']} vectors, "
            f"{c['skipped']} skipped) to {show_path(str(report.bundle))} in {report.seconds:.1f} s: "
            f"{m.database['bytes'] / 1e6:.1f} MB, sha256 {m.database['sha256'][:16]}…",
            f"roots: {', '.join(m.roots) or '(none)'}; model {m.embedding_model.name}; "
            f"chunks of {m.chunking.chunk_tokens} tokens, overlap {m.chunking.chunk_overlap}"]


def import_lines(report) -> list[str]:
    """``edgellama import``: a ``bundle.ImportReport``."""
    c = report.manifest.counts
    out = [f"Imported {c['documents']} documents ({c['chunks']} chunks, {c['embeddings']} vectors) into "
           f"{show_path(str(report.db))} in {report.seconds:.1f} s, replacing {report.replaced_documents} documents."]
    out += [f"  moved {old} -> {new} ({count} paths)" for old, new, count in report.moved]
    return out + [f"roots: {', '.join(report.roots) or '(none)'}; unchanged files there are not embedded again "
                  "by 'edgellama index'"]


# -- eval, selftest, service, config ----------------------------------------------------------------


def retrieval_lines(report, path: str) -> list[str]:
    """``edgellama eval retrieval``: an ``evaluate.RetrievalReport`` as a table; ``path`` the results file."""
    out = [f"{report.dataset}: {report.documents} documents ({report.chunks} chunks), {report.queries} queries; "
           f"indexed in {report.index_seconds:.1f} s ({report.chunks_embedded} chunks embedded)",
           f"{'mode':<8}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'queries/s':>11}"]
    for m in report.modes:
        out.append(f"{m.mode:<8}{m.ndcg_at_10:>9.4f}{m.recall_at_10:>8.4f}{m.recall_at_100:>8.4f}"
                   f"{m.mrr_at_10:>8.4f}{m.queries_per_second:>11.1f}")
        if m.short_rankings:
            out.append(f"  note: {m.short_rankings} queries ranked fewer than {report.settings.depth} documents")
    return out + [f"results: {show_path(path)}"]


_OUTCOME_NAMES = {"answer": "short answer", "quote": "passage that answers", "abstain": "\"do not say\""}


def qa_lines(report, path: str) -> list[str]:
    """``edgellama eval qa``: an ``evaluate.QaReport``; ``path`` the results file."""
    return [
        f"{report.questions} questions: {report.answerable} answerable, {report.unanswerable} unanswerable",
        f"gold document in top {report.k}   {report.hit_at_k:.1%}",
        f"user reads the gold answer {report.reads_gold:.1%} of answerable (answer + its sentences, or the passage)",
        f"verified short answers    {report.answered:.1%} of answerable, F1 {report.short_answer_f1:.3f}",
        f"exact match / token F1    {report.exact_match:.1%} / {report.f1:.3f} (every answerable question)",
        *(f"  {_OUTCOME_NAMES[kind]:<22}  {o.share:6.1%} of answerable; holds gold {o.reads_gold:6.1%}; F1 {o.f1:.3f}"
          for kind, o in report.outcomes.items()),
        f"citation precision        {report.citation_precision:.1%} of answers' citations contain the answer "
        f"({report.flagged_citations} shown passages flagged as not supporting)",
        f"citations with gold       {report.citation_gold:.1%} of all citations contain a gold answer",
        f"\"do not say\", unanswerable {report.abstained_outright:.1%} (no short answer: {report.abstention:.1%})",
        f"\"do not say\", answerable   {report.false_abstention:.1%}",
        f"seconds per question      mean {report.seconds_mean:.2f}, p50 {report.seconds_p50:.2f}, "
        f"p95 {report.seconds_p95:.2f}; first byte p50 {report.seconds_first_byte_p50:.2f}",
        f"results: {show_path(path)}",
    ]


def selftest_step_line(step) -> str:
    """One ``selftest.StepResult``."""
    return f"{'ok  ' if step.ok else 'FAIL'}  {step.name:<18} {step.seconds:6.1f} s  {step.detail}"


def service_lines(report) -> list[str]:
    """``edgellama service install|uninstall``: a ``service`` report, what was (or would be) done."""
    verb = {("install", True): "would write", ("install", False): "wrote",
            ("uninstall", True): "would remove", ("uninstall", False): "removed"}[report.action, report.dry_run]
    out = [report.unit_text] if report.dry_run and report.unit_text else []
    out += [f"{verb} {path}" for path in report.written]
    out += [f"kept {path}" for path in report.kept]
    out += [f"{'would run' if report.dry_run else 'ran'} {command}" for command in report.commands]
    out += [f"note: {note}" for note in report.notes]
    if report.action == "install" and not report.dry_run:
        scope = " --user" if report.scope == "user" else ""
        out.append(f"start it with: systemctl{scope} start edgellama")
    return out


def config_lines(*, config_file: Path, data_dir: Path, values: Mapping[str, Any], origins: Mapping[str, str],
                 keys: Iterable[str]) -> list[str]:
    """``edgellama config``: every setting, its value and where it came from."""
    keys = list(keys)
    out = [f"# config file: {config_file}{'' if config_file.exists() else ' (absent)'}",
           f"# data dir:    {data_dir}"]
    width = max(len(k) for k in keys)
    for key in keys:
        value = values[key]
        shown = "(bundled)" if value is None else value
        out.append(f"{key:<{width}} = {shown}    # {origins[key]}")
    return out

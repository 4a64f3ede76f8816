"""Index bundles (issue 20): `edgellama export` on the build box and `edgellama import` plus the first
`edgellama index` on an edge box (other root), against indexing the same documents from scratch there,
each a fresh `edgellama` process as a user runs it. corpus/ always; SciFact's 5,183 abstracts too
when not --quick (indexed once into a database with `eval retrieval --db`, which takes minutes).
Target: a bundle brings an edge box's index up faster than indexing from scratch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from ._common import PY, QUICK_FILES, ROOT, copy_corpus, info, isolated_env, report, temp_home

SCIFACT = Path(os.environ.get("EDGELLAMA_SCIFACT", ROOT.parent / "shared" / "data" / "scifact"))


def _cli(env: dict, *args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([PY, "-m", "edgellama", *args, "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"edgellama {' '.join(args)} failed: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def _round_trip(home: Path, name: str, build_db: Path, *, index_seconds: float, files: Path | None,
                edge_files: Path | None) -> None:
    """Export ``build_db``, import it on a fresh edge data dir, then (files only) index the edge copy."""
    build_env = isolated_env(home, EDGELLAMA_DB=str(build_db))
    export_s, exported = _cli(build_env, "export", str(home / f"{name}.bundle"))
    manifest = exported["manifest"]
    edge_env = isolated_env(home, EDGELLAMA_DB=str(home / "edge" / f"{name}.db"))
    roots = ["--root", f"{files}={edge_files}"] if files else []
    import_s, _ = _cli(edge_env, "import", str(home / f"{name}.bundle"), *roots)
    info(f"{name}: {manifest['counts']['documents']} documents, {manifest['counts']['chunks']} chunks, "
         f"{manifest['database']['bytes'] / 1e6:.1f} MB bundle; export {export_s:.1f} s, import {import_s:.1f} s "
         f"(processes, wall), indexing from scratch {index_seconds:.1f} s")
    total = import_s
    if edge_files is not None:
        reindex_s, stats = _cli(edge_env, "index", str(edge_files))
        info(f"{name}: first index on the edge box after import {reindex_s:.1f} s: "
             f"{stats['unchanged']} unchanged, {stats['chunks_embedded']} embedded")
        assert stats["chunks_embedded"] == 0, stats
        total += reindex_s
    report(f"bundle {name}: import (+ first index) on an edge box", value=total, unit="s",
           baseline_name="index from scratch", baseline=index_seconds, ratio=index_seconds / total,
           target="> 1x (faster than indexing)", met=total < index_seconds, reps=1,
           note=f"export {export_s:.1f} s on the build box")


def run(*, quick: bool) -> None:
    with temp_home() as home:
        (home / "build").mkdir()
        docs = copy_corpus(home / "build" / "docs", QUICK_FILES if quick else None)
        edge_docs = home / "edge" / "srv" / "docs"
        shutil.copytree(docs, edge_docs, copy_function=shutil.copy)  # new mtimes, as a plain copy makes them
        build_db = home / "build" / "corpus.db"
        index_s, _ = _cli(isolated_env(home, EDGELLAMA_DB=str(build_db)), "index", str(docs))
        _round_trip(home, "corpus", build_db, index_seconds=index_s, files=docs, edge_files=edge_docs)
        if quick or not (SCIFACT / "corpus.jsonl").exists():
            info("SciFact: skipped (--quick, or no dataset at $EDGELLAMA_SCIFACT)")
            return
        scifact_db = home / "build" / "scifact.db"
        wall, result = _cli(isolated_env(home, EDGELLAMA_DB=str(scifact_db)), "eval", "retrieval", str(SCIFACT),
                            "--db", str(scifact_db), "--mode", "bm25", "-q", "--out", str(home / "eval.json"))
        info(f"SciFact indexed in {result['index_seconds']:.1f} s ({wall:.1f} s with the bm25 evaluation)")
        _round_trip(home, "scifact", scifact_db, index_seconds=result["index_seconds"], files=None, edge_files=None)

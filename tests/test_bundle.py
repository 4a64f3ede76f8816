"""Index bundles (bundle.py): export a snapshot with its manifest, import it on another box with
another root; every check refuses before anything is replaced. Real SQLite files, the fake embedder
through the indexer's own seam."""

import json
import os
import shutil
import sqlite3
import threading
import time

import pytest

from edgellama.bundle import (BundleError, Chunking, ModelIdentity, export_bundle, import_bundle, model_identity,
                              parse_root_map, read_manifest)
from edgellama.errors import ConfigError
from edgellama.indexer import index_paths
from edgellama.store import Store

from fakes import BagOfWordsEmbedder

CHUNKING = Chunking(chunk_tokens=60, chunk_overlap=10)
MODEL = ModelIdentity(name=BagOfWordsEmbedder.name, sha256="f" * 64)


def index(db, embedder, *paths):
    with Store.open(db) as store:
        return index_paths(store=store, embedder=embedder, paths=list(paths), chunk_tokens=CHUNKING.chunk_tokens,
                           chunk_overlap=CHUNKING.chunk_overlap, max_file_bytes=1_000_000)


@pytest.fixture
def box(tmp_path):
    """The build box: a folder of documents, indexed."""
    docs = tmp_path / "build" / "manuals"
    (docs / "sub").mkdir(parents=True)
    (docs / "pump.md").write_text("# Pump\n\nThe alpha pump moves 40 litres a minute.\n\nIt runs at 3 bar.\n")
    (docs / "valve.txt").write_text("Valve notes.\n\nThe bravo valve opens at 3 bar.\n")
    (docs / "sub" / "filters.rst").write_text("Filters\n=======\n\nCharlie checks the filters every 14 days.\n")
    (docs / "blob.pdf").write_bytes(b"%PDF-1.4 not really")  # recorded as skipped, with its reason
    db = tmp_path / "build" / "edgellama.db"
    index(db, BagOfWordsEmbedder(), docs)
    return docs, db


def edge_copy(docs, tmp_path):
    """The same files on an edge box under another root (new mtimes: a copy, as rsync without -t makes)."""
    root = tmp_path / "edge" / "srv" / "manuals"
    shutil.copytree(docs, root, copy_function=shutil.copy)
    return root


def test_round_trip_moves_roots_and_reindex_embeds_nothing(tmp_path, box):
    docs, db = box
    report = export_bundle(db=db, bundle=tmp_path / "b1", model=MODEL, chunking=CHUNKING)
    manifest = json.loads((tmp_path / "b1" / "manifest.json").read_text())
    assert manifest["roots"] == [str(docs)]
    assert manifest["embedding_model"] == {"name": "fake-bow", "sha256": "f" * 64}
    assert manifest["chunking"] == {"chunk_tokens": 60, "chunk_overlap": 10}
    assert manifest["counts"]["documents"] == 3 and manifest["counts"]["skipped"] == 1
    assert manifest["counts"]["chunks"] == report.manifest.counts["chunks"] > 0
    assert manifest["schema_version"] >= 2 and len(manifest["database"]["sha256"]) == 64

    edge = edge_copy(docs, tmp_path)
    edge_db = tmp_path / "edge" / "data" / "edgellama.db"
    result = import_bundle(bundle=tmp_path / "b1", db=edge_db, model=MODEL, chunking=CHUNKING,
                           root_map=parse_root_map([f"{docs}={edge}"]))
    assert result.moved == ((str(docs), str(edge), 4),) and result.roots == (str(edge),)
    with Store.open(edge_db) as store:
        paths = sorted(store.documents())
        assert paths == sorted(str(edge / p) for p in ("pump.md", "valve.txt", "sub/filters.rst", "blob.pdf"))
        assert store.integrity_problems() == []
    embedder = BagOfWordsEmbedder()
    again = index(edge_db, embedder, edge)
    assert (again.added, again.changed, again.unchanged, again.chunks_embedded) == (0, 0, 3, 0)
    assert embedder.embedded == []
    # A file that differs on the edge box is read and embedded again; only its new chunk texts.
    (edge / "valve.txt").write_text("Valve notes.\n\nThe bravo valve opens at 4 bar.\n")
    changed = index(edge_db, embedder, edge)
    assert (changed.changed, changed.unchanged) == (1, 2) and changed.chunks_embedded >= 1


def test_export_refuses_an_existing_bundle_and_a_wrong_model(tmp_path, box):
    docs, db = box
    (tmp_path / "taken").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(db=db, bundle=tmp_path / "taken", model=MODEL, chunking=CHUNKING)
    with pytest.raises(BundleError, match="holds vectors of fake-bow, not of the configured embedder other"):
        export_bundle(db=db, bundle=tmp_path / "b2", model=ModelIdentity("other", "0" * 64), chunking=CHUNKING)
    assert not (tmp_path / "b2").exists() and not list(tmp_path.glob(".b2.partial-*"))


@pytest.fixture
def exported(tmp_path, box):
    docs, db = box
    export_bundle(db=db, bundle=tmp_path / "bundle", model=MODEL, chunking=CHUNKING)
    target = tmp_path / "edge" / "edgellama.db"
    index(target, BagOfWordsEmbedder(), edge_copy(docs, tmp_path))  # the edge box's own index, to be kept on refusal
    with Store.open(target) as store:
        before = sorted(store.documents())
    return docs, tmp_path / "bundle", target, before


def _unchanged(target, before):
    with Store.open(target) as store:
        assert sorted(store.documents()) == before
    assert not list(target.parent.glob(".edgellama.db.import-*"))


def test_import_refusals_replace_nothing(tmp_path, exported):
    docs, bundle, target, before = exported
    with pytest.raises(BundleError, match="embedded with fake-bow .* this box uses other"):
        import_bundle(bundle=bundle, db=target, model=ModelIdentity("other", "0" * 64), chunking=CHUNKING)
    with pytest.raises(BundleError, match=r"sha256 ffffffffffff\), this box uses fake-bow \(sha256 000000000000"):
        import_bundle(bundle=bundle, db=target, model=ModelIdentity("fake-bow", "0" * 64), chunking=CHUNKING)
    with pytest.raises(BundleError, match="chunked with chunk_tokens 60, chunk_overlap 10; this box uses 200, 30"):
        import_bundle(bundle=bundle, db=target, model=MODEL, chunking=Chunking(200, 30))
    with pytest.raises(BundleError, match="no indexed path lies under /nowhere"):
        import_bundle(bundle=bundle, db=target, model=MODEL, chunking=CHUNKING, root_map=[("/nowhere", "/x")])
    _unchanged(target, before)

    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    with open(damaged / "edgellama.db", "r+b") as fh:  # one byte flipped in the last page
        fh.seek(-100, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-100, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="does not match the SHA-256 in its manifest"):
        import_bundle(bundle=damaged, db=target, model=MODEL, chunking=CHUNKING)
    _unchanged(target, before)


def test_import_runs_the_integrity_check(tmp_path, exported):
    """A database whose hash matches its manifest but whose contents are broken (made so on the build
    box) is refused by the integrity check on the staging copy."""
    docs, bundle, target, before = exported
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    conn = sqlite3.connect(broken / "edgellama.db")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("DELETE FROM embeddings")  # chunks the dense search could not see
    conn.commit()
    conn.close()
    manifest = json.loads((broken / "manifest.json").read_text())
    import hashlib

    manifest["database"]["sha256"] = hashlib.sha256((broken / "edgellama.db").read_bytes()).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not sound: .*chunks without vector"):
        import_bundle(bundle=broken, db=target, model=MODEL, chunking=CHUNKING)
    _unchanged(target, before)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a bundle folder"):
        read_manifest(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no manifest.json"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match="not an EdgeLlama bundle manifest"):
        read_manifest(tmp_path / "empty")
    with pytest.raises(ConfigError, match="OLD=NEW"):
        parse_root_map(["/a"])


def test_model_identity_hashes_the_files_not_the_folder(tmp_path):
    one, two = tmp_path / "one" / "m", tmp_path / "two" / "m"
    for folder in (one, two):
        (folder / "1_Pooling").mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "1_Pooling" / "config.json").write_text("{\"mean\": true}")
        (folder / "README.md").write_text(f"notes from {folder}")  # differs: not hashed
    assert model_identity(one, name="m") == model_identity(two, name="m")
    (two / "config.json").write_text("{\"x\": 1}")
    assert model_identity(one, name="m") != model_identity(two, name="m")


def test_export_under_a_writer_and_import_under_readers(tmp_path, box):
    """Export while another connection keeps writing: the snapshot is sound. Import while readers
    keep reading the target: each read sees the old index or the new one, whole."""
    docs, db = box
    stop = threading.Event()
    writes = []

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            (docs / f"note-{n % 5}.md").write_text(f"# Note {n}\n\nNote number {n} says {n * 7} litres.\n")
            index(db, BagOfWordsEmbedder(), docs)
            writes.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(writes) < 2:
            time.sleep(0.01)
        export_bundle(db=db, bundle=tmp_path / "live", model=MODEL, chunking=CHUNKING)
    finally:
        stop.set()
        thread.join()
    with Store.open_readonly(tmp_path / "live" / "edgellama.db") as snap:
        assert snap.consistency().problems == []
    count = json.loads((tmp_path / "live" / "manifest.json").read_text())["counts"]["documents"]
    assert count >= 4

    target = tmp_path / "edge" / "edgellama.db"
    index(target, BagOfWordsEmbedder(), edge_copy(docs, tmp_path))
    with Store.open(target) as store:
        old = len(store.documents())
    seen, errors = set(), []
    stop.clear()

    def reader():
        with Store.open(target) as store:
            while not stop.is_set():
                try:
                    docs_now = store.documents()
                    chunks = store.stats().chunks
                    seen.add(len(docs_now))
                    assert chunks > 0
                except Exception as err:  # noqa: BLE001 - any failure of a reader fails the test
                    errors.append(err)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        time.sleep(0.05)
        import_bundle(bundle=tmp_path / "live", db=target, model=MODEL, chunking=CHUNKING)
        time.sleep(0.05)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert errors == []
    assert seen <= {old, count + 1} and count + 1 in seen  # + the skipped blob.pdf


def test_the_commands_refuse_in_one_line(tmp_path, exported):
    """The real commands: a bundle made with another embedder, a damaged manifest, a bad --root."""
    from conftest import run_cli

    docs, bundle, target, before = exported
    env = {"EDGELLAMA_DB": str(target)}
    other = run_cli("import", str(bundle), env=env)
    assert other.returncode == 1 and other.stderr.count("\n") == 1
    assert "embedded with fake-bow" in other.stderr and "this box uses all-MiniLM-L6-v2" in other.stderr
    missing = run_cli("import", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 1 and "is not a bundle folder" in missing.stderr
    usage = run_cli("import", str(bundle), "--root", "no-equals-sign", env=env)
    assert usage.returncode == 2 and "--root expects OLD=NEW" in usage.stderr
    taken = run_cli("export", str(bundle), env=env)
    assert taken.returncode == 1 and "already exists" in taken.stderr
    _unchanged(target, before)


# -- end to end: the real command, a writing daemon, the real models ----------------------------------


@pytest.mark.models
def test_export_under_a_writing_daemon_then_import_ask_and_index_on_a_fresh_box(tmp_path, shared_data):
    import signal

    from conftest import run_cli
    from daemon_harness import Daemon, call, eventually

    (tmp_path / "build").mkdir()
    daemon = Daemon(tmp_path / "build", shared_data)
    try:
        daemon.wait_ready()
        assert eventually(lambda: call(daemon.socket, "GET", "/status")[1]["documents"] == 3, timeout=120)
        stop, writes = threading.Event(), []

        def writer():  # the daemon keeps indexing these while the export reads its database
            n = 0
            while not stop.is_set():
                n += 1
                (daemon.docs / f"note-{n % 4}.md").write_text(f"# Note {n}\n\nPump {n} moves {n * 3} litres.\n")
                writes.append(n)
                time.sleep(0.3)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert eventually(lambda: call(daemon.socket, "GET", "/status")[1]["documents"] >= 5, timeout=60)
            exported = daemon.cli("export", str(tmp_path / "fleet.bundle"), "--json")
        finally:
            stop.set()
            thread.join()
        assert exported.returncode == 0, exported.stderr
        manifest = json.loads(exported.stdout)["manifest"]
        assert manifest["roots"] == [str(daemon.docs)] and manifest["embedding_model"]["name"] == "all-MiniLM-L6-v2"
        assert manifest["counts"]["documents"] >= 5

        # The same bundle back into the daemon's own database while questions keep coming: none fails.
        codes, stop = [], threading.Event()

        def searcher():
            while not stop.is_set():
                codes.append(call(daemon.socket, "POST", "/search", {"query": "battery bank", "k": 2})[0])

        searching = threading.Thread(target=searcher)
        searching.start()
        try:
            time.sleep(0.5)
            back = daemon.cli("import", str(tmp_path / "fleet.bundle"))
            daemon.process.send_signal(signal.SIGHUP)
            time.sleep(1.0)
        finally:
            stop.set()
            searching.join()
        assert back.returncode == 0, back.stderr
        assert codes and set(codes) == {200}, codes
        assert daemon.process.poll() is None
    finally:
        daemon.stop()

    # A fresh edge box: its own data dir and database, the three manuals under another root.
    edge = tmp_path / "edge" / "srv" / "manuals"
    edge.mkdir(parents=True)
    for name in ("power.md", "water-supply.md", "04-configuration.rst"):
        shutil.copy(daemon.docs / name, edge / name)
    env = {"XDG_DATA_HOME": str(shared_data), "XDG_CONFIG_HOME": str(tmp_path / "edge" / "config"),
           "EDGELLAMA_DB": str(tmp_path / "edge" / "data" / "edgellama.db")}
    imported = run_cli("import", str(tmp_path / "fleet.bundle"), "--root", f"{daemon.docs}={edge}", env=env)
    assert imported.returncode == 0, imported.stderr
    assert f"moved {daemon.docs} -> {edge}" in imported.stdout
    answer = json.loads(run_cli("ask", "How much energy can the battery bank store?", "--json", env=env).stdout)
    assert answer["kind"] == "answer" and "210" in answer["answer"]
    assert answer["sources"][0]["path"] == str(edge / "power.md")
    again = json.loads(run_cli("index", str(edge), "--json", env=env).stdout)
    assert (again["added"], again["changed"], again["unchanged"], again["chunks_embedded"]) == (0, 0, 3, 0)
    assert again["removed"] >= 2  # the notes the build box had and this one has not

"""A bounded load test: concurrent clients asking and searching over the UNIX socket while the
watcher takes a storm of 1,000 file changes. No deadlock, every request answered (200) or turned
away cleanly (503 with Retry-After), memory bounded, and the index consistent at the end."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import pytest

from daemon_harness import Daemon, call, eventually

pytestmark = pytest.mark.models

CLIENTS = 6
REQUESTS_PER_CLIENT = 8
FILES = 600  # created, then 200 of them rewritten and 200 deleted: 1,000 changes
RSS_LIMIT_MB = 1_500


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_clients_and_a_file_storm_together(tmp_path, shared_data):
    d = Daemon(tmp_path, shared_data, extra_env={"EDGELLAMA_MAX_QUEUE": "2"}, files=("station/power.md",))
    try:
        d.wait_ready()
        assert eventually(lambda: call(d.socket, "GET", "/status")[1]["documents"] == 1, timeout=60)
        results: list[tuple[int, float, dict]] = []
        rss: list[float] = []
        done = threading.Event()

        def client(n: int) -> None:
            for i in range(REQUESTS_PER_CLIENT):
                started = time.monotonic()
                if i % 2:
                    status, body, headers = call(d.socket, "POST", "/search", {"query": f"battery bank {n} {i}"})
                else:
                    status, body, headers = call(d.socket, "POST", "/ask", {"question": "How much energy can the battery bank store?"})
                results.append((status, time.monotonic() - started, headers))

        def storm() -> None:
            storm_dir = d.docs / "storm"
            storm_dir.mkdir()
            for i in range(FILES):
                (storm_dir / f"note-{i:04d}.md").write_text(f"# Note {i}\n\nValve {i} is checked every {i % 30 + 1} days.\n")
            for i in range(200):
                (storm_dir / f"note-{i:04d}.md").write_text(f"# Note {i}\n\nValve {i} was replaced in week {i % 52}.\n")
            for i in range(400, 600):
                (storm_dir / f"note-{i:04d}.md").unlink()

        def sample() -> None:
            while not done.is_set():
                rss.append(_rss_mb(d.process.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        threads = [threading.Thread(target=storm)] + [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
            assert not t.is_alive(), "a client or the storm hung"
        clients_seconds = time.monotonic() - started
        # The storm settles: 400 notes remain, plus power.md.
        assert eventually(lambda: call(d.socket, "GET", "/status")[1]["documents"] == 401, timeout=300)
        storm_seconds = time.monotonic() - started
        done.set()
        sampler.join()

        statuses = [r[0] for r in results]
        assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
        assert set(statuses) <= {200, 503}, statuses
        assert all(r[2].get("Retry-After") for r in results if r[0] == 503)
        assert statuses.count(200) >= len(statuses) // 2
        assert max(rss) < RSS_LIMIT_MB, f"daemon RSS peaked at {max(rss):.0f} MB"

        status = call(d.socket, "GET", "/status")[1]
        assert status["daemon"]["watcher"]["errors"] == []
        # Rewritten notes say the new text, deleted ones are gone, nothing is indexed twice.
        hits = call(d.socket, "POST", "/search", {"query": "Valve 17 was replaced in week 17", "k": 3})[1]["results"]
        assert hits[0]["path"].endswith("note-0017.md") and "replaced" in hits[0]["text"]
        for r in call(d.socket, "POST", "/search", {"query": "Valve 450 is checked", "k": 10})[1]["results"]:
            assert not r["path"].endswith("note-0450.md")
        latencies = sorted(r[1] for r in results if r[0] == 200)
        figures = {
            "requests": len(results), "ok": statuses.count(200), "busy_503": statuses.count(503),
            "p50_seconds": round(statistics.median(latencies), 3),
            "p95_seconds": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            "clients_seconds": round(clients_seconds, 1), "storm_settled_seconds": round(storm_seconds, 1),
            "rss_peak_mb": round(max(rss)), "documents": status["documents"], "chunks": status["chunks"],
        }
        print("\nLOAD", json.dumps(figures))
    finally:
        d.process.terminate()
        assert d.process.wait(timeout=60) == 0
        d.stop()

    from edgellama.store import Store

    with Store.open(Path(d.env["EDGELLAMA_DB"]), create=False) as store:
        assert store.integrity_problems() == []
        stats = store.stats()
        assert stats.documents == 401

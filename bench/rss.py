"""Daemon memory (RSS after loading both bundled models and answering one question) against the
sum of each model loaded alone in its own fresh process (raw llama_cpp with one prompt evaluated;
raw SentenceTransformer encoding the same chunk texts the daemon indexed). Target: <= 1.0x; each part reported."""

from __future__ import annotations

import subprocess

from ._common import PY, Daemon, Worker, corpus_copy, info, model_paths, report, rss_mb, temp_home, threads


def run(*, quick: bool) -> None:
    from edgellama.embed import bundled_embedder_path

    _, q4_0 = model_paths()
    with temp_home() as home:
        docs = corpus_copy(home, quick=True)
        with Daemon(home, folders=(docs,)) as daemon:
            daemon.wait_idle()
            list(daemon.client.events("/ask", {"question": "How much does the treated water tank hold?", "stream": True}))
            d_rss, d_hwm = rss_mb(daemon.process.pid)
        with Worker("llama", model_path=str(q4_0), threads=threads()) as w:
            w.call("prompt_eval", prompt="The water tank holds 4,500 litres. " * 40)
            llama = w.call("rss")
        with Worker("indexer", threads=threads()) as w:  # the chunk texts the daemon embedded
            texts = w.call("texts", paths=[str(docs)])["texts"]
        with Worker("st", path=str(bundled_embedder_path()), threads=threads()) as w:
            w.call("encode", texts=texts, batch_size=32)
            st = w.call("rss")
    python = float(subprocess.run([PY, "-c", "import numpy, sqlite3; print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"],
                                  capture_output=True, text=True, check=True).stdout) / 1024
    alone = llama["rss_mb"] + st["rss_mb"]
    info(f"llama_cpp alone {llama['rss_mb']:.0f} MB (peak {llama['hwm_mb']:.0f}), sentence-transformers alone "
         f"{st['rss_mb']:.0f} MB (peak {st['hwm_mb']:.0f}), bare python+numpy {python:.0f} MB; "
         f"daemon {d_rss:.0f} MB (peak {d_hwm:.0f})")
    info(f"daemon beyond the two models: {d_rss - alone:+.0f} MB (one interpreter is shared: "
         f"the sum counts python twice, ~{python:.0f} MB)")
    report("daemon RSS, both models", value=d_rss, unit="MB", baseline_name="sum of each model alone",
           baseline=alone, ratio=d_rss / alone, target="<= 1.0x", met=d_rss / alone <= 1.0, reps=1)

"""EdgeLlama benchmarks: each figure against a baseline measured in the same run (issue 10).

``python -m bench`` runs them all, ``python -m bench NAME ...`` some, ``--quick`` a smoke run of a
few seconds each. Timing lives here, never in tests: tests/test_bench.py only checks that each
benchmark runs and prints its ratio.
"""

BENCHMARKS = (
    "generation",  # tokens/s through the daemon API vs raw llama_cpp.Llama
    "ttft",  # ask's first token through the warm daemon vs raw prompt eval of the same tokens
    "warm_cold",  # ask through the warm daemon vs a cold `ask --no-daemon`
    "requant",  # prompt eval of the requantized Q4_0 vs the shipped Q4_1
    "client_start",  # `edgellama status` against a daemon vs `python -c pass`
    "indexing",  # chunks/s of the indexer vs raw SentenceTransformer.encode
    "reindex",  # one edited file in a big folder vs the full index
    "vectors",  # top-10 over 10k/100k/1M vectors vs numpy brute force
    "rss",  # daemon memory vs each model alone
    "extract_helper",  # PDF/HTML extraction in the deadline helper process vs in-process
    "footprint",  # issue 19: daemon RSS and cold ask with the llama.cpp embedder vs torch in process
    "context_budget",  # answer quality and prompt eval against context tokens vs the largest setting
    "bundle",  # export, import and the first index on an edge box vs indexing from scratch
    "summarize_events",  # key events kept by summaries of the dev documents vs all key events (issue 21)
)

"""The in-memory vector matrix: exact top-k, and a shared cache that follows the database."""

import numpy as np

from edgellama.indexer import index_paths
from edgellama.retrieve import search
from edgellama.store import Store
from edgellama.vectors import VectorCache, VectorMatrix, load_vectors

from fakes import BagOfWordsEmbedder


def test_top_k_is_the_exact_order_of_a_full_sort():
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((5000, 32)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = np.arange(100, 5100, dtype=np.int64)
    vm = VectorMatrix(ids, matrix, "m", {int(c): i for i, c in enumerate(ids)})
    query = matrix[42]
    sims = vm.similarities(query)
    assert vm.top(sims, 10) == [int(ids[i]) for i in np.argsort(-sims)[:10]]
    assert vm.top(sims, 10)[0] == 142
    assert len(vm.top(sims, 10_000)) == 5000


def test_the_cache_reloads_only_after_a_commit(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("The alpha pump moves 40 litres a minute.\n")
    emb = BagOfWordsEmbedder()
    with Store.open(tmp_path / "v.db") as writer:
        index_paths(store=writer, embedder=emb, paths=[docs], chunk_tokens=60, chunk_overlap=10, max_file_bytes=10**6)
        cache = VectorCache(tmp_path / "v.db")
        first = cache.get(model=emb.name)
        assert len(first) == 1 and cache.get(model=emb.name) is first and cache.reloads == 1

        (docs / "b.md").write_text("The bravo valve opens at 3 bar.\n")
        index_paths(store=writer, embedder=emb, paths=[docs], chunk_tokens=60, chunk_overlap=10, max_file_bytes=10**6)
        second = cache.get(model=emb.name)
        assert len(second) == 2 and cache.reloads == 2
        hits = search(store=writer, embedder=emb, query="bravo valve", k=1, vectors=second)
        assert hits[0].chunk.path.endswith("b.md")
        assert len(load_vectors(writer, model=emb.name)) == 2
        cache.close()

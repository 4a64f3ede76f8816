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


def _clustered(rows: int, dim: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((rows // 100, dim), dtype=np.float32)
    matrix = centres[rng.integers(0, len(centres), rows)] + 0.6 * rng.standard_normal((rows, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def test_int8_candidates_rescored_in_float32_find_the_exact_top_10():
    import torch  # noqa: F401 - the int8 pass runs only where torch is loaded already (the torch embedder)

    matrix = _clustered(30_000, 384)
    ids = np.arange(30_000, dtype=np.int64) * 3 + 7
    vm = VectorMatrix(ids, matrix, "m", {int(c): i for i, c in enumerate(ids)})
    rng = np.random.default_rng(11)
    hits = 0
    for row in rng.integers(0, 30_000, 20):
        query = matrix[row] + 0.3 * rng.standard_normal(384).astype(np.float32)
        query /= np.linalg.norm(query)
        exact_ids, exact_sims = vm.nearest(query, 10, use_int8=False)
        assert exact_ids == [int(ids[i]) for i in np.argsort(-(matrix @ query))[:10]]
        got_ids, got_sims = vm.nearest(query, 10, use_int8=True)
        hits += len(set(got_ids) & set(exact_ids))
        # the returned similarities are exact float32 ones, not the int8 estimates
        np.testing.assert_allclose(got_sims, matrix[[vm.position[c] for c in got_ids]] @ query, rtol=1e-6)
    assert hits / 200 >= 0.99
    assert vm._int8 and vm._int8[0] is not None  # the int8 copy was made (torch has the kernel)


def test_similarity_of_given_chunks_is_exact_and_skips_unknown_ids():
    matrix = _clustered(1000, 48)
    ids = np.arange(1000, dtype=np.int64)
    vm = VectorMatrix(ids, matrix, "m", {int(c): i for i, c in enumerate(ids)})
    sims = vm.similarity(matrix[5], [5, 17, 999_999])
    assert set(sims) == {5, 17} and abs(sims[5] - 1.0) < 1e-5
    # a dimension the int8 kernel cannot take falls back to exact search
    assert vm.nearest(matrix[5], 3, use_int8=True)[0][0] == 5


def test_without_torch_loaded_search_stays_exact_and_torch_stays_out():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from edgellama.vectors import VectorMatrix;"
            "m = np.random.default_rng(1).standard_normal((25_000, 384)).astype(np.float32);"
            "m /= np.linalg.norm(m, axis=1, keepdims=True); ids = np.arange(25_000);"
            "vm = VectorMatrix(ids, m, 'm', {int(i): int(i) for i in ids});"
            "assert vm.nearest(m[5], 3)[0][0] == 5; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

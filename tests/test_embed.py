"""The embedder's precision: bfloat16 where the CPU has it natively, and vectors that stay comparable."""

from __future__ import annotations

import numpy as np
import pytest

from edgellama.config import resolve_settings
from edgellama.embed import load_embedder, native_bf16, resolve_precision
from edgellama.errors import ConfigError


def test_auto_precision_follows_the_cpu():
    assert resolve_precision("auto") == ("bfloat16" if native_bf16() else "float32")
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"


def test_precision_setting_is_validated(monkeypatch):
    assert resolve_settings().embed_precision == "auto"
    monkeypatch.setenv("EDGELLAMA_EMBED_PRECISION", "int4")
    with pytest.raises(ConfigError, match="embed_precision"):
        resolve_settings()


def test_bfloat16_vectors_match_float32():
    """Stored vectors written at either precision must be interchangeable: same ranking, cosine ~1."""
    texts = ["The coolant loop pressure must stay between 2 and 3 bar.",
             "Replace the air filter every 90 days or when the indicator turns red.",
             "SQLite keeps the whole database in a single file on disk."]
    full = load_embedder(None, threads=2, precision="float32").embed(texts)
    half = load_embedder(None, threads=2, precision="bfloat16").embed(texts)
    assert full.dtype == half.dtype == np.float32
    cosines = (full * half).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    query = load_embedder(None, threads=2, precision="float32").embed(["how often is the air filter replaced"])[0]
    assert int(np.argmax(full @ query)) == int(np.argmax(half @ query)) == 1


def test_rows_come_back_in_the_order_given_however_the_texts_are_batched():
    """The embedder batches texts of equal length in tokens together (less padding): each row must
    still be its own text's vector, in the order given."""
    texts = [("word " * n).strip() + f" about topic {n}" for n in (3, 180, 40, 1, 120, 7, 60, 15, 200, 90)]
    embedder = load_embedder(None, threads=2, precision="float32", batch_size=3)
    together = embedder.embed(texts)
    one_by_one = np.stack([embedder.embed([text])[0] for text in texts])
    assert (together * one_by_one).sum(axis=1).min() > 0.9999


def test_the_daemons_background_embedding_keeps_the_order_given():
    from edgellama.daemon import Priority, SharedEmbedder

    from fakes import BagOfWordsEmbedder

    texts = [f"{'filler ' * n}valve {n}" for n in (30, 2, 17, 1, 9, 25, 4, 12, 40, 3, 8)]
    shared = SharedEmbedder(BagOfWordsEmbedder(), priority=Priority(), background_batch=4)
    np.testing.assert_array_equal(shared.embed_background(texts), BagOfWordsEmbedder().embed(texts))
    assert shared.embed_background([]).shape[0] == 0


def _model_folder_with(tmp_path, **sentence_transformers_config):
    """The bundled model's files, linked, with its own config_sentence_transformers.json."""
    import json

    from edgellama.embed import bundled_embedder_path

    folder = tmp_path / "model"
    folder.mkdir()
    for item in bundled_embedder_path().iterdir():
        if item.name != "config_sentence_transformers.json":
            (folder / item.name).symlink_to(item)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(sentence_transformers_config))
    return folder


@pytest.mark.parametrize("settings", [{}, {"prompts": {"passage": "passage: "}, "default_prompt_name": "passage"}],
                         ids=["plain", "default prompt"])
def test_each_thread_computes_what_sentence_transformers_encode_does(tmp_path, settings):
    """The embedder runs the model's forward pass itself (one batch per thread): its vectors are the
    ones ``encode`` gives, with the model's default prompt when it has one."""
    texts = [f"Check valve {n} before the pump starts; " + "the coolant loop holds pressure. " * n
             for n in (1, 9, 3, 20, 5, 2, 14)]
    embedder = load_embedder(_model_folder_with(tmp_path, **settings), threads=2, precision="float32",
                             batch_size=2)
    ours = embedder.embed(texts)
    theirs = embedder._load().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert (ours * theirs).sum(axis=1).min() > 0.99999
    if settings:
        plain = load_embedder(None, threads=2, precision="float32").embed(texts)
        assert (ours * plain).sum(axis=1).max() < 0.9999  # the prompt was used


def test_threads_started_after_embedding_keep_the_thread_setting():
    """Each embedding thread runs torch on one thread; torch stores that process-wide for threads
    started later (the daemon's request threads), so the embedder puts the setting back."""
    import threading

    import torch

    embedder = load_embedder(None, threads=2, batch_size=2)
    embedder.embed(["first text", "second text is longer than the first", "third", "fourth one here"])
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [torch.get_num_threads()] and seen[0] > 1


def test_a_long_text_does_not_pad_the_short_ones():
    """``ask`` embeds a chunk's sentences: one 126-token table row among short sentences padded all
    of them to 128 tokens. Batches now pad to at most PADDING times their texts' own tokens."""
    from edgellama.embed import PADDING

    texts = ["| " + " | ".join(f"valve {n} open" for n in range(40)) + " |"]
    texts += [f"Check valve {n} before the pump starts." for n in range(20)]
    texts += ["The coolant loop holds pressure " + "and the gauge reads two bar " * n for n in (3, 4, 8)]
    embedder = load_embedder(None, threads=2, batch_size=16)
    lengths = [embedder.count_tokens(text) + 2 for text in texts]
    batches = embedder._batches(texts)
    assert sorted(i for batch in batches for i in batch) == list(range(len(texts)))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) * max(lengths[i] for i in batch) <= PADDING * sum(lengths[i] for i in batch)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    assert padded < 1.25 * sum(lengths) < len(texts) * max(lengths) / 2

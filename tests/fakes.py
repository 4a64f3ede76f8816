"""Fakes that plug into the same seams production uses (the Embedder and Generator protocols)."""

from __future__ import annotations

import hashlib
import re
from typing import Iterator, Sequence

import numpy as np

from edgellama.chunking import approx_tokens
from edgellama.generate import GenerationStats


class BagOfWordsEmbedder:
    """Hashes words into a small normalized vector: fast, deterministic, topical enough for tests."""

    name = "fake-bow"
    dim = 64
    max_input_tokens = 512

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


class ScriptedGenerator:
    """Replies with a fixed text, recording the prompts it was given."""

    name = "scripted"
    n_ctx = 2048

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []
        self.last_stats: GenerationStats | None = None

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def stream(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Iterator[str]:
        self.prompts.append(prompt)
        for word in self.reply.split(" "):
            yield word + " "
        self.last_stats = GenerationStats(self.count_tokens(prompt), 0.01, len(self.reply.split()), 0.01, "stop")

    def stream_chat(self, messages: list[dict], *, max_tokens: int) -> Iterator[str]:
        return self.stream(messages[-1]["content"], max_tokens=max_tokens, stop=())

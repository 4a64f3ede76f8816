"""The resource governor: threads, context size, batch sizes, embed precision and quantization, decided
once from the machine (cores, cgroup quota and memory limit, free RAM, bf16) and the settings.

The one place these are chosen: the daemon, ``ask --no-daemon``, ``index``, the other commands, the
selftest and the benchmarks load their models from a ``ResourcePlan``, through ``Models``. Standard library only (``status`` imports it); ``plan_resources``
is pure, the machine and model facts are parameters, so tests can plan for made-up machines.

How n_ctx is checked against memory (the numbers come from measurements on this project's machine):
the process needs the GGUF file (its weights are mapped in whole), a fixed llama.cpp overhead
(compute buffers, libraries), the KV cache (``kv_bytes_per_token * n_ctx``, from the GGUF's metadata:
2 (K and V) x layers x KV heads x head size x 2 bytes of f16) and the embedder (sentence-transformers
with all-MiniLM-L6-v2: 556 MB RSS alone, bench/RESULTS.md row 9). SmolLM2-135M Q4_0 measured 226,
267, 312 and 402 MB RSS at n_ctx 512, 2048, 4096 and 8192: 22 KB a token, the metadata says 22.5 KiB.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .config import Settings, physical_cores

__all__ = ["Machine", "ModelFacts", "Planned", "ResourcePlan", "read_machine", "read_model_facts",
           "plan_resources", "current_plan", "load_planned_generator", "load_planned_embedder", "Models",
           "MB", "EMBEDDER_BYTES", "LLAMA_EMBEDDER_BYTES", "BULK_TEXTS", "N_CTX_MIN"]

MB = 1_000_000
EMBEDDER_BYTES = 560 * MB  # torch + sentence-transformers + all-MiniLM-L6-v2, measured 556 MB RSS alone
LLAMA_EMBEDDER_BYTES = 80 * MB  # the same model as an F16 GGUF on llama.cpp (45 MB of weights, buffers, tokenizer)
BUNDLED_N_CTX = 2048  # the bundled SmolLM2's default context: its prompts are ~1,300 tokens at most
# A call of this many texts goes to the torch worker process (auto backend); once it runs, every batch of
# the run does. Crossover measured by bench/footprint.py (2026-12-05, load 2): llama.cpp in process 4.58 s
# for 400 corpus chunks and 9.73 s for 1,000; the worker 5.60 s and 6.58 s, its start (torch import,
# model load) 4.2 s of it: break-even near 550 chunks.
BULK_TEXTS = 500
LLAMA_OVERHEAD_BYTES = 100 * MB  # llama.cpp beyond weights and KV: measured 83 MB (SmolLM2-135M, n_batch 512)
KV_BYTES_PER_FILE_BYTE = 1 / 4000  # no readable metadata: SmolLM2-135M has 1/4,000, Llama-3-8B 1/36,000
N_CTX_MIN = 512  # below this a cited answer does not fit: the lowest context the governor picks
N_CTX_STEP = 256
N_BATCH = 512  # llama.cpp's default; 128 saves only 13 MB (measured) and slows prompt eval


@dataclass(frozen=True)
class Machine:
    """Facts about the box this process runs on, as ``read_machine`` finds them."""

    physical_cores: int  # within the CPUs this process may use
    logical_cpus: int  # CPUs this process may run on (affinity / cpuset)
    cpu_quota: float | None  # cgroup CPU bandwidth in CPUs (cpu.max 150000 100000 -> 1.5); None: no quota
    memory_limit_bytes: int | None  # cgroup memory.max or memory.high, the lower; None: no limit
    memory_used_bytes: int | None  # cgroup memory.current (counts against the limit)
    mem_available_bytes: int  # MemAvailable from /proc/meminfo
    native_bf16: bool  # AVX512-BF16 or AMX: bfloat16 faster than float32

    @property
    def memory_budget_bytes(self) -> int:
        """What this process may still take: free RAM, and the room left under the cgroup limit."""
        budget = self.mem_available_bytes
        if self.memory_limit_bytes is not None:
            budget = min(budget, self.memory_limit_bytes - (self.memory_used_bytes or 0))
        return max(0, budget)

    def describe(self) -> str:
        quota = f"cgroup quota {self.cpu_quota:g} CPUs" if self.cpu_quota is not None else "no CPU quota"
        limit = (f"cgroup memory limit {self.memory_limit_bytes / MB:.0f} MB"
                 if self.memory_limit_bytes is not None else "no memory limit")
        return (f"{self.physical_cores} physical cores, {self.logical_cpus} CPUs, {quota}; "
                f"{self.mem_available_bytes / MB:.0f} MB available, {limit}; "
                f"bfloat16 {'native' if self.native_bf16 else 'emulated'}")


@dataclass(frozen=True)
class ModelFacts:
    """What the governor needs from the GGUF file (``read_model_facts``)."""

    path: Path
    file_bytes: int
    kv_bytes_per_token: int
    n_ctx_train: int | None
    source: str  # how kv_bytes_per_token was found, for the reasons

    @property
    def fixed_bytes(self) -> int:
        """Weights plus llama.cpp's overhead: what the model costs at any n_ctx."""
        return self.file_bytes + max(LLAMA_OVERHEAD_BYTES, self.file_bytes // 10)

    def bytes_at(self, n_ctx: int) -> int:
        return self.fixed_bytes + self.kv_bytes_per_token * n_ctx


@dataclass(frozen=True)
class Planned:
    value: Any
    reason: str


@dataclass(frozen=True)
class ResourcePlan:
    """Every value the models are loaded with, each with why it was chosen."""

    threads: Planned  # llama.cpp generation and prompt eval
    embed_threads: Planned  # torch threads of the embedder
    n_ctx: Planned
    n_batch: Planned
    embed_batch_size: Planned
    embed_precision: Planned  # float32 or bfloat16 (never auto)
    embed_backend: Planned  # llama, torch, or llama+worker (auto: llama.cpp in process, torch in a worker for bulk)
    requantize: Planned  # the bundled model is requantized to Q4_0
    machine: Machine
    model: ModelFacts | None
    warnings: tuple[str, ...] = field(default=())

    VALUES = ("threads", "embed_threads", "n_ctx", "n_batch", "embed_batch_size", "embed_precision", "embed_backend",
              "requantize")

    @property
    def embedder_bytes(self) -> int:
        """What the embedder costs this process: torch in process, or llama.cpp (a bulk worker is
        its own process, started only while a large batch is embedded)."""
        return EMBEDDER_BYTES if self.embed_backend.value == "torch" else LLAMA_EMBEDDER_BYTES

    def as_dict(self) -> dict:
        """JSON-ready, for ``status``: each value with its reason, the machine, the warnings."""
        return {
            "values": {name: asdict(getattr(self, name)) for name in self.VALUES},
            "machine": {**asdict(self.machine), "memory_budget_bytes": self.machine.memory_budget_bytes,
                        "summary": self.machine.describe()},
            "model": None if self.model is None else {**asdict(self.model), "path": str(self.model.path)},
            "warnings": list(self.warnings),
        }


# -- reading the machine ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_dirs(root: Path) -> list[tuple[str, Path]]:
    """(version, folder) of this process's cgroups, innermost first, then each ancestor up to the mount:
    a limit set on a parent (a container, a systemd slice) binds the children too."""
    found: list[tuple[str, Path]] = []
    mounts: dict[str, tuple[Path, str]] = {}  # "2" or a v1 controller -> (mount point, cgroup root of the mount)
    for line in (_read(root / "proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        parts, kinds = left.split(), right.split()
        if len(parts) < 5 or not kinds:
            continue
        mount_root, point = parts[3], Path(root, parts[4].lstrip("/"))
        if kinds[0] == "cgroup2":
            mounts.setdefault("2", (point, mount_root))
        elif kinds[0] == "cgroup" and len(kinds) > 2:
            for option in kinds[2].split(","):
                if option in ("cpu", "memory"):
                    mounts.setdefault(option, (point, mount_root))
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        keys = ["2"] if number == "0" and controllers == "" else [c for c in controllers.split(",") if c in mounts]
        for key in keys:
            if key not in mounts:
                continue
            point, mount_root = mounts[key]
            relative = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path.lstrip("/")
            folder = (point / relative).resolve() if relative != "." else point
            version = "2" if key == "2" else "1"
            while True:
                found.append((version, folder))
                if folder == point or point not in folder.parents:
                    break
                folder = folder.parent
    return found


def _cgroup_limits(root: Path) -> tuple[float | None, int | None, int | None]:
    """(CPU quota in CPUs, memory limit, memory used), the tightest over this cgroup and its ancestors;
    cgroup v2 (cpu.max, memory.max) or v1 (cpu.cfs_quota_us, memory.limit_in_bytes)."""
    quota: float | None = None
    limit: int | None = None
    used: int | None = None
    for version, folder in _cgroup_dirs(root):
        if version == "2":
            cpu = (_read(folder / "cpu.max") or "max").split()
            if cpu[0] != "max" and len(cpu) == 2 and cpu[0].isdigit() and cpu[1].isdigit() and int(cpu[1]):
                quota = min(quota or math.inf, int(cpu[0]) / int(cpu[1]))
            # memory.high (systemd's MemoryHigh=) throttles and reclaims: as binding as memory.max for a plan.
            highs = [v for v in (_read(folder / "memory.max"), _read(folder / "memory.high")) if v and v.isdigit()]
            memory = str(min(int(v) for v in highs)) if highs else None
            current = _read(folder / "memory.current")
        else:
            q, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if q and period and q.lstrip("-").isdigit() and period.isdigit() and int(q) > 0 and int(period):
                quota = min(quota or math.inf, int(q) / int(period))
            memory, current = _read(folder / "memory.limit_in_bytes"), _read(folder / "memory.usage_in_bytes")
        # v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages): anything above 2^60 is none.
        if memory and memory.isdigit() and int(memory) < 2 ** 60 and (limit is None or int(memory) < limit):
            limit = int(memory)
            used = int(current) if current and current.isdigit() else None
    return quota, limit, used


def _mem_available(root: Path) -> int:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def read_machine(*, root: Path = Path("/")) -> Machine:
    """The machine as this process sees it. ``root``: where /proc and /sys are (tests pass a made-up tree)."""
    from .embed import native_bf16

    real = root == Path("/")
    logical = len(os.sched_getaffinity(0)) if real and hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota, limit, used = _cgroup_limits(root)
    return Machine(
        physical_cores=max(1, min(physical_cores(), logical)) if real else logical,
        logical_cpus=logical, cpu_quota=quota, memory_limit_bytes=limit, memory_used_bytes=used,
        mem_available_bytes=_mem_available(root), native_bf16=native_bf16() if real else False,
    )


# -- reading the model -----------------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_metadata(fh: BinaryIO, wanted: set[str]) -> dict[str, Any]:
    """The scalar metadata of a GGUF file named in ``wanted`` (``{arch}`` stands for the architecture).
    Arrays such as the tokenizer's vocabulary are skipped; the reading stops once all are found, or at
    the tokenizer's keys, which llama.cpp's converters write after the model's own."""

    def take(fmt: str):
        size = struct.calcsize(fmt)
        data = fh.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string() -> str:
        return fh.read(take("<Q")).decode("utf-8", "replace")

    def skip(kind: int) -> None:
        if kind in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[kind]), 1)
        elif kind == 8:
            fh.seek(take("<Q"), 1)
        elif kind == 9:
            inner, count = take("<I"), take("<Q")
            if inner in _SCALARS:
                fh.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
            else:
                for _ in range(count):
                    skip(inner)
        else:
            raise ValueError(f"unknown GGUF value type {kind}")

    if fh.read(4) != b"GGUF" or take("<I") < 2:
        raise ValueError("not a GGUF v2+ file")
    take("<Q")  # tensor count
    found: dict[str, Any] = {}
    for _ in range(take("<Q")):
        key, kind = string(), take("<I")
        if key in wanted or key == "general.architecture":
            if kind in _SCALARS:
                found[key] = take(_SCALARS[kind])
            elif kind == 8:
                found[key] = string()
            else:
                skip(kind)
            if key == "general.architecture":
                arch = found[key]
                wanted = {name.replace("{arch}", arch) for name in wanted}
        else:
            if key.startswith("tokenizer.") and "general.architecture" in found:
                break
            skip(kind)
        if wanted <= found.keys():
            break
    return found


def _model_path(settings: Settings) -> Path | None:
    """The GGUF ``load_planned_generator`` will load (the shipped file while no Q4_0 copy exists: same
    architecture, a few percent larger)."""
    from .errors import ModelError
    from .generate import bundled_gguf, requantized_path

    if settings.model is not None:
        return settings.model
    try:
        shipped = bundled_gguf()
    except ModelError:
        return None
    copy = requantized_path(shipped, settings.models_dir)
    return copy if settings.requantize and copy.exists() else shipped


def read_model_facts(path: Path | None) -> ModelFacts | None:
    """Size, KV cache per token and trained context of a GGUF, or None when it cannot be read (loading
    it will say why)."""
    if path is None:
        return None
    wanted = {"{arch}.block_count", "{arch}.context_length", "{arch}.embedding_length",
              "{arch}.attention.head_count", "{arch}.attention.head_count_kv", "{arch}.attention.key_length",
              "{arch}.attention.value_length"}
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            meta = _gguf_metadata(fh, set(wanted))
    except (OSError, ValueError, struct.error):
        return None
    arch = meta.get("general.architecture", "")

    def get(name: str):
        return meta.get(name.replace("{arch}", arch))

    layers, width, heads = get("{arch}.block_count"), get("{arch}.embedding_length"), get("{arch}.attention.head_count")
    kv_heads = get("{arch}.attention.head_count_kv") or heads
    train = get("{arch}.context_length")
    if layers and width and heads and kv_heads:
        key_size = get("{arch}.attention.key_length") or width // heads
        value_size = get("{arch}.attention.value_length") or key_size
        per_token = layers * kv_heads * (key_size + value_size) * 2
        size_text = f"{key_size}" if key_size == value_size else f"({key_size} + {value_size}) / 2"
        source = f"GGUF metadata: {layers} layers x {kv_heads} KV heads x {size_text}, f16"
    else:
        per_token = max(1, int(size * KV_BYTES_PER_FILE_BYTE))
        source = "estimated from the file size (no attention metadata)"
    return ModelFacts(path=path, file_bytes=size, kv_bytes_per_token=per_token,
                      n_ctx_train=int(train) if train else None, source=source)


# -- planning --------------------------------------------------------------------------------------


def _user_set(settings: Settings, key: str) -> str | None:
    origin = settings.origins.get(key, "default")
    return None if origin == "default" else f"set in {origin}" if origin != "flag" else "set by a flag"


def _threads(machine: Machine) -> Planned:
    cores = machine.physical_cores
    reason = f"{cores} physical core{'s' if cores != 1 else ''}"
    if machine.cpu_quota is not None and machine.cpu_quota < cores:
        # Whole CPUs, rounded down (as uber-go/automaxprocs does): with more threads than the quota the
        # cgroup is throttled for the rest of each 100 ms period, and a token's threads wait out the pause.
        return Planned(max(1, math.floor(machine.cpu_quota)), f"{reason}, cgroup quota {machine.cpu_quota:g} CPUs")
    return Planned(max(1, cores), reason)


def _n_ctx(settings: Settings, machine: Machine, model: ModelFacts | None, warnings: list[str], *,
           embedder_bytes: int = EMBEDDER_BYTES) -> Planned:
    configured = settings.n_ctx
    user = _user_set(settings, "n_ctx")
    budget = machine.memory_budget_bytes - embedder_bytes
    if model is None:
        warnings.append("model file unreadable: n_ctx not checked against memory")
        return Planned(configured, user or "default (model size unknown)")
    need = model.bytes_at(configured)
    fits = (f"model {model.fixed_bytes / MB:.0f} MB (weights and llama.cpp) + KV cache "
            f"{model.kv_bytes_per_token * configured / MB:.0f} MB")
    room = (f"{machine.memory_budget_bytes / MB:.0f} MB free, {embedder_bytes / MB:.0f} MB of it "
            f"kept for the embedder")
    if user:
        if need > budget:
            warnings.append(f"n_ctx {configured} ({user}) needs {fits} = {need / MB:.0f} MB; {room}")
        if model.n_ctx_train and configured > model.n_ctx_train:
            warnings.append(f"n_ctx {configured} ({user}) is beyond the {model.n_ctx_train} tokens the model "
                            "was trained on: answers degrade past them")
        return Planned(configured, user)
    target, why = configured, f"default; {fits} fit in {room}"
    if settings.model is None and configured > BUNDLED_N_CTX:
        # The bundled model only ever sees a cited-answer prompt (context_tokens + examples + answer) or
        # a summary batch: 2048 holds either with room, and its KV cache is 47 MB smaller than at 4096.
        target = BUNDLED_N_CTX
        why = (f"default for the bundled model: its prompts (context_tokens {settings.context_tokens} + examples + "
               f"max_tokens {settings.max_tokens}) fit in {BUNDLED_N_CTX}; KV cache "
               f"{model.kv_bytes_per_token * BUNDLED_N_CTX / MB:.0f} MB, model {model.fixed_bytes / MB:.0f} MB, in {room}")
    if model.n_ctx_train and model.n_ctx_train < target:
        target, why = model.n_ctx_train, f"the model was trained on {model.n_ctx_train} tokens"
    if model.bytes_at(target) <= budget:
        return Planned(target, why)
    if model.bytes_at(N_CTX_MIN) > budget:
        warnings.append(f"not enough memory for the model at any context size: it needs {model.fixed_bytes / MB:.0f} MB "
                        f"+ KV {model.kv_bytes_per_token * N_CTX_MIN / MB:.0f} MB at n_ctx {N_CTX_MIN}; {room}. "
                        "Loading may fail or swap: free memory, raise the cgroup limit, or use a smaller model")
        return Planned(target, f"default, kept: lowering it would not make the model fit ({room})")
    fitting = (budget - model.fixed_bytes) // model.kv_bytes_per_token // N_CTX_STEP * N_CTX_STEP
    lowered = max(N_CTX_MIN, min(target, fitting))
    return Planned(lowered, f"lowered from {target}: {room}, the model takes {model.fixed_bytes / MB:.0f} MB "
                            f"and {model.kv_bytes_per_token / 1024:.1f} KiB a token of context")


def _embed_backend(settings: Settings, machine: Machine, model: ModelFacts | None) -> Planned:
    """Where embeddings are computed. ``auto``: llama.cpp in this process (no torch: 80 MB instead of
    560, a question embedded within milliseconds of start) and, for calls of ``BULK_TEXTS`` texts or more,
    torch in a worker process that exits when the batch is done, when the memory left can hold it."""
    user = _user_set(settings, "embed_backend")
    if settings.embed_backend != "auto":
        return Planned(settings.embed_backend, user or "default")
    if not _bert_folder(settings.embed_model):
        return Planned("torch", "auto: the embedding model is not a BERT folder llama.cpp can run")
    # The worker runs beside the loaded model: all of it must fit at once, or bulk stays on llama.cpp.
    beside = LLAMA_EMBEDDER_BYTES + (model.bytes_at(settings.n_ctx) if model is not None else 0)
    if machine.memory_budget_bytes < EMBEDDER_BYTES + beside:
        return Planned("llama", f"auto: {machine.memory_budget_bytes / MB:.0f} MB left cannot hold a torch worker "
                                f"({EMBEDDER_BYTES / MB:.0f} MB) beside the models ({beside / MB:.0f} MB): "
                                "bulk indexing on llama.cpp too")
    return Planned("llama+worker", f"auto: llama.cpp in process ({LLAMA_EMBEDDER_BYTES / MB:.0f} MB); batches of "
                                   f"{BULK_TEXTS}+ texts in a torch worker process ({EMBEDDER_BYTES / MB:.0f} MB "
                                   "while it runs), faster for bulk")


def _bert_folder(path: Path | None) -> bool:
    import json

    if path is None:
        try:
            from .embed import bundled_embedder_path

            path = bundled_embedder_path()
        except Exception:  # ModelError: not installed; loading will say so
            return True
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "bert" and (Path(path) / "model.safetensors").exists() \
        and (Path(path) / "tokenizer.json").exists()


def plan_resources(*, settings: Settings, machine: Machine, model: ModelFacts | None) -> ResourcePlan:
    """Decide every resource value from the settings, the machine and the model. A value the user set
    (file, environment, flag) is kept; a default is chosen for the machine. Nothing is cut silently:
    what cannot fit is in ``warnings``."""
    warnings: list[str] = []
    user = _user_set(settings, "threads")
    threads = Planned(settings.threads, user) if user else _threads(machine)
    if user and machine.cpu_quota is not None and settings.threads > math.ceil(machine.cpu_quota):
        warnings.append(f"threads {settings.threads} ({user}) exceed the cgroup quota of {machine.cpu_quota:g} CPUs: "
                        "throttled threads stall each other")
    embed_threads = Planned(threads.value, "same as threads" + (f" ({user})" if user else ""))
    backend = _embed_backend(settings, machine, model)
    n_ctx = _n_ctx(settings, machine, model, warnings,
                   embedder_bytes=EMBEDDER_BYTES if backend.value == "torch" else LLAMA_EMBEDDER_BYTES)
    user = _user_set(settings, "n_batch")
    if user:
        n_batch = Planned(settings.n_batch, user)
    elif settings.n_batch > n_ctx.value:
        n_batch = Planned(n_ctx.value, f"default {settings.n_batch}, at most n_ctx")
    else:
        n_batch = Planned(settings.n_batch, "default (llama.cpp's; 128 saves 13 MB and slows prompt eval)")
    user = _user_set(settings, "embed_batch_size")
    embed_batch = Planned(settings.embed_batch_size, user or "default: one batch per embedding thread, 16 measured best on 2 cores")
    user = _user_set(settings, "embed_precision")
    from .embed import resolve_precision

    chosen = resolve_precision(settings.embed_precision, native=machine.native_bf16)
    if settings.embed_precision != "auto":
        precision = Planned(chosen, user or "default")
    elif machine.native_bf16:
        precision = Planned(chosen, "auto: the CPU multiplies bfloat16 natively (1.7x float32's chunks/s)")
    else:
        precision = Planned(chosen, "auto: no native bfloat16 on this CPU (emulated bfloat16 is slower)")
    user = _user_set(settings, "requantize")
    if settings.model is not None:
        requantize = Planned(False, f"model file {_user_set(settings, 'model') or 'set'}: used as it is")
    elif user:
        requantize = Planned(settings.requantize, user)
    else:
        requantize = Planned(True, "default: Q4_0 is smaller than the shipped Q4_1 and its prompt eval 2.4x faster here (bench row 4)")
    if n_ctx.value < settings.context_tokens + settings.max_tokens:
        warnings.append(f"n_ctx {n_ctx.value} is below context_tokens {settings.context_tokens} + max_tokens "
                        f"{settings.max_tokens}: answers will drop passages (each drop is reported)")
    return ResourcePlan(threads=threads, embed_threads=embed_threads, n_ctx=n_ctx, n_batch=n_batch,
                        embed_batch_size=embed_batch, embed_precision=precision, embed_backend=backend,
                        requantize=requantize,
                        machine=machine, model=model, warnings=tuple(warnings))


def current_plan(settings: Settings) -> ResourcePlan:
    """The plan for this machine now and the configured model."""
    return plan_resources(settings=settings, machine=read_machine(), model=read_model_facts(_model_path(settings)))


def load_planned_generator(*, settings: Settings, plan: ResourcePlan):
    """The language model as planned (weights load on first use)."""
    from .generate import load_generator

    return load_generator(model=settings.model, models_dir=settings.models_dir, requantize_bundled=plan.requantize.value,
                          threads=plan.threads.value, n_ctx=plan.n_ctx.value, n_batch=plan.n_batch.value)


def load_planned_embedder(*, settings: Settings, plan: ResourcePlan):
    """The embedder as planned (weights load on first use; a GGUF copy of the model is written on first
    use of the llama.cpp backend)."""
    from .embed import BUNDLED_EMBEDDER, ProcessEmbedder, TieredEmbedder, bundled_embedder_path, load_embedder

    options = {"threads": plan.embed_threads.value, "precision": plan.embed_precision.value,
               "batch_size": plan.embed_batch_size.value}
    backend = plan.embed_backend.value
    if backend == "torch":
        return load_embedder(settings.embed_model, **options)
    from .embed_gguf import LlamaCppEmbedder

    folder = bundled_embedder_path() if settings.embed_model is None else Path(settings.embed_model)
    name = BUNDLED_EMBEDDER if settings.embed_model is None else folder.name
    small = LlamaCppEmbedder(folder, models_dir=settings.models_dir, name=name, threads=plan.embed_threads.value)
    bulk = ProcessEmbedder(folder, name=name, **options) if backend == "llama+worker" else None
    return TieredEmbedder(small, bulk, bulk_texts=BULK_TEXTS)


class Models:
    """The models and the database of one command (or the daemon, the selftest, a benchmark), loaded
    as one resource plan says: the plan is made once, on first use, and both models share it."""

    def __init__(self, settings: Settings, *, plan: ResourcePlan | None = None):
        self.settings = settings
        self._plan = plan

    @property
    def plan(self) -> ResourcePlan:
        if self._plan is None:
            self._plan = current_plan(self.settings)
        return self._plan

    def embedder(self):
        """A new embedder as planned (weights load on first use)."""
        return load_planned_embedder(settings=self.settings, plan=self.plan)

    def generator(self):
        """A new language model as planned (weights load on first use)."""
        return load_planned_generator(settings=self.settings, plan=self.plan)

    def open_store(self, *, create: bool = False, db: Path | None = None):
        """The settings' database (or ``db``), opened; ``create``: made (and migrated) if absent."""
        from .store import Store

        return Store.open(self.settings.db if db is None else db, create=create)

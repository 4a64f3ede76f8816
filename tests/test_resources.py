"""The resource governor: plans for made-up machines (through the ``machine`` and ``model`` seams), the
real machine and the real bundled GGUF read without error, and ``status`` printing the plan."""

import json
from pathlib import Path

import pytest

from edgellama.config import resolve_settings
from edgellama.resources import (EMBEDDER_BYTES, LLAMA_EMBEDDER_BYTES, MB, N_CTX_MIN, Machine, ModelFacts, plan_resources, read_machine,
                                 read_model_facts)

from conftest import run_cli

GIB = 1024 ** 3
# SmolLM2-135M Q4_0 as its GGUF says (test_the_bundled_gguf_metadata checks these against the file).
SMOLLM = ModelFacts(path=Path("SmolLM2-135M-Instruct.Q4_0.gguf"), file_bytes=91_726_912, kv_bytes_per_token=23_040,
                    n_ctx_train=8192, source="made up")


def machine(**overrides) -> Machine:
    facts = dict(physical_cores=2, logical_cpus=2, cpu_quota=None, memory_limit_bytes=None, memory_used_bytes=None,
                 mem_available_bytes=16 * GIB, native_bf16=False)
    return Machine(**{**facts, **overrides})


def plan(env: dict | None = None, flags: dict | None = None, model: ModelFacts | None = SMOLLM, **facts):
    settings = resolve_settings(env=env or {}, flags=flags)
    return plan_resources(settings=settings, machine=machine(**facts), model=model)


def test_a_roomy_two_core_machine_keeps_the_defaults():
    p = plan()
    assert (p.threads.value, p.embed_threads.value, p.n_ctx.value, p.n_batch.value, p.embed_batch_size.value) == \
        (2, 2, 2048, 512, 16)
    assert p.threads.reason == "2 physical cores"
    assert p.requantize.value is True and p.warnings == ()
    assert p.n_ctx.reason.startswith("default for the bundled model")
    own = plan(env={"EDGELLAMA_MODEL": "/models/llama-3.2-1b.gguf"})
    assert own.n_ctx.value == 4096 and "fit in" in own.n_ctx.reason


def test_one_core():
    p = plan(physical_cores=1, logical_cpus=1)
    assert p.threads.value == 1 and p.threads.reason == "1 physical core"
    assert p.embed_threads.value == 1


@pytest.mark.parametrize("quota, threads", [(0.5, 1), (1.5, 1), (2.0, 2), (8.0, 2)])
def test_the_cgroup_cpu_quota_caps_threads(quota, threads):
    p = plan(cpu_quota=quota)
    assert p.threads.value == threads
    if quota < 2:
        assert f"cgroup quota {quota:g} CPUs" in p.threads.reason


# The embedder in process (560 MB, as before llama.cpp embedded) and a model file of the user's own (the
# bundled model's default context is 2048): the memory rules below are about any model's 4096 default.
TORCH = {"EDGELLAMA_EMBED_BACKEND": "torch", "EDGELLAMA_MODEL": "/models/SmolLM2-135M-Instruct.Q4_0.gguf"}


def test_one_gib_of_ram_still_holds_the_small_model_at_4096():
    # 1 GiB - 560 MB for the embedder leaves ~510 MB: weights + llama.cpp ~192 MB + KV 94 MB fit.
    p = plan(env=TORCH, mem_available_bytes=GIB)
    assert p.n_ctx.value == 4096 and p.warnings == ()


def test_a_cgroup_memory_limit_counts_its_usage_and_lowers_n_ctx():
    p = plan(env=TORCH, memory_limit_bytes=GIB, memory_used_bytes=GIB - 800 * MB)
    assert p.machine.memory_budget_bytes == 800 * MB
    budget = 800 * MB - EMBEDDER_BYTES
    assert p.n_ctx.value < 4096 and p.n_ctx.value % 256 == 0
    assert SMOLLM.bytes_at(p.n_ctx.value) <= budget < SMOLLM.bytes_at(p.n_ctx.value + 256)
    assert p.n_ctx.reason.startswith("lowered from 4096")


def test_too_little_memory_for_any_context_is_a_warning_not_a_silent_cut():
    p = plan(env=TORCH, mem_available_bytes=600 * MB)
    assert p.n_ctx.value == 4096
    assert any("not enough memory for the model at any context size" in w for w in p.warnings)
    assert SMOLLM.bytes_at(N_CTX_MIN) > 600 * MB - EMBEDDER_BYTES


def test_a_small_context_that_cuts_the_prompt_budget_is_reported():
    p = plan(env={"EDGELLAMA_N_CTX": "600"})
    assert p.n_ctx.value == 600
    assert any("answers will drop passages" in w for w in p.warnings)


def test_values_the_user_set_are_kept_and_say_where_from():
    p = plan(env={"EDGELLAMA_THREADS": "4", "EDGELLAMA_N_BATCH": "128", "EDGELLAMA_EMBED_BATCH_SIZE": "8", **TORCH},
             flags={"n_ctx": 16384}, cpu_quota=1.0, mem_available_bytes=GIB)
    assert (p.threads.value, p.n_ctx.value, p.n_batch.value, p.embed_batch_size.value) == (4, 16384, 128, 8)
    assert p.threads.reason == "set in env EDGELLAMA_THREADS"
    assert p.embed_threads.value == 4
    assert p.n_ctx.reason == "set by a flag"
    warnings = " | ".join(p.warnings)
    assert "exceed the cgroup quota of 1 CPUs" in warnings
    assert "n_ctx 16384 (set by a flag) needs" in warnings  # 16384 x 22.5 KiB does not fit ~510 MB
    assert "beyond the 8192 tokens the model was trained on" in warnings


def test_the_embedder_runs_on_llama_cpp_with_a_torch_worker_for_bulk_when_memory_allows():
    roomy = plan()
    assert roomy.embed_backend.value == "llama+worker" and roomy.embedder_bytes == LLAMA_EMBEDDER_BYTES
    # Under MemoryMax=512M the worker cannot run beside the model: bulk stays on llama.cpp, and the
    # model keeps its full context, since the embedder takes 80 MB, not 560.
    small = plan(memory_limit_bytes=512 * MB, memory_used_bytes=0)
    assert small.embed_backend.value == "llama"
    assert "cannot hold a torch worker" in small.embed_backend.reason
    assert small.n_ctx.value == 2048 and small.warnings == ()
    assert SMOLLM.bytes_at(2048) + LLAMA_EMBEDDER_BYTES <= 512 * MB
    chosen = plan(env=TORCH).embed_backend
    assert (chosen.value, chosen.reason) == ("torch", "set in env EDGELLAMA_EMBED_BACKEND")
    assert plan(env=TORCH).embedder_bytes == EMBEDDER_BYTES


def test_embed_precision_follows_native_bf16_unless_set():
    assert plan(native_bf16=False).embed_precision.value == "float32"
    assert plan(native_bf16=True).embed_precision.value == "bfloat16"
    chosen = plan(env={"EDGELLAMA_EMBED_PRECISION": "float32"}, native_bf16=True).embed_precision
    assert (chosen.value, chosen.reason) == ("float32", "set in env EDGELLAMA_EMBED_PRECISION")


def test_requantize_only_for_the_bundled_model(tmp_path):
    assert plan(env={"EDGELLAMA_REQUANTIZE": "0"}).requantize.value is False
    own = plan(flags={"model": str(tmp_path / "own.gguf")}).requantize
    assert own.value is False and "used as it is" in own.reason


def test_an_unreadable_model_is_a_warning():
    p = plan(model=None)
    assert p.n_ctx.value == 4096 and any("not checked against memory" in w for w in p.warnings)


def test_the_plan_is_json_ready():
    data = json.loads(json.dumps(plan().as_dict()))
    assert set(data["values"]) == {"threads", "embed_threads", "n_ctx", "n_batch", "embed_batch_size",
                                   "embed_precision", "embed_backend", "requantize"}
    assert all(set(v) == {"value", "reason"} for v in data["values"].values())
    assert "2 physical cores" in data["machine"]["summary"]


def test_the_real_machine_reads_without_error():
    m = read_machine()
    assert 1 <= m.physical_cores <= m.logical_cpus
    assert m.mem_available_bytes > 0 and m.memory_budget_bytes > 0
    assert m.cpu_quota is None or m.cpu_quota > 0


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_limits_of_this_cgroup_and_its_parents(tmp_path):
    root = _tree(tmp_path, {
        "proc/self/mountinfo": "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n",
        "proc/self/cgroup": "0::/system.slice/edgellama.service\n",
        "proc/meminfo": "MemTotal: 4000000 kB\nMemAvailable: 3000000 kB\n",
        "sys/fs/cgroup/cpu.max": "max 100000\n",
        "sys/fs/cgroup/system.slice/memory.max": "2147483648\n",
        "sys/fs/cgroup/system.slice/memory.current": "1073741824\n",
        "sys/fs/cgroup/system.slice/edgellama.service/cpu.max": "150000 100000\n",
        "sys/fs/cgroup/system.slice/edgellama.service/memory.max": "max\n",
        "sys/fs/cgroup/system.slice/edgellama.service/memory.high": "max\n",
    })
    m = read_machine(root=root)
    assert m.cpu_quota == 1.5
    assert (m.memory_limit_bytes, m.memory_used_bytes) == (2 * GIB, GIB)
    assert m.mem_available_bytes == 3_000_000 * 1024
    assert m.memory_budget_bytes == GIB


def test_memory_high_binds_like_memory_max(tmp_path):
    root = _tree(tmp_path, {
        "proc/self/mountinfo": "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n",
        "proc/self/cgroup": "0::/edgellama.service\n",
        "proc/meminfo": "MemAvailable: 3000000 kB\n",
        "sys/fs/cgroup/edgellama.service/memory.max": "2147483648\n",
        "sys/fs/cgroup/edgellama.service/memory.high": "1610612736\n",  # MemoryHigh=1536M
        "sys/fs/cgroup/edgellama.service/memory.current": "0\n",
    })
    assert read_machine(root=root).memory_limit_bytes == 1536 * 1024 ** 2


def test_cgroup_v1_limits(tmp_path):
    root = _tree(tmp_path, {
        "proc/self/mountinfo": ("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
                                "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"),
        "proc/self/cgroup": "4:memory:/box\n1:cpu:/\n",
        "proc/meminfo": "MemAvailable: 3000000 kB\n",
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "50000\n",
        "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        "sys/fs/cgroup/memory/box/memory.limit_in_bytes": "536870912\n",
        "sys/fs/cgroup/memory/box/memory.usage_in_bytes": "0\n",
    })
    m = read_machine(root=root)
    assert m.cpu_quota == 0.5 and m.memory_limit_bytes == 512 * 1024 ** 2


def test_no_cgroup_files_means_no_limits(tmp_path):
    m = read_machine(root=_tree(tmp_path, {"proc/meminfo": "MemAvailable: 1000 kB\n"}))
    assert (m.cpu_quota, m.memory_limit_bytes, m.mem_available_bytes) == (None, None, 1_024_000)


def test_the_bundled_gguf_metadata():
    from edgellama.generate import bundled_gguf

    facts = read_model_facts(bundled_gguf())
    assert facts is not None and facts.source.startswith("GGUF metadata: 30 layers x 3 KV heads x 64")
    assert (facts.kv_bytes_per_token, facts.n_ctx_train) == (SMOLLM.kv_bytes_per_token, SMOLLM.n_ctx_train)


def _gguf(path: Path, items: list[tuple[str, int, object]]) -> Path:
    """A GGUF holding only metadata: (key, GGUF value type, value); type 9 is an array of strings."""
    import struct

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value.encode())) + value.encode()

    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(items))
    for key, kind, value in items:
        body += text(key) + struct.pack("<I", kind)
        if kind == 4:
            body += struct.pack("<I", value)
        elif kind == 8:
            body += text(value)
        else:
            body += struct.pack("<IQ", 8, len(value)) + b"".join(text(v) for v in value)
    path.write_bytes(body + b"\0" * 1000)
    return path


def test_gguf_metadata_of_a_llama_3_2_1b_shape(tmp_path):
    path = _gguf(tmp_path / "llama.gguf", [
        ("general.architecture", 8, "llama"), ("general.tags", 9, ["a", "bb"]), ("llama.block_count", 4, 16),
        ("llama.context_length", 4, 131072), ("llama.embedding_length", 4, 2048),
        ("llama.attention.head_count", 4, 32), ("llama.attention.head_count_kv", 4, 8),
        ("tokenizer.ggml.tokens", 9, ["x"] * 50)])
    facts = read_model_facts(path)
    assert facts.kv_bytes_per_token == 2 * 16 * 8 * 64 * 2 and facts.n_ctx_train == 131072  # 32 KiB a token


def test_without_attention_metadata_the_kv_cache_is_estimated_from_the_file_size(tmp_path):
    facts = read_model_facts(_gguf(tmp_path / "odd.gguf", [("general.architecture", 8, "odd")]))
    assert facts.kv_bytes_per_token == max(1, facts.file_bytes // 4000) and "file size" in facts.source


def test_a_file_that_is_not_a_gguf_has_no_facts(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 5)  # header cut short
    (tmp_path / "text.gguf").write_text("not a model")
    assert read_model_facts(tmp_path / "bad.gguf") is None
    assert read_model_facts(tmp_path / "text.gguf") is None
    assert read_model_facts(tmp_path / "missing.gguf") is None


def _empty_index(tmp_path) -> Path:
    from edgellama.store import Store

    db = tmp_path / "index.db"
    Store.open(db, create=True).close()
    return db


def test_status_prints_the_resources_section(tmp_path):
    db = _empty_index(tmp_path)
    result = run_cli("status", "--db", str(db), env={"EDGELLAMA_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("resources "))
    assert "physical cores" in lines[start] and "MB available" in lines[start]
    section = "\n".join(lines[start:])
    for name in ("threads", "embed_threads", "n_ctx", "n_batch", "embed_batch_size", "embed_precision", "requantize"):
        assert f"\n  {name} " in section
    assert "set in env EDGELLAMA_THREADS" in section


def test_status_json_has_each_value_with_its_reason(tmp_path):
    db = _empty_index(tmp_path)
    result = run_cli("status", "--db", str(db), "--json", env={"EDGELLAMA_N_CTX": "2048"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["resources"]["values"]["n_ctx"] == {"value": 2048, "reason": "set in env EDGELLAMA_N_CTX"}
    assert report["embed_precision"] == report["resources"]["values"]["embed_precision"]["value"]

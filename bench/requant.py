"""Prompt eval tokens/s of the auto-requantized Q4_0 (with flash attention, as the daemon loads
it) against the shipped Q4_1 (llama_cpp defaults; and with flash attention, to separate the two
effects). Raw llama_cpp, a ~1,500-token prompt, each model in its own fresh process. Target >= 2.7x."""

from __future__ import annotations

from ._common import CORPUS, Worker, info, median, model_paths, report, threads


def _prompt(tokens_wanted: int) -> str:
    text = (CORPUS / "station" / "power.md").read_text() + (CORPUS / "station" / "water-supply.md").read_text()
    words = text.split()
    return " ".join((words * 10)[: int(tokens_wanted * 0.7)])


def _rate(model: str, flash: bool, prompt: str, reps: int, openmp_wait: str = "PASSIVE") -> tuple[float, int]:
    with Worker("llama", model_path=model, threads=threads(), flash_attn=flash, openmp_wait=openmp_wait) as w:
        runs = [w.call("prompt_eval", prompt=prompt) for _ in range(reps)]
    return median(r["tokens"] / r["seconds"] for r in runs), runs[0]["tokens"]


def _paired(a: tuple[str, bool], b: tuple[str, bool], prompt: str, reps: int) -> tuple[float, float, float, int]:
    """Both models loaded at once, in their own processes, and timed in alternation (a, b, a, b, ...):
    the ratio is the median of the pairs' ratios, so a noisy neighbour hits both sides alike."""
    with Worker("llama", model_path=a[0], threads=threads(), flash_attn=a[1]) as wa, \
            Worker("llama", model_path=b[0], threads=threads(), flash_attn=b[1]) as wb:
        pairs = []
        for _ in range(reps):
            ra, rb = wa.call("prompt_eval", prompt=prompt), wb.call("prompt_eval", prompt=prompt)
            pairs.append((ra["tokens"] / ra["seconds"], rb["tokens"] / rb["seconds"]))
    return (median(p[0] for p in pairs), median(p[1] for p in pairs), median(p[0] / p[1] for p in pairs),
            ra["tokens"])


def run(*, quick: bool) -> None:
    reps = 2 if quick else 7
    prompt = _prompt(300 if quick else 1500)
    shipped, q4_0 = model_paths()
    fast, base, ratio, n = _paired((str(q4_0), True), (str(shipped), False), prompt, reps)
    info(f"{n}-token prompt, {threads()} threads; {q4_0.name} vs {shipped.name}")
    report("prompt eval Q4_0 + flash_attn", value=fast, unit="tok/s", baseline_name="shipped Q4_1, defaults",
           baseline=base, ratio=ratio, target=">= 2.7x", met=ratio >= 2.7, reps=reps,
           note="median of alternating pairs")
    if not quick:
        fast_fa, base_fa, ratio_fa, _ = _paired((str(q4_0), True), (str(shipped), True), prompt, 3)
        report("prompt eval Q4_0 + flash_attn (vs Q4_1 + flash_attn)", value=fast_fa, unit="tok/s",
               baseline_name="shipped Q4_1 + flash_attn", baseline=base_fa, ratio=ratio_fa,
               target="(the quantization alone)", met=None, reps=3)
        # What edgellama.generate.passive_openmp buys on a loaded machine: libgomp's default spinning.
        short = _prompt(300)
        passive, m = _rate(str(q4_0), True, short, 2)
        spinning, _ = _rate(str(q4_0), True, short, 2, openmp_wait="default")
        report("prompt eval Q4_0, passive OpenMP wait (the daemon's)", value=passive, unit="tok/s",
               baseline_name="libgomp default (spinning)", baseline=spinning, ratio=passive / spinning,
               target="(no target: explains the setting)", met=None, reps=2, note=f"{m}-token prompt")

"""``python -m bench [--quick] [--json FILE] [NAME ...]``: run the benchmarks, print every figure."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback

from . import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds each (CI)")
    parser.add_argument("--json", metavar="FILE", help="also append every figure to FILE as JSON lines")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.json:
        os.environ["EDGELLAMA_BENCH_JSON"] = os.path.abspath(args.json)
    load = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}{', quick' if args.quick else ''}", flush=True)
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

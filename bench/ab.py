#!/usr/bin/env python3
"""Same-session A/B of two edge binaries under the basic-call load (bench/profile.md).

  python3 bench/ab.py BEFORE AFTER [--runs 3] [--rate 600] [--seconds 10] [--pairs 2]

Alternates the binaries (A B A B ...), each run on a fresh redis-server, edge, app server
and sipp callees (bench.py's `setup_edge` and `run_callers`, the full run's harness), and
prints each run's edge CPU per call and the medians. The machine is shared: alternating
spreads its noise over both binaries, and the medians of several runs are compared, not
single runs. Nothing is written outside a temporary work directory.
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the harness: started processes are stopped at exit)


def one_run(binary: str, workdir: str, pairs: int, rate: float, seconds: float) -> dict:
    redis, callees, app, edge, _ = bench.setup_edge(binary, workdir, pairs)
    bench.run_callers(workdir, edge.sip_port, pairs, 20, 40, 100, "warmup", edge.pids())
    step = bench.run_callers(workdir, edge.sip_port, pairs, rate, int(rate * seconds), 300,
                             "load", edge.pids())
    bench.stop(edge.proc, app.proc, *[c.proc for c in callees], redis.proc)
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--runs", type=int, default=3, help="runs of each binary")
    parser.add_argument("--rate", type=float, default=600, help="offered calls/s")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    binaries = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    for run in range(args.runs):
        for name, binary in binaries.items():
            workdir = tempfile.mkdtemp(prefix=f"switchyard-ab-{name}-")
            step = one_run(binary, workdir, args.pairs, args.rate, args.seconds)
            per_call = step["cpu_us_per_call"]
            bench.log(f"run {run + 1} {name}: {step['ok']}/{step['attempted']} calls, "
                      f"{bench.fmt_int(per_call)} us CPU/call, p99 "
                      f"{bench.fmt_ms(step['p99'])}  ({workdir})")
            if step["ok"] != step["attempted"] or per_call is None:
                bench.log(f"run {run + 1} {name}: not every call completed; "
                          "that run is left out of the medians")
                continue
            cpu[name].append(per_call)
    for name, values in cpu.items():
        shown = ", ".join(f"{v:,.0f}" for v in values)
        median = f"{statistics.median(values):,.0f} us" if values else "n/a"
        print(f"{name}: {shown} us per call; median {median}")
    return 0 if cpu["before"] and cpu["after"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks <name> [args]``: run one benchmark, print its figures, record them."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "mostpop": "benchmarks.mostpop",
    "baselines": "benchmarks.baselines",
    "tuning": "benchmarks.tuning",
    "eval_speed": "benchmarks.eval_speed",
    "train_quality": "benchmarks.train_quality",
    "profile_throughput": "benchmarks.profile_throughput",
    "profile_signal": "benchmarks.profile_signal",
    "profile_quality": "benchmarks.profile_quality",
    "serve_latency": "benchmarks.serve_latency",
    "refresh_cost": "benchmarks.refresh_cost",
    "day_in_the_life": "benchmarks.day_in_the_life",
    "retrieval_scale": "benchmarks.retrieval_scale",
    "cold_start": "benchmarks.cold_start",
    "resilience": "benchmarks.resilience",
    "epoch_time": "benchmarks.epoch_time",
    "fresh_demo": "benchmarks.fresh_demo",
}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        print(
            f"usage: python -m benchmarks <{names}> [options]\n"
            "(`python -m benchmarks NAME --help` for options)"
        )
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    module = importlib.import_module(BENCHMARKS[args[0]])
    module.main(args[1:])


if __name__ == "__main__":
    main()

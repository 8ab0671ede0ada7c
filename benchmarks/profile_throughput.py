"""Profile-generation throughput of the embedded SmolLM2-135M model: tokens/s and profiles/s for
batch sizes 1, 8 and 32 (sequences decoded together; 64 too for torch) on both embedded
backends (llama.cpp's batch API, and the torch backend on the same GGUF; its linear layers' and
attention's dtypes by ``--dtypes`` / ``--attention-dtypes``), then the
projected wall time of the full MovieLens-100k ProEx run (943 users + 1,682 items, K=4), measured
by running the real job on a sample of users and items and scaling its seconds per entity.

Requests are real ProEx F1 prompts (a user's history) with the job's token limit; a "profile" is one
completed request. Run it alone (``flock /tmp/profilerec-heavy.lock python -m benchmarks
profile_throughput``): the figures are CPU-bound and the machine's load is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results import print_table, record
from offline_jobs.llm.torch_engine import default_attention_dtype, default_dtype

FULL_USERS = 943
FULL_ITEMS = 1682


def _f1_requests(n: int, max_tokens: int, seed: int) -> list[Any]:
    from offline_jobs.context import load_context
    from offline_jobs.llm.base import ChatRequest
    from offline_jobs.profiles.entity_text import EntityText
    from offline_jobs.profiles.prompts import load_prompts

    ctx = load_context("movielens-100k")
    texts = EntityText(ctx)
    prompts = load_prompts("proex")
    out = []
    for user in range(n):
        vals = texts.domain_values()
        vals.update(
            entity_id=str(ctx.dataset.user_ids[user]), who=texts.who(user), history=texts.history_text(user)
        )
        messages = (
            ("system", prompts.render("user", "system", **vals)),
            ("user", prompts.render("user", "f1", **vals)),
        )
        out.append(ChatRequest(messages=messages, max_tokens=max_tokens, temperature=0.7, seed=seed + user))
    return out


def _backend(
    name: str, batch: int, threads: int, attention_dtype: str | None = None, dtype: str | None = None
) -> Any:
    if name == "llama_cpp":
        from offline_jobs.llm.llama import LlamaCppBackend

        return LlamaCppBackend(n_seq=batch, n_ctx_per_seq=1024, n_threads=threads)
    from offline_jobs.llm.torch_engine import TorchGGUFBackend

    return TorchGGUFBackend(
        n_seq=batch, n_ctx_per_seq=1024, n_threads=threads, attention_dtype=attention_dtype, dtype=dtype
    )


def measure(
    name: str,
    batch: int,
    n_requests: int,
    max_tokens: int,
    threads: int,
    attention_dtype: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    requests = _f1_requests(n_requests, max_tokens, seed=2024)
    started = time.perf_counter()
    backend = _backend(name, batch, threads, attention_dtype, dtype)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - started
    backend.close()
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    stats = getattr(backend, "stats", {})
    split: dict[str, Any] = {}
    if stats.get("prefill_seconds"):
        split = {
            "prefill_tokens_per_s": round(stats["prefilled_tokens"] / stats["prefill_seconds"], 1),
            "decode_tokens_per_s": round(stats["completion_tokens"] / max(stats["decode_seconds"], 1e-9), 1),
        }
    return {
        "backend": name,
        "batch": batch,
        "requests": len(results),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "seconds": round(seconds, 2),
        "load_s": round(load_s, 1),
        "gen_tokens_per_s": round(completion / seconds, 1),
        "all_tokens_per_s": round((prompt + completion) / seconds, 1),
        "profiles_per_s": round(len(results) / seconds, 3),
        **split,
    }


def project(
    backend: str, batch: int, users: int, items: int, max_tokens: int, threads: int, workers: int = 1
) -> dict[str, Any]:
    """Run the real ProEx job (K=4) on a sample and scale to the full dataset."""
    from offline_jobs.cli.jobs import main as jobs_main

    out = Path(tempfile.mkdtemp(prefix="profile-throughput-"))
    try:
        import json

        started = time.perf_counter()
        code = jobs_main(
            [
                "generate", "--strategy", "proex", "--k", "4", "--dataset", "movielens-100k",
                "--users", ",".join(str(u) for u in range(1, users + 1)),
                "--items", ",".join(str(i) for i in range(1, items + 1)),
                "--out", str(out), "--llm-backend", backend, "--batch-size", str(batch),
                "--threads", str(threads), "--max-tokens", str(max_tokens), "--workers", str(workers),
            ]
        )  # fmt: skip
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"sample run failed with exit code {code}")
        report = json.loads((out / "run_report.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stats = report["stats"]
    backend_stats = stats.get("backend", {})
    n = users + items
    per_user = wall / n  # users and items cost about the same (same chain, similar prompt sizes)
    projected = per_user * (FULL_USERS + FULL_ITEMS)
    return {
        "sample_users": users,
        "sample_items": items,
        "sample_wall_s": round(wall, 1),
        "sample_profiles": stats["profiles"],
        "sample_fallback_rate": stats["fallback_rate"],
        "sample_generated_requests": stats["generated"],
        "sample_completion_tokens": stats["completion_tokens"],
        "sample_prompt_tokens": stats["prompt_tokens"],
        "sample_prefilled_tokens": stats.get("backend", {}).get("prefilled_tokens"),
        "seconds_per_entity": round(per_user, 2),
        "projected_full_run_minutes": round(projected / 60, 1),
        "sample_prefilled_per_entity": round((backend_stats.get("prefilled_tokens") or 0) / n, 1),
        "sample_completion_per_entity": round(stats["completion_tokens"] / n, 1),
    }


def record_full_run(path: Path, record_it: bool = True) -> dict[str, Any]:
    """The actual wall time and rates of a full run, from the report the pipeline wrote."""
    import json

    report = json.loads(path.read_text())
    gen = report.get("generate", report)
    stats = gen["stats"]
    cfg = gen.get("config") or {}
    run_report = path.parent / "run_report.json"  # the pipeline report leaves the job config out
    if not cfg and run_report.exists():
        cfg = json.loads(run_report.read_text()).get("config", {})
    figures = {
        "full_run_wall_minutes": round(float(report.get("wall_seconds", stats["wall_seconds"])) / 60, 1),
        "generate_wall_minutes": round(float(stats["wall_seconds"]) / 60, 1),
        "users": gen.get("users"),
        "items": gen.get("items"),
        "profiles": stats["profiles"],
        "profiles_per_s": stats["profiles_per_s"],
        "completion_tokens": stats["completion_tokens"],
        "tokens_per_s": stats["tokens_per_s"],
        "generated_requests": stats["generated"],
        "cache_hits": stats["cache_hits"],
        "fallback_rate": stats["fallback_rate"],
        "sim_regenerations": stats["sim_regenerations"],
        "entities_skipped": stats["entities_skipped"],
        "qdrant_points": report.get("upload", {}).get("points"),
    }
    print_table([figures], f"Full run from {path}")
    if record_it:
        record(
            "profile_full_run", figures, {"report": str(path), "k": cfg.get("k"), "model": cfg.get("model")}
        )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["llama_cpp", "torch"],
        help="LLM backends to measure (torch, llama_cpp)",
    )
    parser.add_argument(
        "--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 64], help="decode batch sizes to measure"
    )
    parser.add_argument("--max-tokens", type=int, default=96, help="token limit of one generated profile")
    parser.add_argument(
        "--llama-max-batch", type=int, default=32, help="largest batch size tried on llama_cpp"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("PROFILEREC_LLAMA_THREADS", "1")),
        help="CPU threads of the embedded model (default: $PROFILEREC_LLAMA_THREADS or 1)",
    )
    parser.add_argument("--min-requests", type=int, default=4, help="requests per measurement (>= batch)")
    parser.add_argument("--project-backend", default="torch", help="backend of the projected full-run time")
    parser.add_argument(
        "--project-batch", type=int, default=64, help="batch size of the projected full-run time"
    )
    parser.add_argument("--project-workers", type=int, default=2, help="processes (one thread each)")
    parser.add_argument(
        "--sample-users", type=int, default=32, help="users in the sample run the projection is based on"
    )
    parser.add_argument(
        "--sample-items", type=int, default=32, help="items in the sample run the projection is based on"
    )
    parser.add_argument(
        "--attention-dtypes",
        nargs="+",
        default=["auto"],
        choices=("auto", "bfloat16", "float32"),
        help="torch backend: KV cache / attention dtype(s) to measure (auto: by the CPU's AMX support)",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["auto"],
        choices=("auto", "bfloat16", "float32"),
        help="torch backend: linear layers' dtype(s) to measure (auto: bfloat16 where the CPU has "
        "avx512_bf16 or amx_bf16, else float32)",
    )
    parser.add_argument(
        "--no-projection", action="store_true", help="skip the sample run and the full-run projection"
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.jsonl")
    parser.add_argument(
        "--from-report",
        default=None,
        help="record the figures of a finished full run (its pipeline_report.json) instead of measuring",
    )
    args = parser.parse_args(argv)
    if args.from_report:
        record_full_run(Path(args.from_report), record_it=not args.no_record)
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    rows = []
    torch_dtypes = [(dtype, attention) for dtype in args.dtypes for attention in args.attention_dtypes]
    for backend in args.backends:
        for batch in args.batch_sizes:
            if backend == "llama_cpp" and batch > args.llama_max_batch:
                continue  # no gain past 8-32 sequences and minutes of prompt processing
            for dtype, attention in torch_dtypes if backend == "torch" else [("auto", "auto")]:
                chosen = None if attention == "auto" else attention
                weights = None if dtype == "auto" else dtype
                n = max(batch, args.min_requests)
                row = measure(backend, batch, n, args.max_tokens, args.threads, chosen, weights)
                if backend == "torch":
                    row["dtype"] = weights or default_dtype()
                    row["attention_dtype"] = chosen or default_attention_dtype()
                rows.append(row)
                print_table([row])
    print_table(rows, "Embedded SmolLM2-135M, ProEx F1 prompts (tokens/s over prompt+generation wall time)")
    figures: dict[str, Any] = {"table": rows}
    if not args.no_projection:
        proj = project(
            args.project_backend, args.project_batch, args.sample_users, args.sample_items, args.max_tokens,
            args.threads, args.project_workers,
        )  # fmt: skip
        print_table(
            [proj],
            f"Projected full MovieLens-100k ProEx run ({args.project_backend}, batch {args.project_batch}, "
            f"{args.project_workers} worker(s))",
        )
        figures.update(proj)
        # the sample fills the batches poorly (few entities per worker); with full batches the cost per
        # entity is its prefilled and generated tokens at the batched rates measured above
        full = [r for r in rows if r["backend"] == args.project_backend and "decode_tokens_per_s" in r]
        if full and proj["sample_prefilled_per_entity"]:
            best = max(full, key=lambda r: r["batch"])
            per_entity = (
                proj["sample_prefilled_per_entity"] / best["prefill_tokens_per_s"]
                + proj["sample_completion_per_entity"] / best["decode_tokens_per_s"]
            )
            minutes = per_entity * (FULL_USERS + FULL_ITEMS) / args.project_workers / 60
            figures["projected_full_run_minutes_full_batches"] = round(minutes, 1)
            print(f"projected with full batches ({best['batch']} sequences per worker): {minutes:.1f} min")
    figures["load_average_1m_before"] = round(load_before, 2)
    figures["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    if not args.no_record:
        record(
            "profile_throughput",
            figures,
            {
                "model": "SmolLM2-135M-Instruct.Q4_1",
                "max_tokens": args.max_tokens,
                "threads": args.threads,
                "backends": args.backends,
                "batch_sizes": args.batch_sizes,
                "attention_dtypes": args.attention_dtypes,
                "dtypes": args.dtypes,
                "project_backend": args.project_backend,
                "project_batch": args.project_batch,
                "project_workers": args.project_workers,
                "sample_users": args.sample_users,
                "sample_items": args.sample_items,
            },
        )


if __name__ == "__main__":
    main()

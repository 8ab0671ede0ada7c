"""Seconds per training epoch, base vs ProEx-fused, LightGCN and Mult-VAE, side by side in one run.

For each dataset and model the base and the ProEx model (the model's ProEx defaults) are built once,
warmed up for one epoch each, then trained epoch by epoch in alternation (base, ProEx, ProEx, base,
...), so load from other jobs on the machine falls on both alike; the figures are the medians of the
timed epochs and their ratio, in wall-clock seconds and in CPU seconds of the process (all its
threads; on a shared machine the CPU figures are the steadier ones), with the 1-minute load average
before and after.

``f_psi_cpu_s`` is the mapping MLP alone over one epoch (forward and backward on exactly the inputs
the ProEx model gives it, see :func:`mapping_cpu_seconds`) and ``floor_cpu_ratio`` is
``(base + f_psi) / base``: the ratio no exact implementation of the fused epoch can go below.
``extra_decoder_cpu_s`` is, for Mult-VAE, the decoder pass of every environment after the first
(:func:`extra_decoder_cpu_seconds`; 0 for LightGCN) and ``method_floor_cpu_ratio`` is
``(base + f_psi + extra decoders) / base``.

Profiles: ``--profiles DATASET=FOLDER`` reads a profile store (e.g. the MovieLens-100k store the demo
writes); a dataset without one gets synthetic profile vectors of the same shape as the stores here
(K = 4 slots of 384-d MiniLM vectors, every slot present) - the RLMRec Amazon-Book split ships no
profile text. Epoch time depends on the shapes only, not on the vectors' values.

Quality (``--quality-epochs N``, on the datasets that have a profile store): each ProEx model is
trained for N seeded epochs and its validation Recall@20 recorded; with ``--compare-ref REF`` the same
seeded run is repeated on the code of git revision REF (in a subprocess, from ``git archive``), so a
speed change can be checked not to change the results.

    python -m benchmarks epoch_time --profiles movielens-100k=var/profiles/movielens-100k-live \\
        --compare-ref 5de647f
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results import BENCH_DIR, print_table, record

K, PROFILE_DIM = 4, 384
# One seeded ProEx run, printed as JSON; runs on whatever `training` package is on PYTHONPATH (this
# tree's or an older revision's), through APIs both have.
QUALITY_SNIPPET = """
import json, sys
from training.data import default_split_method, load_dataset, split_dataset
from training.models import TrainConfig, build_model, seed_everything
from training.proex import proex_defaults
from training.profiles import load_profile_inputs
dataset, data_dir, profiles, model, epochs, threads, seed = sys.argv[1:8]
ds = load_dataset(dataset, data_dir or None)
split = split_dataset(ds, default_split_method(ds.name), seed=2024)
proex = proex_defaults(model)
inputs = load_profile_inputs(profiles, ds, proex.n_profiles)
seed_everything(int(seed))
m = build_model(model, split.train, None, proex, inputs)
fit = m.fit(split, TrainConfig(epochs=int(epochs), eval_every=int(epochs), patience=1, seed=int(seed),
                               threads=int(threads), progress=False))
print(json.dumps({"valid": fit.best_valid, "loss": fit.history[-1].get("loss")}))
"""


def _setup(dataset: str, data_dir: str | None, profiles_path: str | None) -> tuple[Any, Any]:
    from training.data import default_split_method, load_dataset, split_dataset
    from training.profiles import load_profile_inputs, synthetic_profile_inputs

    ds = load_dataset(dataset, data_dir)
    split = split_dataset(ds, default_split_method(ds.name), seed=2024)
    if profiles_path:
        profiles = load_profile_inputs(profiles_path, ds, K)
    else:
        profiles = synthetic_profile_inputs(split.n_users, split.n_items, K, PROFILE_DIM, seed=0)
    return split, profiles


def time_epochs(split: Any, profiles: Any, model: str, epochs: int, threads: int) -> dict[str, Any]:
    """Median seconds per epoch of the base and the ProEx model, epochs interleaved."""
    import numpy as np
    import torch

    from training.models import TrainConfig, Trainer, build_model, seed_everything
    from training.proex import proex_defaults

    torch.set_num_threads(threads)
    trainer = Trainer(TrainConfig(threads=threads, progress=False))
    models, optimizers, rngs = {}, {}, {}
    for variant in ("base", "proex"):
        seed_everything(2024)
        fused = variant == "proex"
        models[variant] = build_model(
            model, split.train, None, proex_defaults(model) if fused else None, profiles if fused else None
        )
        optimizers[variant] = models[variant].make_optimizer()
        rngs[variant] = np.random.default_rng(2024)
    for variant, instance in models.items():  # warm-up: allocator, thread pool, first-call dispatch
        trainer.train_epoch(instance, optimizers[variant], rngs[variant])
    wall: dict[str, list[float]] = {"base": [], "proex": []}
    cpu: dict[str, list[float]] = {"base": [], "proex": []}
    for i in range(epochs):
        for variant in ("base", "proex") if i % 2 == 0 else ("proex", "base"):
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_epoch(models[variant], optimizers[variant], rngs[variant])
            wall[variant].append(time.perf_counter() - t0)
            cpu[variant].append(time.process_time() - c0)
    base, proex = statistics.median(wall["base"]), statistics.median(wall["proex"])
    base_cpu, proex_cpu = statistics.median(cpu["base"]), statistics.median(cpu["proex"])
    mapping_cpu, batch_rows = mapping_cpu_seconds(
        trainer, models["proex"], optimizers["proex"], rngs["proex"], repeats=3
    )
    extra_decoder_cpu = extra_decoder_cpu_seconds(models["proex"], batch_rows, repeats=3)
    return {
        "base_s": base,
        "proex_s": proex,
        "ratio": proex / base,
        "base_cpu_s": base_cpu,
        "proex_cpu_s": proex_cpu,
        "cpu_ratio": proex_cpu / base_cpu,
        "f_psi_cpu_s": mapping_cpu,
        "floor_cpu_ratio": (base_cpu + mapping_cpu) / base_cpu,
        "extra_decoder_cpu_s": extra_decoder_cpu,
        "method_floor_cpu_ratio": (base_cpu + mapping_cpu + extra_decoder_cpu) / base_cpu,
        "batches": models["base"].batches_per_epoch(),
        "base_epochs_s": [round(s, 4) for s in wall["base"]],
        "proex_epochs_s": [round(s, 4) for s in wall["proex"]],
    }


def mapping_cpu_seconds(
    trainer: Any, model: Any, optimizer: Any, rng: Any, repeats: int
) -> tuple[float, list[int]]:
    """Median CPU seconds per epoch of ``f_psi`` alone: forward and backward on the inputs it gets.

    One ProEx epoch records the shapes the mapping's layers are called with; replaying those calls
    (random inputs of the same shapes, the gradient of the outputs' sum) is the work the method itself
    asks of every step, so ``base + f_psi`` bounds what any exact implementation of the fused epoch costs
    (Mult-VAE additionally decodes every environment: :func:`extra_decoder_cpu_seconds`). Also returns
    the leading dimension of every call (the batch's rows).
    """
    import torch

    mapping = model.mapping
    shapes: list[tuple[int, ...]] = []
    # the first layer's input: the (projected, when f_psi projects) profiles of every call, whether
    # training calls the whole mapping or its core on precomputed projections
    hook = mapping.hidden.register_forward_hook(lambda _m, inputs, _o: shapes.append(tuple(inputs[0].shape)))
    trainer.train_epoch(model, optimizer, rng)
    hook.remove()
    inputs = [torch.randn(shape) for shape in shapes]
    runs = []
    for _ in range(repeats):
        c0 = time.process_time()
        for x in inputs:
            mapping.core(x).sum().backward()
        runs.append(time.process_time() - c0)
    mapping.zero_grad(set_to_none=True)
    return statistics.median(runs), [shape[0] for shape in shapes]


def extra_decoder_cpu_seconds(model: Any, batch_rows: list[int], repeats: int) -> float:
    """Median CPU seconds per epoch of the decoder passes the environments add (Mult-VAE; 0 otherwise).

    Eq. 14 sums one reconstruction loss per environment, each decoding the latent plus that
    environment's profile over the whole catalogue (``[B, d] -> [B, I]``, log-softmax, backward): the
    base model decodes once per batch, the fused one ``|E|`` times. This replays the ``|E| - 1`` further
    passes on the epoch's batch sizes (random latents), the part of the fused epoch that no
    implementation of the method avoids besides ``f_psi``.
    """
    import torch
    from torch.nn import functional

    if getattr(model, "kind", "") != "multvae" or model.proex is None:
        return 0.0
    extra = model.proex.effective_envs - 1
    latent = model.config.latent_dim
    inputs = [torch.randn(extra, rows, latent) for rows in batch_rows if extra > 0]
    runs = []
    for _ in range(repeats):
        c0 = time.process_time()
        for z in inputs:
            functional.log_softmax(model.decode(z), dim=-1).sum().backward()
        runs.append(time.process_time() - c0)
    model.zero_grad(set_to_none=True)
    return statistics.median(runs)


def quality_run(
    code_root: Path, dataset: str, data_dir: str | None, profiles: str, model: str, epochs: int, threads: int
) -> dict[str, Any]:
    """Validation metrics of one seeded ProEx run on the ``training`` package under ``code_root``."""
    from training.data.registry import data_root

    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_WAIT_POLICY": "PASSIVE"}
    root = str(data_root(data_dir))  # resolved here: an extracted revision has no ../shared/data
    args = [dataset, root, str(Path(profiles).resolve()), model, str(epochs), str(threads), "2024"]
    out = subprocess.run(
        [sys.executable, "-c", QUALITY_SNIPPET, *args],
        cwd=code_root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _checkout(ref: str, into: Path) -> Path:
    """The tree of git revision ``ref`` extracted into ``into`` (no worktree, no index change)."""
    archive = subprocess.run(["git", "archive", ref], cwd=BENCH_DIR, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _keyed(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values:
        name, sep, path = text.partition("=")
        if not sep:
            raise SystemExit(f"--profiles expects DATASET=FOLDER, got {text!r}")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["movielens-100k", "rlmrec-amazon-book"],
        help="datasets to time (registry names)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=("lightgcn", "multvae"),
        default=["lightgcn", "multvae"],
        help="models to time",
    )
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the registry's)")
    parser.add_argument(
        "--profiles", action="append", default=[], metavar="DATASET=FOLDER", help="profile store per dataset"
    )
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both variants")
    parser.add_argument(
        "--quality-epochs", type=int, default=6, help="seeded epochs of the quality check (0: skip)"
    )
    parser.add_argument("--compare-ref", default=None, help="git revision to repeat the quality check on")
    parser.add_argument("--note", default="", help="free text stored with the record")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    profiles = _keyed(args.profiles)

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:
        split, inputs = _setup(dataset, args.data_dir, profiles.get(dataset))
        for model in args.models:
            timing = time_epochs(split, inputs, model, args.epochs, args.threads)
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "profiles": "store" if dataset in profiles else "synthetic",
                    **timing,
                }
            )
            print(
                f"{dataset} {model}: base {timing['base_s']:.3f} s, ProEx {timing['proex_s']:.3f} s "
                f"per epoch ({timing['ratio']:.2f}x; CPU {timing['cpu_ratio']:.2f}x, "
                f"floor f_psi {timing['floor_cpu_ratio']:.2f}x, "
                f"f_psi + environment decoders {timing['method_floor_cpu_ratio']:.2f}x)",
                flush=True,
            )
    quality: list[dict[str, Any]] = []
    if args.quality_epochs > 0:
        here = BENCH_DIR.parent
        with tempfile.TemporaryDirectory() as tmp:
            reference = _checkout(args.compare_ref, Path(tmp)) if args.compare_ref else None
            for dataset, folder in profiles.items():
                for model in args.models:
                    row: dict[str, Any] = {"dataset": dataset, "model": model, "epochs": args.quality_epochs}
                    run = (dataset, args.data_dir, folder, model, args.quality_epochs, args.threads)
                    now = quality_run(here, *run)
                    row["valid_R@20"] = now["valid"]["recall@20"]
                    row["valid_N@20"] = now["valid"]["ndcg@20"]
                    if reference is not None:
                        before = quality_run(reference, *run)
                        row["ref_valid_R@20"] = before["valid"]["recall@20"]
                        row["ref_valid_N@20"] = before["valid"]["ndcg@20"]
                        row["abs_diff_R@20"] = abs(row["valid_R@20"] - row["ref_valid_R@20"])
                    quality.append(row)
    load_after = os.getloadavg()
    print_table(
        [{k: v for k, v in r.items() if not k.endswith("epochs_s")} for r in rows],
        f"Median seconds per epoch ({args.epochs} interleaved epochs each, {args.threads} threads)",
    )
    if quality:
        print_table(quality, "Seeded ProEx runs: validation metrics (this code vs --compare-ref)")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    figures = {
        "table": rows,
        "quality": quality,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
        "loadavg_5m_after": round(load_after[1], 2),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    params = {
        "datasets": args.datasets,
        "models": args.models,
        "epochs": args.epochs,
        "threads": args.threads,
        "profiles": profiles,
        "synthetic_profiles": {"k": K, "dim": PROFILE_DIM, "seed": 0},
        "quality_epochs": args.quality_epochs,
        "compare_ref": args.compare_ref,
        "note": args.note,
    }
    if not args.no_record:
        record("epoch_time", figures, params)


if __name__ == "__main__":
    main()

"""``profilerec-pipeline``: the model lifecycle, from data to a live bundle, and back.

    profilerec-pipeline bootstrap --dataset movielens-100k   # profiles -> train -> export -> publish (live)
    profilerec-pipeline export RUN_DIR                        # a trained run -> a bundle (not live)
    profilerec-pipeline publish BUNDLE_DIR [--no-promote]     # collections + make live
    profilerec-pipeline retrain [--tolerance 0.005]           # all data -> candidate -> gate -> live
        [--max-gap-to-ease 0.01]                              # ... and refuse a model trailing EASE
    profilerec-pipeline rollback                              # the previous bundle is live again
    profilerec-pipeline prune --keep 3                        # remove old bundles and their derived state
    profilerec-pipeline status                                # live/previous bundles and their metrics
                                                              # (exit 2 when `current` is missing or broken)

Every step skips what is already done, so a re-run resumes (and ``docker compose up`` can run the
bootstrap every time). Qdrant: ``--qdrant-url`` / ``PROFILEREC_QDRANT_URL`` for a server, else the
embedded storage at ``PROFILEREC_QDRANT_PATH`` (which must not be open by a running service; with the
service running, promotion moves only the bundle pointer and the service builds the collection).

The bootstrap and the retrain report the model's validation Recall@20 beside EASE's (fitted on the same
split, with item-kNN and MostPop in the bootstrap report); ``--max-gap-to-ease`` (or
``PROFILEREC_MAX_GAP_TO_EASE``, absolute Recall@20, off by default) refuses to publish a model that
trails EASE by more than that (exit 3). ``bootstrap --tune`` searches the hyperparameters first
(``--trials``, ``--tune-budget-s``; see ``profilerec-train --tune``).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from offline_jobs.publish.retention import add_prune_parser, prune_command
from rec_contract.logs import configure_logging
from training.cli import parse_hyperparameter

log = logging.getLogger(__name__)


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default)


@contextmanager
def _qdrant(args: argparse.Namespace, required: bool = True) -> Iterator[Any]:
    """A sync Qdrant client, or None when the embedded storage is held by a running service and the
    step can do without (promotion)."""
    from offline_jobs.publish.qdrant_upload import qdrant_client
    from offline_jobs.refresh.online import embedded_storage_locked

    if not args.qdrant_url and embedded_storage_locked(Path(args.qdrant_path)):
        if required:
            raise SystemExit(
                f"the embedded Qdrant at {args.qdrant_path} is open by a running service: "
                "stop it, or use a Qdrant server"
            )
        log.info(
            "embedded Qdrant held by the service: it will build the collections when it loads the bundle"
        )
        yield None
        return
    client = qdrant_client(
        path=args.qdrant_path, url=args.qdrant_url, api_key=os.environ.get("PROFILEREC_QDRANT_API_KEY")
    )
    try:
        yield client
    finally:
        client.close()


Stage = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def bootstrap(args: argparse.Namespace, stage: Stage = _quiet) -> dict[str, Any]:
    """Profiles -> train -> export -> publish, each step skipped when done; ``stage`` hears of each step
    as it ends (one line of text). Returns the report."""
    work = Path(args.work_dir)
    report: dict[str, Any] = {"dataset": args.dataset}
    text_encoder = _text_encoder(work, stage)
    report["text_encoder"] = str(text_encoder)
    store = _profile_store(args, work, text_encoder, report, stage)
    report["profile_store"] = str(store)
    run_dir = _train(args, work, store, report, stage)
    _publish_run(args, run_dir, text_encoder, store, report, stage)
    return report


def _text_encoder(work: Path, stage: Stage) -> Path:
    from offline_jobs.jobs.embedding import export_text_encoder

    text_encoder = work / "text_encoder"
    if not (text_encoder / "text_encoder.onnx").exists():
        export_text_encoder(text_encoder)
        stage("text encoder exported to ONNX")
    return text_encoder


def _profile_store(
    args: argparse.Namespace, work: Path, text_encoder: Path, report: dict[str, Any], stage: Stage
) -> Path:
    """The live store is built once (extractive for everyone, LLM profiles for a sample on top), then only
    the daily refresh changes it. Embedded with the exported ONNX encoder (the service's own) unless
    another embedding backend is configured. The LLM sample is written in a process of its own while
    the extractive profiles are embedded here (the embedded LLM decodes on one core by default), then
    merged into the store."""
    from concurrent.futures import ProcessPoolExecutor

    from offline_jobs.context import load_context
    from offline_jobs.jobs.builder import BuildOptions, build_profiles
    from offline_jobs.selection import select
    from offline_jobs.settings import JobSettings
    from rec_contract.profile_store import VECTORS_FILE, merge_into_store

    name = Path(args.dataset).name
    store = Path(args.profiles_from) if args.profiles_from else work / "profiles" / f"{name}-live"
    if (store / VECTORS_FILE).exists():
        return store
    settings = JobSettings()
    if settings.embed_backend == "minilm":
        onnx = {"embed_backend": "onnx", "text_encoder_dir": str(text_encoder)}
        settings = settings.model_copy(update=onnx)
    ctx = load_context(args.dataset, None, args.split_seed, args.data_dir)
    version = f"{name}-live-k{args.k}"
    users = select(ctx.dataset, "user", "all", args.llm_users) if args.llm_users else []
    items = select(ctx.dataset, "item", "all", args.llm_items) if args.llm_items else []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        sample = None
        if users or items:
            sample_dir = work / "profiles" / f"{name}-{args.strategy}-sample"
            options = BuildOptions(args.strategy, args.k, version)
            job = (args.dataset, args.split_seed, args.data_dir, users, items, sample_dir, options, settings)
            sample = pool.submit(_llm_sample, *job)
            cores = max(1, (os.cpu_count() or 1) - settings.llama_threads)
            settings = settings.model_copy(update={"embed_threads": cores})
        everyone = (range(ctx.dataset.n_users), range(ctx.dataset.n_items))
        built = build_profiles(ctx, *everyone, store, BuildOptions("extractive", args.k, version), settings)
        stage(f"extractive profiles: {built['profiles_written']:,} written and embedded")
        if sample is not None:
            done = sample.result()
            report["llm_sample"] = done
            report["merge"] = merge_into_store(store, sample_dir)
            stage(
                f"LLM ({args.strategy}) profiles for {len(users)} users and {len(items)} items: "
                f"{done['profiles_written']} written, {done['stats'].get('fallbacks', 0)} fell back to "
                "extractive"
            )
    return store


def _llm_sample(
    dataset: str,
    split_seed: int,
    data_dir: str | None,
    users: list[int],
    items: list[int],
    out: Path,
    options: Any,
    settings: Any,
) -> dict[str, Any]:
    """The bootstrap's LLM sample, in a worker process (its own context and model)."""
    from offline_jobs.context import load_context
    from offline_jobs.jobs.builder import build_profiles

    ctx = load_context(dataset, None, split_seed, data_dir)
    return build_profiles(ctx, users, items, out, options, settings)


def _train(args: argparse.Namespace, work: Path, store: Path, report: dict[str, Any], stage: Stage) -> Path:
    from offline_jobs.publish.rollout import PromotionRefusedError, baseline_gate
    from training.baselines.compare import comparison_lines, model_label, summarise
    from training.models import TrainConfig
    from training.proex import proex_defaults
    from training.runs import METRICS_FILE, RunSpec, execute_run
    from training.tuning import TuneOptions, tune_and_run

    name = Path(args.dataset).name
    run_dir = work / "runs" / f"bootstrap-{name}-{args.model}-{'proex' if args.proex else 'base'}"
    if not (run_dir / METRICS_FILE).exists():
        spec = RunSpec(
            dataset=args.dataset,
            model=args.model,
            proex=proex_defaults(args.model, n_profiles=args.k) if args.proex else None,
            profiles_path=str(store) if args.proex else None,
            hyperparameters=dict(args.hp),
            train=TrainConfig(
                epochs=args.epochs,
                eval_every=args.eval_every,
                patience=args.patience,
                seed=args.seed,
                progress=sys.stderr.isatty(),  # per-epoch bars on a terminal only; epochs.jsonl keeps them
            ),
            split_seed=args.split_seed,
            out=str(run_dir),
            data_dir=args.data_dir,
        )
        if args.tune:
            tune_and_run(spec, TuneOptions(trials=args.trials, budget_s=args.tune_budget_s, progress=False))
        else:
            execute_run(spec)
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    report["run"], report["valid"] = metrics["test"], metrics["valid"]
    baselines = metrics.get("baselines") or {}
    report["baselines"] = summarise(baselines)
    report["comparison"] = comparison_lines(model_label(args.model, args.proex), metrics, baselines)
    for line in report["comparison"]:
        stage(f"trained: {line}")
    versus_ease = baseline_gate(metrics["valid"]["recall@20"], baselines, args.max_gap_to_ease)
    report["vs_ease"] = versus_ease.as_dict()
    if not versus_ease.passed:
        raise PromotionRefusedError(
            f"the bootstrap model trails EASE on the validation split: {versus_ease.note}; not "
            f"published (the run is in {run_dir}: tune it with --tune, or raise --max-gap-to-ease)"
        )
    return run_dir


def _publish_run(
    args: argparse.Namespace,
    run_dir: Path,
    text_encoder: Path,
    store: Path,
    report: dict[str, Any],
    stage: Stage,
) -> None:
    from offline_jobs.publish.promote import publish
    from rec_contract.bundle import list_versions, read_manifest, resolve_pointer
    from training.export import ExportOptions, export_bundle

    bundles_root = Path(args.bundles_root)
    exported = [
        bundles_root / v
        for v in list_versions(bundles_root)
        if read_manifest(bundles_root / v).training.get("run_dir") == str(run_dir.resolve())
    ]
    bundle = (
        exported[-1]
        if exported
        else export_bundle(run_dir, ExportOptions(bundles_root=bundles_root, text_encoder_dir=text_encoder))
    )
    report["bundle"] = bundle.name
    try:
        live = resolve_pointer(bundles_root).name
    except Exception:
        live = None
    if live == bundle.name:
        report["publish"] = "already live"
        return
    with _qdrant(args) as client:
        report["publish"] = publish(bundle, client, store)
    stage(f"bundle {bundle.name} exported (ONNX towers), its Qdrant collections built, live")


def _status(args: argparse.Namespace) -> dict[str, Any]:
    from rec_contract.bundle import list_versions, read_manifest, resolve_pointer

    root = Path(args.bundles_root)
    out: dict[str, Any] = {"bundles_root": str(root), "versions": list_versions(root)}
    for pointer in ("current", "previous"):
        try:
            manifest = read_manifest(resolve_pointer(root, pointer))
        except Exception as exc:
            out[pointer] = f"none ({exc})"
            continue
        out[pointer] = {
            "version": manifest.bundle_version,
            "model": manifest.model_kind,
            "proex": manifest.proex,
            "created_at": manifest.created_at.isoformat(),
            "valid_recall@20": manifest.metrics.get("valid_recall@20"),
            "test_recall@20": manifest.metrics.get("test_recall@20"),
        }
    state = Path(args.work_dir) / "refresh" / "state.json"
    if state.exists():
        out["refresh"] = json.loads(state.read_text())
    return out


def _max_gap_option(parser: argparse.ArgumentParser) -> None:
    from offline_jobs.settings import JobSettings

    parser.add_argument(
        "--max-gap-to-ease",
        type=float,
        default=JobSettings().max_gap_to_ease,
        help="refuse to publish a model whose validation Recall@20 trails EASE's by more than this "
        "(absolute; default PROFILEREC_MAX_GAP_TO_EASE, unset: report the gap only)",
    )


def _add_bootstrap(sub: Any) -> None:
    boot = sub.add_parser("bootstrap", help="profiles -> train -> export -> publish, resumable")
    boot.add_argument(
        "--dataset", default="movielens-100k", help="dataset to train on (registry name or saved folder)"
    )
    # Mult-VAE by default: on MovieLens-100k its ProEx fusion beats the base model (benchmarks/RESULTS.md)
    # and an epoch takes a quarter of LightGCN's.
    boot.add_argument("--model", choices=["lightgcn", "multvae"], default="multvae", help="model to train")
    boot.add_argument(
        "--hp",
        type=parse_hyperparameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model hyperparameter (as profilerec-train --hp), e.g. --hp lr=0.005",
    )
    boot.add_argument(
        "--proex",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fuse the profile vectors the ProEx way (--no-proex: the base model)",
    )
    boot.add_argument("--k", type=int, default=4, help="profiles per user and item")
    boot.add_argument(
        "--strategy",
        choices=["proex", "reclm", "duet"],
        default="proex",
        help="profile strategy of the profile store",
    )
    boot.add_argument(
        "--llm-users", type=int, default=0, help="users given LLM profiles (the rest: extractive)"
    )
    boot.add_argument(
        "--llm-items", type=int, default=0, help="items given LLM profiles (the rest: extractive)"
    )
    boot.add_argument(
        "--profiles-from", help="use this profile store (e.g. the full LLM run) instead of building one"
    )
    boot.add_argument("--epochs", type=int, default=400, help="maximum epochs")
    boot.add_argument("--eval-every", type=int, default=5, help="epochs between validations")
    boot.add_argument(
        "--patience", type=int, default=10, help="validations without improvement before stopping"
    )
    boot.add_argument("--seed", type=int, default=2024, help="training seed")
    boot.add_argument("--split-seed", type=int, default=2024, help="seed of the random split")
    boot.add_argument("--tune", action="store_true", help="search the hyperparameters first (Optuna)")
    boot.add_argument("--trials", type=int, default=30, help="tuning trials in all (resumable)")
    boot.add_argument("--tune-budget-s", type=float, default=3600.0, help="tuning wall-clock budget")
    _max_gap_option(boot)


def _add_other_commands(sub: Any) -> None:
    exp = sub.add_parser("export", help="a trained run -> a bundle (not live)")
    exp.add_argument("run_dir", help="the training run folder to export")
    exp.add_argument(
        "--version", help="bundle version name (default: <dataset>-<model>[-proex]-<UTC time>-<pid>)"
    )
    exp.add_argument(
        "--seen",
        choices=["train", "all"],
        default="all",
        help="what the service never recommends again: every interaction (default) or the training split",
    )

    pub = sub.add_parser("publish", help="create a bundle's collections and make it live")
    pub.add_argument("bundle_dir", help="the bundle folder to publish")
    pub.add_argument("--profiles", help="profile store to upload if the profiles collection is missing")
    pub.add_argument("--no-promote", action="store_true", help="do not make the bundle live")

    ret = sub.add_parser("retrain", help="retrain on all data, gate against the live model, promote")
    ret.add_argument("--tolerance", type=float, default=0.005, help="allowed drop of validation Recall@20")
    ret.add_argument("--epochs", type=int, default=400, help="maximum epochs")
    ret.add_argument("--eval-every", type=int, default=5, help="epochs between validations")
    ret.add_argument(
        "--patience", type=int, default=10, help="validations without improvement before stopping"
    )
    ret.add_argument("--no-promote", action="store_true", help="do not make the bundle live")
    _max_gap_option(ret)
    ret.add_argument(
        "--profile-store",
        default=os.environ.get("PROFILEREC_PROFILE_STORE") or None,
        help="the live profile store to train with (default PROFILEREC_PROFILE_STORE, as the refresh "
        "reads it; else the live bundle's)",
    )

    sub.add_parser("rollback", help="make the previous bundle live again")
    add_prune_parser(sub)
    sub.add_parser("status", help="the live and previous bundles")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profilerec-pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work-dir",
        default=str(_env_path("PROFILEREC_WORK_DIR", "var")),
        help="work folder (default: $PROFILEREC_WORK_DIR or var)",
    )
    parser.add_argument(
        "--bundles-root",
        default=os.environ.get("PROFILEREC_BUNDLES_ROOT"),
        help="bundle folder (default: $PROFILEREC_BUNDLES_ROOT or <work-dir>/bundles)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("PROFILEREC_DATA_DIR"),
        help="dataset root (default: $PROFILEREC_DATA_DIR)",
    )
    parser.add_argument(
        "--qdrant-url",
        default=os.environ.get("PROFILEREC_QDRANT_URL") or None,
        help="Qdrant server URL (default: $PROFILEREC_QDRANT_URL; else local mode)",
    )
    parser.add_argument(
        "--qdrant-path",
        default=os.environ.get("PROFILEREC_QDRANT_PATH"),
        help="local-mode Qdrant folder (default: $PROFILEREC_QDRANT_PATH)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _add_bootstrap(sub)
    _add_other_commands(sub)
    return parser


def prepare(args: argparse.Namespace) -> argparse.Namespace:
    """Parsed arguments with their folder defaults filled in (bundles and Qdrant below the work folder)."""
    work = Path(args.work_dir)
    args.bundles_root = args.bundles_root or str(work / "bundles")
    args.qdrant_path = args.qdrant_path or str(work / "qdrant")
    return args


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = prepare(build_parser().parse_args(argv))
    work = Path(args.work_dir)
    from offline_jobs.publish.promote import publish, rollback
    from offline_jobs.publish.rollout import PromotionRefusedError, RetrainOptions, retrain
    from rec_contract.bundle import BundleError
    from training.export import ExportOptions, export_bundle

    try:
        if args.command == "bootstrap":
            result: Any = bootstrap(args)
        elif args.command == "export":
            bundle = export_bundle(
                args.run_dir,
                ExportOptions(
                    bundles_root=Path(args.bundles_root),
                    text_encoder_dir=work / "text_encoder",
                    version=args.version,
                    seen=args.seen,
                ),
            )
            result = {"bundle": str(bundle)}
        elif args.command == "publish":
            with _qdrant(args, required=False) as client:
                result = publish(args.bundle_dir, client, args.profiles, make_live=not args.no_promote)
        elif args.command == "retrain":
            options = RetrainOptions(
                bundles_root=Path(args.bundles_root),
                work_dir=work,
                text_encoder_dir=work / "text_encoder",
                feedback_log=_env_path("PROFILEREC_FEEDBACK_LOG", str(work / "feedback" / "feedback.jsonl")),
                catalog_log=_env_path("PROFILEREC_CATALOG_LOG", str(work / "feedback" / "catalog.jsonl")),
                tolerance=args.tolerance,
                epochs=args.epochs,
                eval_every=args.eval_every,
                patience=args.patience,
                data_dir=Path(args.data_dir) if args.data_dir else None,
                profile_store=Path(args.profile_store) if args.profile_store else None,
                promote=not args.no_promote,
                max_gap_to_ease=args.max_gap_to_ease,
            )
            with _qdrant(args, required=False) as client:
                result = retrain(options, client)
        elif args.command == "rollback":
            with _qdrant(args, required=False) as client:
                result = rollback(args.bundles_root, client)
        elif args.command == "prune":
            with _qdrant(args, required=False) as client:
                result = prune_command(args, work, client)
        else:
            result = _status(args)
            if not isinstance(result["current"], dict):  # no live bundle: say so, and fail
                print(json.dumps(result, indent=2, default=str))
                print(f"error: no live bundle: current is {result['current']}", file=sys.stderr)
                return 2
    except PromotionRefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except (BundleError, FileNotFoundError, ValueError) as exc:  # a clear message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

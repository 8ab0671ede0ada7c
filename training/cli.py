"""``profilerec-train``: train one LightGCN or Mult-VAE run, base or ProEx-fused, into a run folder.

Examples::

    profilerec-train --dataset rlmrec-amazon-book --model lightgcn --epochs 1000 --patience 40
    profilerec-train --dataset movielens-100k --model multvae --proex \\
        --profiles var/profiles/movielens-100k-extractive --seed 1

The run folder (``--out``, default ``var/runs/<dataset>-<model>-<proex|base>-seed<seed>``) gets
``config.json``, ``split/``, ``checkpoint.pt`` (best validation Recall@20), ``epochs.jsonl`` and
``metrics.json`` (with EASE, item-kNN and MostPop fitted on the same split: ``--no-baselines`` skips
them); see :mod:`training.runs`. ``--tune`` first searches the model's hyperparameters on validation
Recall@20 (Optuna, ``--trials``, ``--tune-budget-s``, resumable; see :mod:`training.tuning`)::

    profilerec-train --dataset var/datasets/mine --model multvae --tune --trials 30 --tune-budget-s 3600
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def parse_hyperparameter(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line, the value parsed as JSON when it is JSON."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.replace("-", "_"), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profilerec-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="movielens-100k", help="dataset name or saved dataset folder")
    data.add_argument("--data-dir", default=None, help="data root (default PROFILEREC_DATA_DIR)")
    data.add_argument(
        "--split-method",
        choices=("random", "temporal", "predefined"),
        default=None,
        help="how to split (default: the dataset's usual one)",
    )
    data.add_argument("--split-seed", type=int, default=2024, help="seed of the random split")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=("lightgcn", "multvae"), default="lightgcn", help="model to train")
    model.add_argument(
        "--hp",
        type=parse_hyperparameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model hyperparameter, e.g. --hp lr=0.001 --hp batch_size=4096 --hp dropout=0.5",
    )

    proex = parser.add_argument_group("ProEx fusion")
    proex.add_argument(
        "--proex",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fuse the profile vectors the ProEx way (needs --profiles)",
    )
    proex.add_argument("--profiles", default=None, help="profile store folder (profile_vectors.parquet)")
    proex.add_argument("--k", type=int, default=None, help="profiles per entity (default 4)")
    proex.add_argument("--envs", type=int, default=None, help="environments per step (default 3)")
    proex.add_argument("--alpha", type=float, default=None, help="Dirichlet shape (default 0.1)")
    proex.add_argument("--lambda1", type=float, default=None, help="alignment weight")
    proex.add_argument("--lambda2", type=float, default=None, help="Eq. 7 regulariser weight")
    proex.add_argument("--lambda3", type=float, default=None, help="environment variance weight")
    proex.add_argument("--tau", type=float, default=None, help="temperature of alignment and Eq. 7 (0.2)")
    proex.add_argument("--beta", type=float, default=None, help="prior weight of Eq. 11 (Mult-VAE)")
    proex.add_argument("--mapping-hidden", type=int, default=None, help="hidden width of f_psi")
    proex.add_argument(
        "--mapping-zero-init",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start f_psi's output layer at zero (model default)",
    )
    proex.add_argument("--mapping-weight-decay", type=float, default=None, help="decoupled decay of f_psi")
    proex.add_argument("--mapping-lr", type=float, default=None, help="learning rate of f_psi (model's)")
    proex.add_argument("--profile-dropout", type=float, default=None, help="dropout on f_psi's inputs")
    proex.add_argument("--mapping-dropout", type=float, default=None, help="dropout on f_psi's hidden layer")
    proex.add_argument(
        "--input-rank",
        type=int,
        default=None,
        help="f_psi reads the profiles' top-N principal coordinates (0: the whole vector; model default)",
    )
    proex.add_argument(
        "--fusion-stage",
        choices=("output", "input"),
        default=None,
        help="LightGCN: add the profiles after propagation (the paper's, default) or to layer 0",
    )
    proex.add_argument(
        "--reg-similarity",
        choices=("cosine", "dot"),
        default=None,
        help="similarity inside Eq. 7: cosine (default) or the paper's dot product",
    )
    proex.add_argument("--no-variance", action="store_true", help="ablation w/o inv")
    proex.add_argument("--no-regulariser", action="store_true", help="ablation w/o reg")
    proex.add_argument("--no-alignment", action="store_true", help="ablation w/o align")
    proex.add_argument("--no-mixing", action="store_true", help="ablation: mean pooling, no mixing")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=1000, help="maximum epochs")
    train.add_argument("--eval-every", type=int, default=3, help="epochs between validations")
    train.add_argument("--patience", type=int, default=20, help="evaluations without improvement")
    train.add_argument("--seed", type=int, default=2024, help="training seed")
    train.add_argument("--threads", type=int, default=2, help="torch threads")
    train.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show per-epoch progress bars"
    )
    train.add_argument("--out", default=None, help="run folder")
    train.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit EASE, item-kNN and MostPop on the same split and report them beside the model",
    )

    tune = parser.add_argument_group("tuning")
    tune.add_argument("--tune", action="store_true", help="search the hyperparameters first (Optuna)")
    tune.add_argument("--trials", type=int, default=30, help="trials in all, resumed ones included")
    tune.add_argument(
        "--tune-budget-s", type=float, default=3600.0, help="wall-clock budget of the search (seconds)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    # Idle OpenMP threads must not spin on a shared 2-core machine; set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rec_contract.logs import configure_logging
    from training.baselines.compare import BaselineOptions, comparison_lines, model_label
    from training.data.errors import DataFormatError
    from training.models import TrainConfig
    from training.proex import proex_defaults
    from training.runs import RunSpec, execute_run
    from training.tuning import TuneOptions, tune_and_run

    args = build_parser().parse_args(argv)
    configure_logging()
    proex = None
    fixed_proex: frozenset[str] = frozenset()
    if args.proex:
        tau = args.tau
        options: dict[str, Any] = dict(
            n_profiles=args.k,
            n_envs=args.envs,
            alpha=args.alpha,
            lambda_align=args.lambda1,
            lambda_reg=args.lambda2,
            lambda_var=args.lambda3,
            tau_align=tau,
            tau_reg=tau,
            beta=args.beta,
            mapping_hidden=args.mapping_hidden,
            mapping_zero_init=args.mapping_zero_init,
            mapping_weight_decay=args.mapping_weight_decay,
            mapping_lr=args.mapping_lr,
            profile_dropout=args.profile_dropout,
            mapping_dropout=args.mapping_dropout,
            input_rank=args.input_rank,
            fusion_stage=args.fusion_stage,
            reg_similarity=args.reg_similarity,
            use_variance=False if args.no_variance else None,
            use_regulariser=False if args.no_regulariser else None,
            use_alignment=False if args.no_alignment else None,
            use_mixing=False if args.no_mixing else None,
        )
        proex = proex_defaults(args.model, **options)
        fixed_proex = frozenset(k for k, v in options.items() if v is not None)  # not searched by --tune
    elif args.profiles:
        raise SystemExit("--profiles is only used with --proex")
    spec = RunSpec(
        dataset=args.dataset,
        model=args.model,
        proex=proex,
        profiles_path=args.profiles,
        hyperparameters=dict(args.hp),
        train=TrainConfig(
            epochs=args.epochs,
            eval_every=args.eval_every,
            patience=args.patience,
            seed=args.seed,
            threads=args.threads,
            progress=args.progress,
        ),
        split_method=args.split_method,
        split_seed=args.split_seed,
        out=args.out,
        data_dir=args.data_dir,
        baselines=BaselineOptions() if args.baselines else None,
    )
    try:
        if args.tune:
            tune_options = TuneOptions(
                trials=args.trials, budget_s=args.tune_budget_s, progress=args.progress
            )
            outcome = tune_and_run(spec, tune_options, fixed_proex)
        else:
            outcome = execute_run(spec)
    except (DataFormatError, ValueError) as exc:  # a clear message, not a traceback
        raise SystemExit(f"error: {exc}") from exc
    test = outcome.metrics["test"]
    print(
        f"{outcome.run_dir}: test recall@20={test['recall@20']:.4f} ndcg@20={test['ndcg@20']:.4f} "
        f"best epoch {outcome.fit.best_epoch}, {outcome.fit.seconds_per_epoch:.2f} s/epoch, "
        f"{outcome.metrics['wall_seconds']:.0f} s wall"
    )
    if outcome.config.tuning:
        tuning = outcome.config.tuning
        print(
            f"tuned: {tuning['trials']} trials ({tuning['pruned']} pruned), best trial "
            f"{tuning['best_trial']}: {json.dumps(tuning['best_params'])}"
        )
    if "baselines" in outcome.metrics:
        label = model_label(args.model, proex is not None)
        for line in comparison_lines(label, outcome.metrics, outcome.metrics["baselines"]):
            print(line)


if __name__ == "__main__":
    main()

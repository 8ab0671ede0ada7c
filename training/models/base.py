"""The interface every recommender implements, and the shared trainer.

A :class:`Recommender` is a torch module that knows how to

* cut one epoch of training data into batches (:meth:`Recommender.epoch_batches`),
* compute the training loss of a batch with its named parts (:meth:`Recommender.loss`),
* encode users and items through its exportable towers (:meth:`Recommender.encode_users`,
  :meth:`Recommender.encode_items`) and score all items for a batch of users
  (:meth:`Recommender.score_all`, equal to ``encode_users(users) @ encode_items().T``).

The :class:`Trainer` runs the epochs with Adam, validates on Recall@20 every ``eval_every`` epochs
with the shared full-ranking evaluator, stops early after ``patience`` evaluations without improvement,
keeps the best weights and, given a run folder, writes ``epochs.jsonl`` and ``checkpoint.pt`` there.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rec_contract.atomic import atomic_file, atomic_write_text
from training.data import Split
from training.evaluation import evaluate

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
EPOCHS_FILE = "epochs.jsonl"
VALID_METRIC = "recall@20"

Scorer = Callable[[np.ndarray], torch.Tensor]


@dataclass
class LossOutput:
    """The loss to minimise and its named parts (plain floats, for the epoch log)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class Recommender(nn.Module, ABC):
    """Common interface of the trainable recommenders (LightGCN, Mult-VAE, with or without ProEx)."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def uses_profiles(self) -> bool:
        """Whether the model fuses profile vectors (ProEx) or is the base model."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """The model's typed hyperparameters as a plain dict (for ``config.json``)."""

    @abstractmethod
    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer with the model's learning rate."""

    @abstractmethod
    def epoch_batches(self, rng: np.random.Generator) -> Iterator[Any]:
        """The training batches of one epoch, drawn with ``rng``."""

    @abstractmethod
    def batches_per_epoch(self) -> int:
        """How many batches :meth:`epoch_batches` yields (for the progress bar)."""

    @abstractmethod
    def loss(self, batch: Any) -> LossOutput:
        """The training loss of one batch (call in training mode)."""

    @abstractmethod
    def encode_users(self, users: np.ndarray) -> torch.Tensor:
        """User-tower outputs ``[B, D]`` for user indices ``users``."""

    @abstractmethod
    def encode_items(self) -> torch.Tensor:
        """Item vectors ``[n_items, D]`` such that scores are ``encode_users(u) @ encode_items().T``."""

    def make_scorer(self) -> Scorer:
        """A function ``users -> scores [B, n_items]`` with the item side computed once (no grad)."""
        with torch.no_grad():
            items = self.encode_items()

        def score(users: np.ndarray) -> torch.Tensor:
            with torch.no_grad():
                return self.encode_users(np.asarray(users)) @ items.T

        return score

    def score_all(self, users: np.ndarray) -> torch.Tensor:
        """Scores of every item for ``users``: ``[B, n_items]`` (no grad)."""
        return self.make_scorer()(users)

    def fit(self, split: Split, config: TrainConfig, run_dir: str | Path | None = None) -> FitResult:
        """Train on ``split.train`` with early stopping on ``split.valid`` (see :class:`Trainer`)."""
        return Trainer(config).fit(self, split, run_dir)


@dataclass
class TrainConfig:
    """How to train: epochs, validation cadence, early stopping, seed, threads, progress bars.

    ``patience`` counts validation evaluations (every ``eval_every`` epochs) without a new best
    validation Recall@20, as in the papers' reference code.
    """

    epochs: int = 1000
    eval_every: int = 3
    patience: int = 20
    seed: int = 2024
    threads: int = 2
    progress: bool = True  # bars on a terminal only: a log file gets the epoch log lines
    eval_batch_size: int = 2048

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.eval_every < 1 or self.patience < 1:
            raise ValueError("epochs, eval_every and patience must be >= 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """What a training run produced (the model itself holds the best weights afterwards)."""

    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    train_seconds: float
    train_cpu_seconds: float
    eval_seconds: float
    wall_seconds: float
    history: list[dict[str, Any]]

    @property
    def seconds_per_epoch(self) -> float:
        """Wall-clock training seconds per epoch (validation excluded)."""
        return self.train_seconds / max(1, self.epochs_run)

    @property
    def cpu_seconds_per_epoch(self) -> float:
        """CPU seconds (all threads of the process) per training epoch (validation excluded)."""
        return self.train_cpu_seconds / max(1, self.epochs_run)


def seed_everything(seed: int) -> None:
    """Fix python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Runs epochs, validation, early stopping and checkpointing for any :class:`Recommender`."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    @property
    def bars(self) -> bool:
        """Progress bars: asked for and on a terminal (a log file gets the epoch log lines instead)."""
        return self.config.progress and sys.stderr.isatty()

    def fit(self, model: Recommender, split: Split, run_dir: str | Path | None = None) -> FitResult:
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        out = Path(run_dir) if run_dir is not None else None
        optimizer = model.make_optimizer()
        history: list[dict[str, Any]] = []
        best_state: dict[str, torch.Tensor] | None = None
        best_valid: dict[str, float] = {}
        best_epoch, best_score, stale = 0, -1.0, 0
        train_seconds = train_cpu_seconds = eval_seconds = 0.0
        started = time.perf_counter()
        epoch_bar = tqdm(range(1, cfg.epochs + 1), desc="epochs", disable=not self.bars, unit="ep")
        epoch = 0
        for epoch in epoch_bar:
            t0, cpu0 = time.perf_counter(), time.process_time()
            means = self.train_epoch(model, optimizer, rng, desc=f"epoch {epoch}")
            epoch_seconds = time.perf_counter() - t0
            epoch_cpu = time.process_time() - cpu0
            train_seconds += epoch_seconds
            train_cpu_seconds += epoch_cpu
            row: dict[str, Any] = {
                "epoch": epoch,
                **means,
                "epoch_seconds": round(epoch_seconds, 4),
                "epoch_cpu_seconds": round(epoch_cpu, 4),
            }
            evaluate_now = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
            if evaluate_now:
                result = self.validate(model, split)
                eval_seconds += result.seconds
                score = result[VALID_METRIC]
                row["valid_recall@20"] = score
                row["valid_ndcg@20"] = result["ndcg@20"]
                row["eval_seconds"] = round(result.seconds, 4)
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_valid = dict(result.metrics)
                    best_state = copy.deepcopy(model.state_dict())
                    if out is not None:
                        save_checkpoint(model, out / CHECKPOINT_FILE)
                else:
                    stale += 1
            history.append(row)
            if out is not None:
                atomic_write_text(out / EPOCHS_FILE, "".join(json.dumps(r) + "\n" for r in history))
            log.info(_epoch_line(row), extra={"event": "epoch", **row})
            epoch_bar.set_postfix(
                loss=f"{row.get('loss', float('nan')):.4f}",
                valid=f"{row.get('valid_recall@20', best_score):.4f}",
            )
            if evaluate_now and stale >= cfg.patience:
                log.info("early stop at epoch %d (best epoch %d)", epoch, best_epoch)
                break
        epoch_bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return FitResult(
            best_epoch=best_epoch,
            best_valid=best_valid,
            epochs_run=epoch,
            train_seconds=train_seconds,
            train_cpu_seconds=train_cpu_seconds,
            eval_seconds=eval_seconds,
            wall_seconds=time.perf_counter() - started,
            history=history,
        )

    def train_epoch(
        self,
        model: Recommender,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        desc: str = "epoch",
    ) -> dict[str, float]:
        """One pass over ``model.epoch_batches(rng)`` (model in training mode); the mean loss parts."""
        model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        batches = tqdm(
            model.epoch_batches(rng),
            total=model.batches_per_epoch(),
            desc=desc,
            leave=False,
            disable=not self.bars,
            unit="batch",
        )
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            output = model.loss(batch)
            output.total.backward()
            optimizer.step()
            for key, value in output.parts.items():
                sums[key] = sums.get(key, 0.0) + value
            n_batches += 1
        return {key: value / max(1, n_batches) for key, value in sums.items()}

    def validate(self, model: Recommender, split: Split) -> Any:
        """Full-ranking validation of the current weights."""
        model.eval()
        result = evaluate(model.make_scorer(), split, "valid", batch_size=self.config.eval_batch_size)
        model.train()
        return result


def pass_through(value: torch.Tensor, *unused: torch.Tensor) -> torch.Tensor:
    """``value`` unchanged, with a graph dependency on the ``unused`` tower inputs.

    The ONNX exporter drops inputs the output does not depend on; a base model's towers must keep the
    same inputs as the fused ones, so they route ``value`` through a ``where`` whose condition reads
    them. Both branches are ``value``, so the result is exact even for NaN inputs.
    """
    probe = value.new_zeros(value.shape[0], 1)
    for tensor in unused:
        probe = probe + tensor.reshape(tensor.shape[0], -1).sum(dim=1, keepdim=True)
    return torch.where(torch.isnan(probe), value, value)


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """Write the model's state dict atomically."""
    with atomic_file(path) as tmp:
        torch.save(model.state_dict(), tmp)


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}"]
    for key, value in row.items():
        if key != "epoch" and isinstance(value, float):
            parts.append(f"{key}={value:.4f}")
    return " ".join(parts)

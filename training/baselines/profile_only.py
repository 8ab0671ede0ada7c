"""ProfileOnly: a recommender that sees nothing but the profile vectors.

``score(u, i) = f(mean_k c_{u,k}) . f(mean_k c_{i,k})`` with ``f`` a shared mapping MLP (the same
``d_s -> hidden -> d`` shape as ProEx's ``f_psi``), trained with BPR (one uniform negative per training
positive) and early stopping on validation Recall@20. No ID embeddings: whatever it gets right comes
from the profiles. It measures how much a profile store knows on its own, and, blended with a
collaborative model (``benchmarks/profile_signal``), how much it knows that the collaborative model
does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from training.data.split import Split
from training.evaluation import evaluate
from training.proex import MappingMLP, masked_mean
from training.profiles import ProfileInputs


@dataclass
class ProfileOnlyConfig:
    dim: int = 32
    hidden: int = 128
    lr: float = 1e-3
    batch_size: int = 4096
    epochs: int = 600
    eval_every: int = 5
    patience: int = 8  # evaluations without improvement
    seed: int = 2024


@dataclass
class ProfileOnlyFit:
    best_epoch: int
    epochs_run: int
    valid_recall20: float


class ProfileOnly:
    name = "profile_only"

    def __init__(self, profiles: ProfileInputs, config: ProfileOnlyConfig | None = None) -> None:
        self.config = config or ProfileOnlyConfig()
        torch.manual_seed(self.config.seed)
        self.users = masked_mean(
            torch.from_numpy(profiles.user_vectors), torch.from_numpy(profiles.user_mask)
        )
        self.items = masked_mean(
            torch.from_numpy(profiles.item_vectors), torch.from_numpy(profiles.item_mask)
        )
        self.mapping = MappingMLP(profiles.dim, self.config.hidden, self.config.dim)
        self._user_vectors: torch.Tensor | None = None
        self._item_vectors: torch.Tensor | None = None

    def _encode(self) -> None:
        with torch.no_grad():
            self._user_vectors = self.mapping(self.users)
            self._item_vectors = self.mapping(self.items)

    def score(self, users: np.ndarray) -> torch.Tensor:
        if self._user_vectors is None or self._item_vectors is None:
            raise RuntimeError("ProfileOnly.fit must be called before score")
        return self._user_vectors[torch.as_tensor(np.asarray(users, dtype=np.int64))] @ self._item_vectors.T

    def fit(self, split: Split) -> ProfileOnlyFit:
        """BPR epochs over the training positives; keeps the best validation Recall@20 state."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        train = sp.coo_matrix(split.train)
        users, items = train.row.astype(np.int64), train.col.astype(np.int64)
        optimizer = torch.optim.Adam(self.mapping.parameters(), lr=cfg.lr)
        best = (-1.0, 0, {k: v.clone() for k, v in self.mapping.state_dict().items()})
        since_best, epoch = 0, 0
        for epoch in range(1, cfg.epochs + 1):
            self.mapping.train()
            order = rng.permutation(len(users))
            negatives = rng.integers(0, split.n_items, size=len(users))
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                u = self.mapping(self.users[users[batch]])
                pos = self.mapping(self.items[items[batch]])
                neg = self.mapping(self.items[negatives[batch]])
                loss = F.softplus((u * neg).sum(-1) - (u * pos).sum(-1)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch % cfg.eval_every:
                continue
            self.mapping.eval()
            self._encode()
            recall = evaluate(self.score, split, "valid")["recall@20"]
            if recall > best[0]:
                best = (recall, epoch, {k: v.clone() for k, v in self.mapping.state_dict().items()})
                since_best = 0
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    break
        self.mapping.load_state_dict(best[2])
        self.mapping.eval()
        self._encode()
        return ProfileOnlyFit(best_epoch=best[1], epochs_run=epoch, valid_recall20=best[0])

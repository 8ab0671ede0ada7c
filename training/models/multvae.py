"""Mult-VAE (Liang et al., WWW 2018) with optional ProEx profile fusion.

Base model: encoder ``I -> 600 -> 2 x 200`` (mean and log-variance) on the L2-normalised multi-hot
history with input dropout, decoder ``200 -> 600 -> I``, tanh activations, multinomial log-likelihood
plus the KL to N(0, I) weighted by an annealed beta (linear from 0 to ``anneal_cap`` over
``anneal_steps`` updates); batches of users; Adam.

``anneal_steps`` counts updates, and there are only ``ceil(users / batch)`` updates per epoch (11 on
Amazon-Book, 1 on MovieLens-100k): with the default 20000 the KL weight stays near 0 for the whole run.
On Amazon-Book, annealing to 0.2 over 200 updates gave a higher validation Recall@20 (see the
train_quality records).

The encoder's first layer is stored as an ``[I, 600]`` matrix: training and scoring read it with
``embedding_bag`` over the (sparse) history, the exported tower multiplies the dense multi-hot history
with it; both compute the same thing.

ProEx (``proex`` given), Eq. 6: for each profile slot k, the mapping input of user u is the mean of
slot k's item profile vectors over u's training items plus u's own slot-k profile; ``f_psi`` maps it
to a mean and log-variance (``2 x 200``). A slot counts for a user when the user has that profile or
any of the user's items has it. Each environment mixes means and variances with Dirichlet weights
(Eq. 9), samples the profile representation and adds it to the sampled latent (Eq. 12); the loss is
Eq. 13-14 with the KL distribution matching of Eq. 11 as alignment and Eq. 7 on the slot means.
Inference: ``z = mu(history) + masked mean of the slot means`` (Algorithm 2).

Exported parts: :meth:`MultVAE.user_tower` maps ``(history, profiles, profile_mask)`` to
``[B, 601] = concat(tanh(W1 z + b1), 1)`` and :meth:`MultVAE.item_vectors` is ``concat(W2, b2)``, so
their dot product is the decoder's logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from training.models.base import LossOutput, Recommender, Scorer, pass_through
from training.proex import (
    ProExConfig,
    ProExFusion,
    environment_theta,
    kl_alignment,
    masked_mean,
    mix,
    mix_weights,
    profile_regulariser,
    split_mean_logvar,
)
from training.profiles import ProfileInputs

_VARIANCE_FLOOR = 1e-8


@dataclass
class MultVAEConfig:
    """Mult-VAE hyperparameters: architecture ``[I, 600, 200]`` as in the paper, batch of users."""

    hidden_dim: int = 600
    latent_dim: int = 200
    dropout: float = 0.5
    lr: float = 1e-3
    batch_size: int = 1024
    weight_decay: float = 0.0
    anneal_cap: float = 0.2
    anneal_steps: int = 20000


class MultVAEUserTower(nn.Module):
    """``forward(history [B, I], profiles [B, K, d_s], profile_mask [B, K]) -> [B, H + 1]``.

    ``h = tanh(W1 z + b1)`` with ``z`` = the encoder mean of the normalised history (no dropout, no
    sampling) plus, for the ProEx model, the masked mean over slots of the mapped profile means; the
    item profile table and its mask are constants of the tower. Output: ``concat(h, 1)``.
    """

    item_profiles_flat: torch.Tensor  # [I, K * d_s] constant (ProEx only)
    item_profile_mask: torch.Tensor  # [I, K] float constant (ProEx only)

    def __init__(self, model: MultVAE) -> None:
        super().__init__()
        self.encoder_items = model.encoder_items
        self.encoder_bias = model.encoder_bias
        self.encoder_out = model.encoder_out
        self.decoder_hidden = model.decoder_hidden
        self.mapping = model.mapping
        self.latent = model.config.latent_dim
        if model.mapping is not None:
            k, dim = model.item_profiles.shape[1:]
            self.register_buffer("item_profiles_flat", model.item_profiles.reshape(model.n_items, k * dim))
            self.register_buffer("item_profile_mask", model.item_profile_mask.float())
            self.k, self.dim = int(k), int(dim)

    def forward(
        self, history: torch.Tensor, profiles: torch.Tensor, profile_mask: torch.Tensor
    ) -> torch.Tensor:
        norm = history / torch.sqrt((history * history).sum(dim=1, keepdim=True)).clamp(min=1e-12)
        hidden = torch.tanh(norm @ self.encoder_items + self.encoder_bias)
        z = self.encoder_out(hidden)[:, : self.latent]
        if self.mapping is not None:
            counts = history @ self.item_profile_mask
            sums = (history @ self.item_profiles_flat).reshape(-1, self.k, self.dim)
            inputs = sums / counts.clamp(min=1.0).unsqueeze(-1) + profiles * profile_mask.unsqueeze(-1)
            slots = (profile_mask + (counts > 0).to(history.dtype)).clamp(max=1.0)
            z = z + masked_mean(self.mapping(inputs)[..., : self.latent], slots)
        else:
            z = pass_through(z, profiles, profile_mask)
        h = torch.tanh(self.decoder_hidden(z))
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)


class MultVAE(ProExFusion, Recommender):
    """Mult-VAE, optionally ProEx-fused. ``train`` is the training interaction matrix."""

    kind = "multvae"
    user_mapping_inputs: torch.Tensor  # Eq. 6 inputs [n_users, K, d_s]
    user_slot_mask: torch.Tensor  # [n_users, K] bool

    def __init__(
        self,
        train: sp.csr_matrix,
        config: MultVAEConfig | None = None,
        proex: ProExConfig | None = None,
        profiles: ProfileInputs | None = None,
    ) -> None:
        super().__init__()
        self.config = cfg = config or MultVAEConfig()
        self.n_users, self.n_items = train.shape
        self.train_matrix = sp.csr_matrix(train, dtype=np.float32)
        self.train_matrix.data[:] = 1.0
        self.encoder_items = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, cfg.hidden_dim)))
        self.encoder_bias = nn.Parameter(torch.zeros(cfg.hidden_dim))
        self.encoder_out = nn.Linear(cfg.hidden_dim, 2 * cfg.latent_dim)
        self.decoder_hidden = nn.Linear(cfg.latent_dim, cfg.hidden_dim)
        self.decoder_out = nn.Linear(cfg.hidden_dim, self.n_items)
        for layer in (self.encoder_out, self.decoder_hidden, self.decoder_out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.updates = 0
        # f_psi maps to a mean and a log-variance (Eq. 6); Mult-VAE fuses its latent distribution, so
        # only output-stage fusion applies.
        self.init_proex(proex, profiles, 2 * cfg.latent_dim, stages=("output",))
        if profiles is not None:
            inputs, slots = self._mapping_inputs(profiles)
            self.register_buffer("user_mapping_inputs", inputs)
            self.register_buffer("user_slot_mask", slots)
            self.setup_projection({"user_mapping_inputs": "user_slot_mask"})
        self._trainable_users = np.flatnonzero(np.diff(self.train_matrix.indptr) > 0)

    def _mapping_inputs(self, profiles: ProfileInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 6 inputs ``agg_k(history) + c_{u,k}`` ``[n_users, K, d_s]`` and the slot mask."""
        k, dim = profiles.k, profiles.dim
        item_mask = profiles.item_mask.astype(np.float32)
        counts = np.asarray(self.train_matrix @ item_mask, dtype=np.float32)  # [U, K]
        sums = np.asarray(self.train_matrix @ profiles.item_vectors.reshape(self.n_items, k * dim))
        agg = sums.reshape(self.n_users, k, dim) / np.maximum(counts, 1.0)[:, :, None]
        inputs = agg + profiles.user_vectors * profiles.user_mask[:, :, None]
        slots = profiles.user_mask | (counts > 0)
        return torch.from_numpy(inputs.astype(np.float32)), torch.from_numpy(slots)

    # ------------------------------------------------------------------ interface
    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self.config)

    def make_optimizer(self) -> torch.optim.Optimizer:
        return self.proex_optimizer(self.config.lr, self.config.weight_decay)

    def batches_per_epoch(self) -> int:
        return -(-len(self._trainable_users) // self.config.batch_size)

    def epoch_batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Users with training interactions, shuffled, in batches."""
        order = rng.permutation(self._trainable_users)
        for start in range(0, len(order), self.config.batch_size):
            yield order[start : start + self.config.batch_size]

    # ------------------------------------------------------------------ encoder / decoder
    def _history(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flattened history of ``users``: item indices, bag offsets and L2-normalised weights."""
        rows = self.train_matrix[users]
        lengths = np.diff(rows.indptr)
        items = torch.from_numpy(rows.indices.astype(np.int64))
        offsets = torch.from_numpy(rows.indptr[:-1].astype(np.int64))
        weights = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths).astype(np.float32)
        return items, offsets, torch.from_numpy(weights)

    def encode(self, users: np.ndarray, dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance ``[B, d]`` of ``users`` from their training history."""
        items, offsets, weights = self._history(users)
        if dropout > 0:
            keep = (torch.rand(weights.shape) >= dropout).to(weights.dtype)
            weights = weights * keep / (1.0 - dropout)
        bag = F.embedding_bag(items, self.encoder_items, offsets, mode="sum", per_sample_weights=weights)
        stats = self.encoder_out(torch.tanh(bag + self.encoder_bias))
        latent = self.config.latent_dim
        return stats[:, :latent], stats[:, latent:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits over all items ``[..., B, I]`` for latents ``[..., B, d]``."""
        logits: torch.Tensor = self.decoder_out(torch.tanh(self.decoder_hidden(z)))
        return logits

    def _profile_means(self, users: np.ndarray) -> torch.Tensor:
        """Inference-time profile term: masked mean of the mapped slot means ``[B, d]``."""
        index = torch.from_numpy(np.asarray(users, dtype=np.int64))
        mapped = self.map_rows("user_mapping_inputs", index)  # the projected copies, as in training
        mu, _ = split_mean_logvar(mapped, self.config.latent_dim)
        return masked_mean(mu, self.user_slot_mask[index])

    # ------------------------------------------------------------------ training loss
    def anneal(self) -> float:
        """The KL weight of the current update."""
        cfg = self.config
        if cfg.anneal_steps <= 0:
            return cfg.anneal_cap
        return min(cfg.anneal_cap, self.updates / cfg.anneal_steps)

    def loss(self, batch: np.ndarray) -> LossOutput:
        users = np.asarray(batch)
        mu, logvar = self.encode(users, self.config.dropout)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        beta = self.anneal()
        self.updates += 1
        rows = self.train_matrix[users]
        row_index = torch.from_numpy(np.repeat(np.arange(len(users)), np.diff(rows.indptr)))
        col_index = torch.from_numpy(rows.indices.astype(np.int64))

        def reconstruction(latent: torch.Tensor) -> torch.Tensor:
            """The NLL of ``latent [..., B, d]``: a scalar, or ``[E]`` for stacked environments."""
            log_probs = F.log_softmax(self.decode(latent), dim=-1)
            return -log_probs[..., row_index, col_index].sum(dim=-1) / len(users)

        if self.proex is None or self.mapping is None:
            nll = reconstruction(z)
            total = nll + beta * kl
            return LossOutput(
                total,
                {
                    "loss": float(total.detach()),
                    "nll": float(nll.detach()),
                    "kl": float(kl.detach()),
                    "beta": beta,
                },
            )
        return self._proex_loss(users, mu, logvar, z, kl, beta, reconstruction)

    def _proex_loss(
        self,
        users: np.ndarray,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        z: torch.Tensor,
        kl: torch.Tensor,
        beta: float,
        reconstruction: Callable[[torch.Tensor], torch.Tensor],
    ) -> LossOutput:
        """Eq. 6-14 for one batch of users; f_psi runs only on the batch's rows.

        ``L_rec^e`` is Mult-VAE's whole loss (NLL plus the annealed KL) with the environment's sampled
        profile representation added to the sampled latent (Eq. 12).
        """
        assert self.proex is not None and self.mapping is not None
        cfg = self.proex
        index = torch.from_numpy(users.astype(np.int64))
        slots = self.user_slot_mask.index_select(0, index)
        mapped = self.map_rows("user_mapping_inputs", index)  # [B, K, 2d]
        slot_mu, slot_logvar = split_mean_logvar(mapped, self.config.latent_dim)
        weights = mix_weights(environment_theta(cfg), slots)  # [E, B, K]
        env_mu = mix(weights, slot_mu)
        env_var = mix(weights, slot_logvar.exp()).clamp(min=_VARIANCE_FLOOR)
        env_profile = env_mu + torch.randn_like(env_mu) * env_var.sqrt()
        nll = reconstruction(z + env_profile)  # [E]: every environment in one decoder pass
        align = None
        if self.aligns:
            valid = slots.any(dim=1)
            env_logvar = env_var.log()
            align = torch.stack(
                [
                    kl_alignment(mu, logvar, env_mu[e], env_logvar[e], valid, cfg.beta)
                    for e in range(len(weights))
                ]
            )
        total, parts = self.proex_objective(
            nll + beta * kl,
            {"nll": nll, "kl": kl},
            align,
            lambda: profile_regulariser(slot_mu, slots, cfg.tau_reg, cfg.reg_similarity),
        )
        return LossOutput(total, {**parts, "beta": beta})

    # ------------------------------------------------------------------ towers and scoring
    def user_tower(self) -> MultVAEUserTower:
        """The exportable user tower (history multi-hot + profiles -> ``[B, H + 1]``), in the model's mode."""
        return MultVAEUserTower(self).train(self.training)

    def item_vectors(self) -> np.ndarray:
        """``concat(W2, b2)`` ``[n_items, H + 1]`` of the decoder's last layer."""
        with torch.no_grad():
            return self._item_matrix().numpy().copy()

    def _item_matrix(self) -> torch.Tensor:
        return torch.cat([self.decoder_out.weight, self.decoder_out.bias.unsqueeze(1)], dim=1)

    def history_dense(self, users: np.ndarray) -> torch.Tensor:
        """The training multi-hot rows of ``users`` as a dense ``[B, I]`` float32 tensor."""
        return torch.from_numpy(self.train_matrix[np.asarray(users)].toarray())

    def tower_profile_inputs(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The user tower's ``(profiles, profile_mask)`` inputs for ``users`` (zeros for the base model)."""
        return self.profile_inputs("user", torch.from_numpy(np.asarray(users, dtype=np.int64)))

    def encode_users(self, users: np.ndarray) -> torch.Tensor:
        return self.user_tower()(self.history_dense(users), *self.tower_profile_inputs(users))

    def encode_items(self) -> torch.Tensor:
        return self._item_matrix()

    def make_scorer(self) -> Scorer:
        """Scores through the sparse encoder path (same values as the towers, faster)."""

        def score(users: np.ndarray) -> torch.Tensor:
            users = np.asarray(users)
            with torch.no_grad():
                z, _ = self.encode(users)
                if self.mapping is not None:
                    z = z + self._profile_means(users)
                return self.decode(z)

        return score

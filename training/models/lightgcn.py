"""LightGCN (He et al., SIGIR 2020) with optional ProEx profile fusion.

Base model: user and item ID embeddings (Xavier-initialised) propagated over the symmetric-normalised
bipartite adjacency ``D^-1/2 A D^-1/2`` (a torch sparse matrix, ``torch.sparse.mm``), final embedding =
mean of layers 0..L; BPR with one uniformly sampled negative per training positive; L2 on the ID
embeddings (the ProEx mapping has its own, decoupled weight decay, ``ProExConfig.mapping_weight_decay``);
Adam.

Layer mean vs the papers' reference code: that code sums the L + 1 layers instead of averaging them.
Under Adam, summing with (lr, L2) trains like averaging with ((L + 1) lr, L2 / (L + 1)^2), up to the
initial scale. The defaults here are the papers' values (lr 1e-3, L2 1e-6) with the LightGCN paper's
layer mean, which converges about four times slower; the Amazon-Book parity run uses lr 4e-3 and
L2 6.25e-8, i.e. the reference code's dynamics.

Negative sampling is vectorised: negatives are drawn uniformly and those that hit a training positive
of the same user are redrawn, up to ``_NEGATIVE_RETRIES`` rounds; the rare collisions left after that
are accepted (the reference code accepts them too).

ProEx (``proex`` given): the K profile vectors of the batch's distinct users and items go through the
shared mapping ``f_psi: d_s -> hidden -> d`` (read from their projection on the profiles' top principal
directions, computed once, when ``ProExConfig.input_rank`` is set); each environment mixes them with
Dirichlet weights and adds them to the propagated embeddings (Eq. 8, 12); the loss is Eq. 13-14 with
InfoNCE alignment between the propagated embedding and the mixed profile. ``L_rec^e`` is LightGCN's
whole loss, BPR plus the embedding L2, so Eq. 14's sum over environments keeps the base model's ratio of
BPR to L2 (adding the L2 once to a sum of |E| BPR terms would weaken it |E|-fold against the base model
under Adam). Inference adds the masked mean of the K mapped profiles (Algorithm 2). The towers
(:meth:`LightGCN.user_tower`, :meth:`LightGCN.item_tower`) compute exactly that from ``(collab,
profiles, profile_mask)`` with ONNX-exportable ops.

With ``ProExConfig.fusion_stage="input"`` the mixed profiles are added to the layer-0 embeddings
instead, so propagation pools every entity's profiles over its neighbourhood: the fused
representation is ``z + P c~`` (``P`` the layer mean of ``A^0..A^L``, linear, so the ID part and each
environment's profile part propagate separately, all environments in one sparse product). At
inference ``c~`` is the mean of the K mapped profiles. An entity's own profile enters ``P c~`` with
weight ``1 / (L + 1)`` through layer 0 (plus small even-order return paths); the towers add exactly
that share from the profiles they are given, and the exported collaborative vector carries the rest
(``z + P c~ - c~ / (L + 1)``: the neighbourhood's profiles as of training). A refreshed profile thus
moves its entity's vector through the tower, and the two together reproduce the model's scores.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from training.models.base import LossOutput, Recommender, Scorer, pass_through
from training.proex import (
    MappingMLP,
    ProExConfig,
    ProExFusion,
    environment_theta,
    info_nce,
    masked_mean,
    mix_rows,
    profile_regulariser,
)
from training.profiles import ProfileInputs

_NEGATIVE_RETRIES = 10


@dataclass
class LightGCNConfig:
    """LightGCN hyperparameters; defaults are the papers' (ProEx Appendix A.2.3, RLMRec)."""

    embedding_dim: int = 32
    n_layers: int = 3
    lr: float = 1e-3
    batch_size: int = 4096
    l2: float = 1e-6
    # False: no item ID embeddings; an item's layer-0 vector is its mapped profiles (its text) alone,
    # RecLM's "item text as item input", so a new item is scored exactly like a catalogue item
    item_ids: bool = True


class LightGCNTower(nn.Module):
    """``forward(collab [B, d], profiles [B, K, d_s], profile_mask [B, K]) -> [B, d]``.

    ``collab + profile_weight * masked_mean_k(f_psi(profiles[:, k]))`` (``profile_weight`` is 1 for
    output-stage fusion, ``1 / (L + 1)`` for input-stage fusion); with no mapping (base model)
    ``collab`` is returned unchanged (the profile inputs stay inputs of the exported graph, see
    :func:`~training.models.base.pass_through`).
    """

    def __init__(self, mapping: MappingMLP | None, profile_weight: float = 1.0) -> None:
        super().__init__()
        self.mapping = mapping
        self.profile_weight = profile_weight

    def forward(
        self, collab: torch.Tensor, profiles: torch.Tensor, profile_mask: torch.Tensor
    ) -> torch.Tensor:
        if self.mapping is None:
            return pass_through(collab, profiles, profile_mask)
        pooled = masked_mean(self.mapping(profiles), profile_mask)
        if self.profile_weight != 1.0:
            pooled = pooled * self.profile_weight
        return collab + pooled


class _SymmetricSparseMM(torch.autograd.Function):
    """``A @ x`` for a constant symmetric sparse CSR matrix ``A``; the gradient is ``A @ grad``.

    torch's own backward of a CSR product transposes ``A`` on every call; symmetry makes that free.
    """

    @staticmethod
    def forward(ctx: Any, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, torch.sparse.mm(ctx.adjacency, grad)


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """``D^-1/2 [[0, R], [R^T, 0]] D^-1/2`` of the user-item graph as a sparse CSR tensor."""
    r = sp.csr_matrix(train, dtype=np.float32)
    r.data[:] = 1.0
    adj = cast(sp.csr_matrix, sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32))
    adj.sort_indices()
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.power(degree, -0.5, out=inv_sqrt, where=degree > 0)
    norm = (sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)).tocsr()
    norm.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(norm.indptr.astype(np.int32)),  # int32 indices: no per-call conversion
            torch.from_numpy(norm.indices.astype(np.int32)),
            torch.from_numpy(norm.data.astype(np.float32)),
            size=norm.shape,
            check_invariants=False,
        )


class LightGCN(ProExFusion, Recommender):
    """LightGCN, optionally ProEx-fused. ``train`` is the training interaction matrix."""

    kind = "lightgcn"

    def __init__(
        self,
        train: sp.csr_matrix,
        config: LightGCNConfig | None = None,
        proex: ProExConfig | None = None,
        profiles: ProfileInputs | None = None,
    ) -> None:
        super().__init__()
        self.config = config or LightGCNConfig()
        self.n_users, self.n_items = train.shape
        d = self.config.embedding_dim
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding: torch.Tensor
        if self.config.item_ids:
            self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        else:  # items are their text: layer 0 is the mapped profiles alone (input-stage fusion)
            if proex is None or proex.fusion_stage != "input":
                raise ValueError("item_ids=False needs ProEx with fusion_stage='input' (items enter as text)")
            self.register_buffer("item_embedding", torch.zeros(self.n_items, d))
            if proex.input_rank:
                # the text is the items' identity here: a rank-r projection of it merges items (MIND,
                # RecLM's text-as-item base, seed 1: day N+1 R@20 0.0411 with rank 64, 0.0574 without)
                proex = replace(proex, input_rank=0)
        self.adjacency = normalized_adjacency(train)
        coo = sp.coo_matrix(train)
        self._train_users = coo.row.astype(np.int64)
        self._train_items = coo.col.astype(np.int64)
        self._positive_keys = np.unique(self._train_users * self.n_items + self._train_items)
        self.init_proex(proex, profiles, d)
        if self.mapping is not None:
            sources = {"user_profiles": "user_profile_mask", "item_profiles": "item_profile_mask"}
            self.setup_projection(sources)

    # ------------------------------------------------------------------ interface
    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self.config)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam; ``f_psi`` in its own group when the ProEx config gives it a weight decay or lr."""
        return self.proex_optimizer(self.config.lr)

    def batches_per_epoch(self) -> int:
        return -(-len(self._train_users) // self.config.batch_size)

    def epoch_batches(self, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        """Every training positive once, shuffled, with one sampled negative, in batches."""
        order = rng.permutation(len(self._train_users))
        users = self._train_users[order]
        positives = self._train_items[order]
        negatives = self.sample_negatives(users, rng)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            stop = start + size
            yield (
                torch.from_numpy(users[start:stop]),
                torch.from_numpy(positives[start:stop]),
                torch.from_numpy(negatives[start:stop]),
            )

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform negative per row, redrawn (vectorised) while it is a training positive."""
        negatives = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        for _ in range(_NEGATIVE_RETRIES):
            keys = users * self.n_items + negatives
            pos = np.searchsorted(self._positive_keys, keys).clip(max=len(self._positive_keys) - 1)
            hit = self._positive_keys[pos] == keys
            if not hit.any():
                break
            negatives[hit] = rng.integers(0, self.n_items, size=int(hit.sum()), dtype=np.int64)
        return negatives

    # ------------------------------------------------------------------ propagation
    def smooth(self, layer0: torch.Tensor) -> torch.Tensor:
        """Mean of ``A^0 x .. A^L x`` for ``x = layer0 [n_users + n_items, ...]`` (users first)."""
        layer = layer0
        total = layer
        for _ in range(self.config.n_layers):
            layer = _SymmetricSparseMM.apply(self.adjacency, layer)
            total = total + layer
        return total / (self.config.n_layers + 1)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The propagated embeddings ``z_u [n_users, d]``, ``z_i [n_items, d]`` (mean of layers 0..L)."""
        final = self.smooth(torch.cat([self.user_embedding, self.item_embedding], dim=0))
        return final[: self.n_users], final[self.n_users :]

    @property
    def fuses_input(self) -> bool:
        """Whether the profiles are added to the layer-0 embeddings (``fusion_stage="input"``)."""
        return self.mapping is not None and self.proex is not None and self.proex.fusion_stage == "input"

    @property
    def profile_weight(self) -> float:
        """The weight of an entity's own pooled profile in its fused vector (the towers' share)."""
        return 1.0 / (self.config.n_layers + 1) if self.fuses_input else 1.0

    def smooth_environments(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``P c~`` of every environment in one sparse product.

        ``users [n_users, E, d]`` and ``items [n_items, E, d]`` in, ``[n_users + n_items, E, d]`` out.
        """
        stacked = torch.cat([users, items], dim=0)  # [N, E, d]
        n, n_envs, d = stacked.shape
        return self.smooth(stacked.reshape(n, n_envs * d)).reshape(n, n_envs, d)

    def tower_collab(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The towers' ``collab`` inputs for every user and item.

        Output-stage fusion: the propagated embeddings. Input-stage fusion: ``z + P c~ - c~ / (L + 1)``
        with ``c~`` the mean of the K mapped profiles, so ``collab + tower share`` is the fused vector.
        """
        z_users, z_items = self.propagate()
        if not self.fuses_input:
            return z_users, z_items
        assert self.mapping is not None
        pooled = torch.cat(
            [
                masked_mean(self.map_present("user"), self.user_profile_mask),
                masked_mean(self.map_present("item"), self.item_profile_mask),
            ]
        )
        rest = self.smooth(pooled) - self.profile_weight * pooled
        return z_users + rest[: self.n_users], z_items + rest[self.n_users :]

    def map_present(self, entity: str) -> torch.Tensor:
        """``f_psi`` of every slot of the ``entity`` ("user" / "item") rows that have a profile; zeros
        for those without.

        Exact wherever the result is used (entities without profiles get zero mixing and pooling
        weights), and it skips the mapping of, e.g., tens of thousands of users with no profile.
        """
        mask = self.user_profile_mask if entity == "user" else self.item_profile_mask
        name = f"{entity}_profiles"
        present = mask.any(dim=1)
        if bool(present.all()):
            return self.map_rows(name)
        index = torch.nonzero(present).squeeze(1)
        out = getattr(self, name).new_zeros(mask.shape[0], mask.shape[1], self.config.embedding_dim)
        return out.index_copy(0, index, self.map_rows(name, index))

    def l2_penalty(self) -> torch.Tensor:
        """Squared L2 norm of the ID embeddings (``f_psi`` has its own ``mapping_weight_decay``)."""
        return self.user_embedding.pow(2).sum() + self.item_embedding.pow(2).sum()

    # ------------------------------------------------------------------ training loss
    def loss(self, batch: tuple[torch.Tensor, ...]) -> LossOutput:
        users, positives, negatives = batch
        z_users, z_items = self.propagate()
        l2 = self.config.l2 * self.l2_penalty()
        if self.proex is None or self.mapping is None:
            bpr = _bpr(z_users[users], z_items[positives], z_items[negatives])
            total = bpr + l2
            return LossOutput(
                total, {"loss": float(total.detach()), "bpr": float(bpr.detach()), "l2": float(l2.detach())}
            )
        return self._proex_loss(users, positives, negatives, z_users, z_items, l2)

    def _proex_loss(
        self,
        users: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        z_users: torch.Tensor,
        z_items: torch.Tensor,
        l2: torch.Tensor,
    ) -> LossOutput:
        """Eq. 8-14 for one batch, every environment at once.

        Output-stage fusion maps only the batch's distinct users and items; input-stage fusion maps
        and mixes everyone's profiles (propagation needs every layer-0 row) and propagates them.
        ``L_rec^e`` is LightGCN's whole loss, BPR plus its L2 (Eq. 13).
        """
        assert self.proex is not None and self.mapping is not None
        uniq_users, user_pos = torch.unique(users, return_inverse=True)
        uniq_items, item_pos = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
        pos_pos, neg_pos = item_pos[: len(positives)], item_pos[len(positives) :]
        user_mask = self.user_profile_mask.index_select(0, uniq_users)
        item_mask = self.item_profile_mask.index_select(0, uniq_items)
        theta = environment_theta(self.proex)  # one set of environments for users and items
        if self.fuses_input:
            all_users = self.map_present("user")  # [n_users, K, d]
            all_items = self.map_present("item")  # [n_items, K, d]
            smoothed = self.smooth_environments(
                mix_rows(theta, self.user_profile_mask, all_users),
                mix_rows(theta, self.item_profile_mask, all_items),
            )  # [n_users + n_items, E, d]
            mixed_users = smoothed[: self.n_users].index_select(0, uniq_users)  # [U, E, d]
            mixed_items = smoothed[self.n_users :].index_select(0, uniq_items)  # [I, E, d]
            mapped_users, mapped_items = all_users[uniq_users], all_items[uniq_items]
        else:
            mapped_users = self.map_rows("user_profiles", uniq_users)  # [U, K, d]
            mapped_items = self.map_rows("item_profiles", uniq_items)  # [I, K, d]
            mixed_users = mix_rows(theta, user_mask, mapped_users)  # [U, E, d]
            mixed_items = mix_rows(theta, item_mask, mapped_items)  # [I, E, d]
        zu_uniq, zi_uniq = z_users.index_select(0, uniq_users), z_items.index_select(0, uniq_items)
        fused_u = zu_uniq.unsqueeze(1) + mixed_users  # [U, E, d]
        fused_i = zi_uniq.unsqueeze(1) + mixed_items  # [I, E, d]
        bpr = _bpr(  # [E]: rows gathered entity-major (contiguous gradient scatter)
            fused_u.index_select(0, user_pos).transpose(0, 1),
            fused_i.index_select(0, pos_pos).transpose(0, 1),
            fused_i.index_select(0, neg_pos).transpose(0, 1),
        )
        align = None
        if self.aligns:
            cfg = self.proex
            user_valid, item_valid = user_mask.any(dim=1), item_mask.any(dim=1)
            align = torch.stack(
                [
                    info_nce(zu_uniq, mixed_users[:, e], user_valid, cfg.tau_align)
                    + info_nce(zi_uniq, mixed_items[:, e], item_valid, cfg.tau_align)
                    for e in range(len(theta))
                ]
            )

        def regulariser() -> torch.Tensor:
            cfg = self.proex
            assert cfg is not None
            return profile_regulariser(
                mapped_users, user_mask, cfg.tau_reg, cfg.reg_similarity
            ) + profile_regulariser(mapped_items, item_mask, cfg.tau_reg, cfg.reg_similarity)

        total, parts = self.proex_objective(bpr + l2, {"bpr": bpr, "l2": l2}, align, regulariser)
        return LossOutput(total, parts)

    # ------------------------------------------------------------------ towers and scoring
    def user_tower(self) -> LightGCNTower:
        """The exportable user tower (shares the mapping MLP with the item tower).

        The tower starts in the model's mode (eval after training), so an exporter that restores the
        tower's mode afterwards leaves ``f_psi``'s dropout off.
        """
        return LightGCNTower(self.mapping, self.profile_weight).train(self.training)

    def item_tower(self) -> LightGCNTower:
        """The exportable item tower (same computation as the user tower, shared weights)."""
        return LightGCNTower(self.mapping, self.profile_weight).train(self.training)

    def collab_user_vectors(self) -> np.ndarray:
        """The user tower's ``collab`` input ``[n_users, d]`` (see :meth:`tower_collab`)."""
        with torch.no_grad():
            return self.tower_collab()[0].numpy().copy()

    def collab_item_vectors(self) -> np.ndarray:
        """The item tower's ``collab`` input ``[n_items, d]``."""
        with torch.no_grad():
            return self.tower_collab()[1].numpy().copy()

    def encode_users(self, users: np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(np.asarray(users, dtype=np.int64))
        collab = self.tower_collab()[0][index]
        return self.user_tower()(collab, *self.profile_inputs("user", index))

    def encode_items(self) -> torch.Tensor:
        collab = self.tower_collab()[1]
        return self.item_tower()(collab, *self.profile_inputs("item", None))

    def make_scorer(self) -> Scorer:
        """Propagate once, encode all items once, then score batches of users."""
        with torch.no_grad():
            z_users, z_items = self.tower_collab()
            items = self.item_tower()(z_items, *self.profile_inputs("item", None))
            tower = self.user_tower()

        def score(users: np.ndarray) -> torch.Tensor:
            index = torch.as_tensor(np.asarray(users, dtype=np.int64))
            with torch.no_grad():
                return tower(z_users[index], *self.profile_inputs("user", index)) @ items.T

        return score


def _bpr(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss ``softplus(s(u, j) - s(u, i))`` over the rows of ``[..., B, d]`` inputs."""
    return F.softplus((users * negatives).sum(-1) - (users * positives).sum(-1)).mean(-1)

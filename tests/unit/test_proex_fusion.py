""":class:`training.proex.ProExFusion`: a third model gets ProEx by writing only its own loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.proex import (
    ProExConfig,
    ProExFusion,
    environment_theta,
    mix,
    mix_weights,
    profile_regulariser,
)
from training.profiles import ProfileInputs, synthetic_profile_inputs

N_USERS, N_ITEMS, D, D_S, K = 6, 9, 4, 8, 3


class TinyMF(ProExFusion, nn.Module):
    """Matrix factorisation with BPR; everything ProEx comes from the mixin."""

    def __init__(self, proex: ProExConfig | None = None, profiles: ProfileInputs | None = None) -> None:
        super().__init__()
        self.n_users, self.n_items = N_USERS, N_ITEMS
        self.users = nn.Parameter(torch.randn(N_USERS, D) * 0.1)
        self.items = nn.Parameter(torch.randn(N_ITEMS, D) * 0.1)
        self.init_proex(proex, profiles, D, stages=("output",))

    def loss(
        self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.proex is not None and self.mapping is not None
        mapped_u = self.mapping(self.user_profiles[u])
        mapped_i = self.mapping(self.item_profiles[i])
        mapped_j = self.mapping(self.item_profiles[j])
        theta = environment_theta(self.proex)
        fu = self.users[u] + mix(mix_weights(theta, self.user_profile_mask[u]), mapped_u)
        fi = self.items[i] + mix(mix_weights(theta, self.item_profile_mask[i]), mapped_i)
        fj = self.items[j] + mix(mix_weights(theta, self.item_profile_mask[j]), mapped_j)
        bpr = torch.nn.functional.softplus((fu * fj).sum(-1) - (fu * fi).sum(-1)).mean(-1)  # [E]
        cfg = self.proex
        return self.proex_objective(
            bpr,
            {"bpr": bpr},
            None,
            lambda: profile_regulariser(mapped_u, self.user_profile_mask[u], cfg.tau_reg, cfg.reg_similarity),
        )


def profiles(k: int = K) -> ProfileInputs:
    return synthetic_profile_inputs(N_USERS, N_ITEMS, k, D_S, seed=1, missing=0.2)


def test_a_third_model_trains_with_the_mixin_and_keeps_the_checkpoint_names() -> None:
    torch.manual_seed(0)
    model = TinyMF(ProExConfig(n_profiles=K, mapping_hidden=5, lambda_align=0.0), profiles())
    assert model.uses_profiles and not model.aligns
    names = set(model.state_dict())
    assert {"user_profiles", "user_profile_mask", "item_profiles", "item_profile_mask"} <= names
    assert {"mapping.hidden.weight", "mapping.out.weight"} <= names
    optimizer = model.proex_optimizer(0.05)
    u, i, j = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), torch.tensor([8, 7, 6, 5])
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        total, parts = model.loss(u, i, j)
        total.backward()
        assert model.mapping is not None and model.mapping.hidden.weight.grad is not None
        optimizer.step()
        first = parts if first is None else first
    assert set(parts) == {"bpr", "variance", "reg", "loss"}
    assert first is not None and parts["loss"] < first["loss"]


def test_init_checks_pairing_k_and_fusion_stage() -> None:
    with pytest.raises(ValueError, match="profile inputs"):
        TinyMF(ProExConfig(n_profiles=K), None)
    with pytest.raises(ValueError, match="profile inputs"):
        TinyMF(None, profiles())
    with pytest.raises(ValueError, match="K=3"):
        TinyMF(ProExConfig(n_profiles=4), profiles())
    with pytest.raises(ValueError, match="fusion_stage"):
        TinyMF(ProExConfig(n_profiles=K, fusion_stage="input"), profiles())
    base = TinyMF()
    assert not base.uses_profiles and base.mapping is None and "user_profiles" not in base.state_dict()


def test_profile_inputs_are_the_buffers_or_placeholders() -> None:
    fused, base = TinyMF(ProExConfig(n_profiles=K), profiles()), TinyMF()
    index = torch.tensor([4, 0])
    vectors, mask = fused.profile_inputs("item", index)
    assert torch.equal(vectors, fused.item_profiles[index])
    assert mask.dtype == torch.float32 and torch.equal(mask, fused.item_profile_mask[index].float())
    assert fused.profile_inputs("user")[0].shape == (N_USERS, K, D_S)
    assert [t.shape for t in base.profile_inputs("user", index)] == [(2, 1, 1), (2, 1)]
    assert [t.shape for t in base.profile_inputs("item")] == [(N_ITEMS, 1, 1), (N_ITEMS, 1)]


def test_objective_is_eq_13_14() -> None:
    cfg = ProExConfig(n_profiles=K, lambda_align=0.5, lambda_var=2.0, lambda_reg=0.1)
    model = TinyMF(cfg, profiles())
    rec, align = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.2, 0.2, 0.8])
    total, parts = model.proex_objective(rec, {"rec": rec}, align, lambda: torch.tensor(3.0))
    env = rec + 0.5 * align
    variance = env.var(unbiased=False)
    assert total.item() == pytest.approx((env.sum() + 2.0 * variance + 0.1 * 3.0).item())
    assert parts["variance"] == pytest.approx(variance.item())
    assert parts["rec"] == pytest.approx(7.0 / 3) and parts["align"] == pytest.approx(0.4)
    ablated = TinyMF(ProExConfig(n_profiles=K, use_regulariser=False, use_variance=False), profiles())

    def never() -> torch.Tensor:
        raise AssertionError("the regulariser is off")

    total, parts = ablated.proex_objective(rec, {}, None, never)
    assert total.item() == pytest.approx(7.0) and "reg" not in parts and "align" not in parts

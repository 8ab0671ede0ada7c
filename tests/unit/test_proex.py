"""ProEx loss terms on tiny tensors: shapes, Dirichlet weights, masks, variance, pooling, alignment."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from training.proex import (
    MappingMLP,
    ProExConfig,
    environment_objective,
    environment_theta,
    gaussian_kl,
    info_nce,
    kl_alignment,
    make_adam,
    masked_mean,
    mix,
    mix_rows,
    mix_weights,
    proex_defaults,
    profile_regulariser,
    sample_environment_weights,
)


def test_dirichlet_weights_sum_to_one_even_with_small_alpha() -> None:
    torch.manual_seed(0)
    for alpha in (0.01, 0.1, 1.0):
        theta = sample_environment_weights(500, 4, alpha)
        assert theta.shape == (500, 4)
        assert torch.isfinite(theta).all()
        assert (theta >= 0).all()
        assert torch.allclose(theta.sum(dim=1), torch.ones(500), atol=1e-5)


def test_small_alpha_gives_sparse_mixtures() -> None:
    torch.manual_seed(0)
    sparse = sample_environment_weights(2000, 4, 0.1).max(dim=1).values.mean()
    flat = sample_environment_weights(2000, 4, 10.0).max(dim=1).values.mean()
    assert sparse > 0.8
    assert flat < 0.4


def test_mix_weights_renormalise_over_existing_slots() -> None:
    theta = torch.tensor([[0.4, 0.3, 0.2, 0.1], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    w = mix_weights(theta, mask)
    assert w.shape == (2, 3, 4)
    assert torch.allclose(w[0, 0], theta[0])
    assert torch.allclose(w[0, 1], torch.tensor([0.0, 0.6, 0.4, 0.0]))
    # all of env 1's mass sits on a missing slot: uniform over the slots that exist
    assert torch.allclose(w[1, 1], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    # no profile at all: zero weights, so a zero profile term
    assert torch.equal(w[:, 2], torch.zeros(2, 4))
    sums = w.sum(dim=-1)
    assert torch.allclose(sums[:, :2], torch.ones(2, 2))


def test_mix_gives_convex_combinations() -> None:
    values = torch.randn(3, 4, 5)
    weights = mix_weights(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.ones(3, 4, dtype=torch.bool))
    mixed = mix(weights, values)
    assert mixed.shape == (1, 3, 5)
    assert torch.allclose(mixed[0], values[:, 1])


def test_environment_weights_follow_the_ablation_switches() -> None:
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    torch.manual_seed(0)
    mixed = mix_weights(environment_theta(ProExConfig(n_envs=3)), mask)
    assert mixed.shape == (3, 2, 4)
    assert (mixed[:, :, 2] == 0).all()
    assert torch.allclose(mixed.sum(-1), torch.ones(3, 2))
    pooled = mix_weights(environment_theta(ProExConfig(n_envs=3, use_mixing=False)), mask)
    assert pooled.shape == (1, 2, 4)
    assert torch.allclose(pooled[0, 0], torch.tensor([1 / 3, 1 / 3, 0.0, 1 / 3]))
    assert ProExConfig(n_envs=5, use_variance=False).effective_envs == 1


def test_masked_mean_pools_existing_profiles_only() -> None:
    values = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    pooled = masked_mean(values, mask)
    assert pooled.shape == (2, 4)
    assert torch.allclose(pooled[0], (values[0, 0] + values[0, 2]) / 2)
    assert torch.equal(pooled[1], torch.zeros(4))


def test_variance_term_is_zero_for_equal_environments() -> None:
    equal = [torch.tensor(1.5), torch.tensor(1.5), torch.tensor(1.5)]
    total, variance = environment_objective(equal, lambda_var=10.0)
    assert variance.item() == 0.0
    assert total.item() == pytest.approx(4.5)
    total, variance = environment_objective([torch.tensor(1.0), torch.tensor(3.0)], lambda_var=2.0)
    assert variance.item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(4.0 + 2.0)
    single_total, single_var = environment_objective([torch.tensor(2.0)], lambda_var=1.0)
    assert (single_total.item(), single_var.item()) == (2.0, 0.0)


def test_regulariser_prefers_spread_profiles_and_respects_masks() -> None:
    same = torch.ones(2, 4, 3)
    spread = torch.eye(4)[None, :, :3].repeat(2, 1, 1) - 0.25
    mask = torch.ones(2, 4)
    tight = profile_regulariser(same, mask, tau=0.2)
    loose = profile_regulariser(spread, mask, tau=0.2)
    assert tight.shape == ()
    assert loose < tight
    # one slot per entity: nothing to push apart
    single = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert profile_regulariser(same, single, tau=0.2).item() == 0.0
    assert profile_regulariser(same[:, :1], torch.ones(2, 1), tau=0.2).item() == 0.0
    # a missing slot's vector does not matter
    noisy = same.clone()
    noisy[:, 3] = torch.randn(2, 3)
    partial = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(profile_regulariser(noisy, partial, 0.2), profile_regulariser(same, partial, 0.2))


def test_dot_regulariser_is_eq7_literally_and_scales_with_the_profiles() -> None:
    """The paper's form: log(1 + e^(1/tau) sum_k' exp(c_k . c_k' / tau)), summed over k."""
    torch.manual_seed(0)
    mapped = torch.randn(1, 3, 4)
    dots = mapped[0] @ mapped[0].T
    expected = sum(
        torch.log1p(
            torch.exp(torch.tensor(5.0)) * sum(torch.exp(dots[k, j] / 0.2) for j in range(3) if j != k)
        )
        for k in range(3)
    )
    got = profile_regulariser(mapped, torch.ones(1, 3), 0.2, similarity="dot")
    assert torch.allclose(got, expected, atol=1e-4)
    # the cosine form pushes tiny profiles as hard as large ones; the dot form hardly moves them
    small = (0.01 * mapped).requires_grad_()
    profile_regulariser(small, torch.ones(1, 3), 0.2, similarity="dot").backward()
    assert small.grad is not None
    dot_push = small.grad.norm()
    small.grad = None
    profile_regulariser(small, torch.ones(1, 3), 0.2, similarity="cosine").backward()
    assert small.grad.norm() > 100 * dot_push
    with pytest.raises(ValueError, match="reg_similarity"):
        ProExConfig(reg_similarity="euclid")


def _reference_regulariser(mapped: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 7 on cosines, written directly: entity by entity, slot by slot."""
    terms = []
    for b in range(mapped.shape[0]):
        slots = [k for k in range(mapped.shape[1]) if mask[b, k] and mapped[b, k].abs().sum() > 0]
        if len(slots) < 2:
            continue
        unit = functional.normalize(mapped[b], dim=-1)
        per_slot = []
        for k in slots:
            logits = torch.stack([(unit[k] @ unit[j] + 1.0) / tau for j in slots if j != k])
            per_slot.append(functional.softplus(torch.logsumexp(logits, 0)))
        terms.append(torch.stack(per_slot).sum())
    return torch.stack(terms).mean()


def test_regulariser_from_the_gram_matrix_equals_eq7_on_normalised_profiles() -> None:
    """The batched form (cosines from one Gram matrix) gives the textbook values and gradients."""
    torch.manual_seed(3)
    mapped = torch.randn(7, 4, 6)
    mapped[2, 1] = 0.0  # a zero profile takes no part
    mask = torch.rand(7, 4) > 0.25
    mask[0] = True
    a = mapped.clone().requires_grad_()
    b = mapped.clone().requires_grad_()
    got = profile_regulariser(a, mask, 0.2)
    expected = _reference_regulariser(b, mask, 0.2)
    assert torch.allclose(got, expected, atol=1e-5)
    got.backward()
    expected.backward()
    assert a.grad is not None and b.grad is not None
    assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_entity_major_mix_is_the_mix_transposed() -> None:
    torch.manual_seed(4)
    theta = sample_environment_weights(3, 4, 0.1)
    mask = torch.rand(5, 4) > 0.3
    values = torch.randn(5, 4, 6)
    expected = mix(mix_weights(theta, mask), values).transpose(0, 1)
    assert torch.allclose(mix_rows(theta, mask, values), expected, atol=1e-6)


def test_regulariser_has_gradients() -> None:
    mapped = torch.randn(5, 4, 8, requires_grad=True)
    profile_regulariser(mapped, torch.ones(5, 4), tau=0.2).backward()
    assert mapped.grad is not None and torch.isfinite(mapped.grad).all()


def test_info_nce_rewards_alignment_and_skips_rows_without_profiles() -> None:
    torch.manual_seed(0)
    anchor = torch.randn(16, 8)
    valid = torch.ones(16, dtype=torch.bool)
    aligned = info_nce(anchor, anchor.clone(), valid, tau=0.2)
    shuffled = info_nce(anchor, anchor[torch.randperm(16)], valid, tau=0.2)
    assert aligned.shape == ()
    assert aligned < shuffled
    partial = valid.clone()
    partial[8:] = False
    target = anchor.clone()
    target[8:] = torch.randn(8, 8)
    assert torch.allclose(
        info_nce(anchor, target, partial, 0.2), info_nce(anchor[:8], anchor[:8], valid[:8], 0.2)
    )
    assert info_nce(anchor, target, torch.zeros(16, dtype=torch.bool), 0.2).item() == 0.0


def test_kl_alignment_matches_the_gaussian_kl() -> None:
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4) * 0.1
    valid = torch.ones(6, dtype=torch.bool)
    assert kl_alignment(mu, logvar, mu, logvar, valid, beta=0.0).item() == pytest.approx(0.0, abs=1e-6)
    to_prior = gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)).mean()
    assert kl_alignment(mu, logvar, mu + 1, logvar, valid, beta=1.0).item() == pytest.approx(
        to_prior.item(), rel=1e-5
    )
    expected = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
    assert to_prior.item() == pytest.approx(expected.item(), rel=1e-5)
    half = kl_alignment(mu, logvar, mu + 1, logvar, valid, beta=0.5)
    to_env = gaussian_kl(mu, logvar, mu + 1, logvar).mean()
    assert half.item() == pytest.approx(0.5 * to_env.item() + 0.5 * to_prior.item(), rel=1e-5)
    assert kl_alignment(mu, logvar, mu + 1, logvar, torch.zeros(6, dtype=torch.bool), 0.5).item() == 0.0


def test_mapping_maps_every_profile_independently() -> None:
    mlp = MappingMLP(12, 7, 3)
    profiles = torch.randn(5, 4, 12)
    out = mlp(profiles)
    assert out.shape == (5, 4, 3)
    assert torch.allclose(out[2, 1], mlp(profiles[2, 1]), atol=1e-6)


def test_config_validation_and_model_defaults() -> None:
    with pytest.raises(ValueError):
        ProExConfig(n_profiles=0)
    with pytest.raises(ValueError):
        ProExConfig(beta=1.5)
    config = proex_defaults("multvae", n_envs=5, alpha=None)
    assert config.n_envs == 5 and config.alpha == 0.1
    assert ProExConfig.from_dict({**config.as_dict(), "unknown": 1}) == config


def test_mapping_options_are_validated() -> None:
    with pytest.raises(ValueError):
        ProExConfig(mapping_weight_decay=-1.0)
    with pytest.raises(ValueError):
        ProExConfig(mapping_lr=0.0)
    with pytest.raises(ValueError):
        ProExConfig(profile_dropout=1.0)
    with pytest.raises(ValueError):
        ProExConfig(mapping_dropout=-0.1)


def test_zero_init_mapping_outputs_zero_until_trained() -> None:
    torch.manual_seed(0)
    mlp = MappingMLP(12, 7, 3, zero_init=True)
    profiles = torch.randn(5, 4, 12)
    assert torch.equal(mlp(profiles), torch.zeros(5, 4, 3))
    assert mlp.hidden.weight.abs().sum() > 0  # only the output layer starts at zero
    (mlp(profiles) - torch.randn(5, 4, 3)).pow(2).sum().backward()  # the output layer still learns
    assert mlp.out.weight.grad is not None and mlp.out.weight.grad.abs().sum() > 0


def test_mapping_dropout_acts_in_training_mode_only() -> None:
    torch.manual_seed(0)
    plain = MappingMLP(12, 7, 3)
    dropped = MappingMLP(12, 7, 3, input_dropout=0.5, hidden_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())  # dropout adds no parameters
    x = torch.randn(6, 4, 12)
    dropped.eval()
    assert torch.equal(dropped(x), plain(x))
    dropped.train()
    assert not torch.allclose(dropped(x), plain(x))
    assert isinstance(MappingMLP(12, 7, 3).input_dropout, torch.nn.Identity)  # rate 0: no dropout op


def test_make_adam_decays_only_the_mapping() -> None:
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.embedding = torch.nn.Parameter(torch.randn(5, 3))
    model.mapping = MappingMLP(4, 6, 3)
    plain = make_adam(model, 0.01, mapping=model.mapping, config=ProExConfig())
    assert len(plain.param_groups) == 1  # no mapping option: plain Adam over every parameter
    config = ProExConfig(mapping_weight_decay=0.5, mapping_lr=0.1)
    optimizer = make_adam(model, 0.01, mapping=model.mapping, config=config)
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["lr"] == 0.1 and optimizer.param_groups[0]["lr"] == 0.01
    embedding = model.embedding.detach().clone()
    weight = model.mapping.hidden.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradients: only the decay moves parameters
    optimizer.step()
    assert torch.equal(model.embedding.detach(), embedding)
    assert torch.allclose(model.mapping.hidden.weight.detach(), weight * (1 - 0.1 * 0.5))


def test_cosine_terms_skip_zero_vectors() -> None:
    mapped = torch.zeros(3, 4, 5, requires_grad=True)
    mask = torch.ones(3, 4)
    reg = profile_regulariser(mapped, mask, 0.2)
    assert reg.item() == 0.0
    anchor = torch.randn(4, 5)
    target = torch.zeros(4, 5, requires_grad=True)
    loss = info_nce(anchor, target, torch.ones(4, dtype=torch.bool), 0.2)
    assert loss.item() == 0.0
    half = torch.cat([torch.randn(2, 5), torch.zeros(2, 5)]).requires_grad_()
    loss = info_nce(anchor, half, torch.ones(4, dtype=torch.bool), 0.2)
    loss.backward()
    assert half.grad is not None and torch.isfinite(half.grad).all() and half.grad[2:].abs().sum() == 0


def test_reused_runs_compare_missing_proex_options_as_their_defaults() -> None:
    """A run folder written before an option existed trained with its default; reuse must see that."""
    from benchmarks.train_quality import _comparable

    current = {"model": "lightgcn", "proex": ProExConfig(lambda_reg=0.01).as_dict(), "train": {}}
    older = {**current, "proex": {k: v for k, v in current["proex"].items() if k != "reg_similarity"}}
    assert _comparable(older) == _comparable(current)
    changed = {**current, "proex": {**current["proex"], "fusion_stage": "input"}}
    assert _comparable(changed) != _comparable(current)
    assert _comparable({**current, "proex": None})["proex"] is None


def test_principal_projection_of_the_mapping_input() -> None:
    """``input_rank``: f_psi reads the top principal coordinates; forward == core(project(x))."""
    torch.manual_seed(5)
    scales = torch.zeros(3, 6)
    scales[0, 0], scales[1, 1], scales[2, 2] = 3.0, 2.0, 1.0
    rows = torch.randn(2000, 3) @ scales
    rows = rows + 0.01 * torch.randn(2000, 6) + 5.0
    mapping = MappingMLP(6, 8, 4, input_rank=2)
    assert mapping.projects and mapping.hidden.in_features == 2
    mapping.fit_projection(rows)
    assert torch.allclose(mapping.center, rows.mean(0), atol=1e-5)
    assert torch.allclose(mapping.basis.T @ mapping.basis, torch.eye(2), atol=1e-5)
    assert abs(float(mapping.basis[0, 0])) > 0.98 and abs(float(mapping.basis[1, 1])) > 0.98  # top variance
    x = torch.randn(5, 3, 6)
    assert torch.allclose(mapping(x), mapping.core(mapping.project(x)))
    assert mapping.project(x).shape == (5, 3, 2)
    assert not MappingMLP(6, 8, 4, input_rank=6).projects and not MappingMLP(6, 8, 4).projects
    with pytest.raises(ValueError, match="input_rank"):
        ProExConfig(input_rank=-1)

"""ProfileOnly (the model that sees only profile vectors) and the profile_signal probe's helpers."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.profile_signal import blend, profile_space, standardised
from training.baselines import MostPop
from training.baselines.profile_only import ProfileOnly, ProfileOnlyConfig
from training.data import Split, split_dataset
from training.evaluation import evaluate
from training.profiles import ProfileInputs

from .test_models import toy_dataset

D_S, K = 32, 2


@pytest.fixture(scope="module")
def split() -> Split:
    return split_dataset(toy_dataset(), "random", seed=1)


def revealing_profiles(split: Split) -> ProfileInputs:
    """Item profiles: random directions; user profiles: the mean of ALL the user's items' directions
    (held-out ones included), so the profiles alone predict the held-out items."""
    rng = np.random.default_rng(0)
    items = rng.standard_normal((split.n_items, D_S)).astype(np.float32)
    everything = (split.train + split.valid + split.test).tocsr()
    users = np.asarray(everything @ items) / np.maximum(np.diff(everything.indptr), 1)[:, None]
    return ProfileInputs(
        np.repeat(users[:, None].astype(np.float32), K, axis=1),
        np.ones((split.n_users, K), bool),
        np.repeat(items[:, None], K, axis=1),
        np.ones((split.n_items, K), bool),
    )


def test_profile_only_learns_from_the_profiles_alone(split: Split) -> None:
    config = ProfileOnlyConfig(dim=16, hidden=32, lr=1e-2, batch_size=64, epochs=60, eval_every=5)
    model = ProfileOnly(revealing_profiles(split), config)
    with pytest.raises(RuntimeError, match="fit"):
        model.score(np.arange(3))
    fit = model.fit(split)
    assert 0 < fit.best_epoch <= fit.epochs_run <= config.epochs
    learned = evaluate(model.score, split, "test")["recall@20"]
    popular = evaluate(MostPop().fit(split.train).score, split, "test")["recall@20"]
    assert learned > popular + 0.1
    again = ProfileOnly(revealing_profiles(split), config)
    again.fit(split)
    np.testing.assert_array_equal(model.score(np.arange(5)).numpy(), again.score(np.arange(5)).numpy())


def test_profile_space_statistics() -> None:
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(8)
    vectors = np.stack([np.stack([direction * (1 + i)] * 3) for i in range(10)]).astype(np.float32)
    mask = np.ones((10, 3), bool)
    mask[0] = False  # an entity without profiles is left out
    stats = profile_space(vectors, mask)
    assert stats["entities"] == 9
    assert stats["cos_raw"] == pytest.approx(1.0)
    assert stats["cos_within_entity"] == pytest.approx(1.0)
    assert stats["effective_rank"] == pytest.approx(1.0)
    spread = profile_space(rng.standard_normal((200, 3, 8)).astype(np.float32), np.ones((200, 3), bool))
    assert abs(spread["cos_centred"]) < 0.05 and spread["effective_rank"] > 6


def test_blend_of_standardised_scores() -> None:
    rng = np.random.default_rng(2)
    first, second = rng.standard_normal((4, 7)) * 5 + 3, rng.standard_normal((4, 7))
    a, b = standardised(lambda users: first[users]), standardised(lambda users: second[users])
    users = np.arange(4)
    np.testing.assert_allclose(a(users).mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(a(users).std(axis=1), 1.0)
    np.testing.assert_allclose(blend(a, b, 0.0)(users), a(users))
    np.testing.assert_allclose(blend(a, b, 1.0)(users), b(users))
    np.testing.assert_allclose(blend(a, b, 0.25)(users), 0.75 * a(users) + 0.25 * b(users))

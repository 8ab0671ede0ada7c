"""``ProExConfig.input_rank`` in the fused models: training reads projected copies of the profile
buffers, which give the same ``f_psi`` values as the towers' path on the raw vectors, and a loaded
checkpoint recomputes them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from training.models import build_model
from training.proex import proex_defaults
from training.profiles import ProfileInputs, synthetic_profile_inputs

N_USERS, N_ITEMS, K, D_S = 12, 15, 3, 16


def _train() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.3).astype(np.float32)
    dense[:, 0] = 1.0
    return sp.csr_matrix(dense)


@pytest.mark.parametrize(
    ("model", "buffer"), [("lightgcn", "item_profiles"), ("multvae", "user_mapping_inputs")]
)
def test_projected_training_rows_match_the_towers_mapping_and_survive_a_reload(
    model: str, buffer: str
) -> None:
    profiles = synthetic_profile_inputs(N_USERS, N_ITEMS, K, D_S, seed=2, missing=0.2)
    torch.manual_seed(0)
    fused = build_model(model, _train(), {}, proex_defaults(model, n_profiles=K, input_rank=4), profiles)
    assert fused.mapping is not None and fused.mapping.projects
    assert fused.mapping.hidden.in_features == 4
    index = torch.tensor([0, 3, 5])
    raw = getattr(fused, buffer).index_select(0, index)
    assert torch.allclose(fused.map_rows(buffer, index), fused.mapping(raw), atol=1e-5)
    # a training step goes through the projected rows
    optimizer = fused.make_optimizer()
    batch = next(iter(fused.epoch_batches(np.random.default_rng(0))))
    fused.loss(batch).total.backward()
    assert fused.mapping.hidden.weight.grad is not None
    optimizer.step()
    # a run reloads with zero profiles, then the checkpoint: the projected copies follow the checkpoint
    state = fused.state_dict()
    assert f"{buffer}_projected" not in state and "mapping.basis" in state
    empty = ProfileInputs.zeros(N_USERS, N_ITEMS, K, D_S)
    reloaded = build_model(model, _train(), {}, proex_defaults(model, n_profiles=K, input_rank=4), empty)
    reloaded.load_state_dict(state)
    assert torch.allclose(reloaded.map_rows(buffer, index), fused.map_rows(buffer, index), atol=1e-6)
    assert torch.allclose(getattr(reloaded, f"{buffer}_projected"), getattr(fused, f"{buffer}_projected"))


def test_without_input_rank_nothing_is_projected() -> None:
    profiles = synthetic_profile_inputs(N_USERS, N_ITEMS, K, D_S, seed=2)
    fused = build_model(
        "lightgcn", _train(), {}, proex_defaults("lightgcn", n_profiles=K, input_rank=0), profiles
    )
    assert fused.mapping is not None and not fused.mapping.projects
    assert "mapping.basis" not in fused.state_dict() and not hasattr(fused, "item_profiles_projected")


def test_items_known_only_by_text_are_never_projected() -> None:
    """With ``item_ids=False`` the text is an item's identity: the default rank is turned off (and the
    model's config, which a run records, says so)."""
    profiles = synthetic_profile_inputs(N_USERS, N_ITEMS, 1, D_S, seed=2)
    proex = proex_defaults("lightgcn", n_profiles=1, input_rank=4, fusion_stage="input")
    fused = build_model("lightgcn", _train(), {"item_ids": False}, proex, profiles)
    assert fused.mapping is not None and not fused.mapping.projects
    assert fused.mapping.hidden.in_features == D_S
    assert fused.proex is not None and fused.proex.input_rank == 0 and proex.input_rank == 4

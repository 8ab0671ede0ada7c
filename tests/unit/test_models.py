"""LightGCN and Mult-VAE, base and ProEx-fused, on tiny synthetic data: smoke training, towers equal
``score_all``, checkpoints reload to identical scores, ONNX export of the towers, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from rec_contract.profile_store import write_profile_vectors
from training.cli import main as cli_main
from training.data import InteractionDataset, Split, split_dataset
from training.models import LightGCN, MultVAE, ProExConfig, TrainConfig, build_model
from training.profiles import ProfileInputs, synthetic_profile_inputs
from training.runs import load_run

N_USERS, N_ITEMS, D_S = 40, 60, 16
KINDS = ("lightgcn", "multvae")
SMALL = {"lightgcn": {"batch_size": 128}, "multvae": {"batch_size": 16, "hidden_dim": 24, "latent_dim": 8}}


def toy_dataset(seed: int = 0) -> InteractionDataset:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(N_USERS):
        chosen = rng.choice(N_ITEMS, size=int(rng.integers(6, 15)), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return InteractionDataset(
        name="toy",
        user_ids=np.array([f"u{u}" for u in range(N_USERS)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object),
        user=np.array(users, np.int32),
        item=np.array(items, np.int32),
        timestamp=np.arange(len(users), dtype=np.int64),
        items=pd.DataFrame(
            {
                "title": [f"t{i}" for i in range(N_ITEMS)],
                "categories": [[] for _ in range(N_ITEMS)],
                "description": [""] * N_ITEMS,
            }
        ),
    )


@pytest.fixture(scope="module")
def split() -> Split:
    return split_dataset(toy_dataset(), "random", seed=1)


def profiles_for(split: Split, k: int = 4, missing: float = 0.25) -> ProfileInputs:
    profiles = synthetic_profile_inputs(split.n_users, split.n_items, k, D_S, seed=3, missing=missing)
    profiles.user_mask[0] = False  # one user and one item without any profile
    profiles.user_vectors[0] = 0.0
    profiles.item_mask[1] = False
    profiles.item_vectors[1] = 0.0
    return profiles


def make(kind: str, split: Split, proex: bool, k: int = 4) -> LightGCN | MultVAE:
    torch.manual_seed(0)
    config = ProExConfig(n_profiles=k, mapping_hidden=12) if proex else None
    model = build_model(kind, split.train, SMALL[kind], config, profiles_for(split, k) if proex else None)
    assert isinstance(model, LightGCN | MultVAE)
    return model


def tower_scores(model: LightGCN | MultVAE, users: np.ndarray) -> torch.Tensor:
    """Scores the way the service computes them: exported towers plus item vectors."""
    with torch.no_grad():
        if isinstance(model, LightGCN):
            zu = torch.from_numpy(model.collab_user_vectors()[users])
            zi = torch.from_numpy(model.collab_item_vectors())
            if model.uses_profiles:
                up, um = model.user_profiles[users], model.user_profile_mask[users].float()
                ip, im = model.item_profiles, model.item_profile_mask.float()
            else:
                up, um = torch.zeros(len(users), 4, D_S), torch.zeros(len(users), 4)
                ip, im = torch.zeros(model.n_items, 4, D_S), torch.zeros(model.n_items, 4)
            return model.user_tower()(zu, up, um) @ model.item_tower()(zi, ip, im).T
        history = model.history_dense(users)
        profiles, mask = model.tower_profile_inputs(users)
        return model.user_tower()(history, profiles, mask) @ torch.from_numpy(model.item_vectors()).T


def train_a_little(model: LightGCN | MultVAE, split: Split, epochs: int = 2) -> None:
    model.fit(split, TrainConfig(epochs=epochs, eval_every=1, patience=5, progress=False, threads=1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("proex", [False, True])
def test_one_epoch_smoke_train(kind: str, proex: bool, split: Split) -> None:
    model = make(kind, split, proex)
    result = model.fit(split, TrainConfig(epochs=1, eval_every=1, progress=False, threads=1))
    assert result.epochs_run == 1 and result.best_epoch == 1
    row = result.history[0]
    assert np.isfinite(row["loss"]) and 0.0 <= row["valid_recall@20"] <= 1.0
    if proex:
        assert {"variance", "reg", "align"} <= set(row)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("proex", [False, True])
def test_score_all_equals_tower_scores(kind: str, proex: bool, split: Split) -> None:
    model = make(kind, split, proex)
    train_a_little(model, split)
    users = np.array([0, 3, 7, 11, 39])
    expected = tower_scores(model, users)
    assert model.score_all(users).shape == (5, split.n_items)
    assert torch.allclose(model.score_all(users), expected, atol=1e-5)
    assert torch.allclose(model.make_scorer()(users), expected, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 2])
def test_any_number_of_profiles_works(kind: str, k: int, split: Split) -> None:
    model = make(kind, split, True, k=k)
    train_a_little(model, split, epochs=1)
    users = np.arange(5)
    assert torch.allclose(model.score_all(users), tower_scores(model, users), atol=1e-5)


def test_entities_without_profiles_get_no_profile_term(split: Split) -> None:
    model = make("lightgcn", split, True)
    collab = torch.randn(3, 32)
    profiles = torch.randn(3, 4, D_S)
    out = model.user_tower()(collab, profiles, torch.zeros(3, 4))
    assert torch.equal(out, collab)
    base = make("lightgcn", split, False)
    assert torch.equal(base.user_tower()(collab, profiles, torch.ones(3, 4)), collab)


def test_lightgcn_tower_is_collab_plus_mean_of_mapped_profiles(split: Split) -> None:
    model = make("lightgcn", split, True)
    assert model.mapping is not None
    collab, profiles = torch.randn(2, 32), torch.randn(2, 4, D_S)
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    with torch.no_grad():
        out = model.user_tower()(collab, profiles, mask)
        mapped = model.mapping(profiles)
    assert torch.allclose(out[0], collab[0] + mapped[0, [0, 1, 3]].mean(0), atol=1e-6)
    assert torch.allclose(out[1], collab[1] + mapped[1, 1], atol=1e-6)


def test_zero_init_fused_lightgcn_starts_as_the_base_model(split: Split) -> None:
    torch.manual_seed(0)
    fused = build_model(
        "lightgcn", split.train, SMALL["lightgcn"], ProExConfig(mapping_zero_init=True), profiles_for(split)
    )
    torch.manual_seed(0)
    base = build_model("lightgcn", split.train, SMALL["lightgcn"])
    assert isinstance(fused, LightGCN) and fused.mapping is not None
    users = np.arange(10)
    assert torch.equal(fused.score_all(users), base.score_all(users))
    fused.train()
    batch = next(iter(fused.epoch_batches(np.random.default_rng(0))))
    output = fused.loss(batch)
    output.total.backward()
    assert np.isfinite(output.parts["loss"]) and output.parts.get("reg", 0.0) == 0.0
    grad = fused.mapping.out.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the profile term grows from the first step


def test_lightgcn_l2_covers_the_embeddings_and_mapping_decay_the_mapping(split: Split) -> None:
    config = ProExConfig(n_profiles=4, mapping_hidden=12, mapping_weight_decay=0.1)
    model = build_model("lightgcn", split.train, SMALL["lightgcn"], config, profiles_for(split))
    assert isinstance(model, LightGCN) and model.mapping is not None
    expected = model.user_embedding.pow(2).sum() + model.item_embedding.pow(2).sum()
    assert torch.allclose(model.l2_penalty(), expected)
    groups = model.make_optimizer().param_groups
    assert [g["weight_decay"] for g in groups] == [0.0, 0.1]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.mapping.parameters()}


@pytest.mark.parametrize("kind", KINDS)
def test_regularised_mapping_keeps_towers_equal_to_score_all(kind: str, split: Split) -> None:
    config = ProExConfig(
        mapping_hidden=12,
        mapping_zero_init=True,
        mapping_weight_decay=0.1,
        mapping_lr=0.01,
        profile_dropout=0.3,
        mapping_dropout=0.2,
    )
    torch.manual_seed(0)
    model = build_model(kind, split.train, SMALL[kind], config, profiles_for(split))
    assert isinstance(model, LightGCN | MultVAE)
    train_a_little(model, split)
    users = np.array([0, 3, 7, 11, 39])
    assert torch.allclose(model.score_all(users), tower_scores(model, users), atol=1e-5)
    assert torch.equal(model.score_all(users), model.score_all(users))  # no dropout at inference


def test_mapping_runs_only_on_the_batch_rows(split: Split) -> None:
    model = make("lightgcn", split, True)
    assert model.mapping is not None
    seen: list[int] = []
    model.mapping.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    users, pos, neg = (torch.tensor(v) for v in ([0, 0, 2], [5, 6, 7], [8, 5, 9]))
    model.train()
    model.loss((users, pos, neg))
    assert seen == [2, 5]  # distinct users {0, 2}; distinct items {5, 6, 7, 8, 9}


def input_fused(split: Split, k: int = 4) -> LightGCN:
    torch.manual_seed(0)
    config = ProExConfig(n_profiles=k, mapping_hidden=12, fusion_stage="input", lambda_align=0.1)
    model = build_model("lightgcn", split.train, SMALL["lightgcn"], config, profiles_for(split, k))
    assert isinstance(model, LightGCN) and model.fuses_input
    return model


@pytest.mark.parametrize("k", [1, 4])
def test_input_fusion_propagates_the_pooled_profiles(k: int, split: Split) -> None:
    """Fused vector = P (E + c~), c~ the mean of the mapped profiles; towers + collab reproduce it."""
    model = input_fused(split, k)
    train_a_little(model, split)
    model.eval()
    assert model.mapping is not None and model.profile_weight == pytest.approx(0.25)
    with torch.no_grad():
        pooled = torch.cat(
            [
                _masked_mean(model.mapping(model.user_profiles), model.user_profile_mask),
                _masked_mean(model.mapping(model.item_profiles), model.item_profile_mask),
            ]
        )
        layer0 = torch.cat([model.user_embedding, model.item_embedding]) + pooled
        fused = model.smooth(layer0)
        expected = fused[: model.n_users][[0, 3, 7]] @ fused[model.n_users :].T
    users = np.array([0, 3, 7])
    assert torch.allclose(model.score_all(users), expected, atol=1e-5)
    assert torch.allclose(tower_scores(model, users), expected, atol=1e-5)
    # a user with no profile gets only the neighbourhood's profiles, through collab
    with torch.no_grad():
        alone = model.user_tower()(torch.from_numpy(model.collab_user_vectors()[[0]]), *_no_profiles(k))
    assert torch.allclose(alone, fused[[0]], atol=1e-5)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.float().unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _no_profiles(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, k, D_S), torch.zeros(1, k)


def test_input_fusion_loss_trains_every_part(split: Split) -> None:
    model = input_fused(split)
    model.train()
    output = model.loss(next(iter(model.epoch_batches(np.random.default_rng(0)))))
    output.total.backward()
    assert {"bpr", "variance", "reg", "align", "l2"} <= set(output.parts)
    assert model.mapping is not None and model.mapping.out.weight.grad is not None
    assert model.mapping.out.weight.grad.abs().sum() > 0
    assert model.user_embedding.grad is not None and model.user_embedding.grad.abs().sum() > 0


def test_input_fusion_towers_export_to_onnx(split: Split, tmp_path: Path) -> None:
    model = input_fused(split)
    train_a_little(model, split, epochs=1)
    export_and_compare(model, split, tmp_path)


def test_fusion_stage_is_validated_and_lightgcn_only(split: Split) -> None:
    with pytest.raises(ValueError, match="fusion_stage"):
        ProExConfig(fusion_stage="middle")
    with pytest.raises(ValueError, match="fusion_stage"):
        build_model(
            "multvae", split.train, SMALL["multvae"], ProExConfig(fusion_stage="input"), profiles_for(split)
        )


def test_negatives_avoid_training_positives(split: Split) -> None:
    model = make("lightgcn", split, False)
    users = np.repeat(np.arange(split.n_users), 50)
    negatives = model.sample_negatives(users, np.random.default_rng(0))
    assert not np.asarray(split.train[users, negatives]).any()


def test_multvae_item_vectors_reproduce_the_decoder_logits(split: Split) -> None:
    model = make("multvae", split, False)
    users = np.arange(6)
    with torch.no_grad():
        mu, _ = model.encode(users)
        logits = model.decode(mu)
        tower = model.user_tower()(model.history_dense(users), *model.tower_profile_inputs(users))
    assert tower.shape == (6, model.config.hidden_dim + 1)
    assert torch.allclose(tower[:, -1], torch.ones(6))
    assert torch.allclose(tower @ torch.from_numpy(model.item_vectors()).T, logits, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("proex", [False, True])
def test_towers_export_to_onnx(kind: str, proex: bool, split: Split, tmp_path: Path) -> None:
    export_and_compare(make(kind, split, proex), split, tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_projected_mapping_scores_equal_towers_and_export_to_onnx(
    kind: str, split: Split, tmp_path: Path
) -> None:
    """``input_rank``: training reads projected profiles, the towers project raw ones: same scores."""
    torch.manual_seed(0)
    config = ProExConfig(mapping_hidden=12, input_rank=3)
    model = build_model(kind, split.train, SMALL[kind], config, profiles_for(split))
    assert isinstance(model, LightGCN | MultVAE) and model.mapping is not None and model.mapping.projects
    train_a_little(model, split)
    users = np.array([0, 3, 7, 11, 39])
    assert torch.allclose(model.score_all(users), tower_scores(model, users), atol=1e-5)
    export_and_compare(model, split, tmp_path)


def test_regularised_mapping_towers_export_to_onnx(split: Split, tmp_path: Path) -> None:
    config = ProExConfig(mapping_hidden=12, mapping_zero_init=True, profile_dropout=0.3, mapping_dropout=0.2)
    torch.manual_seed(0)
    model = build_model("lightgcn", split.train, SMALL["lightgcn"], config, profiles_for(split))
    assert isinstance(model, LightGCN) and model.mapping is not None
    train_a_little(model, split, epochs=1)  # the output layer is no longer zero
    assert model.mapping.out.weight.abs().sum() > 0
    export_and_compare(model, split, tmp_path)


def export_and_compare(model: LightGCN | MultVAE, split: Split, tmp_path: Path) -> None:
    """Export the user tower (eval mode) to ONNX and check onnxruntime reproduces it."""
    onnxruntime = pytest.importorskip("onnxruntime")
    kind = model.kind
    model.eval()
    users = np.array([0, 1, 2])
    if isinstance(model, LightGCN):
        profiles = profiles_for(split)
        inputs = (
            torch.from_numpy(model.collab_user_vectors()[users]),
            torch.from_numpy(profiles.user_vectors[users]),
            torch.from_numpy(profiles.user_mask[users]).float(),
        )
    else:
        inputs = (model.history_dense(users), *model.tower_profile_inputs(users))
    path = tmp_path / "user_tower.onnx"
    names = ["collab" if kind == "lightgcn" else "history", "profiles", "profile_mask"]
    torch.onnx.export(
        model.user_tower(),
        inputs,
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=names,
        output_names=["user_vector"],
        dynamic_axes={name: {0: "batch"} for name in [*names, "user_vector"]},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names  # base towers keep the profile inputs too
    (out,) = session.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
    with torch.no_grad():
        expected = model.user_tower()(*inputs).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def write_toy_store(folder: Path, dataset: InteractionDataset, split: Split) -> None:
    profiles = profiles_for(split)
    entries = []
    for entity, ids, vectors, mask in (
        ("user", dataset.user_ids, profiles.user_vectors, profiles.user_mask),
        ("item", dataset.item_ids, profiles.item_vectors, profiles.item_mask),
    ):
        for idx, raw in enumerate(ids):
            if mask[idx].any():
                entries.append((entity, str(raw), vectors[idx][mask[idx]]))
    write_profile_vectors(folder, entries, embedding_model="random-test", version="v-test")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rank", [None, 3])
def test_cli_run_folder_reloads_to_identical_scores(kind: str, rank: int | None, tmp_path: Path) -> None:
    dataset = toy_dataset()
    dataset.save(tmp_path / "dataset")
    split = split_dataset(dataset, "random", seed=1)
    write_toy_store(tmp_path / "store", dataset, split)
    out = tmp_path / "run"
    args = ["--dataset", str(tmp_path / "dataset"), "--split-method", "random", "--split-seed", "1"]
    args += ["--model", kind, "--proex", "--profiles", str(tmp_path / "store"), "--mapping-hidden", "12"]
    args += ["--epochs", "2", "--eval-every", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    if rank is not None:
        args += ["--input-rank", str(rank)]
    for key, value in SMALL[kind].items():
        args += ["--hp", f"{key}={value}"]
    cli_main(args)
    for name in ("config.json", "checkpoint.pt", "epochs.jsonl", "metrics.json", "split/split.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == kind and config["split_fingerprint"] == split.fingerprint()
    assert (
        config["profiles"]["version"] == "v-test" and config["profiles"]["embedding_model"] == "random-test"
    )
    assert (config["profiles"]["k"], config["profiles"]["dim"]) == (4, D_S)
    epochs = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in epochs] == [1, 2] and all("valid_recall@20" in row for row in epochs)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"recall@10", "recall@20", "recall@40", "ndcg@20"} <= set(metrics["test"])

    model, loaded = load_run(out)
    assert loaded.model == kind and model.uses_profiles
    assert model.mapping is not None and model.mapping.projects == (rank is not None)
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    from training.evaluation import evaluate

    again = evaluate(model.make_scorer(), split, "test").metrics
    assert again == pytest.approx(metrics["test"], abs=1e-9)
    twice, _ = load_run(out)
    assert torch.equal(model.score_all(users), twice.score_all(users))


def test_checkpoint_of_a_base_model_reloads(tmp_path: Path) -> None:
    dataset = toy_dataset()
    dataset.save(tmp_path / "dataset")
    out = tmp_path / "run"
    args = ["--dataset", str(tmp_path / "dataset"), "--model", "lightgcn", "--epochs", "1", "--threads", "1"]
    cli_main([*args, "--no-progress", "--out", str(out), "--hp", "batch_size=128"])
    model, config = load_run(out)
    assert config.proex is None and not model.uses_profiles
    assert isinstance(model, LightGCN)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert torch.equal(state["user_embedding"], model.user_embedding.detach())


def test_lightgcn_adjacency_is_symmetric_normalised(split: Split) -> None:
    from training.models.lightgcn import normalized_adjacency

    adj = normalized_adjacency(split.train).to_dense().numpy()
    assert np.allclose(adj, adj.T)
    r = sp.csr_matrix(split.train).toarray()
    du, di = r.sum(1), r.sum(0)
    u, i = np.argwhere(r)[0]
    assert adj[u, split.n_users + i] == pytest.approx(1 / np.sqrt(du[u] * di[i]))


def test_a_failed_run_leaves_the_finished_run_in_its_folder(tmp_path: Path, monkeypatch) -> None:
    """Runs are trained in a staging folder and published whole: a crash loses nothing."""
    from training.models import TrainConfig
    from training.runs import RunSpec, execute_run, staging_dir

    dataset = toy_dataset()
    dataset.save(tmp_path / "dataset")
    out = tmp_path / "runs" / "run"

    def spec(epochs: int) -> RunSpec:
        return RunSpec(
            dataset=str(tmp_path / "dataset"),
            model="lightgcn",
            hyperparameters={"batch_size": 128},
            train=TrainConfig(epochs=epochs, eval_every=1, threads=1, progress=False),
            out=str(out),
        )

    first = execute_run(spec(1))
    assert first.run_dir == out and json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def crash(self, *args, **kwargs):
        raise RuntimeError("killed mid-training")

    with monkeypatch.context() as patch:
        patch.setattr(LightGCN, "fit", crash)
        with pytest.raises(RuntimeError, match="killed"):
            execute_run(spec(2))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not staging_dir(out).exists()

    staging_dir(out).mkdir()  # what a killed process leaves behind
    (staging_dir(out) / "checkpoint.pt").write_bytes(b"partial")
    second = execute_run(spec(2))
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no staging or replaced folder left
    model, _ = load_run(out)
    assert torch.equal(model.score_all(np.arange(3)), second.model.score_all(np.arange(3)))

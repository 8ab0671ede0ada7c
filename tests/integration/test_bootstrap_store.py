"""The bootstrap's profile store (what ``make demo`` builds): extractive profiles for everyone embedded with
the exported ONNX encoder, an LLM sample written in a process of its own at the same time (the fake
backend here) and merged on top, one line per step."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from offline_jobs.cli import pipeline
from rec_contract.profile_store import read_profiles, read_store_vectors
from rec_contract.text_encoder import OnnxTextEncoder
from training.data.generic import load_generic

pytestmark = pytest.mark.integration

GENRES = ["Comedy", "Drama", "Sci-Fi", "Western", "Horror"]


def _toy_dataset(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    inter, items = folder / "ratings.csv", folder / "items.csv"
    with items.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "title", "categories"])
        for i in range(30):
            writer.writerow([f"i{i}", f"Film {i} ({1980 + i})", GENRES[i % 5] + "|" + GENRES[(i + 2) % 5]])
    with inter.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for u in range(20):
            for i in rng.choice(30, size=8, replace=False):
                writer.writerow([f"u{u}", f"i{i}", 1_000_000 + u * 100 + int(i)])
    dataset = load_generic(inter, items, name="toy")
    return dataset.save(folder / "toy")


def test_bootstrap_store_overlaps_the_llm_sample_with_the_onnx_embedding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILEREC_LLM_BACKEND", "fake")  # the sample's process inherits it
    monkeypatch.delenv("PROFILEREC_EMBED_BACKEND", raising=False)
    dataset = _toy_dataset(tmp_path)
    work = tmp_path / "work"
    argv = ["--work-dir", str(work), "bootstrap", "--dataset", str(dataset), "--k", "2"]
    args = pipeline.prepare(
        pipeline.build_parser().parse_args([*argv, "--llm-users", "2", "--llm-items", "3"])
    )
    lines: list[str] = []
    text_encoder = pipeline._text_encoder(work, lines.append)
    report: dict = {}
    store = pipeline._profile_store(args, work, text_encoder, report, lines.append)

    rows = read_profiles(store)
    assert len(rows) == (20 + 30) * 2  # every user and item, K = 2
    by_entity: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        by_entity.setdefault((row["entity_type"], row["entity_id"]), set()).add(row["strategy"])
    llm = {key for key, strategies in by_entity.items() if strategies == {"proex"}}
    assert len(llm) == 5 and sum(1 for t, _ in llm if t == "user") == 2  # the sample, merged on top
    assert report["merge"]["entities_replaced"] == 5 and report["llm_sample"]["profiles_written"] == 10

    entries, model, _ = read_store_vectors(store)
    assert model == "all-MiniLM-L6-v2" and len(entries) == 50
    encoder = OnnxTextEncoder(text_encoder)  # the service's encoder: the stored vectors are its vectors
    texts = {(r["entity_type"], r["entity_id"], int(r["slot"])): str(r["text"]) for r in rows}
    entity_type, entity_id, vectors = next(e for e in entries if e[0] == "user" and (e[0], e[1]) not in llm)
    expected = encoder.encode([texts[(entity_type, entity_id, 0)]])[0]
    assert float(vectors[0] @ expected) > 0.9999

    assert lines[0] == "text encoder exported to ONNX"
    assert lines[1].startswith("extractive profiles: 100 written and embedded")
    assert lines[2].startswith("LLM (proex) profiles for 2 users and 3 items: 10 written")

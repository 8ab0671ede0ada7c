"""The CLI on MovieLens-100k: the extractive store with its vectors, then re-embedding it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offline_jobs.cli.jobs import main
from rec_contract.profile_store import read_profile_vectors, read_profiles

pytestmark = pytest.mark.integration


def test_extractive_then_embed(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("PROFILEREC_DATA_DIR", str(data_dir))
    out = tmp_path / "store"
    assert main(["extractive", "--users", "1,2", "--items", "1", "--k", "4", "--out", str(out)]) == 0
    rows = read_profiles(out)
    assert len(rows) == 12 and {r["strategy"] for r in rows} == {"extractive"}
    assert not any(r["is_fallback"] for r in rows)
    report = json.loads((out / "extractive_report.json").read_text())
    assert (
        report["split"] == {"method": "random", "seed": 2024}
        and report["embedding_model"] == "all-MiniLM-L6-v2"
    )
    first = read_profile_vectors(out, "user", ["1", "2"])
    assert first.vectors.shape == (2, 4, 384) and first.mask.all()
    assert main(["embed", str(out)]) == 0
    again = read_profile_vectors(out, "user", ["1", "2"])
    assert np.allclose(first.vectors, again.vectors, atol=1e-5)
    assert main(["extractive", "--users", "nobody", "--out", str(tmp_path / "x")]) == 2  # a clear error

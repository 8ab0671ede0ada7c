"""The real job on MovieLens-100k with the embedded model: a ProEx run (K=4) on a sample of users
and items is killed with SIGKILL midway, then re-run with the full pipeline command; the second run
generates nothing the first had finished, and writes the profiles, the vectors and the Qdrant
collection."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline_jobs.jobs.cache import CACHE_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_kill_midway_then_resume_regenerates_nothing(tmp_path, data_dir):
    out = tmp_path / "store"
    qdrant = tmp_path / "qdrant"
    args = [
        "--strategy", "proex", "--k", "4", "--users", "1,2", "--items", "1", "--out", str(out),
        "--max-tokens", "16", "--batch-size", "8", "--max-active", "3", "--version", "resume-test",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PROFILEREC_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PROFILEREC_LLM_BACKEND": "torch",
    }
    db = out / CACHE_FILE
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_jobs.cli.jobs", "generate", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while count(db, "generations") < 3:  # some steps are done, none of the entities yet
            assert proc.poll() is None, "the first run ended before it could be killed"
            assert time.monotonic() < deadline, "no generation within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done_before = count(db, "generations")
    entities_before = count(db, "entities")
    assert not (out / "profiles.parquet").exists()  # final outputs only at the end, atomically

    result = subprocess.run(
        [sys.executable, "-m", "offline_jobs.cli.jobs", "pipeline", *args, "--qdrant-path", str(qdrant)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "pipeline_report.json").read_text())
    stats = report["generate"]["stats"]
    # nothing finished before the kill was generated again
    assert stats["cache_regenerated"] == 0
    assert stats["cache_hits"] >= done_before
    assert count(db, "generations") == done_before + stats["generated"]
    assert stats["entities_skipped"] == entities_before
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT run_id, stats FROM runs ORDER BY started_at").fetchall()
    assert len(runs) == 2 and runs[0][1] is None  # the killed run never finished

    from rec_contract.profile_store import read_profile_vectors, read_profiles

    rows = read_profiles(out)
    assert len(rows) == 3 * 4
    assert {r["strategy"] for r in rows} == {"proex"}
    assert all(r["model"] in ("SmolLM2-135M-Instruct.Q4_1", "extractive") for r in rows)
    for row in rows:
        q = json.loads(row["quality"])
        assert "cos_to_siblings" in q and ("cos_to_original" in q or row["slot"] == 0)
        assert row["is_fallback"] == ("fallback_reason" in q)
    vecs = read_profile_vectors(out, "user", ["1", "2"])
    assert vecs.vectors.shape == (2, 4, 384) and vecs.mask.all()

    upload = report["upload"]
    assert upload["collection"] == "profiles_resume-test" and upload["points"] == 3

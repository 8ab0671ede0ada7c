"""The documented schedules run real commands with the right guards."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from offline_jobs.cli.pipeline import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_kubernetes_cronjob_forbids_overlap_and_runs_the_refresh() -> None:
    doc = yaml.safe_load((ROOT / "docker/k8s/refresh-cronjob.yaml").read_text())
    assert doc["kind"] == "CronJob" and doc["apiVersion"] == "batch/v1"
    spec = doc["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["profilerec-jobs", "refresh"]
    assert container["command"][0] in _console_scripts()
    env = {e["name"] for e in container["env"]}
    assert {
        "PROFILEREC_FEEDBACK_LOG",
        "PROFILEREC_BUNDLES_ROOT",
        "PROFILEREC_QDRANT_URL",
        "PROFILEREC_REDIS_URL",
    } <= env


def test_cron_file_lines_are_valid_and_call_installed_commands() -> None:
    lines = [
        line
        for line in (ROOT / "docker/cron/profilerec-refresh").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 3  # refresh, retrain, prune
    scripts = _console_scripts()
    for line in lines:
        fields = line.split(maxsplit=6)
        assert len(fields) == 7  # five time fields, the user, the command
        used = [word.rsplit("/", 1)[-1] for word in fields[6].split() if "profilerec-" in word]
        assert used and all(word in scripts for word in used)
        if used == ["profilerec-pipeline"]:  # its sub-command and options parse
            words = fields[6].split(">>")[0].split()
            pipeline_args = words[[w.rsplit("/", 1)[-1] for w in words].index("profilerec-pipeline") + 1 :]
            build_parser().parse_args(pipeline_args)

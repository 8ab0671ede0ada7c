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


def test_weekly_kubernetes_cronjobs_retrain_then_prune_with_commands_that_parse() -> None:
    docs = list(yaml.safe_load_all((ROOT / "docker/k8s/weekly-cronjobs.yaml").read_text()))
    by_name = {doc["metadata"]["name"]: doc for doc in docs}
    assert set(by_name) == {"profilerec-retrain", "profilerec-prune"}
    hours = {}
    for name, doc in by_name.items():
        assert doc["kind"] == "CronJob" and doc["apiVersion"] == "batch/v1"
        spec = doc["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        _, hour, _, _, weekday = spec["schedule"].split()
        hours[name] = (weekday, int(hour))
        container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][0] == "profilerec-pipeline" in _console_scripts()
        build_parser().parse_args(container["command"][1:])
        env = {e["name"] for e in container["env"]}
        assert {"PROFILEREC_WORK_DIR", "PROFILEREC_BUNDLES_ROOT", "PROFILEREC_QDRANT_URL"} <= env
    assert hours["profilerec-retrain"][0] == hours["profilerec-prune"][0]  # same day, prune after
    assert hours["profilerec-retrain"][1] < hours["profilerec-prune"][1]
    prune = by_name["profilerec-prune"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert prune["command"][1:] == ["prune", "--keep", "3"]

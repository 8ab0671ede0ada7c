"""Parse every PromQL expression of Grafana dashboards (JSON) and Prometheus rule files (YAML).

Run by ``.ci/validate-deploy`` in its tool virtualenv (needs ``promql-parser`` and ``PyYAML``, which are
not project dependencies)::

    python .ci/promql_check.py docker/grafana/dashboards/*.json docker/prometheus/alerts.yml

Grafana variables are replaced by values of the right kind before parsing (``$__rate_interval`` by a
duration, ``$route`` by ``.*``). Exits 1 listing every expression that does not parse.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def grafana_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target, also inside collapsed rows."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))


def rule_queries(rules: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            yield f"group {group.get('name')!r} rule {name!r}", str(rule["expr"])


def to_promql(expr: str) -> str:
    expr = GRAFANA_DURATIONS.sub("5m", expr)
    return GRAFANA_VARIABLE.sub(".*", expr)


def main(paths: list[str]) -> int:
    checked, errors = 0, []
    for name in paths:
        path = Path(name)
        if path.suffix == ".json":
            queries = list(grafana_queries(json.loads(path.read_text())))
        else:
            queries = list(rule_queries(yaml.safe_load(path.read_text())))
        if not queries:
            errors.append(f"{path}: no PromQL expression found")
        for where, expr in queries:
            checked += 1
            try:
                promql_parser.parse(to_promql(expr))
            except Exception as exc:  # the parser raises plain ValueError/RuntimeError subclasses
                errors.append(f"{path}: {where}: {exc}\n    {expr}")
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{checked} PromQL expressions parsed, {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

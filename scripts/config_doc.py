"""Write ``docs/configuration.md`` from the pydantic settings classes: every setting, its environment
variable, type, default and description (the field's ``description``, else the comment on its line).

    python -m scripts.config_doc           # rewrite docs/configuration.md
    python -m scripts.config_doc --check   # exit 1 when the file is not what the classes say

``tests/unit/test_config_doc.py`` runs the check, so a setting added without regenerating fails CI.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "configuration.md"

HEADER = """# Configuration

Every setting is read from the environment (prefix `PROFILEREC_`) or from a `.env` file in the working
folder; CLI flags, where a command has them, override it for one run. Paths left unset default to
folders under `PROFILEREC_WORK_DIR` (`var`). This page is generated from the settings classes by
`python -m scripts.config_doc`; a test fails when it is out of date. The deployment's own variables
(compose ports, image names, Redis memory) are in [deployment.md](deployment.md).
"""

# what a field says when its class gives it neither a description nor a comment
NOTES = {
    "qdrant_api_key": "Qdrant server API key",
    "qdrant_timeout_s": "Qdrant server request timeout (then 503 with Retry-After)",
    "cache_ttl_s": "lifetime of a cached user vector in Redis",
    "max_feedback_batch": "feedback events in one POST /v1/feedback",
    "default_n": "n when a request gives none",
    "max_liked_items": "liked items in one cold-start request",
    "max_text_chars": "characters of a cold-start request's text",
    "snippet_chars": "characters of an item's profile snippet in answers",
    "api_key_header": "header that carries the API key",
    "host": "address profilerec-serve binds",
    "port": "port profilerec-serve binds",
    "workers": "uvicorn worker processes",
    "work_dir": "root of the default paths",
    "data_dir": "dataset root (default ../shared/data)",
    "qdrant_url": "a Qdrant server; unset: the embedded storage",
    "redis_url": "the service's cache, whose keys the refresh invalidates",
    "refresh_min_rating": "a rating event counts as positive feedback from this rating",
}

SECTIONS: list[tuple[str, str, str]] = [
    ("The service", "service.settings", "ServiceSettings"),
    ("The offline jobs (generation, embedding, publishing)", "offline_jobs.settings", "JobSettings"),
    ("The daily refresh", "offline_jobs.refresh.state", "RefreshSettings"),
]


def _comments(cls: type) -> dict[str, str]:
    """``{field: the comment on its line}`` from the class source (settings documented by a comment)."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            for line in lines[node.lineno - 1 : node.end_lineno]:
                notes = [c.strip() for c in line.split("#")[1:]]
                notes = [c for c in notes if c and not c.startswith(("type:", "noqa"))]
                if notes:
                    out[node.target.id] = notes[0]
                    break
    return out


def _type(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("pydantic.types.", "")
    return text.replace("NoneType", "None")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value: Any = field.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "unset"
    if isinstance(value, frozenset | set):  # sorted: a set's order changes from run to run
        return ", ".join(sorted(str(v) for v in value)) or "(empty)"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "(empty)"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    import importlib

    parts = [HEADER]
    for title, module, name in SECTIONS:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, BaseSettings)
        prefix = str(cls.model_config.get("env_prefix", ""))
        comments = _comments(cls)
        parts.append(f"\n## {title}\n\n`{module}.{name}`\n")
        parts.append("\n| variable | type | default | what |\n| --- | --- | --- | --- |")
        for field_name, field in cls.model_fields.items():
            what = field.description or comments.get(field_name) or NOTES.get(field_name, "")
            env = f"{prefix}{field_name}".upper()
            parts.append(
                f"| `{env}` | `{_cell(_type(field))}` | `{_cell(_default(field))}` | {_cell(what)} |"
            )
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python -m scripts.config_doc", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

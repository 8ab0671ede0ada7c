"""Prompt templates, kept as data files (``<strategy>.toml``) with a version string.

Templates use ``${name}`` placeholders (:class:`string.Template`), so braces in item text are safe.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

STRATEGIES = ("proex", "reclm", "duet")


@dataclass(frozen=True)
class PromptSet:
    strategy: str
    version: str
    data: dict[str, Any]
    digest: str  # sha256 of the file, first 12 hex chars: changes whenever the text changes

    def template(self, entity_type: str, name: str) -> str:
        try:
            return str(self.data[entity_type][name])
        except KeyError:
            raise KeyError(f"prompt set {self.strategy} has no [{entity_type}].{name}") from None

    def render(self, entity_type: str, name: str, **values: Any) -> str:
        return Template(self.template(entity_type, name)).safe_substitute(values).strip()

    def angles(self, entity_type: str) -> list[str]:
        return [str(a) for a in self.data.get("angles", {}).get(entity_type, [])]

    @property
    def full_version(self) -> str:
        """``<version>+<digest>``: what every profile row records as ``prompt_version``."""
        return f"{self.version}+{self.digest}"


def load_prompts(strategy: str, path: str | Path | None = None) -> PromptSet:
    """The prompt set of ``strategy`` (packaged), or the TOML file at ``path``."""
    if path is not None:
        raw = Path(path).read_bytes()
    else:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        raw = resources.files(__package__).joinpath(f"{strategy}.toml").read_bytes()
    data = tomllib.loads(raw.decode("utf-8"))
    if "version" not in data:
        raise ValueError(f"prompt file for {strategy} lacks a version string")
    return PromptSet(strategy, str(data["version"]), data, hashlib.sha256(raw).hexdigest()[:12])

"""Which profiles may be shown as explanations, and how each is labelled (issue 18, part 5).

A profile is the product's explanation of a recommendation (``explain=true``), so only a profile that
is known to be faithful to the data it summarises is shown. Every writer of profile texts (the bundle
export, the Qdrant upload, the refresh job, the admin route) attaches to each text a *label*::

    {"source": "llm" | "extractive", "grounded": true | false | null, "grounded_on": [item ids]}

derived from the profile store's row by :func:`label_of_row`:

* ``source``: the ``quality["source"]`` the generation job records; for stores written before it did,
  ``extractive`` when the row is a fallback or was written by the extractive profiler (model
  ``extractive``), else ``llm`` (an LLM or an external source wrote it);
* ``grounded``: ``quality["grounding"]["passed"]`` when the grounding check ran; without a verdict an
  extractive profile counts as grounded (it is assembled from the entity's own data, by
  construction) and an LLM profile as *unknown* (``null``);
* ``grounded_on``: the catalogue items (raw ids) the grounding check matched in the text, i.e. for a
  user the history items it is grounded on (empty when the check named none or did not run).

:func:`shown` is the one rule every reader applies: a profile is shown only when ``grounded`` is true,
so a failed profile and an LLM profile that was never checked are never returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

SOURCES = ("llm", "extractive")
EXTRACTIVE_MODEL = "extractive"  # the model name offline_jobs.profiles.extractive writes
EXTRACTIVE_STRATEGY = "extractive"  # a store written by the extractive profiler alone


def _quality(row: Mapping[str, Any]) -> dict[str, Any]:
    quality = row.get("quality")
    if isinstance(quality, str):
        try:
            quality = json.loads(quality) if quality else {}
        except ValueError:
            return {}
    return dict(quality) if isinstance(quality, Mapping) else {}


def label_of_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The explanation label of one profile-store row (see the module docstring)."""
    quality = _quality(row)
    source = quality.get("source")
    if source not in SOURCES:
        extractive = (
            bool(row.get("is_fallback"))
            or str(row.get("model", "")) == EXTRACTIVE_MODEL
            or str(row.get("strategy", "")) == EXTRACTIVE_STRATEGY
        )
        source = "extractive" if extractive else "llm"
    grounding = quality.get("grounding")
    grounded: bool | None = None
    grounded_on: list[str] = []
    if isinstance(grounding, Mapping) and isinstance(grounding.get("passed"), bool):
        grounded = bool(grounding["passed"])
        grounded_on = [str(i) for i in grounding.get("grounded_on", ()) or ()]
    elif source == "extractive":
        grounded = True
    return {"source": source, "grounded": grounded, "grounded_on": grounded_on}


def label_from_flag(is_fallback: bool, strategy: str = "") -> dict[str, Any]:
    """The label of a profile written with nothing but its fallback flag and strategy (an admin upsert
    without labels, a Qdrant point uploaded before labels existed): a fallback or a profile of the
    extractive strategy is extractive and grounded by construction; anything else is unverified."""
    if is_fallback or strategy == EXTRACTIVE_STRATEGY:
        return {"source": "extractive", "grounded": True, "grounded_on": []}
    return {"source": "llm", "grounded": None, "grounded_on": []}


def normalise_label(value: Any) -> dict[str, Any] | None:
    """A label read back from a file or payload, checked (None when it is not a label)."""
    if not isinstance(value, Mapping) or value.get("source") not in SOURCES:
        return None
    grounded = value.get("grounded")
    on = value.get("grounded_on") or []
    return {
        "source": str(value["source"]),
        "grounded": grounded if isinstance(grounded, bool) else None,
        "grounded_on": [str(i) for i in on] if isinstance(on, list) else [],
    }


def labels_for(
    count: int, labels: Sequence[Any] | None, is_fallback: Sequence[Any] | None = None, strategy: str = ""
) -> list[dict[str, Any] | None]:
    """``count`` labels aligned with a list of texts: the stored ones where valid, else derived from the
    fallback flags and strategy (when the flags are known), else None (unknown: not shown)."""
    out: list[dict[str, Any] | None] = []
    for slot in range(count):
        label = normalise_label(labels[slot]) if labels is not None and slot < len(labels) else None
        if label is None and is_fallback is not None and slot < len(is_fallback):
            label = label_from_flag(bool(is_fallback[slot]), strategy)
        out.append(label)
    return out


def shown(label: Mapping[str, Any] | None) -> bool:
    """Whether a profile with this label may be returned as an explanation."""
    return label is not None and label.get("grounded") is True


def explanations(texts: Sequence[str], labels: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The explanation objects ``{text, source, grounded_on}`` of the profiles that may be shown."""
    out = []
    for slot, text in enumerate(texts):
        label = labels[slot] if slot < len(labels) else None
        if label is not None and shown(label):
            out.append({"text": text, "source": label["source"], "grounded_on": list(label["grounded_on"])})
    return out

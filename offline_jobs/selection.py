"""Which users and items a job run covers: ``--users``/``--items`` (raw ids, comma separated, or
``@file`` with one id per line, or ``none``/``all``) and ``--limit`` (the first N of each)."""

from __future__ import annotations

from pathlib import Path

from training.data import InteractionDataset


def parse_ids(spec: str | None) -> list[str] | None:
    """``None``/``"all"`` -> every id; ``"none"`` -> []; ``"@path"`` -> ids from a file; else comma list."""
    if spec is None or spec.strip().lower() == "all":
        return None
    if spec.strip().lower() == "none":
        return []
    if spec.startswith("@"):
        lines = Path(spec[1:]).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return [part.strip() for part in spec.split(",") if part.strip()]


def select(dataset: InteractionDataset, entity_type: str, spec: str | None, limit: int | None) -> list[int]:
    """Dense indices of the selected users or items (in dataset order for ``all``)."""
    ids = dataset.user_ids if entity_type == "user" else dataset.item_ids
    chosen = parse_ids(spec)
    if chosen is None:
        indices = list(range(len(ids)))
    else:
        index = dataset.user_index() if entity_type == "user" else dataset.item_index()
        unknown = [raw for raw in chosen if raw not in index]
        if unknown:
            raise ValueError(f"unknown {entity_type} ids: {', '.join(unknown[:10])}")
        indices = [index[raw] for raw in chosen]
    if limit is not None:
        indices = indices[:limit]
    return indices

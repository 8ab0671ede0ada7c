"""Deterministic extractive profiles: K distinct facets per user and per item, from the dataset's text.

No LLM: every sentence is assembled from facts in the data (titles, genres/categories, release year,
user attributes, training interactions, ratings where the source has them). Two uses:

* a deliberate profile store (``strategy="extractive"``), the baseline the ProEx-fused recommenders
  are measured with until LLM profiles exist;
* the validation fallback: when an LLM profile is rejected, the extractive text of the same slot
  replaces it (``is_fallback=True``).

The K profiles are different facets, not copies (``slot`` order):

users: 0 overview (who, how much, main genres, favourites) - 1 genre taste relative to the population
(over/under-represented genres, rating by genre) - 2 liked and disliked titles - 3 recency, era and
mainstream-vs-niche taste; extra slots (K > 4) list further watched titles in deterministic chunks.

items: 0 overview (title, year, genres, text, popularity, reception) - 1 audience (who watched it) -
2 "viewers also watched" (lift-weighted co-interaction) - 3 the audience's wider taste; items without
training interactions use their text plus the most similar items (genres + era) for slots 1-3.

Only training interactions are used (see :mod:`offline_jobs.context`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from offline_jobs.context import JobContext, attribute_text
from offline_jobs.failures import EntityFailure
from offline_jobs.profiles.item_facets import item_facets
from offline_jobs.profiles.phrases import (
    DEFAULT_DOMAIN,
    DOMAINS,
    GENDER,
    article,
    decade,
)
from offline_jobs.profiles.user_facets import user_facets

log = logging.getLogger(__name__)

EXTRACTIVE_MODEL = "extractive"
EXTRACTIVE_PROMPT_VERSION = "extractive-v1"
USER_FACETS = ("overview", "genre_taste", "liked_titles", "recency_and_niche")
ITEM_FACETS = ("overview", "audience", "also_watched", "audience_taste")


class ExtractiveProfiler:
    """Builds the extractive facets for one :class:`JobContext`. Deterministic: no randomness."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.domain = DOMAINS.get(ctx.name, DEFAULT_DOMAIN)

    # ------------------------------------------------------------------ shared statistics
    @cached_property
    def _item_cats(self) -> list[list[str]]:
        return [self.ctx.categories(i) for i in range(self.ctx.dataset.n_items)]

    @cached_property
    def _item_years(self) -> list[int | None]:
        return [self.ctx.year(i) for i in range(self.ctx.dataset.n_items)]

    @cached_property
    def _global_genre_share(self) -> dict[str, float]:
        return dict(self._genre_shares_w(self.ctx.item_popularity.astype(np.float64)))

    @cached_property
    def _pop_rank(self) -> np.ndarray:
        """1 = most popular item in training."""
        pop = self.ctx.item_popularity
        order = np.lexsort((np.arange(len(pop)), -pop))
        rank = np.empty(len(pop), dtype=np.int64)
        rank[order] = np.arange(1, len(pop) + 1)
        return rank

    @cached_property
    def _cooc(self) -> Any:
        train = self.ctx.train.astype(np.float32)
        return (train.T @ train).tocsr()

    @cached_property
    def _attr_columns(self) -> list[str]:
        users = self.ctx.dataset.users
        if users is None:
            return []
        cols = []
        for col in users.columns:
            series = users[col]
            if series.dtype.kind in "iuf":
                cols.append(col)
            elif series.nunique() <= max(30, int(0.05 * len(series))):
                cols.append(col)  # low-cardinality categorical (gender, occupation), not zip codes
        return cols

    @cached_property
    def _has_ratings(self) -> bool:
        return self.ctx.ratings is not None and self.ctx.ratings.nnz > 0

    # ------------------------------------------------------------------ item phrasing
    def item_label(self, item: int, genres: bool = False) -> str:
        title = self._titles[item]
        if genres:
            cats = self._item_cats[item]
            if cats:
                return f"{title} [{', '.join(cats[:3])}]"
        return title

    @cached_property
    def _titles(self) -> list[str]:
        return [self.ctx.title(i) for i in range(self.ctx.dataset.n_items)]

    @cached_property
    def _genre_matrix(self) -> tuple[list[str], np.ndarray]:
        """Genre names and a row-normalised ``[n_items, n_genres]`` membership matrix."""
        names = sorted({c for cats in self._item_cats for c in cats})
        col = {g: j for j, g in enumerate(names)}
        mat = np.zeros((self.ctx.dataset.n_items, len(names)), dtype=np.float64)
        for i, cats in enumerate(self._item_cats):
            for c in cats:
                mat[i, col[c]] = 1.0 / len(cats)
        return names, mat

    @cached_property
    def _decade_matrix(self) -> tuple[list[str], np.ndarray]:
        names = sorted({decade(y) for y in self._item_years if y is not None})
        col = {d: j for j, d in enumerate(names)}
        mat = np.zeros((self.ctx.dataset.n_items, len(names)), dtype=np.float64)
        for i, y in enumerate(self._item_years):
            if y is not None:
                mat[i, col[decade(y)]] = 1.0
        return names, mat

    def _item_weights(self, items: Iterable[int], weights: Iterable[float] | None = None) -> np.ndarray:
        w = np.zeros(self.ctx.dataset.n_items, dtype=np.float64)
        idx = np.fromiter((int(i) for i in items), dtype=np.int64)
        vals = np.ones(len(idx)) if weights is None else np.fromiter(weights, dtype=np.float64)
        np.add.at(w, idx, vals)
        return w

    @staticmethod
    def _shares(names: list[str], totals: np.ndarray) -> list[tuple[str, float]]:
        total = float(totals.sum())
        if total <= 0:
            return []
        pairs = [(names[j], float(totals[j]) / total) for j in np.flatnonzero(totals > 0)]
        return sorted(pairs, key=lambda t: (-t[1], t[0]))

    def _genre_shares(
        self, items: Iterable[int], weights: Iterable[float] | None = None
    ) -> list[tuple[str, float]]:
        return self._genre_shares_w(self._item_weights(items, weights))

    def _genre_shares_w(self, w: np.ndarray) -> list[tuple[str, float]]:
        names, mat = self._genre_matrix
        return self._shares(names, w @ mat) if names else []

    def _decade_shares(self, items: Iterable[int]) -> list[tuple[str, float]]:
        return self._decade_shares_w(self._item_weights(items))

    def _decade_shares_w(self, w: np.ndarray) -> list[tuple[str, float]]:
        names, mat = self._decade_matrix
        return self._shares(names, w @ mat) if names else []

    def _who(self, user: int) -> str:
        attrs = self.ctx.user_attributes(user)
        age = attrs.get("age")
        gender = GENDER.get(attrs.get("gender", ""))
        occupation = attrs.get("occupation")
        if age is not None or gender or occupation:
            person = gender[0] if gender else "person"
            parts = [f"a {age}-year-old {person}" if age is not None else f"a {person}"]
            if occupation and occupation not in ("none", "other"):
                parts.append(f"working as {article(occupation)}")
            elif occupation == "other":
                parts.append("with an unlisted occupation")
            return " ".join(parts)
        extra = {k: v for k, v in attrs.items() if k in self._attr_columns}
        if extra:
            return "a user with " + ", ".join(f"{k} {v}" for k, v in extra.items())
        return "a user"

    # ------------------------------------------------------------------ users
    def _user_items_sorted(self, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training items of ``user`` with ratings and timestamps, best first (rating, recency, id)."""
        items = self.ctx.user_items(user)
        ratings = self.ctx.user_rating(user, items)
        ts = np.asarray(self.ctx.timestamps[user, items].todense()).ravel() if len(items) else np.zeros(0)
        order = np.lexsort((items, -ts, -ratings))
        return items[order], ratings[order], ts[order]

    def user_facets(self, user: int, k: int) -> list[tuple[str, str]]:
        return user_facets(self, user, k)

    # ------------------------------------------------------------------ items
    def similar_items(self, item: int, n: int = 5) -> list[int]:
        """Content neighbours: genre Jaccard, then era closeness, then training popularity."""
        cats = set(self._item_cats[item])
        year = self._item_years[item]
        pop = self.ctx.item_popularity
        scored = []
        for j in range(self.ctx.dataset.n_items):
            if j == item:
                continue
            other = set(self._item_cats[j])
            union = cats | other
            jac = len(cats & other) / len(union) if union else 0.0
            yj = self._item_years[j]
            era = 1.0 / (1.0 + abs(year - yj) / 5.0) if year and yj else 0.0
            scored.append((-(jac + 0.3 * era), -int(pop[j]), j))
        scored.sort()
        return [j for _, _, j in scored[:n]]

    @cached_property
    def _attr_arrays(self) -> list[tuple[str, np.ndarray, list[str] | None]]:
        """Per attribute column: (name, values or category codes, category names or None if numeric).
        Missing values are NaN (numeric) or code -1 (categorical)."""
        users = self.ctx.dataset.users
        out: list[tuple[str, np.ndarray, list[str] | None]] = []
        if users is None:
            return out
        for col in self._attr_columns:
            series = users[col]
            if series.dtype.kind in "iuf":
                out.append((col, series.to_numpy(dtype=np.float64, na_value=np.nan), None))
            else:
                values = [attribute_text(v) for v in series.tolist()]
                cats = sorted({v for v in values if v is not None})
                index = {c: j for j, c in enumerate(cats)}
                codes = np.array([-1 if v is None else index[v] for v in values], dtype=np.int64)
                out.append((col, codes, cats))
        return out

    def item_facets(self, item: int, k: int) -> list[tuple[str, str]]:
        return item_facets(self, item, k)

    # ------------------------------------------------------------------ entry points
    def facets(self, entity_type: str, index: int, k: int) -> list[tuple[str, str]]:
        if entity_type == "user":
            return self.user_facets(index, k)
        if entity_type == "item":
            return self.item_facets(index, k)
        raise ValueError(f"entity_type must be 'user' or 'item', got {entity_type!r}")

    def profile(self, entity_type: str, index: int, slot: int, k: int) -> str:
        """The extractive text of one slot (the validation fallback)."""
        return self.facets(entity_type, index, max(k, slot + 1))[slot][1]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_extractive_rows(
    ctx: JobContext,
    k: int,
    version: str,
    users: Sequence[int] | None = None,
    items: Sequence[int] | None = None,
    progress: Callable[[int], object] | None = None,
    failures: list[EntityFailure] | None = None,
) -> list[dict[str, Any]]:
    """Profile-store rows (see :mod:`rec_contract.profile_store`) for the selected users and items.

    With a ``failures`` list, an entity whose facets raise is recorded there and left out; without,
    the exception propagates."""
    profiler = ExtractiveProfiler(ctx)
    created = now_iso()
    user_sel = range(ctx.dataset.n_users) if users is None else users
    item_sel = range(ctx.dataset.n_items) if items is None else items
    rows: list[dict[str, Any]] = []
    for entity_type, selection, ids in (
        ("user", user_sel, ctx.dataset.user_ids),
        ("item", item_sel, ctx.dataset.item_ids),
    ):
        for index in selection:
            try:
                facets = profiler.facets(entity_type, int(index), k)
            except Exception as exc:
                if failures is None:
                    raise
                failure = EntityFailure.from_exception(entity_type, str(ids[index]), "extractive", exc)
                failures.append(failure)
                log.error("profile failed: %s", failure.message(), exc_info=exc)
                facets = []
            for slot, (facet, text) in enumerate(facets):
                rows.append(
                    {
                        "entity_type": entity_type,
                        "entity_id": str(ids[index]),
                        "slot": slot,
                        "text": text,
                        "strategy": "extractive",
                        "stage": "original" if slot == 0 else "new",
                        "model": EXTRACTIVE_MODEL,
                        "prompt_version": EXTRACTIVE_PROMPT_VERSION,
                        "seed": 0,
                        "created_at": created,
                        "is_fallback": False,
                        "quality": {"facet": facet, "split": ctx.split_method, "split_seed": ctx.split_seed},
                        "version": version,
                    }
                )
            if progress is not None:
                progress(1)
    return rows

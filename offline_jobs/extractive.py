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
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from offline_jobs.context import JobContext, attribute_text
from offline_jobs.extractive_grounding import extractive_grounding
from offline_jobs.failures import EntityFailure

log = logging.getLogger(__name__)

EXTRACTIVE_MODEL = "extractive"
EXTRACTIVE_PROMPT_VERSION = "extractive-v1"
USER_FACETS = ("overview", "genre_taste", "liked_titles", "recency_and_niche")
ITEM_FACETS = ("overview", "audience", "also_watched", "audience_taste")
MAX_TITLES = 8


@dataclass(frozen=True)
class Domain:
    noun: str
    plural: str
    verb: str  # past tense of the interaction
    audience: str
    genre: str


DOMAINS = {
    "movielens-100k": Domain("movie", "movies", "watched", "viewers", "genre"),
    "mind-reclm": Domain("news article", "news articles", "read", "readers", "category"),
    "rlmrec-amazon-book": Domain("book", "books", "read", "readers", "category"),
}
DEFAULT_DOMAIN = Domain("item", "items", "interacted with", "users", "category")

_GENDER = {"M": ("man", "men"), "F": ("woman", "women")}


def _pct(x: float) -> str:
    return f"{round(100 * x)}%"


def _join(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _decade(year: int) -> str:
    return f"{year // 10 * 10}s"


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
        names = sorted({_decade(y) for y in self._item_years if y is not None})
        col = {d: j for j, d in enumerate(names)}
        mat = np.zeros((self.ctx.dataset.n_items, len(names)), dtype=np.float64)
        for i, y in enumerate(self._item_years):
            if y is not None:
                mat[i, col[_decade(y)]] = 1.0
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
        gender = _GENDER.get(attrs.get("gender", ""))
        occupation = attrs.get("occupation")
        if age is not None or gender or occupation:
            person = gender[0] if gender else "person"
            parts = [f"a {age}-year-old {person}" if age is not None else f"a {person}"]
            if occupation and occupation not in ("none", "other"):
                parts.append(f"working as {_article(occupation)}")
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
        d = self.domain
        uid = str(self.ctx.dataset.user_ids[user])
        items, ratings, ts = self._user_items_sorted(user)
        n = len(items)
        who = self._who(user)
        shares = self._genre_shares(items)
        decades = self._decade_shares(items)
        facets: list[tuple[str, str]] = []

        # 0 overview
        top_genres = _join([f"{g} ({_pct(s)})" for g, s in shares[:3]])
        fav = [self.item_label(int(i)) for i in items[:5]]
        text = f"User {uid} is {who} who {d.verb} {n} {d.plural if n != 1 else d.noun}."
        if top_genres:
            text += f" Their {d.plural} are mostly {top_genres}."
        if decades:
            text += f" Most were released in the {decades[0][0]}."
        if fav:
            text += f" {'Favourites' if self._has_ratings else 'Examples'}: {'; '.join(fav)}."
        known = ratings[ratings > 0]  # 0: no rating (e.g. an interaction logged by the service)
        if self._has_ratings and len(known):
            mean = float(known.mean())
            tone = "generous" if mean >= 4.0 else "critical" if mean < 3.3 else "balanced"
            text += f" A {tone} rater (average {mean:.1f} of 5)."
        facets.append(("overview", text))

        # 1 genre taste relative to the population
        glob = self._global_genre_share
        lift = sorted(
            ((g, s / max(glob.get(g, 1e-9), 1e-9), s) for g, s in shares), key=lambda t: (-t[1], t[0])
        )
        loves = [g for g, lf, s in lift if lf >= 1.25 and s >= 0.04][:4]
        avoids = sorted(
            (g for g in glob if glob[g] >= 0.03 and dict(shares).get(g, 0.0) < 0.5 * glob[g]),
            key=lambda g: (-glob[g], g),
        )[:4]
        text = f"{d.genre.capitalize()} taste of user {uid}:"
        if loves:
            text += f" prefers {_join(loves)} far more than the average {d.audience[:-1]}."
        else:
            text += (
                f" close to the average {d.audience[:-1]}, spread over {_join([g for g, _ in shares[:4]])}."
            )
        if avoids:
            text += f" Rarely chooses {_join(avoids)}."
        if self._has_ratings and n:
            by_genre: dict[str, list[float]] = {}
            for i, r in zip(items, ratings, strict=True):
                for g in self._item_cats[int(i)]:
                    by_genre.setdefault(g, []).append(float(r))
            rated = sorted(
                ((g, float(np.mean(v))) for g, v in by_genre.items() if len(v) >= 2),
                key=lambda t: (-t[1], t[0]),
            )
            if len(rated) >= 2:
                best = _join([f"{g} ({m:.1f})" for g, m in rated[:2]])
                worst = _join([f"{g} ({m:.1f})" for g, m in rated[-2:][::-1]])
                text += f" Rates {best} highest and {worst} lowest."
        if not shares:
            text += f" No {d.genre} information is available for their {d.plural}."
        facets.append(("genre_taste", text))

        # 2 liked and disliked titles
        if self._has_ratings:
            liked = [
                self.item_label(int(i), genres=True) for i, r in zip(items, ratings, strict=True) if r >= 4
            ][:MAX_TITLES]
            disliked_idx = [int(i) for i, r in zip(items, ratings, strict=True) if 0 < r <= 2]
            disliked = [self.item_label(i, genres=True) for i in disliked_idx[::-1][:4]]
            liked_text = "; ".join(liked) if liked else "none rated highly"
            text = f"{d.plural.capitalize()} user {uid} liked: {liked_text}."
            if disliked:
                text += f" Disliked: {'; '.join(disliked)}."
        else:
            # without ratings: the most distinctive (least popular) items say the most about the user
            pop = self.ctx.item_popularity
            distinct = sorted((int(i) for i in items), key=lambda i: (pop[i], i))[:MAX_TITLES]
            listed = "; ".join(self.item_label(i, True) for i in distinct)
            text = f"Distinctive {d.plural} user {uid} {d.verb}: {listed}."
        facets.append(("liked_titles", text))

        # 3 recency, era and mainstream vs niche
        recent = sorted(zip(items, ts, strict=True), key=lambda t: (-t[1], int(t[0])))
        recent_titles = [self.item_label(int(i)) for i, _ in recent[:5]]
        ranks = self._pop_rank[items] if n else np.zeros(0)
        n_items = self.ctx.dataset.n_items
        text = f"Recent {d.plural} of user {uid}: {'; '.join(recent_titles) if recent_titles else 'none'}."
        if n:
            med = float(np.median(ranks)) / n_items
            style = (
                "mostly mainstream hits"
                if med < 0.1
                else "a mix of popular and lesser-known titles"
                if med < 0.3
                else "mostly niche, lesser-known titles"
            )
            text += f" Their choices are {style}."
        if decades:
            text += f" Favourite eras: {_join([f'the {dec} ({_pct(s)})' for dec, s in decades[:3]])}."
        facets.append(("recency_and_niche", text))

        # extra slots: further titles in deterministic chunks
        rest = [int(i) for i in items[MAX_TITLES:]]
        chunk = 0
        while len(facets) < k:
            part = rest[chunk * MAX_TITLES : (chunk + 1) * MAX_TITLES] or [int(i) for i in items[:MAX_TITLES]]
            text = (
                f"More {d.plural} user {uid} {d.verb}: {'; '.join(self.item_label(i, True) for i in part)}."
            )
            facets.append((f"titles_{chunk + 1}", text))
            chunk += 1
        return facets[:k]

    # ------------------------------------------------------------------ items
    def _item_head(self, item: int) -> str:
        d = self.domain
        title = self.ctx.title(item)
        cats = self._item_cats[item]
        year = self._item_years[item]
        kind = f"{_join(cats)} {d.noun}" if cats else d.noun
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        text = f"{title} is {article} {kind}"
        if year and str(year) not in title:
            text += f" released in {year}"
        text += "."
        extra = self.ctx.extra_text(item)
        if extra:
            text += " " + " ".join(
                f"{k.replace('_', ' ').capitalize()}: {v}." for k, v in list(extra.items())[:2]
            )
        desc = self.ctx.description(item)
        if desc:
            text += " " + " ".join(desc.split()[:60])
        return text

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

    def _audience_text(self, users: np.ndarray, subject: str) -> str:
        d = self.domain
        if not self._attr_arrays or not len(users):
            return ""
        parts: list[str] = []
        for col, values, cats in self._attr_arrays:
            sub = values[users]
            sub = sub[~np.isnan(sub)] if cats is None else sub[sub >= 0]  # users without the attribute
            if not len(sub):
                continue
            if cats is None:
                q1, med, q3 = np.percentile(sub, [25, 50, 75])
                parts.append(f"{col} mostly {q1:.0f}-{q3:.0f} (median {med:.0f})")
                continue
            counts = np.bincount(sub, minlength=len(cats)).astype(np.float64) / len(sub)
            order = sorted(np.flatnonzero(counts > 0), key=lambda j: (-counts[j], cats[j]))
            if col == "gender":
                g = cats[order[0]]
                parts.append(f"{_pct(float(counts[order[0]]))} {_GENDER.get(g, (g, g))[1]}")
            else:
                top = _join([f"{cats[j]} ({_pct(float(counts[j]))})" for j in order[:3]])
                parts.append(f"common {col}s: {top}")
        if not parts:
            return ""
        return f"{d.audience.capitalize()} of {subject}: " + "; ".join(parts) + "."

    def item_facets(self, item: int, k: int) -> list[tuple[str, str]]:
        d = self.domain
        title = self.ctx.title(item)
        users = self.ctx.item_users(item)
        n = len(users)
        pop_rank = int(self._pop_rank[item])
        n_items = self.ctx.dataset.n_items
        facets: list[tuple[str, str]] = []

        # 0 overview
        text = self._item_head(item)
        if n:
            text += (
                f" {d.verb.capitalize()} by {n} users in the training data "
                f"(popularity rank {pop_rank} of {n_items})."
            )
            ratings = self.ctx.item_ratings(item)
            if len(ratings):
                text += (
                    f" Average rating {float(ratings.mean()):.1f} of 5; "
                    f"{_pct(float((ratings >= 4).mean()))} rated it 4 or 5."
                )
        else:
            text += f" A new {d.noun} with no recorded {d.audience} yet."
        facets.append(("overview", text))

        if n:
            # 1 audience demographics
            aud = self._audience_text(users, title)
            if not aud:
                aud = f"{d.audience.capitalize()} of {title}: {n} users, " + (
                    "a broad audience." if pop_rank <= 0.1 * n_items else "a small, dedicated audience."
                )
            facets.append(("audience", aud))
            # 2 also watched (lift-weighted co-interaction)
            row = self._cooc[item]
            pop = self.ctx.item_popularity.astype(np.float64)
            cand = [
                (float(v) / np.sqrt(max(pop[j], 1.0)), int(j))
                for j, v in zip(row.indices, row.data, strict=True)
                if j != item and v >= 2
            ]
            if not cand:
                cand = [(float(v), int(j)) for j, v in zip(row.indices, row.data, strict=True) if j != item]
            cand.sort(key=lambda t: (-t[0], t[1]))
            titles = [self.item_label(j, genres=True) for _, j in cand[:MAX_TITLES]]
            listed = "; ".join(titles) if titles else "nothing else"
            text = f"{d.audience.capitalize()} of {title} also {d.verb}: {listed}."
            facets.append(("also_watched", text))
            # 3 audience taste: the genres the audience favours beyond this item
            w = np.asarray(self.ctx.train[users].sum(axis=0), dtype=np.float64).ravel()
            w[item] = 0.0
            shares = self._genre_shares_w(w)
            glob = self._global_genre_share
            lift = sorted(
                ((g, s / max(glob.get(g, 1e-9), 1e-9)) for g, s in shares if s >= 0.03),
                key=lambda t: (-t[1], t[0]),
            )
            decades = self._decade_shares_w(w)
            own = set(self._item_cats[item])
            enjoyed = _join([g for g, _ in shares[:4]]) or "many kinds of " + d.plural
            text = f"{title} appeals to {d.audience} who enjoy {enjoyed}"
            leaning = [g for g, lf in lift if lf >= 1.15 and g not in own][:3]
            if leaning:
                text += f", with a lean towards {_join(leaning)}"
            text += "."
            if decades:
                text += f" Its audience mostly picks {d.plural} from the {decades[0][0]}."
            facets.append(("audience_taste", text))
        else:
            own_genres = _join(self._item_cats[item])
            similar = self.similar_items(item, MAX_TITLES)
            titles = [self.item_label(j, genres=True) for j in similar]
            facets.append(
                ("similar_items", f"{d.plural.capitalize()} similar to {title}: {'; '.join(titles)}.")
            )
            aud_users = np.unique(
                np.concatenate([self.ctx.item_users(j) for j in similar] or [np.zeros(0, np.int64)])
            )
            aud = self._audience_text(aud_users, f"similar {d.plural}") if len(aud_users) else ""
            facets.append(
                (
                    "likely_audience",
                    aud or f"Likely {d.audience} of {title}: fans of {own_genres or 'similar ' + d.plural}.",
                )
            )
            shares = self._genre_shares(similar)
            examples = "; ".join(self.item_label(j) for j in similar[:3])
            facets.append(
                (
                    f"{d.genre}_context",
                    f"As {_article(own_genres or d.noun)} {d.noun if own_genres else ''}, {title} should "
                    f"appeal to {d.audience} of {_join([g for g, _ in shares[:4]]) or d.plural} "
                    f"such as {examples}.",
                )
            )

        chunk = 0
        while len(facets) < k:
            others_idx = (
                np.asarray(self._cooc[item].indices) if n else np.asarray(self.similar_items(item, 40))
            )
            part = [int(j) for j in others_idx if j != item][
                (chunk + 1) * MAX_TITLES : (chunk + 2) * MAX_TITLES
            ]
            listed = "; ".join(self.item_label(j, True) for j in part) or "none"
            text = f"More {d.plural} related to {title}: {listed}."
            facets.append((f"related_{chunk + 1}", text))
            chunk += 1
        return facets[:k]

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
    ids_i = ctx.dataset.item_ids
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
                        "quality": {
                            "facet": facet,
                            "split": ctx.split_method,
                            "split_seed": ctx.split_seed,
                            "source": "extractive",
                            "grounding": extractive_grounding(profiler, entity_type, int(index), text, ids_i),
                        },
                        "version": version,
                    }
                )
            if progress is not None:
                progress(1)
    return rows

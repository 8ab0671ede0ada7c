"""The text an LLM prompt is built from: histories, item descriptions, audiences, neighbours.

Everything comes from TRAINING interactions (see :mod:`offline_jobs.context`). Lengths are capped
(``max_history`` items, titles and descriptions shortened) because prompt tokens dominate the cost of
a full run with the embedded model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from offline_jobs.context import JobContext
from offline_jobs.profiles.extractive import ExtractiveProfiler
from offline_jobs.profiles.validation import content_words


def _short(text: str, max_words: int) -> str:
    parts = text.split()
    return text if len(parts) <= max_words else " ".join(parts[:max_words]) + " ..."


class EntityText:
    def __init__(
        self, ctx: JobContext, max_history: int = 15, profiler: ExtractiveProfiler | None = None
    ) -> None:
        self.ctx = ctx
        self.max_history = max_history
        self.profiler = profiler or ExtractiveProfiler(ctx)
        self.domain = self.profiler.domain

    # ------------------------------------------------------------------ common values
    def domain_values(self) -> dict[str, str]:
        d = self.domain
        return {
            "noun": d.noun,
            "plural": d.plural,
            "plural_cap": d.plural.capitalize(),
            "verb": d.verb,
            "audience_word": d.audience,
            "genre": d.genre,
        }

    def item_line(self, item: int, rating: float = 0.0) -> str:
        title = _short(self.ctx.title(item), 12)
        cats = self.ctx.categories(item)
        line = f"- {title}"
        if cats:
            line += f" | {', '.join(cats[:3])}"
        if rating > 0:
            line += f" | {rating:.0f}/5"
        return line

    def item_text(self, item: int, max_words: int = 80) -> str:
        ctx = self.ctx
        title = ctx.title(item)
        cats = ctx.categories(item)
        year = ctx.year(item)
        text = f"{self.domain.noun.capitalize()}: {title}"
        if year and str(year) not in title:
            text += f" ({year})"
        text += "."
        if cats:
            text += f" {self.domain.genre.capitalize()}: {', '.join(cats)}."
        for key, value in list(ctx.extra_text(item).items())[:2]:
            text += f" {key.replace('_', ' ').capitalize()}: {_short(value, 20)}."
        desc = ctx.description(item)
        if desc:
            text += f" Description: {_short(desc, max_words)}"
        return text

    # ------------------------------------------------------------------ users
    def user_history(self, user: int, limit: int | None = None) -> list[tuple[int, float]]:
        """Training items of ``user``, most informative first: liked (rating, recency), then disliked."""
        limit = limit or self.max_history
        items, ratings, _ = self.profiler._user_items_sorted(user)  # best rated, most recent first
        pairs = [(int(i), float(r)) for i, r in zip(items, ratings, strict=True)]
        if len(pairs) <= limit:
            return pairs
        if self.ctx.ratings is None:
            return pairs[:limit]
        n_bad = min(4, limit // 5)
        disliked = [p for p in pairs if 0 < p[1] <= 2][-n_bad:] if n_bad else []
        liked = [p for p in pairs if p not in disliked][: limit - len(disliked)]
        return liked + disliked

    def history_text(self, user: int, limit: int | None = None) -> str:
        return "\n".join(self.item_line(i, r) for i, r in self.user_history(user, limit))

    def who(self, user: int) -> str:
        w = self.profiler._who(user)
        return "" if w == "a user" else f", {w}"

    def user_vocab(self, user: int) -> set[str]:
        vocab: set[str] = set()
        for i in self.ctx.user_items(user):
            vocab |= content_words(self.ctx.title(int(i)))
            vocab |= {c.lower() for c in self.ctx.categories(int(i))}
            vocab |= content_words(" ".join(self.ctx.categories(int(i))))
        for value in self.ctx.user_attributes(user).values():
            vocab |= content_words(str(value))
        return vocab

    # ------------------------------------------------------------------ items
    def item_vocab(self, item: int, extra: Sequence[str] = ()) -> set[str]:
        vocab = content_words(self.item_text(item, 200))
        vocab |= {c.lower() for c in self.ctx.categories(item)}
        for text in extra:
            vocab |= content_words(text)
        return vocab

    def audience_users(self, item: int, n: int = 3) -> list[int]:
        """Users who interacted with ``item`` in training: highest rating first, then most active."""
        users = self.ctx.item_users(item)
        if not len(users):
            return []
        activity = np.diff(self.ctx.train.indptr)[users]
        ratings = (
            np.asarray(self.ctx.ratings[users, item].todense()).ravel()
            if self.ctx.ratings is not None
            else np.zeros(len(users))
        )
        order = np.lexsort((users, -activity, -ratings))
        return [int(u) for u in users[order][:n]]

    def audience_text(self, item: int, user_profiles: Mapping[int, str], n: int = 3, words: int = 45) -> str:
        lines = []
        for u in self.audience_users(item, n):
            text = user_profiles.get(u) or self.profiler.profile("user", u, 0, 1)
            lines.append(f"- {_short(text, words)}")
        return "\n".join(lines)

    @cached_property
    def item_text_vectors(self) -> np.ndarray | None:
        return None  # filled by the runner (embedding of every item's text) when cold items exist

    def similar_warm_items(self, item: int, vectors: np.ndarray, n: int = 3) -> list[int]:
        """Most similar items WITH training interactions, by cosine of item-text embeddings."""
        warm = self.ctx.item_popularity > 0
        sims = vectors @ vectors[item]
        sims[~warm] = -np.inf
        sims[item] = -np.inf
        order = np.argsort(-sims, kind="stable")[:n]
        return [int(j) for j in order if np.isfinite(sims[j])]

    def similar_items_text(
        self, item: int, vectors: np.ndarray, item_profiles: Mapping[int, str], n: int = 3, words: int = 45
    ) -> tuple[str, list[int]]:
        similar = self.similar_warm_items(item, vectors, n)
        lines = []
        for j in similar:
            profile = item_profiles.get(j) or self.profiler.profile("item", j, 0, 1)
            lines.append(f"- {self.ctx.title(j)}: {_short(profile, words)}")
        return "\n".join(lines), similar


# ---------------------------------------------------------------------- collaborative neighbours
class Neighbours:
    """User-user similarity for RecLM prompts: cosine of a CF model's user embeddings when given
    (a ``.npy`` of shape [n_users, d] in dense user-index order), else co-interaction cosine on the
    training matrix rows."""

    def __init__(self, ctx: JobContext, embeddings: str | Path | None = None) -> None:
        self.ctx = ctx
        self.source = "co-interaction"
        self._emb: np.ndarray | None = None
        if embeddings is not None:
            emb = np.load(embeddings).astype(np.float32)
            if emb.shape[0] != ctx.dataset.n_users:
                raise ValueError(f"user embeddings have {emb.shape[0]} rows for {ctx.dataset.n_users} users")
            self._emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            self.source = f"cf-embeddings:{Path(embeddings).name}"
        else:
            x = ctx.train.astype(np.float32)
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
            self._x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
            self._xt = self._x.T.tocsr()

    def top(self, user: int, n: int) -> list[int]:
        if self._emb is not None:
            sims = self._emb @ self._emb[user]
        else:
            sims = np.asarray((self._x[user] @ self._xt).todense()).ravel()
        sims[user] = -np.inf
        order = np.lexsort((np.arange(len(sims)), -sims))[:n]
        return [int(u) for u in order if np.isfinite(sims[u]) and sims[u] > 0]

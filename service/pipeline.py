"""The request path as explicit stages: retrieve -> filter -> score -> order.

* **retrieve**: the item index returns candidates for the user vector, with exclusions and category
  filters pushed down into it as masks (or native filters on a Qdrant server);
* **filter**: rules applied to candidates (here: what the user must never see again, checked once
  more by id; a business rule such as "in stock" is one more :data:`Filter`);
* **score**: the model's dot product, optionally adjusted by re-rankers (:data:`Scorer`);
* **order**: best first, cut to ``n``, turned into the response rows.

Each stage has one place in the per-stage latency histogram (``profilerec_stage_duration_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.cache import TaggedLru
from service.content import ContentModel
from service.metrics import stage
from service.stores.base import Exclusions, ItemHit, ItemIndex

Filter = Callable[[ItemHit, "Query"], bool]
Scorer = Callable[[list[ItemHit], "Query"], list[ItemHit]]


@dataclass
class Query:
    vector: np.ndarray
    n: int
    exclude: Exclusions
    categories: Sequence[str] = ()
    explain: bool = False


def not_excluded(hit: ItemHit, query: Query) -> bool:
    return hit.item_id not in query.exclude.ids


@dataclass
class Pipeline:
    snippet_chars: int = 200
    filters: list[Filter] = field(default_factory=lambda: [not_excluded])
    scorers: list[Scorer] = field(default_factory=list)
    candidates: TaggedLru = field(default_factory=lambda: TaggedLru(0))
    max_n: int = 100

    async def retrieve(
        self, items: ItemIndex, query: Query, key: tuple[str, str] | None, tag: str
    ) -> list[ItemHit]:
        """The index's best items for the query; with a ``key`` (a user asking again with no filter of
        its own), the user's top ``max_n`` candidates are kept, valid under ``tag`` and the index's
        revision, and later answers are cut from them."""
        revision = items.revision
        if key is None or revision is None:
            return await items.search(query.vector, query.n, query.exclude, query.categories)
        full_tag = f"{tag}|{revision}"
        cached = self.candidates.get(key, full_tag)
        if cached is None:
            hits = await items.search(query.vector, max(query.n, self.max_n), query.exclude)
            self.candidates.put(key, full_tag, [(h.item_id, h.score) for h in hits])
            return hits[: query.n]
        wanted = cached[: query.n]
        payloads = await items.payloads([item_id for item_id, _ in wanted])
        return [ItemHit(i, s, payloads[i]) for i, s in wanted if i in payloads]

    async def run(
        self, items: ItemIndex, query: Query, key: tuple[str, str] | None = None, tag: str = ""
    ) -> list[dict[str, Any]]:
        with stage("retrieve"):
            hits = await self.retrieve(items, query, key, tag)
        with stage("filter"):
            hits = [h for h in hits if all(rule(h, query) for rule in self.filters)]
        with stage("score"):
            for scorer in self.scorers:
                hits = scorer(hits, query)
        with stage("order"):
            if self.scorers:
                hits = sorted(hits, key=lambda h: -h.score)
            return [self.row(h.item_id, h.score, h.payload, query.explain) for h in hits[: query.n]]

    async def run_blended(
        self,
        items: ItemIndex,
        content_index: ItemIndex,
        content: ContentModel,
        query: Query,
        text: np.ndarray,
    ) -> list[dict[str, Any]]:
        """A text request: candidates from the item index (user tower) and from the content index (the
        text against the items' own text), scored by :meth:`ContentModel.blend`, payloads from the
        item index (the one source of item metadata; an item deleted there is dropped)."""
        depth = max(query.n, content.settings.candidates)
        with stage("retrieve"):
            by_model = await items.search(query.vector, depth, query.exclude, query.categories)
            by_text = await content_index.search(text, depth, query.exclude, query.categories)
            model_scores = {h.item_id: h.score for h in by_model}
            text_scores = {h.item_id: h.score for h in by_text}
            payloads = {h.item_id: h.payload for h in by_model}
            only_text = [i for i in text_scores if i not in model_scores]
            if only_text:
                payloads.update(await items.payloads(only_text))
                for item_id, vector in (await items.vectors(only_text)).items():
                    model_scores[item_id] = float(vector @ query.vector)
            only_model = [i for i in model_scores if i not in text_scores]
            if only_model:
                for item_id, vector in (await content_index.vectors(only_model)).items():
                    text_scores[item_id] = float(vector @ text)
            hits = [ItemHit(i, 0.0, payloads[i]) for i in model_scores if i in text_scores and i in payloads]
        with stage("filter"):
            hits = [h for h in hits if all(rule(h, query) for rule in self.filters)]
        with stage("score"):
            if hits:
                blended = content.blend(
                    query.vector,
                    text,
                    np.array([model_scores[h.item_id] for h in hits], np.float32),
                    np.array([text_scores[h.item_id] for h in hits], np.float32),
                    np.array([content.popularity_z(h.payload) for h in hits], np.float32),
                    content.text_weight(np.array([h.score for h in by_text], np.float32)),
                )
                for hit, score in zip(hits, blended, strict=True):
                    hit.score = float(score)
            for scorer in self.scorers:
                hits = scorer(hits, query)
        with stage("order"):
            hits.sort(key=lambda h: -h.score)
            return [self.row(h.item_id, h.score, h.payload, query.explain) for h in hits[: query.n]]

    def row(self, item_id: str, score: float, payload: dict[str, Any], explain: bool) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "score": score,
            "title": str(payload.get("title", item_id)),
            "categories": list(payload.get("categories", ())),
            "profile_snippet": str(payload.get("profile_snippet", ""))[: self.snippet_chars]
            if explain
            else None,
        }

"""What an item's own text buys at serving time: text requests that match the items' text, and new
items placed among their nearest catalogue items.

The towers learn from interactions. Two requests get little from them (measured on the MovieLens-100k
demo bundle, ``benchmarks/cold_start``):

* **a request made only of text** ("I want to watch a good western"): the user tower maps the text
  into the model's space, but the answer stays close to the popularity list (2 of the 18 genre
  requests got 10 or more titles of their genre in the top 20). The answer here is a blend of three
  scores, each standardised over the catalogue for this request so that their weights mean the same
  for every query: the user tower's score ``z_model``, the cosine between the text and each item's
  content vector ``z_text`` (``rec_contract.content``), and the item's log-popularity ``z_pop`` (0,
  the mean, for items added through the API: their popularity is unknown)::

      score = w * z_text + (1 - w) * z_model + p * z_pop      (p = text_popularity_weight)

  where ``w`` is ``text_weight`` scaled by how well the text matches any item's text at all
  (:meth:`ContentModel.text_weight`), so a sentence about the person rather than the films is left
  to the user tower;

  The mean and the standard deviation of ``u . v`` over the catalogue are ``u . mean(V)`` and
  ``sqrt(u' Cov(V) u)``: two small products per request, statistics computed once per bundle (on a
  sample of at most 50,000 items). Candidates are the union of the item index's top ``candidates`` (50) for
  the user vector and the content index's top ``candidates`` for the text, so a catalogue of any size
  is served by the same two top-N searches;
* **an item known only by text**: an item tower trained on interactions maps its text poorly (the
  demo Mult-VAE bundle's ridge regression has a held-out R^2 of 0.04); with ``new_item_vectors =
  neighbours`` its vector is the softmax(cosine / temperature)-weighted mean of the trained vectors of
  its ``new_item_neighbours`` nearest catalogue items by content, rescaled to their mean norm, so it
  is scored like the items it resembles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

STATS_SAMPLE = 50_000


@dataclass(frozen=True)
class ContentSettings:
    text_weight: float = 0.7
    text_popularity_weight: float = 0.5
    text_match_low: float = 0.2
    text_match_high: float = 0.35
    candidates: int = 50
    new_item_vectors: Literal["neighbours", "tower"] = "neighbours"
    new_item_neighbours: int = 10
    new_item_temperature: float = 0.1


def _moments(matrix: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = matrix
    if len(matrix) > STATS_SAMPLE:
        rows = matrix[np.sort(rng.choice(len(matrix), STATS_SAMPLE, replace=False))]
    rows = np.asarray(rows, np.float64)
    mean = rows.mean(axis=0)
    cov = np.cov(rows, rowvar=False) if len(rows) > 1 else np.zeros((rows.shape[1],) * 2)
    return mean.astype(np.float32), np.atleast_2d(cov).astype(np.float32)


class Standardiser:
    """``(x . w - mean) / std`` over the rows ``w`` of a matrix, for any query ``x``."""

    def __init__(self, matrix: np.ndarray, rng: np.random.Generator) -> None:
        self.mean, self.cov = _moments(matrix, rng)

    def __call__(self, query: np.ndarray, scores: np.ndarray) -> np.ndarray:
        std = float(np.sqrt(max(float(query @ self.cov @ query), 1e-12)))
        return (scores - float(query @ self.mean)) / std


class ContentModel:
    """One bundle's content vectors, score statistics and popularity prior (built at bundle load)."""

    def __init__(
        self,
        item_vectors: np.ndarray,
        item_content: np.ndarray | None,
        popularity: np.ndarray,
        settings: ContentSettings,
    ) -> None:
        self.settings = settings
        self.item_vectors = item_vectors
        self.item_content = item_content
        rng = np.random.default_rng(0)
        self.model = Standardiser(item_vectors, rng)
        self.text = Standardiser(item_content, rng) if item_content is not None else None
        log_pop = np.log1p(np.asarray(popularity, np.float64))
        spread = float(log_pop.std()) or 1.0
        self.pop_z = ((log_pop - log_pop.mean()) / spread).astype(np.float32)

    @property
    def blends_text(self) -> bool:
        return self.text is not None and self.settings.text_weight > 0

    def neighbour_vector(self, text_vector: np.ndarray) -> np.ndarray | None:
        """The weighted mean of the trained vectors of the nearest catalogue items by content, or None
        (no content vectors, or the setting asks for the item tower)."""
        s = self.settings
        if self.item_content is None or s.new_item_vectors != "neighbours" or not len(self.item_content):
            return None
        sims = self.item_content @ np.asarray(text_vector, np.float32).ravel()
        k = min(s.new_item_neighbours, len(sims))
        nearest = np.argpartition(-sims, k - 1)[:k]
        weights = np.exp((sims[nearest] - sims[nearest].max()) / s.new_item_temperature)
        weights /= weights.sum()
        rows = np.asarray(self.item_vectors[nearest], np.float32)
        mean = weights @ rows
        # averaging shrinks the norm, which in a dot-product model carries an item's general appeal:
        # keep the neighbours' (weighted) mean norm
        norm = float(np.linalg.norm(mean))
        scale = float(weights @ np.linalg.norm(rows, axis=1)) / norm if norm > 0 else 1.0
        return (mean * scale).astype(np.float32)

    def popularity_z(self, payload: dict[str, Any]) -> float:
        index = int(payload.get("index", -1))
        return float(self.pop_z[index]) if 0 <= index < len(self.pop_z) else 0.0

    def text_weight(self, best_matches: np.ndarray) -> float:
        """The text's weight for a request whose best content matches (cosines) are ``best_matches``:
        ``text_weight`` scaled by how well the text matches the catalogue's own text (the mean of its
        10 best cosines, between ``text_match_low`` and ``text_match_high``). A sentence about the
        person rather than the films ("I am a 24-year-old technician") matches no item's text (mean
        best cosine about 0.1-0.2 on the demo, against 0.35-0.55 for a sentence naming a genre) and is
        left to the user tower."""
        s = self.settings
        if not len(best_matches):
            return 0.0
        match = float(np.mean(np.sort(best_matches)[-10:]))
        span = max(s.text_match_high - s.text_match_low, 1e-6)
        return s.text_weight * float(np.clip((match - s.text_match_low) / span, 0.0, 1.0))

    def blend(
        self,
        user_vector: np.ndarray,
        text_vector: np.ndarray,
        model_scores: np.ndarray,
        text_scores: np.ndarray,
        pop_z: np.ndarray,
        weight: float | None = None,
    ) -> np.ndarray:
        """The blended score of candidates from their raw model and text scores (see the module);
        ``weight``: the text's weight (default ``text_weight``)."""
        assert self.text is not None
        w = self.settings.text_weight if weight is None else weight
        p = self.settings.text_popularity_weight
        z_model = self.model(user_vector, model_scores)
        z_text = self.text(text_vector, text_scores)
        return np.asarray(w * z_text + (1.0 - w) * z_model + p * pop_z, np.float32)

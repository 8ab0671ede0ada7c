"""The wording of extractive profiles: each dataset's domain nouns, and small phrase helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_TITLES = 8  # titles listed in one facet


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

GENDER = {"M": ("man", "men"), "F": ("woman", "women")}


def pct(x: float) -> str:
    return f"{round(100 * x)}%"


def join_words(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def decade(year: int) -> str:
    return f"{year // 10 * 10}s"

"""The grounding check: is a generated profile faithful to the data its prompt was built from?

:mod:`offline_jobs.profiles.validation` rejects text that is malformed; this module rejects text that makes
claims the data does not support (a small model invents films, years and genres: "The 2016 movie Toy
Story", "The Legend of Zelda (2019)"). For one profile and the entity it describes it finds

* **titles** the text mentions, matched to the catalogue tolerantly (case, punctuation, a leading
  article, MovieLens' ``"Usual Suspects, The (1995)"`` form, an alternative title in parentheses, the
  year). A mention is *grounded* when it names an item of the user's training history (a user), or the
  item itself or one of the neighbours its prompt listed (an item); *outside* when it names another
  catalogue item; *invented* when it looks like a title but names nothing in the catalogue. Title-like
  spans are found precisely rather than greedily (capitalised words alone are not titles): known
  catalogue titles of two words or more written capitalised, single-word titles only when quoted or
  followed by a year, and for invented titles: quoted capitalised strings, ``Title (Year)``,
  and the leading capitalised words of an enumerated list entry;
* **categories** (genres) it mentions, through the dataset's own category names and their common
  English forms ("comedies", "science fiction", "animated"); a category is *supported* when it is
  frequent enough in the history's category distribution (users: their training items; items: the
  item's own categories, its listed neighbours' and its audience's frequent ones). Their precision is
  supported / mentioned;
* **facts** the tables hold that the text contradicts: a year given to a catalogue title that is not
  its year, a year an item profile states that no data in its prompt gives ("made in 1985" for a 1995
  film), a year a user profile states that no film of the user's history has ("a 2014 horror film" for
  a history of 1990s films), a user's age ("a 21-year-old" for a 24-year-old).

The verdict (:class:`Grounding`) fails on any ungrounded title, any contradiction, or a category
precision under the threshold; its ``score`` (faithfulness, 0..1) ranks candidates (best of N). The
runner treats a failed verdict as a rejected generation: it retries within the budget and then falls
back to the extractive profile, which is computed from the same data and grounded by construction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offline_jobs.context import JobContext
from offline_jobs.profiles.titles import ARTICLES as _ARTICLES
from offline_jobs.profiles.titles import CONNECTORS as _CONNECTORS
from offline_jobs.profiles.titles import LABEL as _LABEL
from offline_jobs.profiles.titles import TOKEN as _TOKEN
from offline_jobs.profiles.titles import breaks_span as _breaks
from offline_jobs.profiles.titles import span_key as _span_key
from offline_jobs.profiles.titles import title_case as _title_case
from offline_jobs.profiles.titles import title_key as _key
from offline_jobs.profiles.titles import title_keys
from offline_jobs.profiles.titles import title_run_backwards as _title_run_backwards
from offline_jobs.profiles.titles import title_run_forwards as _title_run_forwards

_YEAR = re.compile(r"(?<![\d$£€])\b(1[89]\d\d|20\d\d)\b(?!s\b|'s|\d)")
_PAREN_YEAR = re.compile(r"\(\s*(1[89]\d\d|20\d\d)\s*\)")
_AGE = re.compile(r"\b(\d{1,3})[- ]years?[- ]old\b|\baged (\d{1,3})\b", re.I)
_FILLER = re.compile(r"^(?:and|or|\d{1,4}s?)$")  # words a genre list may hold besides the genres
_QUOTED = re.compile(r"[\"“”]([^\"“”\n]{2,80})[\"“”]")
_ENUM = re.compile(r"(?:^|(?<=[\s:]))(?:\d{1,2}[.)]|[-•*])\s+(?=[A-Z0-9\"“])")
_SENTENCE_END = re.compile(r"[.!?]\s*$")
_NOT_TITLE_TEXT = (
    "january february march april may june july august september october november december monday "
    "tuesday wednesday thursday friday saturday sunday user users movie movies film films book books "
    "profile likes dislikes hidden preferences genre genres title titles favourites favorites rating "
    "ratings i he she they we you it this that these those his her their"
)
_NOT_TITLES = frozenset(_NOT_TITLE_TEXT.split())
# common English forms of category names, used when the dataset has the category
_ALIASES: dict[str, tuple[str, ...]] = {
    "sci-fi": ("science fiction", "science-fiction", "scifi", "sci fi"),
    "children's": ("children", "childrens", "kids"),
    "romance": ("romantic", "romances", "rom-com", "romcom"),
    "comedy": ("comedies", "comedic"),
    "drama": ("dramas", "dramatic"),
    "animation": ("animated", "cartoon", "cartoons"),
    "documentary": ("documentaries",),
    "mystery": ("mysteries",),
    "film-noir": ("film noir", "noir"),
    "fantasy": ("fantasies",),
    "thriller": ("thrillers",),
    "western": ("westerns",),
    "musical": ("musicals",),
    "adventure": ("adventures",),
    "horror": ("horrors",),
    "war": ("war film", "war films", "war movie", "war movies"),
}
_UNSUPPORTED_CATEGORY_REASON = "category_claim"


@dataclass
class Mention:
    span: str
    status: str  # grounded | outside | invented
    items: list[int] = field(default_factory=list)  # catalogue indices it names
    year: int | None = None  # the year the text gives it


@dataclass
class Grounding:
    """The verdict on one profile (stored in the profile's ``quality`` record)."""

    passed: bool
    score: float
    reasons: list[str]
    titles: list[Mention]
    categories: dict[str, bool]  # mentioned category -> supported
    category_precision: float
    contradictions: list[str]

    @property
    def grounded_items(self) -> list[int]:
        return sorted({i for m in self.titles if m.status == "grounded" for i in m.items})

    @property
    def ungrounded(self) -> list[str]:
        return [m.span for m in self.titles if m.status != "grounded"]

    @property
    def specificity(self) -> int:
        """Grounded titles plus supported categories: what makes a faithful profile informative."""
        return len(self.grounded_items) + sum(self.categories.values())

    def record(self, item_ids: Sequence[Any] | np.ndarray | None = None) -> dict[str, Any]:
        """The JSON-able summary kept in ``quality["grounding"]``."""
        out: dict[str, Any] = {
            "passed": self.passed,
            "score": self.score,
            "category_precision": round(self.category_precision, 4),
        }
        if self.reasons:
            out["reasons"] = self.reasons
        if self.titles:
            out["titles"] = [{"span": m.span, "status": m.status} for m in self.titles]
        if self.categories:
            out["categories"] = dict(sorted(self.categories.items()))
        if self.contradictions:
            out["contradictions"] = self.contradictions
        grounded = self.grounded_items
        if grounded:
            out["grounded_on"] = [str(item_ids[i]) if item_ids is not None else i for i in grounded]
        return out


@dataclass
class Reference:
    """What one entity's profile may claim: the data its prompt was built from."""

    entity_type: str
    allowed: frozenset[int]  # catalogue indices the profile may name
    categories: frozenset[str]  # supported categories (lower case)
    years: frozenset[int] = frozenset()  # years the profile may state (item: its prompt's; user: history's)
    item: int | None = None  # the item itself (items)
    age: int | None = None  # the user's age (users)


class Grounder:
    """The catalogue index and the per-entity references of one dataset (built once per job)."""

    def __init__(
        self,
        ctx: JobContext,
        *,
        min_category_share: float = 0.05,
        audience_category_share: float = 0.10,
        min_category_precision: float = 0.75,
    ) -> None:
        self.ctx = ctx
        self.min_category_share = min_category_share
        self.audience_category_share = audience_category_share
        self.min_category_precision = min_category_precision
        self.titles: dict[str, set[int]] = {}
        self.years: list[int | None] = []
        n = ctx.dataset.n_items
        for i in range(n):
            title = ctx.title(i)
            self.years.append(ctx.year(i))
            for key in title_keys(title):
                self.titles.setdefault(key, set()).add(i)
        self.max_title_tokens = max((len(k.split()) for k in self.titles), default=1)
        # categories: lower-case name -> canonical, every alias form -> canonical
        names = sorted({c for i in range(n) for c in ctx.categories(i)})
        self.category_names = {c.lower(): c for c in names}
        forms: dict[str, str] = {}
        for lower in self.category_names:
            variants = {lower, lower + "s", lower + "es"} | set(_ALIASES.get(lower, ()))
            if lower.endswith("y"):
                variants.add(lower[:-1] + "ies")
            for v in variants:
                forms.setdefault(v, lower)
        self.category_forms = forms
        alternatives = sorted(forms, key=len, reverse=True)
        self._category_re = (
            re.compile(r"(?<![\w-])(" + "|".join(re.escape(f) for f in alternatives) + r")(?![\w-])", re.I)
            if alternatives
            else None
        )
        index = {c: j for j, c in enumerate(self.category_names)}
        rows, cols = [], []
        for i in range(n):
            for c in ctx.categories(i):
                rows.append(i)
                cols.append(index[c.lower()])
        import scipy.sparse as sp

        self._item_cats = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(n, max(1, len(index)))
        )
        self._cat_order = list(self.category_names)

    # ------------------------------------------------------------------ references
    def _frequent(self, items: np.ndarray, share: float) -> set[str]:
        if not len(items):
            return set()
        counts = np.asarray(self._item_cats[items].sum(axis=0)).ravel()
        need = max(1.0, math.ceil(share * len(items)))
        return {self._cat_order[j] for j in np.flatnonzero(counts >= need)}

    def user_reference(self, user: int) -> Reference:
        items = self.ctx.user_items(user)
        age_text = self.ctx.user_attributes(user).get("age")
        age = int(age_text) if age_text and age_text.isdigit() else None
        years = {y for i in items if (y := self.years[int(i)]) is not None}
        return Reference(
            "user",
            frozenset(int(i) for i in items),
            frozenset(self._frequent(items, self.min_category_share)),
            frozenset(years),
            age=age,
        )

    def item_reference(self, item: int, neighbours: Iterable[int] = ()) -> Reference:
        listed = {int(item), *map(int, neighbours)}
        cats = {c.lower() for j in listed for c in self.ctx.categories(j)}
        audience = self.ctx.item_users(item)
        if len(audience):
            watched = self.ctx.train[audience].indices
            cats |= self._frequent(np.asarray(watched), self.audience_category_share)
        years = {y for j in listed if (y := self.years[j]) is not None}
        return Reference("item", frozenset(listed), frozenset(cats), frozenset(years), item=int(item))

    # ------------------------------------------------------------------ the check
    def check(self, text: str, ref: Reference) -> Grounding:
        titles = self._titles(text, ref)
        categories = self._categories(text, titles, ref)
        contradictions = self._contradictions(text, titles, ref)
        n_titles = len(titles)
        bad_titles = [m for m in titles if m.status != "grounded"]
        title_precision = 1.0 - len(bad_titles) / n_titles if n_titles else 1.0
        precision = sum(categories.values()) / len(categories) if categories else 1.0
        reasons = []
        if any(m.status == "invented" for m in titles):
            reasons.append("invented_title")
        if any(m.status == "outside" for m in titles):
            reasons.append("ungrounded_title")
        if contradictions:
            reasons.append("fact_contradiction")
        if precision < self.min_category_precision:
            reasons.append(_UNSUPPORTED_CATEGORY_REASON)
        score = 0.45 * title_precision + 0.35 * precision + 0.2 * (0.0 if contradictions else 1.0)
        return Grounding(not reasons, round(score, 4), reasons, titles, categories, precision, contradictions)

    def _lookup(self, span: str) -> set[int]:
        found: set[int] = set()
        for key in title_keys(span):
            found |= self.titles.get(key, set())
        return found

    def _status(self, items: set[int], ref: Reference) -> str:
        return "grounded" if items & ref.allowed else "outside"

    def _titles(self, text: str, ref: Reference) -> list[Mention]:
        mentions: list[Mention] = []
        covered: list[tuple[int, int]] = []
        tokens = list(_TOKEN.finditer(text))
        quoted = [(m.start(1), m.end(1)) for m in _QUOTED.finditer(text)]

        def is_quoted(start: int, end: int) -> bool:
            return any(s <= start and end <= e for s, e in quoted)

        def year_after(end: int) -> int | None:
            found = _PAREN_YEAR.match(text, end) or _PAREN_YEAR.match(text, end + 1)
            return int(found.group(1)) if found else None

        # 1. catalogue titles, longest first
        i = 0
        while i < len(tokens):
            matched = False
            for n in range(min(self.max_title_tokens + 1, len(tokens) - i), 0, -1):
                start, end = tokens[i].start(), tokens[i + n - 1].end()
                span = text[start:end]
                if _breaks(span):
                    continue
                key = _span_key(span)
                items = self.titles.get(key) if key else None
                if not items or key is None:
                    continue
                words = key.split()
                first = next((t for t in span.split() if _key(t) and _key(t) not in _ARTICLES), span)
                if not (first[:1].isupper() or first[:1].isdigit()):
                    continue
                year = year_after(end)
                if len(words) == 1 and not (is_quoted(start, end) or year is not None):
                    continue
                if len(words) == 1 and (key in self.category_forms or key in _NOT_TITLES):
                    continue
                if all(w in _CONNECTORS for w in words):
                    continue
                mentions.append(Mention(span, self._status(set(items), ref), sorted(items), year))
                covered.append((start, end))
                i += n
                matched = True
                break
            if not matched:
                i += 1

        # 2. title-like spans the catalogue does not know
        def overlaps(start: int, end: int) -> bool:
            return any(start < e and s < end for s, e in covered)

        for start, end in self._title_like_spans(text):
            if overlaps(start, end):
                continue
            span = _LABEL.sub("", text[start:end]).strip(" ,;:-'\"“”")
            if not span:
                continue
            items = self._lookup(span)
            year = year_after(end)
            if items:
                mentions.append(Mention(span, self._status(items, ref), sorted(items), year))
            elif not self._generic(span):
                mentions.append(Mention(span, "invented", [], year))
            covered.append((start, end))
        return mentions

    def _title_like_spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for m in _QUOTED.finditer(text):
            inner = m.group(1).strip()
            words = inner.split()
            if 1 <= len(words) <= 10 and _title_case(words) and not _SENTENCE_END.search(inner):
                spans.append((m.start(1), m.end(1)))
        for m in _PAREN_YEAR.finditer(text):
            start = _title_run_backwards(text, m.start())
            if start is not None:
                spans.append((start, m.start()))
        for m in _ENUM.finditer(text):
            end = _title_run_forwards(text, m.end())
            if end is not None:
                spans.append((m.end(), end))
        return spans

    def _generic(self, span: str) -> bool:
        """A capitalised span that is not a title claim: genres, domain words, one dictionary word."""
        key = _key(span)
        words = key.split()
        if not words or all(w in _CONNECTORS or w in _NOT_TITLES for w in words) or words[0] in _NOT_TITLES:
            return True
        if all(w in self.category_forms or w in _CONNECTORS or _FILLER.match(w) for w in words):
            return True  # genres with their decades or counts: "Drama (1990s) and Thriller"
        if _AGE.search(span):
            return True  # "A 25-year-old" (the age itself is checked as a fact)
        if key in self.category_forms:
            return True
        if len(words) == 1:
            from offline_jobs.profiles.validation import english_vocabulary

            return words[0] in english_vocabulary() or words[0].isdigit()
        return False

    def _categories(self, text: str, titles: list[Mention], ref: Reference) -> dict[str, bool]:
        if self._category_re is None:
            return {}
        masked = text
        for m in titles:  # a genre word inside a title ("Romance" in a film's name) is not a claim
            masked = masked.replace(m.span, " " * len(m.span))
        found: dict[str, bool] = {}
        for hit in self._category_re.finditer(masked):
            lower = self.category_forms[hit.group(1).lower()]
            found[self.category_names[lower]] = lower in ref.categories
        return found

    def _contradictions(self, text: str, titles: list[Mention], ref: Reference) -> list[str]:
        out = []
        for m in titles:
            if m.year is not None and m.items:
                years = {self.years[i] for i in m.items}
                if None not in years and m.year not in years:
                    out.append(f"year {m.year} for {m.span}")
        if ref.entity_type == "item" or ref.years:
            title_years = {m.year for m in titles if m.year is not None}
            for found in _YEAR.finditer(text):
                year = int(found.group(1))
                if year not in ref.years and year not in title_years:
                    out.append(f"year {year}")
        if ref.entity_type == "user" and ref.age is not None:
            for age_match in _AGE.finditer(text):
                age = int(age_match.group(1) or age_match.group(2))
                if age != ref.age:
                    out.append(f"age {age}")
        return list(dict.fromkeys(out))

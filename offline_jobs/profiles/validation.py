"""Validation of LLM output before it becomes a profile.

Rejects output that is empty, truncated, repetitive, not in the expected format or nonsensical (the
ProEx paper shows such profiles: Fig. 7's original profile is meaningless). A generation cut by the
token limit is trimmed to its last complete sentence when enough remains; otherwise it is
"truncated". The runner retries rejected output with a new seed (bounded) and then falls back to the
deterministic extractive profile of the same slot, flagged ``is_fallback`` with the reasons.

Checks (each a reason string in :attr:`Verdict.reasons`):

* ``empty``, ``too_short``: fewer than ``min_words`` words;
* ``truncated``: stopped by the token limit with no complete sentence to keep;
* ``repetitive``: a high share of repeated word 3-grams or a sentence said twice;
* ``format``: the strategy's expected parts are missing (DUET's cue / prompt / profile);
* ``nonsensical``: mostly non-alphabetic, too few dictionary words, or no overlap at all with the
  entity's own vocabulary (titles, genres, attributes);
* ``echo``: copies the prompt (most of its 5-grams appear in the prompt) or is a refusal/meta reply;
* the grounding check's reasons (``invented_title``, ``ungrounded_title``, ``fact_contradiction``,
  ``category_claim``; :mod:`offline_jobs.profiles.grounding`) when a ``grounding`` check is given: a profile
  that names titles outside the data, contradicts the item table or claims unsupported genres.

**Repair** (``repair=True``, the job setting ``grounding_repair``): a profile whose only faults are
grounding faults is cut to its sentences that pass the check on their own. The cut text is kept when
it passes every check above and still makes grounded claims (a title of the data, or two supported
genres), so a repair never keeps filler or a lone genre word; the verdict's notes say how many sentences were
dropped. A small model often writes one wrong sentence beside two true ones; without repair the whole
generation was regenerated or replaced by the extractive profile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offline_jobs.profiles.grounding import Grounding

# a repaired profile without a grounded title must still name this many supported genres
REPAIR_MIN_GENRES = 2
_SENTENCE_SPLIT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENT_END = re.compile(r"[.!?](?:[\"')\]]*)\s")
_META = re.compile(
    r"\b(as an ai|i am an ai|i'm sorry|i cannot|i can't help|language model|here is the profile|"
    r"sure[,!] here)\b",
    re.IGNORECASE,
)
_STOPWORDS_TEXT = """
a an the and or but if of to in on at by for with from as is are was were be been being it its this
that these those they them their he she his her him who whom which what when where why how not no
nor so than too very can will just do does did has have had having i you we our your my me us also
more most other some such only own same into over under again further then once all any both each
few there here about above below up down out off while because until against between through during
before after would could should might may must shall user users item items profile movie movies film
films book books article articles
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass
class Verdict:
    ok: bool
    text: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts: dict[str, str] = field(default_factory=dict)
    grounding: Grounding | None = None  # the grounding check's verdict, when it ran
    repaired: list[str] = field(default_factory=list)  # a repaired profile: the reasons it was cut for


@lru_cache(maxsize=1)
def english_vocabulary() -> frozenset[str]:
    """Whole words of the MiniLM (BERT uncased) vocabulary: a small English dictionary, offline."""
    try:
        from offline_jobs.jobs.embedding import minilm_path

        lines = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, RuntimeError):
        return frozenset()
    return frozenset(w for w in lines if w.isalpha() and not w.startswith("##"))


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if len(w) > 2 and w not in STOPWORDS}


def trim_to_sentence(text: str) -> str | None:
    """The text up to its last sentence end, or None if it has none."""
    text = text.rstrip()
    if text and text[-1] in ".!?":
        return text
    ends = [m.end() for m in _SENT_END.finditer(text + " ")]
    ends = [e for e in ends if e <= len(text)]
    if not ends:
        return None
    return text[: ends[-1]].rstrip()


def repeated_ngram_ratio(tokens: list[str], n: int = 3) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


_DUET_PART = re.compile(
    r"^\s*[*#\-\s]*(cue|prompt|constructed profile prompt|profile)\s*[*]*\s*:\s*", re.I | re.M
)


def parse_duet(text: str) -> dict[str, str] | None:
    """Split ``Cue: ... Prompt: ... Profile: ...`` into its parts (None when one is missing)."""
    marks = list(_DUET_PART.finditer(text))
    parts: dict[str, str] = {}
    for i, m in enumerate(marks):
        key = m.group(1).lower()
        key = "prompt" if key.startswith("constructed") else key
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = text[m.end() : end].strip()
        if key not in parts and value:
            parts[key] = value
    if not all(k in parts for k in ("cue", "prompt", "profile")):
        return None
    return parts


def clean(text: str) -> str:
    """Strip markdown decoration and labels a small model likes to add."""
    text = text.strip().strip('"').strip()
    text = re.sub(r"^\s*(new |original )?profile\s*(#?\d+)?\s*:\s*", "", text, flags=re.I)
    text = re.sub(r"\*\*|__|^#+\s*", "", text, flags=re.M)
    return re.sub(r"\s+", " ", text).strip()


def validate(
    text: str,
    finish_reason: str = "stop",
    *,
    kind: str = "profile",
    prompt: str = "",
    entity_vocab: Iterable[str] = (),
    min_words: int = 8,
    max_repeat_ratio: float = 0.3,
    min_alpha_ratio: float = 0.6,
    min_dictionary_ratio: float = 0.6,
    max_echo_ratio: float = 0.6,
    grounding: Callable[[str], Grounding] | None = None,
    repair: bool = False,
) -> Verdict:
    """Validate one generation. ``kind``: ``profile`` | ``aspects`` | ``latent`` | ``duet``.

    With ``repair`` and a ``grounding`` check, a profile that fails on grounding reasons alone is cut
    to its sentences that pass the check (see the module docstring)."""
    reasons: list[str] = []
    notes: list[str] = []
    parts: dict[str, str] = {}
    raw = text or ""
    if finish_reason == "error":
        return Verdict(False, "", ["error"])
    if kind == "duet":
        parsed = parse_duet(raw)
        if parsed is None:
            return Verdict(False, clean(raw), ["format"])
        parts = parsed
        raw = parsed["profile"]
    body = clean(raw) if kind != "aspects" else raw.strip()
    if finish_reason == "length":
        trimmed = trim_to_sentence(body)
        if trimmed is None or len(words(trimmed)) < min_words:
            reasons.append("truncated")
        else:
            if trimmed != body:
                notes.append("trimmed_to_sentence")
            body = trimmed
    tokens = words(body)
    if not tokens:
        return Verdict(False, body, ["nonsensical" if body.strip() else "empty"])
    if len(tokens) < min_words:
        reasons.append("too_short")
    if repeated_ngram_ratio(tokens) > max_repeat_ratio:
        reasons.append("repetitive")
    else:
        sentences = [s.strip().lower() for s in re.split(r"[.!?]+", body) if len(s.split()) >= 4]
        if len(sentences) != len(set(sentences)):
            reasons.append("repetitive")
    alpha = sum(c.isalpha() for c in body) / max(1, sum(not c.isspace() for c in body))
    vocab = english_vocabulary()
    dict_ratio = sum(w in vocab for w in tokens) / len(tokens) if vocab else 1.0
    entity_words = {w.lower() for w in entity_vocab if w and w.lower() not in STOPWORDS}
    off_topic = kind in ("profile", "duet") and entity_words and not (content_words(body) & entity_words)
    if alpha < min_alpha_ratio or dict_ratio < min_dictionary_ratio or off_topic:
        reasons.append("nonsensical")
    if _META.search(body):
        reasons.append("echo")
    elif prompt and len(tokens) >= 5:
        grams = _ngrams(tokens, 5)
        if grams and len(grams & _ngrams(words(prompt), 5)) / len(grams) > max_echo_ratio:
            reasons.append("echo")
    if kind == "aspects" and not re.search(r"\blike", body, re.I):
        reasons.append("format")
    grounded = grounding(body) if grounding is not None and kind in ("profile", "duet") else None
    if grounded is not None:
        # only the grounding check's faults (none of the checks above): cut the sentences it fails
        if repair and grounding is not None and grounded.reasons and not reasons:
            repaired = _repair(body, grounding, prompt, entity_vocab, min_words, notes)
            if repaired is not None:
                repaired.repaired = sorted(set(grounded.reasons))
                if parts:
                    repaired.parts = {**parts, "profile": repaired.text}
                return repaired
        reasons.extend(grounded.reasons)
    return Verdict(not reasons, body, sorted(set(reasons)), notes, parts, grounded)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split after ``.!?`` and closing quotes, before a capital or digit)."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]


def _repair(
    body: str,
    grounding: Callable[[str], Grounding],
    prompt: str,
    entity_vocab: Iterable[str],
    min_words: int,
    notes: list[str],
) -> Verdict | None:
    """``body`` without its sentences that fail the grounding check, or None when that is not a profile.

    The kept sentences must pass every check together (length, echo, grounding, ...) and name a title
    of the data or two supported genres.
    """
    sentences = split_sentences(body)
    if len(sentences) < 2:
        return None
    kept = [s for s in sentences if grounding(s).passed]
    if not kept or len(kept) == len(sentences):
        return None
    vocab, text = entity_vocab, " ".join(kept)
    verdict = validate(text, prompt=prompt, entity_vocab=vocab, min_words=min_words, grounding=grounding)
    grounded = verdict.grounding
    if not verdict.ok or grounded is None:
        return None
    if not grounded.grounded_items and sum(grounded.categories.values()) < REPAIR_MIN_GENRES:
        return None
    verdict.notes = [*notes, f"repaired:dropped_{len(sentences) - len(kept)}_of_{len(sentences)}_sentences"]
    return verdict

"""Titles in text: the normalised keys a catalogue title may be mentioned under, and the runs of
capitalised words in running text that may be titles (:mod:`offline_jobs.profiles.grounding` checks them)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

ARTICLES = ("the", "a", "an", "les", "la", "le", "il", "el", "das", "der", "die", "l'")
TRAILING_ARTICLE = re.compile(r"^(?P<head>.+?),\s*(?P<art>the|a|an|les|la|le|il|el|das|der|die|l')\s*$", re.I)
_YEAR_SUFFIX = re.compile(r"\s*\((?:\d{4})\)\s*$")
_PAREN = re.compile(r"\s*\(([^()]*)\)\s*")
TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
# words a title may contain in lower case ("Gone with the Wind", "Return of the Jedi")
_CONNECTOR_TEXT = (
    "of the a an and or in on at to for with from by vs de la le les du des el il der die das und y et"
)
CONNECTORS = frozenset(_CONNECTOR_TEXT.split())


def fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def title_key(text: str) -> str:
    """Lower case, ASCII, ``&`` as ``and``, punctuation dropped, a leading article dropped."""
    text = fold(text).lower().replace("&", " and ").replace("’", "'")
    tokens = TOKEN.findall(text)
    while len(tokens) > 1 and tokens[0] in ARTICLES:
        tokens = tokens[1:]
    if len(tokens) > 1 and tokens[0].startswith("l'"):
        tokens[0] = tokens[0][2:]
    return " ".join(tokens)


def title_keys(title: str) -> set[str]:
    """Every normalised form under which ``title`` may be mentioned.

    ``"Usual Suspects, The (1995)"`` -> ``{"usual suspects"}``; ``"Seven (Se7en) (1995)"`` ->
    ``{"seven", "se7en", "seven se7en"}``."""
    base = _YEAR_SUFFIX.sub("", title.strip())
    forms = {base}
    alternatives = _PAREN.findall(base)
    if alternatives:
        main = _PAREN.sub(" ", base).strip()
        forms.add(main)
        forms.update(alternatives)
    keys = set()
    for written in forms:
        form = written.strip()
        moved = TRAILING_ARTICLE.match(form)
        if moved:
            form = f"{moved.group('art')} {moved.group('head')}"
        key = title_key(form)
        if key:
            keys.add(key)
    return keys


def title_year(title: str) -> int | None:
    found = re.search(r"\((\d{4})\)\s*$", title)
    return int(found.group(1)) if found else None


_ABBREVIATION = re.compile(r"\b(?:mr|mrs|ms|dr|st|jr|sr|vs|no|vol|pt)\.\s", re.I)
LABEL = re.compile(r"^\s*(?:title|movie|film|book|item|name|genre)s?(?:\s*\d+)?\s*:\s*", re.I)


def span_key(span: str) -> str | None:
    """The catalogue key of a run of words in running text: as written, or in the catalogue's
    ``"Usual Suspects, The"`` form (a capitalised article after the only comma); None when the run
    holds brackets or other commas (it is then not one title)."""
    if "(" in span or ")" in span:
        return None
    if "," in span:
        moved = TRAILING_ARTICLE.match(span)
        if not moved or "," in moved.group("head") or not moved.group("art")[:1].isupper():
            return None
        return title_key(f"{moved.group('art')} {moved.group('head')}")
    return title_key(span)


def breaks_span(span: str) -> bool:
    """Whether ``span`` crosses a line, a list separator or a sentence end (not an abbreviation's dot)."""
    if "\n" in span or re.search(r"[!?;|]\s", span):
        return True
    return bool(re.search(r"\.\s", _ABBREVIATION.sub("_ ", span)))


def title_case(words: Sequence[str]) -> bool:
    """Capitalised first word and most other non-connector words capitalised."""
    clean = [w.strip("\"'“”,.:;!?()") for w in words]
    clean = [w for w in clean if w]
    if not clean or not (clean[0][:1].isupper() or clean[0][:1].isdigit()):
        return False
    content = [w for w in clean[1:] if w.lower() not in CONNECTORS]
    return sum(w[:1].isupper() or w[:1].isdigit() for w in content) >= 0.6 * len(content)


_TITLE_WORD = re.compile(r"[A-Za-z0-9][\w'’&!?.-]*:?$")


def title_run_backwards(text: str, end: int) -> int | None:
    """Start of the capitalised run of words that ends at ``end`` ("The Legend of Zelda (2019)")."""
    words = list(re.finditer(r"\S+", text[:end]))
    start = None
    for n, w in enumerate(reversed(words)):
        token = w.group(0)
        bare = token.strip("\"'“”,()")
        if not bare or not _TITLE_WORD.match(bare) or (token.endswith((".", ",", ";")) and n):
            break
        if bare[:1].isupper() or bare[:1].isdigit():
            start = w.start() + (len(token) - len(token.lstrip("\"'“”(")))
        elif bare.lower() not in CONNECTORS:
            break
        if n >= 9:
            break
    return start


def title_run_forwards(text: str, begin: int) -> int | None:
    """End of the capitalised run of words that starts at ``begin`` (an enumerated entry)."""
    end = None
    for n, w in enumerate(re.finditer(r"\S+", text[begin:])):
        token = w.group(0)
        bare = token.strip("\"'“”")
        if bare in ("|", "-", "–", "—") or bare.startswith("("):
            break
        stripped = bare.rstrip(",.:;!?")
        if not stripped:
            break
        if stripped[:1].isupper() or stripped[:1].isdigit():
            end = begin + w.start() + len(token.rstrip(",.:;!?\"'”"))
        elif stripped.lower() not in CONNECTORS:
            break
        if bare != stripped or n >= 9:
            break
    return end

"""The API's documented limits and the character rules of its strings, in one place.

The OpenAPI document is generated from these (the request models and route parameters use them), so
the contract a client reads is the one the service enforces. Settings may lower a limit
(``PROFILEREC_MAX_N``, ``PROFILEREC_MAX_FEEDBACK_BATCH``), never raise it above the documented one.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

MAX_N = 100  # items per answer
MAX_FEEDBACK_BATCH = 1000  # feedback events per request
MAX_ID_CHARS = 128
MAX_CATEGORY_CHARS = 64
MAX_CATEGORIES = 50  # categories a request may filter on
MAX_EXCLUDE = 1000  # item ids a request may exclude
MAX_TEXT_CHARS = 4000

DEFAULT_FEEDBACK_TYPES = frozenset(
    {"click", "view", "like", "dislike", "purchase", "rating", "add_to_cart", "share", "skip"}
)
FEEDBACK_TYPE_RE = re.compile(r"[a-z][a-z_]{0,31}")

# No control characters (C0, DEL, C1: NUL, ESC and the ANSI sequences it starts, ...) in ids, titles
# and categories; free text may hold tabs and line breaks, nothing else of the kind. Values are
# stripped, so each needs a visible character: the patterns say so, and the OpenAPI document with them.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_TEXT_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"


def _visible(excluded: str) -> str:
    """Characters outside ``excluded``, at least one of them not whitespace."""
    return rf"^[^{excluded}]*[^\s{excluded}][^{excluded}]*$"


NO_CONTROL = rf"^[^{_CONTROL}]*$"  # path parameters (not stripped)
VISIBLE = _visible(_CONTROL)
VISIBLE_TEXT = _visible(_TEXT_CONTROL)
# A comma separates values in the `category` and `exclude` query parameters, so names have none.
VISIBLE_NO_COMMA = _visible(_CONTROL + ",")
_ONE_VALUE = rf"[^{_CONTROL},]*[^\s{_CONTROL},][^{_CONTROL},]*"
COMMA_LIST = rf"^{_ONE_VALUE}(,{_ONE_VALUE})*$"  # one query value: names separated by commas

EntityId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS, pattern=VISIBLE),
]
Category = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_CATEGORY_CHARS, pattern=VISIBLE_NO_COMMA
    ),
]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300, pattern=VISIBLE)
]
FreeText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS, pattern=VISIBLE_TEXT),
]

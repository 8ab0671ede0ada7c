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
# and categories; free text may hold tabs and line breaks, nothing else of the kind.
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
TEXT_NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
# A comma separates values in the `category` and `exclude` query parameters, so names have none.
NO_CONTROL_NO_COMMA = r"^[^\x00-\x1f\x7f-\x9f,]*$"

EntityId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS, pattern=NO_CONTROL),
]
Category = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_CATEGORY_CHARS, pattern=NO_CONTROL_NO_COMMA
    ),
]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300, pattern=NO_CONTROL)
]
FreeText = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS, pattern=TEXT_NO_CONTROL
    ),
]

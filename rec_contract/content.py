"""Item content vectors: what an item's own text says, in the text encoder's space.

Every bundle carries ``item_content.npy`` ``[I, d]``: the L2-normalised text embedding of each catalogue
item's title and categories (:func:`item_text`), made by the bundle's own text encoder at export. An
item added through the API gets the same from its title, categories and text. The service uses them
for what the trained towers cannot do well:

* a text-only request is matched against the items' own text as well as through the user tower (a
  blend, see ``service.content``), so "a good western" returns westerns;
* an item known only by text gets a collaborative vector from its nearest catalogue items by content
  (a similarity-weighted mean of their trained vectors).
"""

from __future__ import annotations

from collections.abc import Sequence

CONTENT_FILE = "item_content.npy"


def item_text(title: str, categories: Sequence[str], text: str = "") -> str:
    """How an item is described to the text encoder: ``"Title (Cat, Cat): text"``."""
    head = f"{title} ({', '.join(categories)})" if categories else title
    return f"{head}: {text}" if text else head

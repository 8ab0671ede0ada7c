"""Names shared by every component: Qdrant collections, aliases, point ids, vector names, Redis keys.

Collections are versioned (``items_<version>``, ``profiles_<version>``); the aliases ``items`` and
``profiles`` point at the live versions. Point ids are UUIDv5 of ``"<entity_type>:<raw id>"`` so any
component can address a user or item from its raw id without a lookup table.
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache

ITEMS_ALIAS = "items"
PROFILES_ALIAS = "profiles"

# Profiles collection: a multivector of the K profile embeddings (MAX_SIM) and their mean (cosine),
# the latter for neighbour search (e.g. similar items for profiles of items with no interactions).
PROFILE_MULTIVECTOR = "profiles"
PROFILE_MEAN_VECTOR = "mean"

_NAMESPACE = uuid.UUID("8f4f3c1e-4a7b-5d2e-9c61-2b7f0e5a9d13")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

REDIS_PREFIX = "profilerec"


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid version {version!r}: letters, digits, '_', '.', '-' (max 64)")
    return version


def items_collection(version: str) -> str:
    return f"{ITEMS_ALIAS}_{check_version(version)}"


def profiles_collection(version: str) -> str:
    return f"{PROFILES_ALIAS}_{check_version(version)}"


@lru_cache(maxsize=1 << 16)
def point_id(entity_type: str, raw_id: str) -> str:
    if entity_type not in ("user", "item"):
        raise ValueError(f"entity_type must be 'user' or 'item', got {entity_type!r}")
    return str(uuid.uuid5(_NAMESPACE, f"{entity_type}:{raw_id}"))


def user_vector_key(bundle_version: str, raw_user_id: str) -> str:
    """Redis key of a user's cached fused vector (the user tower's output) under one bundle."""
    return f"{REDIS_PREFIX}:uv:{bundle_version}:{raw_user_id}"


def generation_key(entity_type: str, raw_id: str) -> str:
    """Redis key of an entity's cache generation: a random token replaced whenever the entity's
    profiles are rewritten; a cached value is valid only under the token it was computed with."""
    return f"{REDIS_PREFIX}:gen:{entity_type}:{raw_id}"

"""Tower inputs built by name, as the bundle's manifest declares them (no branching on the model kind).

A user tower may take any of:

* ``collab``: the user's trained collaborative vector (LightGCN); for a new user, the mean of the liked
  items' collaborative vectors (fold-in), else zeros;
* ``history``: the multi-hot history over the catalogue (Mult-VAE's encoder input): the bundle's
  training interactions of the user plus what it liked since (feedback, or a cold-start request);
* ``profiles`` ``[1, K, d]`` and ``profile_mask`` ``[1, K]``: the user's profile vectors (or an
  embedded text), mean-pooled inside the tower (ProEx Algorithm 2).

A third model is a training-side change: it exports a tower whose inputs are among these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.bundle_runtime import LoadedBundle, OnnxTower


def profile_inputs(bundle: LoadedBundle, vectors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``profiles [1, k, d]`` and ``profile_mask [1, k]`` (one masked zero slot if none).

    One row (a cold-start text, an item known only by text) is a profile of every slot, so it is
    repeated k times (the Mult-VAE ProEx tower adds slot j's profile to the mean of slot j over the
    history; a profile axis of 1 was broadcast to the same result, but padded with masked slots in a
    micro-batch it would not be). Between 1 and k rows (a text with items known only by text, an
    entity with fewer profiles) are padded with masked zero slots: the exported Mult-VAE ProEx tower
    fixes the profile axis at the bundle's k although the manifest names it ``K``, and failed on
    2..k-1 rows (a 500, found by the issue-15 replay)."""
    dim = bundle.manifest.profiles.text_dim
    if vectors is None or len(vectors) == 0:
        return np.zeros((1, 1, dim), np.float32), np.zeros((1, 1), np.float32)
    k = max(1, bundle.manifest.profiles.k)
    kept = np.asarray(vectors, dtype=np.float32)[:k]
    if kept.shape[1] != dim:
        raise ValueError(f"profile vectors have dimension {kept.shape[1]}, the model expects {dim}")
    if len(kept) in (1, k):
        return np.repeat(kept, k // len(kept), axis=0)[None], np.ones((1, k), np.float32)
    profiles = np.zeros((1, k, dim), np.float32)
    profiles[0, : len(kept)] = kept
    mask = np.zeros((1, k), np.float32)
    mask[0, : len(kept)] = 1.0
    return profiles, mask


def _collab(
    bundle: LoadedBundle, tower: OnnxTower, user: int | None, liked: Sequence[int] | np.ndarray
) -> np.ndarray:
    if user is not None and bundle.collab_users is not None:
        return bundle.collab_users[user][None]
    if len(liked) and bundle.collab_items is not None:
        return bundle.collab_items[list(liked)].mean(axis=0, keepdims=True)
    return np.zeros((1, tower.input_width("collab")), np.float32)


def user_feeds(
    bundle: LoadedBundle,
    user: int | None,
    liked: Sequence[int] | np.ndarray,
    profiles: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """The user tower's inputs. ``user``: the user's index in the bundle (None for a new user);
    ``liked``: catalogue indices the user interacted with beyond the bundle's history (feedback, or
    a cold-start request's liked items)."""
    tower = bundle.user_tower
    names = tower.input_names
    feeds: dict[str, np.ndarray] = {}
    if "collab" in names:
        feeds["collab"] = _collab(bundle, tower, user, liked)
    if "history" in names:
        history = np.zeros((1, tower.input_width("history")), np.float32)
        if user is not None:
            history[0, bundle.history.items_of(user)] = 1.0
        if len(liked):
            history[0, np.asarray(liked, np.int64)] = 1.0
        feeds["history"] = history
    if "profiles" in names:
        feeds["profiles"], feeds["profile_mask"] = profile_inputs(bundle, profiles)
    return feeds


def stack_feeds(feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several requests' tower inputs as one batch (profile slots padded with masked zeros)."""
    if len(feeds) == 1:
        return feeds[0]
    out: dict[str, np.ndarray] = {}
    k = max((f["profiles"].shape[1] for f in feeds if "profiles" in f), default=0)
    for name in feeds[0]:
        parts = [f[name] for f in feeds]
        if name in ("profiles", "profile_mask"):
            parts = [
                np.pad(p, [(0, 0), (0, k - p.shape[1])] + [(0, 0)] * (p.ndim - 2)) if p.shape[1] < k else p
                for p in parts
            ]
        out[name] = np.concatenate(parts, axis=0)
    return out


def user_vector(
    bundle: LoadedBundle,
    user: int | None,
    liked: Sequence[int] | np.ndarray,
    profiles: np.ndarray | None,
) -> np.ndarray:
    """The user tower's output ``[item_dim]`` (dot product with an item vector = the model's score)."""
    return bundle.user_tower(**user_feeds(bundle, user, liked, profiles))[0]


def item_vector(
    bundle: LoadedBundle, item: int | None, profiles: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """An item's final vector from its profile vectors, and where it came from (``model``/``text``).

    A catalogue item whose item tower takes a collaborative part (LightGCN ProEx): its collaborative
    vector plus its mapped profiles; another catalogue item (Mult-VAE: a decoder column): its trained
    vector; an item known only by text: the item tower on a zero collaborative part (zero-shot)."""
    if item is not None and (bundle.collab_items is None or profiles is None):
        return np.asarray(bundle.item_vectors[item], np.float32), "model"
    tower = bundle.item_tower
    prof, mask = profile_inputs(bundle, profiles)
    if item is not None:
        assert bundle.collab_items is not None
        collab = bundle.collab_items[item][None]
    else:
        collab = np.zeros((1, tower.input_width("collab")), np.float32)
    vector = tower(collab=collab, profiles=prof, profile_mask=mask)[0]
    return vector, "model" if item is not None else "text"

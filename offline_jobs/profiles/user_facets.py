"""The extractive facets of a user (:class:`offline_jobs.profiles.extractive.ExtractiveProfiler`):
0 overview, 1 genre taste relative to the population, 2 liked and disliked titles, 3 recency, era and
mainstream-vs-niche taste; extra slots list further titles in deterministic chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from offline_jobs.profiles.phrases import MAX_TITLES, Domain, join_words, pct

if TYPE_CHECKING:
    from offline_jobs.profiles.extractive import ExtractiveProfiler


class _User(NamedTuple):
    d: Domain
    uid: str
    items: np.ndarray
    ratings: np.ndarray
    ts: np.ndarray
    n: int
    who: str
    shares: list[tuple[str, float]]
    decades: list[tuple[str, float]]


def user_facets(p: ExtractiveProfiler, user: int, k: int) -> list[tuple[str, str]]:
    """The first ``k`` facets of ``user`` (an index into the dataset), ``(name, text)`` each."""
    items, ratings, ts = p._user_items_sorted(user)
    u = _User(
        p.domain,
        str(p.ctx.dataset.user_ids[user]),
        items,
        ratings,
        ts,
        len(items),
        p._who(user),
        p._genre_shares(items),
        p._decade_shares(items),
    )
    facets: list[tuple[str, str]] = []
    for facet in (_overview, _genre_taste, _titles, _recency):
        facet(p, u, facets)
    _more_titles(p, u, facets, k)
    return facets[:k]


def _overview(p: ExtractiveProfiler, u: _User, facets: list[tuple[str, str]]) -> None:
    """0: who, how much, main genres, favourites."""
    d, uid, items, ratings, n, who, shares, decades = (
        u.d,
        u.uid,
        u.items,
        u.ratings,
        u.n,
        u.who,
        u.shares,
        u.decades,
    )
    # 0 overview
    top_genres = join_words([f"{g} ({pct(s)})" for g, s in shares[:3]])
    fav = [p.item_label(int(i)) for i in items[:5]]
    text = f"User {uid} is {who} who {d.verb} {n} {d.plural if n != 1 else d.noun}."
    if top_genres:
        text += f" Their {d.plural} are mostly {top_genres}."
    if decades:
        text += f" Most were released in the {decades[0][0]}."
    if fav:
        text += f" {'Favourites' if p._has_ratings else 'Examples'}: {'; '.join(fav)}."
    known = ratings[ratings > 0]  # 0: no rating (e.g. an interaction logged by the service)
    if p._has_ratings and len(known):
        mean = float(known.mean())
        tone = "generous" if mean >= 4.0 else "critical" if mean < 3.3 else "balanced"
        text += f" A {tone} rater (average {mean:.1f} of 5)."
    facets.append(("overview", text))


def _genre_taste(p: ExtractiveProfiler, u: _User, facets: list[tuple[str, str]]) -> None:
    """1: genres over- and under-represented against the population, rating by genre."""
    d, uid, items, ratings, n, shares = u.d, u.uid, u.items, u.ratings, u.n, u.shares
    # 1 genre taste relative to the population
    glob = p._global_genre_share
    lift = sorted(((g, s / max(glob.get(g, 1e-9), 1e-9), s) for g, s in shares), key=lambda t: (-t[1], t[0]))
    loves = [g for g, lf, s in lift if lf >= 1.25 and s >= 0.04][:4]
    avoids = sorted(
        (g for g in glob if glob[g] >= 0.03 and dict(shares).get(g, 0.0) < 0.5 * glob[g]),
        key=lambda g: (-glob[g], g),
    )[:4]
    text = f"{d.genre.capitalize()} taste of user {uid}:"
    if loves:
        text += f" prefers {join_words(loves)} far more than the average {d.audience[:-1]}."
    else:
        text += (
            f" close to the average {d.audience[:-1]}, spread over {join_words([g for g, _ in shares[:4]])}."
        )
    if avoids:
        text += f" Rarely chooses {join_words(avoids)}."
    if p._has_ratings and n:
        by_genre: dict[str, list[float]] = {}
        for i, r in zip(items, ratings, strict=True):
            for g in p._item_cats[int(i)]:
                by_genre.setdefault(g, []).append(float(r))
        rated = sorted(
            ((g, float(np.mean(v))) for g, v in by_genre.items() if len(v) >= 2),
            key=lambda t: (-t[1], t[0]),
        )
        if len(rated) >= 2:
            best = join_words([f"{g} ({m:.1f})" for g, m in rated[:2]])
            worst = join_words([f"{g} ({m:.1f})" for g, m in rated[-2:][::-1]])
            text += f" Rates {best} highest and {worst} lowest."
    if not shares:
        text += f" No {d.genre} information is available for their {d.plural}."
    facets.append(("genre_taste", text))


def _titles(p: ExtractiveProfiler, u: _User, facets: list[tuple[str, str]]) -> None:
    """2: liked and disliked titles (without ratings: the most distinctive ones)."""
    d, uid, items, ratings = u.d, u.uid, u.items, u.ratings
    # 2 liked and disliked titles
    if p._has_ratings:
        liked = [p.item_label(int(i), genres=True) for i, r in zip(items, ratings, strict=True) if r >= 4][
            :MAX_TITLES
        ]
        disliked_idx = [int(i) for i, r in zip(items, ratings, strict=True) if 0 < r <= 2]
        disliked = [p.item_label(i, genres=True) for i in disliked_idx[::-1][:4]]
        liked_text = "; ".join(liked) if liked else "none rated highly"
        text = f"{d.plural.capitalize()} user {uid} liked: {liked_text}."
        if disliked:
            text += f" Disliked: {'; '.join(disliked)}."
    else:
        # without ratings: the most distinctive (least popular) items say the most about the user
        pop = p.ctx.item_popularity
        distinct = sorted((int(i) for i in items), key=lambda i: (pop[i], i))[:MAX_TITLES]
        listed = "; ".join(p.item_label(i, True) for i in distinct)
        text = f"Distinctive {d.plural} user {uid} {d.verb}: {listed}."
    facets.append(("liked_titles", text))


def _recency(p: ExtractiveProfiler, u: _User, facets: list[tuple[str, str]]) -> None:
    """3: recent titles, mainstream or niche, favourite eras."""
    d, uid, items, ts, n, decades = u.d, u.uid, u.items, u.ts, u.n, u.decades
    # 3 recency, era and mainstream vs niche
    recent = sorted(zip(items, ts, strict=True), key=lambda t: (-t[1], int(t[0])))
    recent_titles = [p.item_label(int(i)) for i, _ in recent[:5]]
    ranks = p._pop_rank[items] if n else np.zeros(0)
    n_items = p.ctx.dataset.n_items
    text = f"Recent {d.plural} of user {uid}: {'; '.join(recent_titles) if recent_titles else 'none'}."
    if n:
        med = float(np.median(ranks)) / n_items
        style = (
            "mostly mainstream hits"
            if med < 0.1
            else "a mix of popular and lesser-known titles"
            if med < 0.3
            else "mostly niche, lesser-known titles"
        )
        text += f" Their choices are {style}."
    if decades:
        text += f" Favourite eras: {join_words([f'the {dec} ({pct(s)})' for dec, s in decades[:3]])}."
    facets.append(("recency_and_niche", text))


def _more_titles(p: ExtractiveProfiler, u: _User, facets: list[tuple[str, str]], k: int) -> None:
    """Extra slots: further titles in deterministic chunks."""
    d, uid, items = u.d, u.uid, u.items
    # extra slots: further titles in deterministic chunks
    rest = [int(i) for i in items[MAX_TITLES:]]
    chunk = 0
    while len(facets) < k:
        part = rest[chunk * MAX_TITLES : (chunk + 1) * MAX_TITLES] or [int(i) for i in items[:MAX_TITLES]]
        text = f"More {d.plural} user {uid} {d.verb}: {'; '.join(p.item_label(i, True) for i in part)}."
        facets.append((f"titles_{chunk + 1}", text))
        chunk += 1

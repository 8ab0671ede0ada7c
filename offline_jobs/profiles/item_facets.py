"""The extractive facets of an item (:class:`offline_jobs.profiles.extractive.ExtractiveProfiler`):
0 overview (title, year, genres, text, popularity, reception), then with training interactions 1 audience,
2 "viewers also watched" (lift-weighted co-interaction), 3 the audience's wider taste; without, the most
similar items (genres + era) stand in for slots 1-3. Extra slots list related titles."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from offline_jobs.profiles.phrases import GENDER, MAX_TITLES, Domain, article, join_words, pct

if TYPE_CHECKING:
    from offline_jobs.profiles.extractive import ExtractiveProfiler


class _Item(NamedTuple):
    d: Domain
    title: str
    users: np.ndarray
    n: int
    pop_rank: int
    n_items: int


def item_facets(p: ExtractiveProfiler, item: int, k: int) -> list[tuple[str, str]]:
    """The first ``k`` facets of ``item`` (an index into the dataset), ``(name, text)`` each."""
    users = p.ctx.item_users(item)
    it = _Item(p.domain, p.ctx.title(item), users, len(users), int(p._pop_rank[item]), p.ctx.dataset.n_items)
    facets: list[tuple[str, str]] = []
    _overview(p, item, it, facets)
    (_with_audience if it.n else _without_audience)(p, item, it, facets)
    _related(p, item, it, facets, k)
    return facets[:k]


def item_head(p: ExtractiveProfiler, item: int) -> str:
    """Title, kind, year, extra text and description: the start of the overview."""
    d = p.domain
    title = p.ctx.title(item)
    cats = p._item_cats[item]
    year = p._item_years[item]
    kind = f"{join_words(cats)} {d.noun}" if cats else d.noun
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    text = f"{title} is {article} {kind}"
    if year and str(year) not in title:
        text += f" released in {year}"
    text += "."
    extra = p.ctx.extra_text(item)
    if extra:
        text += " " + " ".join(
            f"{k.replace('_', ' ').capitalize()}: {v}." for k, v in list(extra.items())[:2]
        )
    desc = p.ctx.description(item)
    if desc:
        text += " " + " ".join(desc.split()[:60])
    return text


def audience_text(p: ExtractiveProfiler, users: np.ndarray, subject: str) -> str:
    """Who ``users`` are, by the user attributes (empty without attributes)."""
    d = p.domain
    if not p._attr_arrays or not len(users):
        return ""
    parts: list[str] = []
    for col, values, cats in p._attr_arrays:
        sub = values[users]
        sub = sub[~np.isnan(sub)] if cats is None else sub[sub >= 0]  # users without the attribute
        if not len(sub):
            continue
        if cats is None:
            q1, med, q3 = np.percentile(sub, [25, 50, 75])
            parts.append(f"{col} mostly {q1:.0f}-{q3:.0f} (median {med:.0f})")
            continue
        counts = np.bincount(sub, minlength=len(cats)).astype(np.float64) / len(sub)
        order = sorted(np.flatnonzero(counts > 0), key=lambda j: (-counts[j], cats[j]))
        if col == "gender":
            g = cats[order[0]]
            parts.append(f"{pct(float(counts[order[0]]))} {GENDER.get(g, (g, g))[1]}")
        else:
            top = join_words([f"{cats[j]} ({pct(float(counts[j]))})" for j in order[:3]])
            parts.append(f"common {col}s: {top}")
    if not parts:
        return ""
    return f"{d.audience.capitalize()} of {subject}: " + "; ".join(parts) + "."


def _overview(p: ExtractiveProfiler, item: int, it: _Item, facets: list[tuple[str, str]]) -> None:
    """0: the head, how many interacted, the reception."""
    d, n, pop_rank, n_items = it.d, it.n, it.pop_rank, it.n_items
    # 0 overview
    text = item_head(p, item)
    if n:
        text += (
            f" {d.verb.capitalize()} by {n} users in the training data "
            f"(popularity rank {pop_rank} of {n_items})."
        )
        ratings = p.ctx.item_ratings(item)
        if len(ratings):
            text += (
                f" Average rating {float(ratings.mean()):.1f} of 5; "
                f"{pct(float((ratings >= 4).mean()))} rated it 4 or 5."
            )
    else:
        text += f" A new {d.noun} with no recorded {d.audience} yet."
    facets.append(("overview", text))


def _with_audience(p: ExtractiveProfiler, item: int, it: _Item, facets: list[tuple[str, str]]) -> None:
    """1-3 for an item with training interactions: audience, also watched, audience taste."""
    d, title, users, n, pop_rank, n_items = it.d, it.title, it.users, it.n, it.pop_rank, it.n_items
    # 1 audience demographics
    aud = audience_text(p, users, title)
    if not aud:
        aud = f"{d.audience.capitalize()} of {title}: {n} users, " + (
            "a broad audience." if pop_rank <= 0.1 * n_items else "a small, dedicated audience."
        )
    facets.append(("audience", aud))
    # 2 also watched (lift-weighted co-interaction)
    row = p._cooc[item]
    pop = p.ctx.item_popularity.astype(np.float64)
    cand = [
        (float(v) / np.sqrt(max(pop[j], 1.0)), int(j))
        for j, v in zip(row.indices, row.data, strict=True)
        if j != item and v >= 2
    ]
    if not cand:
        cand = [(float(v), int(j)) for j, v in zip(row.indices, row.data, strict=True) if j != item]
    cand.sort(key=lambda t: (-t[0], t[1]))
    titles = [p.item_label(j, genres=True) for _, j in cand[:MAX_TITLES]]
    listed = "; ".join(titles) if titles else "nothing else"
    text = f"{d.audience.capitalize()} of {title} also {d.verb}: {listed}."
    facets.append(("also_watched", text))
    # 3 audience taste: the genres the audience favours beyond this item
    w = np.asarray(p.ctx.train[users].sum(axis=0), dtype=np.float64).ravel()
    w[item] = 0.0
    shares = p._genre_shares_w(w)
    glob = p._global_genre_share
    lift = sorted(
        ((g, s / max(glob.get(g, 1e-9), 1e-9)) for g, s in shares if s >= 0.03),
        key=lambda t: (-t[1], t[0]),
    )
    decades = p._decade_shares_w(w)
    own = set(p._item_cats[item])
    enjoyed = join_words([g for g, _ in shares[:4]]) or "many kinds of " + d.plural
    text = f"{title} appeals to {d.audience} who enjoy {enjoyed}"
    leaning = [g for g, lf in lift if lf >= 1.15 and g not in own][:3]
    if leaning:
        text += f", with a lean towards {join_words(leaning)}"
    text += "."
    if decades:
        text += f" Its audience mostly picks {d.plural} from the {decades[0][0]}."
    facets.append(("audience_taste", text))


def _without_audience(p: ExtractiveProfiler, item: int, it: _Item, facets: list[tuple[str, str]]) -> None:
    """1-3 for an item without: similar items, their audience, the genre context."""
    d, title = it.d, it.title
    own_genres = join_words(p._item_cats[item])
    similar = p.similar_items(item, MAX_TITLES)
    titles = [p.item_label(j, genres=True) for j in similar]
    facets.append(("similar_items", f"{d.plural.capitalize()} similar to {title}: {'; '.join(titles)}."))
    aud_users = np.unique(np.concatenate([p.ctx.item_users(j) for j in similar] or [np.zeros(0, np.int64)]))
    aud = audience_text(p, aud_users, f"similar {d.plural}") if len(aud_users) else ""
    facets.append(
        (
            "likely_audience",
            aud or f"Likely {d.audience} of {title}: fans of {own_genres or 'similar ' + d.plural}.",
        )
    )
    shares = p._genre_shares(similar)
    examples = "; ".join(p.item_label(j) for j in similar[:3])
    facets.append(
        (
            f"{d.genre}_context",
            f"As {article(own_genres or d.noun)} {d.noun if own_genres else ''}, {title} should "
            f"appeal to {d.audience} of {join_words([g for g, _ in shares[:4]]) or d.plural} "
            f"such as {examples}.",
        )
    )


def _related(p: ExtractiveProfiler, item: int, it: _Item, facets: list[tuple[str, str]], k: int) -> None:
    """Extra slots: related titles in deterministic chunks."""
    d, title, n = it.d, it.title, it.n
    chunk = 0
    while len(facets) < k:
        others_idx = np.asarray(p._cooc[item].indices) if n else np.asarray(p.similar_items(item, 40))
        part = [int(j) for j in others_idx if j != item][(chunk + 1) * MAX_TITLES : (chunk + 2) * MAX_TITLES]
        listed = "; ".join(p.item_label(j, True) for j in part) or "none"
        text = f"More {d.plural} related to {title}: {listed}."
        facets.append((f"related_{chunk + 1}", text))
        chunk += 1

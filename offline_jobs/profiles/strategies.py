"""Profile strategies as per-entity coroutines.

Each strategy builds, for one user or item, a generator that yields work and receives its results:

* a ``list[ChatRequest]`` -> receives ``list[GenerationResult]`` (same order);
* an :class:`Embed` -> receives ``np.ndarray`` ``[n, d]`` of L2-normalised vectors;

and finally returns the entity's K profile rows. The runner (:mod:`offline_jobs.jobs.runner`) drives many
such coroutines at once and batches their requests into one backend call per round, so multi-step
chains (ProEx's F1 -> F2 -> F3 -> F4), retries and the similarity-driven regeneration all batch
across entities.

* ProEx: F1 original profile (slot 0), F2 positive/negative aspects, F3 latent preferences, F4 one
  request per new profile (slots 1..K-1) with a distinct angle; new profiles whose cosine to the
  original or to a sibling exceeds ``sim_threshold`` are regenerated (bounded); the similarities are
  recorded in ``quality``.
* RecLM: slot j is written from the target's history plus the histories of neighbour group j.
* DUET: cue -> self-written prompt -> profile in one generation, parsed; K explorations (seeds).
* Items (every strategy): item text plus the profiles of users who interacted with it; items with no
  training interactions: text plus the profiles of their most similar items (RecLM Sec. 6.6).

Every output is validated (:mod:`offline_jobs.profiles.validation`) and, for profiles, checked against the
data its prompt was built from (:mod:`offline_jobs.profiles.grounding`; ``grounding=True``), retried with a
new seed up to ``max_retries`` times, and otherwise replaced by the extractive profile of the same slot
(``is_fallback=True``, reasons in ``quality``). With ``candidates`` N > 1 every attempt generates N
candidates (candidate c's seed is the attempt's seed + ``CANDIDATE_STRIDE * c``, so the generation
cache, keyed by the seed, answers each one on a resumed run) and keeps the one that passes with the
highest faithfulness score; ProEx's new profiles prefer, among those, the best one within the
low-similarity threshold.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from offline_jobs.profiles.generation import (
    Coroutine,
    Embed,
    Outcome,
    Spec,
    Step,
    StrategyContext,
)
from offline_jobs.profiles.grounding import Reference


# ---------------------------------------------------------------------- ProEx
def proex(sc: StrategyContext, entity_type: str, index: int) -> Coroutine:
    cfg = sc.cfg
    p = sc.prompts
    entity_id, seed, vals, system, vocab = sc.entity_setup(entity_type, index)
    ground = sc.reference(entity_type, index)

    # One conversation: every step is a new user turn after the previous answers (chain of thought).
    conv: list[tuple[str, str]] = [("system", system), ("user", p.render(entity_type, "f1", **vals))]

    def turn(instruction: str) -> tuple[tuple[str, str], ...]:
        return (*conv, ("user", instruction))

    # F1: original profile
    (op,) = yield from sc.ask(
        [Spec(tuple(conv), "profile", cfg.max_tokens, seed, vocab, keep=True, ground=ground)]
    )
    original = op.text or sc.fallback(entity_type, index, 0)
    conv.append(("assistant", op.raw or original))
    # F2: positive and negative aspects
    (asp,) = yield from sc.ask(
        [
            Spec(
                turn(p.render(entity_type, "f2", **vals)),
                "aspects",
                cfg.max_tokens * 2 // 3,
                seed + 1,
                keep=True,
            )
        ]
    )
    aspects = asp.text or sc.fallback(entity_type, index, 1)
    conv += [("user", p.render(entity_type, "f2", **vals)), ("assistant", asp.raw or aspects)]
    # F3: latent preferences
    (lat,) = yield from sc.ask(
        [Spec(turn(p.render(entity_type, "f3", **vals)), "latent", cfg.max_tokens // 2, seed + 2)]
    )
    latent = lat.text or sc.fallback(entity_type, index, 3 % max(cfg.k, 1))
    # F4: K-1 new profiles from the summary of F1-F3, one request each with its own angle (last, so the
    # requests share their prefix)
    angles = p.angles(entity_type) or [""]
    summary = {"original": original, "aspects": aspects, "latent": latent}
    specs = [
        Spec(
            (
                ("system", system),
                ("user", p.render(entity_type, "f4", angle=angles[(j - 1) % len(angles)], **summary, **vals)),
            ),
            "profile",
            cfg.max_tokens,
            seed + 10 * j,
            vocab,
            ground=ground,
        )
        for j in range(1, cfg.k)
    ]
    news: list[Outcome] = yield from sc.ask(specs) if specs else _nothing()
    if any(len(o.passed) > 1 for o in news):  # best of N within the low-similarity rule
        yield from _diverse_choice(sc, original, news)
    texts = [original] + [o.text or sc.fallback(entity_type, index, j + 1) for j, o in enumerate(news)]
    regenerated, sim_log = yield from _keep_apart(sc, specs, news, texts, vocab, ground)
    final_vectors: np.ndarray = yield Embed(texts)
    sims_q = sc.similarities(final_vectors)
    rows = [
        sc.row(
            entity_type,
            entity_id,
            0,
            "original",
            op,
            original,
            {
                **sims_q[0],
                "aspects": aspects,
                "latent": latent,
                "aspects_fallback": asp.text is None,
                "latent_fallback": lat.text is None,
            },
        )
    ]
    for j, outcome in enumerate(news, start=1):
        q = {**sims_q[j], "angle": angles[(j - 1) % len(angles)], "sim_threshold": cfg.sim_threshold}
        if regenerated[j - 1]:
            q["sim_regenerations"] = regenerated[j - 1]
            q["sim_history"] = sim_log[j - 1]
        if outcome.text is not None and sims_q[j].get("cos_to_original", 0) > cfg.sim_threshold:
            q["similarity_violation"] = True
        rows.append(sc.row(entity_type, entity_id, j, "new", outcome, texts[j], q))
    rows[0]["_vectors"] = final_vectors
    return rows


def _keep_apart(
    sc: StrategyContext,
    specs: list[Spec],
    news: list[Outcome],
    texts: list[str],
    vocab: frozenset[str],
    ground: Reference | None,
) -> Generator[Step, Any, tuple[list[int], list[list[float]]]]:
    """ProEx's low-similarity constraint: regenerate the new profiles too close to the original or to a
    sibling (at most ``sim_retries`` rounds), updating ``news`` and ``texts`` in place. Returns each new
    profile's regeneration count and the worst cosine of every round."""
    cfg = sc.cfg
    regenerated = [0] * len(news)
    sim_log: list[list[float]] = [[] for _ in news]
    for round_ in range(cfg.sim_retries + 1):
        vectors: np.ndarray = yield Embed(texts)
        sims = vectors @ vectors.T
        offenders = []
        for j in range(1, len(texts)):
            if news[j - 1].text is None:
                continue  # a fallback: nothing to regenerate
            worst = max([float(sims[j, 0])] + [float(sims[j, m]) for m in range(1, j)])
            sim_log[j - 1].append(round(worst, 4))
            if worst > cfg.sim_threshold:
                offenders.append(j)
        if not offenders or round_ == cfg.sim_retries:
            break
        retry_specs = [
            Spec(
                specs[j - 1].messages,
                "profile",
                cfg.max_tokens,
                specs[j - 1].seed + 100_003 * (round_ + 1),
                vocab,
                ground=ground,
            )
            for j in offenders
        ]
        again: list[Outcome] = yield from sc.ask(retry_specs)
        for j, outcome in zip(offenders, again, strict=True):
            regenerated[j - 1] += 1
            if outcome.text is not None:
                outcome.attempts += news[j - 1].attempts
                news[j - 1] = outcome
                texts[j] = outcome.text
    return regenerated, sim_log


def _diverse_choice(sc: StrategyContext, original: str, news: list[Outcome]) -> Generator[Step, Any, None]:
    """For each new profile, in slot order, the most faithful passing candidate whose cosine to the
    original and to the new profiles chosen before it is within ``sim_threshold`` (else the most
    faithful one): best of N subject to ProEx's low-similarity rule."""
    pool = [original] + [text for o in news for text, _, _ in o.passed]
    vectors: np.ndarray = yield Embed(pool)
    vec = dict(zip(pool, vectors, strict=True))
    chosen = [vec[original]]
    for out in news:
        if not out.passed:
            continue
        pick = out.passed[0]
        for cand in out.passed:
            if max(float(vec[cand[0]] @ c) for c in chosen) <= sc.cfg.sim_threshold:
                pick = cand
                break
        if pick is not out.passed[0]:
            out.notes = [*out.notes, "diverse_candidate"]
        out.text, out.raw, out.grounding = pick[0], pick[1], pick[2]
        chosen.append(vec[pick[0]])


def _nothing() -> Generator[Step, Any, list[Outcome]]:
    return []
    yield  # pragma: no cover


# ---------------------------------------------------------------------- RecLM
def reclm(sc: StrategyContext, entity_type: str, index: int) -> Coroutine:
    cfg = sc.cfg
    p = sc.prompts
    entity_id, seed, vals, system, vocab = sc.entity_setup(entity_type, index)
    ground = sc.reference(entity_type, index)
    specs: list[Spec] = []
    quality: list[dict[str, Any]] = []

    def profile_spec(text: str, j: int) -> Spec:
        messages = (("system", system), ("user", text))
        return Spec(messages, "profile", cfg.max_tokens, seed + j, vocab, ground=ground)

    if entity_type == "user":
        assert sc.neighbours is not None
        group = 3
        neigh = sc.neighbours.top(index, group * cfg.k)
        own = set(int(i) for i in sc.ctx.user_items(index))
        for j in range(cfg.k):
            members = neigh[j * group : (j + 1) * group] or neigh[:group]
            lines = []
            for u in members:
                hist = [i for i, _ in sc.texts.user_history(u, 12) if i not in own][:5] or [
                    i for i, _ in sc.texts.user_history(u, 5)
                ]
                titles = "; ".join(sc.ctx.title(i) for i in hist)
                lines.append(f"- User {sc.ctx.dataset.user_ids[u]}: {titles}")
            text = p.render("user", "profile", neighbours="\n".join(lines) or "(none)", **vals)
            specs.append(profile_spec(text, j))
            quality.append(
                {
                    "neighbours": [str(sc.ctx.dataset.user_ids[u]) for u in members],
                    "neighbour_source": sc.neighbours.source,
                }
            )
    else:
        cold = sc.ctx.item_popularity[index] == 0
        name = "cold" if cold else "profile"
        text = p.render("item", name, **vals)
        for j in range(cfg.k):
            specs.append(profile_spec(text, j))
            quality.append({"cold_item": bool(cold)})
    outcomes: list[Outcome] = yield from sc.ask(specs)
    texts = [o.text or sc.fallback(entity_type, index, j) for j, o in enumerate(outcomes)]
    vectors: np.ndarray = yield Embed(texts)
    sims = sc.similarities(vectors)
    rows = [
        sc.row(entity_type, entity_id, j, "collaborative", o, texts[j], {**quality[j], **sims[j]})
        for j, o in enumerate(outcomes)
    ]
    rows[0]["_vectors"] = vectors
    return rows


# ---------------------------------------------------------------------- DUET
def duet(sc: StrategyContext, entity_type: str, index: int) -> Coroutine:
    cfg = sc.cfg
    p = sc.prompts
    entity_id, seed, vals, system, vocab = sc.entity_setup(entity_type, index)
    text = p.render(entity_type, "profile", **vals)
    ground = sc.reference(entity_type, index)
    specs = [
        Spec(
            (("system", system), ("user", text)), "duet", cfg.max_tokens + 60, seed + j, vocab, ground=ground
        )
        for j in range(cfg.k)
    ]
    outcomes: list[Outcome] = yield from sc.ask(specs)
    texts = [o.text or sc.fallback(entity_type, index, j) for j, o in enumerate(outcomes)]
    vectors: np.ndarray = yield Embed(texts)
    sims = sc.similarities(vectors)
    rows = []
    for j, o in enumerate(outcomes):
        q: dict[str, Any] = dict(sims[j])
        if o.text is not None:
            q["cue"] = o.parts.get("cue", "")
            q["constructed_prompt"] = o.parts.get("prompt", "")
        rows.append(sc.row(entity_type, entity_id, j, "duet", o, texts[j], q))
    rows[0]["_vectors"] = vectors
    return rows


STRATEGY_FUNCS = {"proex": proex, "reclm": reclm, "duet": duet}


def slot0_texts(rows_by_entity: Mapping[int, list[dict[str, Any]]]) -> dict[int, str]:
    return {i: str(rows[0]["text"]) for i, rows in rows_by_entity.items() if rows}

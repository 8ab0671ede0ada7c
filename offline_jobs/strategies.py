"""Profile strategies as per-entity coroutines.

Each strategy builds, for one user or item, a generator that yields work and receives its results:

* a ``list[ChatRequest]`` -> receives ``list[GenerationResult]`` (same order);
* an :class:`Embed` -> receives ``np.ndarray`` ``[n, d]`` of L2-normalised vectors;

and finally returns the entity's K profile rows. The runner (:mod:`offline_jobs.runner`) drives many
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

Every output is validated (:mod:`offline_jobs.validation`) and, for profiles, checked against the data
its prompt was built from (:mod:`offline_jobs.grounding`; ``grounding=True``), retried with a new seed
up to ``max_retries`` times, and otherwise replaced by the extractive profile of the same slot
(``is_fallback=True``, reasons in ``quality``). With ``candidates`` N > 1 every attempt generates N
candidates (candidate c's seed is the attempt's seed + ``CANDIDATE_STRIDE * c``, so the generation
cache, keyed by the seed, answers each one on a resumed run) and keeps the one that passes with the
highest faithfulness score; ProEx's new profiles prefer, among those, the best one within the
low-similarity threshold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from offline_jobs.entity_text import EntityText, Neighbours, _short
from offline_jobs.extractive import EXTRACTIVE_MODEL, EXTRACTIVE_PROMPT_VERSION, ExtractiveProfiler, now_iso
from offline_jobs.extractive_grounding import extractive_grounding
from offline_jobs.grounding import Grounder, Grounding, Reference
from offline_jobs.llm import ChatRequest, GenerationResult
from offline_jobs.prompts import PromptSet
from offline_jobs.validation import validate

CANDIDATE_STRIDE = 104_729  # seed offset between the candidates of one attempt (best of N)

STAGES = {"proex": ("original", "new"), "reclm": ("collaborative",), "duet": ("duet",)}


@dataclass(frozen=True)
class GenerationConfig:
    strategy: str
    k: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 120  # profiles; intermediate steps use less
    seed: int = 2024
    max_retries: int = 2
    sim_threshold: float = 0.9
    sim_retries: int = 2
    model: str = ""
    prompt_version: str = ""
    dataset: str = ""
    split: str = ""
    version: str = ""
    inputs: str = ""  # a digest of further inputs (the refresh: the live item text and user attributes)
    grounding: bool = True  # reject profiles the grounding check fails (offline_jobs.grounding)
    candidates: int = 1  # best of N: candidates generated per profile and attempt

    @classmethod
    def from_settings(
        cls, settings: Any, strategy: str, k: int, version: str, **job: Any
    ) -> GenerationConfig:
        """The sampling parameters from the job settings; ``job`` holds the per-run options
        (``max_retries``, ``sim_threshold``, ``sim_retries``)."""
        return cls(
            strategy=strategy,
            k=k,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
            version=version,
            grounding=getattr(settings, "grounding", True),
            candidates=getattr(settings, "profile_candidates", 1),
            **job,
        )

    def digest(self) -> str:
        """Identifies the finished-entity records a resumed run may reuse."""
        data = asdict(self)
        data.pop("version")
        for key, default in (("inputs", ""), ("grounding", False), ("candidates", 1)):
            if data[key] == default:
                data.pop(key)  # digests from before the field existed stay valid (same output)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Embed:
    texts: list[str]


@dataclass
class Outcome:
    text: str | None
    raw: str | None = None
    attempts: int = 0
    reasons: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    tokens: int = 0
    grounding: Grounding | None = None
    # every candidate that passed, best first: (text, raw, grounding) (best of N)
    passed: list[tuple[str, str, Grounding | None]] = field(default_factory=list)


@dataclass
class Spec:
    messages: tuple[tuple[str, str], ...]
    kind: str  # profile | aspects | latent | duet
    max_tokens: int
    seed: int
    vocab: frozenset[str] = frozenset()
    keep: bool = False  # the conversation continues after this answer (a backend caching hint)
    ground: Reference | None = None  # what the profile may claim (None: no grounding check)


Step = list[ChatRequest] | Embed
Coroutine = Generator[Step, Any, list[dict[str, Any]]]


class StrategyContext:
    """Shared state of a run: prompts, text builders, profiles finished earlier in the run."""

    def __init__(
        self,
        cfg: GenerationConfig,
        prompts: PromptSet,
        texts: EntityText,
        neighbours: Neighbours | None = None,
    ) -> None:
        self.cfg = cfg
        self.prompts = prompts
        self.texts = texts
        self.ctx = texts.ctx
        self.profiler: ExtractiveProfiler = texts.profiler
        self.neighbours = neighbours
        self.user_profiles: dict[int, str] = {}  # slot-0 text of finished users (item prompts use them)
        self.item_profiles: dict[int, str] = {}  # slot-0 text of finished warm items (cold items use them)
        self.item_text_vectors: np.ndarray | None = None
        self.listed_neighbours: dict[int, list[int]] = {}  # items named in a cold item's prompt
        self._grounder: Grounder | None = None
        self._indices: dict[str, dict[str, int]] = {}

    @property
    def grounder(self) -> Grounder:
        if self._grounder is None:
            self._grounder = Grounder(self.ctx)
        return self._grounder

    def reference(self, entity_type: str, index: int) -> Reference | None:
        """What a profile of this entity may claim (None when the grounding check is off)."""
        if not self.cfg.grounding:
            return None
        if entity_type == "user":
            return self.grounder.user_reference(index)
        return self.grounder.item_reference(index, self.listed_neighbours.get(index, ()))

    # ------------------------------------------------------------------ generic steps
    def request(self, spec: Spec, attempt: int, candidate: int = 0) -> ChatRequest:
        return ChatRequest(
            messages=spec.messages,
            max_tokens=spec.max_tokens,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            seed=spec.seed + 7919 * attempt + CANDIDATE_STRIDE * candidate,
            keep=spec.keep,
        )

    def ask(self, specs: list[Spec]) -> Generator[Step, Any, list[Outcome]]:
        """Generate and validate (with the grounding check where the spec has a reference); retry
        rejected outputs with a new seed; None text when all failed. With ``candidates`` N > 1 each
        attempt generates N candidates of a profile and keeps the best that passes."""
        outcomes: list[Outcome] = [Outcome(None, attempts=0, seed=s.seed) for s in specs]
        pending = list(range(len(specs)))
        attempt = 0
        while pending:
            n_cand = {
                i: max(1, self.cfg.candidates) if specs[i].kind in ("profile", "duet") else 1 for i in pending
            }
            asked = [(i, c) for i in pending for c in range(n_cand[i])]
            requests = [self.request(specs[i], attempt, c) for i, c in asked]
            results: list[GenerationResult] = yield requests
            retry = []
            by_spec: dict[int, list[tuple[ChatRequest, GenerationResult]]] = {}
            for (i, _), req, res in zip(asked, requests, results, strict=True):
                by_spec.setdefault(i, []).append((req, res))
            for i in pending:
                spec = specs[i]
                out = outcomes[i]
                out.attempts = attempt + 1
                check = (
                    (lambda text, ref=spec.ground: self.grounder.check(text, ref)) if spec.ground else None
                )
                passed = []
                rejected: list[str] = []
                for req, res in by_spec[i]:
                    verdict = validate(
                        res.text,
                        res.finish_reason,
                        kind=spec.kind,
                        prompt=spec.messages[-1][1],
                        entity_vocab=spec.vocab,
                        min_words=8 if spec.kind in ("profile", "duet") else 4,
                        grounding=check,
                    )
                    out.tokens += res.completion_tokens
                    if verdict.ok:
                        passed.append((verdict, req, res))
                    else:
                        rejected.extend(verdict.reasons)
                        if out.grounding is None or (
                            verdict.grounding is not None and verdict.grounding.score > out.grounding.score
                        ):
                            out.grounding = verdict.grounding  # the closest failure, for the record
                if passed:
                    passed.sort(key=lambda p: _rank(p[0].grounding), reverse=True)
                    verdict, req, res = passed[0]
                    out.text, out.notes, out.parts = verdict.text, verdict.notes, verdict.parts
                    out.raw, out.seed, out.grounding = res.text, req.seed, verdict.grounding
                    out.passed = [(v.text, r.text, v.grounding) for v, _, r in passed]
                    if len(by_spec[i]) > 1:
                        out.notes = [*out.notes, f"best_of_{len(by_spec[i])}"]
                else:
                    out.seed = by_spec[i][0][0].seed
                    out.reasons.append(sorted(set(rejected)))
                    if attempt < self.cfg.max_retries:
                        retry.append(i)
            pending = retry
            attempt += 1
        return outcomes

    def row(
        self,
        entity_type: str,
        entity_id: str,
        slot: int,
        stage: str,
        outcome: Outcome | None,
        fallback_text: str,
        quality: dict[str, Any],
    ) -> dict[str, Any]:
        ok = outcome is not None and outcome.text is not None
        q = dict(quality)
        item_ids = self.ctx.dataset.item_ids
        if self.cfg.grounding and ok:
            q["source"] = "llm"
            if outcome is not None and outcome.grounding is not None:
                q["grounding"] = outcome.grounding.record(item_ids)
        elif not ok:  # the extractive profile is computed from the same data: grounded by construction
            q["source"] = "extractive"
            index = self.entity_index(entity_type, entity_id)
            q["grounding"] = extractive_grounding(self.profiler, entity_type, index, fallback_text, item_ids)
            if outcome is not None and outcome.grounding is not None:
                q["rejected_grounding"] = outcome.grounding.record(item_ids)
        if outcome is not None:
            q["attempts"] = outcome.attempts
            if outcome.reasons:
                q["rejected"] = outcome.reasons
            if outcome.notes:
                q["notes"] = outcome.notes
        if not ok:
            q["fallback_reason"] = sorted({r for rs in (outcome.reasons if outcome else []) for r in rs}) or [
                "not_generated"
            ]
        return {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "slot": slot,
            "text": outcome.text if ok and outcome is not None else fallback_text,
            "strategy": self.cfg.strategy,
            "stage": stage if ok else "fallback",
            "model": self.cfg.model if ok else EXTRACTIVE_MODEL,
            "prompt_version": self.cfg.prompt_version if ok else EXTRACTIVE_PROMPT_VERSION,
            "seed": int(outcome.seed) if outcome is not None else 0,
            "created_at": now_iso(),
            "is_fallback": not ok,
            "quality": q,
            "version": self.cfg.version,
        }

    def entity_index(self, entity_type: str, entity_id: str) -> int:
        """The dataset index of a raw entity id."""
        if entity_type not in self._indices:
            ds = self.ctx.dataset
            self._indices[entity_type] = ds.user_index() if entity_type == "user" else ds.item_index()
        return self._indices[entity_type][entity_id]

    def fallback(self, entity_type: str, index: int, slot: int) -> str:
        return self.profiler.profile(entity_type, index, slot, self.cfg.k)

    def entity_seed(self, entity_type: str, entity_id: str) -> int:
        digest = hashlib.sha256(f"{self.cfg.seed}:{entity_type}:{entity_id}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def values(self, entity_type: str, index: int) -> dict[str, str]:
        """Template values shared by the strategies."""
        t = self.texts
        vals = t.domain_values()
        if entity_type == "user":
            vals.update(
                entity_id=str(self.ctx.dataset.user_ids[index]),
                who=t.who(index),
                history=t.history_text(index),
                history_short=t.history_text(index, 5).replace("\n", "; ").replace("- ", ""),
            )
        else:
            vals.update(entity_id=str(self.ctx.dataset.item_ids[index]), item_text=t.item_text(index))
            if self.ctx.item_popularity[index] > 0:
                vals["audience_intro"] = f"Profiles of people who {t.domain.verb} it:"
                vals["audience"] = t.audience_text(index, self.user_profiles)
            else:
                vectors = self.item_text_vectors
                if vectors is None:
                    similar = self.profiler.similar_items(index, 3)
                    text = "\n".join(
                        f"- {self.ctx.title(j)}: "
                        f"{_short(self.item_profiles.get(j) or self.fallback('item', j, 0), 45)}"
                        for j in similar
                    )
                else:
                    text, similar = t.similar_items_text(index, vectors, self.item_profiles)
                self.listed_neighbours[index] = list(similar)
                vals["audience_intro"] = (
                    f"No one has {t.domain.verb} it yet. Similar {t.domain.plural} and their profiles:"
                )
                vals["audience"] = text
                vals["similar"] = text
        return vals

    def vocab(self, entity_type: str, index: int, extra: list[str] | None = None) -> frozenset[str]:
        if entity_type == "user":
            return frozenset(self.texts.user_vocab(index))
        return frozenset(self.texts.item_vocab(index, extra or []))

    def entity_setup(
        self, entity_type: str, index: int
    ) -> tuple[str, int, dict[str, str], str, frozenset[str]]:
        """What every strategy starts from: raw id, seed, template values, system prompt, vocabulary."""
        ids = self.ctx.dataset.user_ids if entity_type == "user" else self.ctx.dataset.item_ids
        entity_id = str(ids[index])
        vals = self.values(entity_type, index)
        system = self.prompts.render(entity_type, "system", **vals)
        vocab = self.vocab(entity_type, index, [vals.get("audience", "")])
        return entity_id, self.entity_seed(entity_type, entity_id), vals, system, vocab

    def similarities(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        sims = vectors @ vectors.T
        out = []
        for j in range(len(vectors)):
            entry: dict[str, Any] = {}
            if j > 0:
                entry["cos_to_original"] = round(float(sims[j, 0]), 4)
            entry["cos_to_siblings"] = [round(float(sims[j, m]), 4) for m in range(1, len(vectors)) if m != j]
            out.append(entry)
        return out


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
    # low-similarity constraint: regenerate new profiles too close to the original or a sibling
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


def _rank(grounding: Grounding | None) -> tuple[float, int]:
    """Best of N: the most faithful candidate, then the most specific (grounded titles, genres)."""
    if grounding is None:
        return (1.0, 0)
    return (grounding.score, min(grounding.specificity, 3))


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
            specs.append(
                Spec(
                    (("system", system), ("user", text)),
                    "profile",
                    cfg.max_tokens,
                    seed + j,
                    vocab,
                    ground=ground,
                )
            )
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
            specs.append(
                Spec(
                    (("system", system), ("user", text)),
                    "profile",
                    cfg.max_tokens,
                    seed + j,
                    vocab,
                    ground=ground,
                )
            )
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

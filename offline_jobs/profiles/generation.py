"""The generation machinery every profile strategy (:mod:`offline_jobs.profiles.strategies`) runs on.

A strategy is a per-entity coroutine that yields work and receives its results:

* a ``list[ChatRequest]`` -> receives ``list[GenerationResult]`` (same order);
* an :class:`Embed` -> receives ``np.ndarray`` ``[n, d]`` of L2-normalised vectors;

and finally returns the entity's K profile rows. :class:`StrategyContext` holds what a run shares (the
generation config, prompts, text builders, profiles finished earlier) and :meth:`StrategyContext.ask`
turns :class:`Spec` s into requests, then validates, grounds and retries their answers (best of N with
``candidates`` > 1), falling back to the extractive profile of the same slot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from offline_jobs.llm.base import ChatRequest, GenerationResult
from offline_jobs.profiles.entity_text import EntityText, Neighbours, _short
from offline_jobs.profiles.extractive import (
    EXTRACTIVE_MODEL,
    EXTRACTIVE_PROMPT_VERSION,
    ExtractiveProfiler,
    now_iso,
)
from offline_jobs.profiles.extractive_grounding import extractive_grounding
from offline_jobs.profiles.grounding import Grounder, Grounding, Reference
from offline_jobs.profiles.prompts import PromptSet
from offline_jobs.profiles.validation import validate

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
    grounding: bool = True  # reject profiles the grounding check fails (offline_jobs.profiles.grounding)
    candidates: int = 1  # best of N: candidates generated per profile and attempt
    repair: bool = False  # cut a profile failing the grounding check to its grounded sentences

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
            repair=getattr(settings, "grounding_repair", False),
            **job,
        )

    def digest(self) -> str:
        """Identifies the finished-entity records a resumed run may reuse."""
        data = asdict(self)
        data.pop("version")
        for key, default in (("inputs", ""), ("grounding", False), ("candidates", 1), ("repair", False)):
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
    repaired: list[str] = field(default_factory=list)  # the kept text was cut for these reasons
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
                        repair=self.cfg.repair,
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
                    passed.sort(key=lambda p: rank_candidate(p[0].grounding), reverse=True)
                    verdict, req, res = passed[0]
                    out.text, out.notes, out.parts = verdict.text, verdict.notes, verdict.parts
                    out.raw, out.seed, out.grounding = res.text, req.seed, verdict.grounding
                    out.repaired = verdict.repaired
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
        if entity_type == "item":  # the items its prompt named (the check allows their titles)
            listed = self.listed_neighbours.get(self.entity_index(entity_type, entity_id), [])
            if listed:
                q["listed"] = [str(item_ids[j]) for j in listed]
        if outcome is not None:
            q["attempts"] = outcome.attempts
            if outcome.reasons:
                q["rejected"] = outcome.reasons
            if outcome.notes:
                q["notes"] = outcome.notes
            if ok and outcome.repaired:
                q["repaired"] = outcome.repaired  # its faults before the wrong sentences were cut
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


def rank_candidate(grounding: Grounding | None) -> tuple[float, int]:
    """Best of N: the most faithful candidate, then the most specific (grounded titles, genres)."""
    if grounding is None:
        return (1.0, 0)
    return (grounding.score, min(grounding.specificity, 3))

"""The generation job with the fake backend: K rows per entity with metadata, validation fallback,
the similarity constraint, caching and resuming after a crash, a cache shared between outputs, and an
entity whose profile fails set aside while the others are written."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from offline_jobs.context import load_context
from offline_jobs.jobs.cache import CACHE_FILE, JobCache
from offline_jobs.jobs.runner import ProfileJob
from offline_jobs.llm.base import ChatRequest, GenerationResult
from offline_jobs.llm.fake import FakeBackend
from offline_jobs.profiles.entity_text import EntityText
from offline_jobs.profiles.generation import GenerationConfig, StrategyContext
from rec_contract.profile_store import PROFILE_COLUMNS, read_profile_vectors, read_profiles
from tests.unit._fakes import HashEmbedder


@pytest.fixture(scope="module")
def ctx(movielens):
    return load_context(movielens, "random", 2024)


def cold_item(ctx) -> int:
    return int(np.flatnonzero(ctx.item_popularity == 0)[0])


def run(ctx, out, backend=None, strategy="proex", users=(0, 1), items=(0,), **cfg):
    backend = backend or FakeBackend()
    job = ProfileJob(
        ctx,
        backend,
        HashEmbedder(),
        out,
        GenerationConfig(strategy=strategy, k=4, version="t1", **cfg),
        max_active=4,
    )
    try:
        return job.run(list(users), list(items)), backend
    finally:
        job.close()


@pytest.mark.parametrize("strategy", ["proex", "reclm", "duet"])
def test_strategies_write_k_profiles_with_metadata(ctx, tmp_path, strategy):
    cold = cold_item(ctx)
    report, _ = run(ctx, tmp_path, strategy=strategy, items=(0, cold))
    rows = read_profiles(tmp_path)
    assert len(rows) == 4 * 4 and report["profiles_written"] == 16
    for row in rows:
        assert set(PROFILE_COLUMNS) <= set(row)
        assert row["strategy"] == strategy and row["version"] == "t1" and row["created_at"]
        assert row["model"] == "fake" and "+" in row["prompt_version"]
        q = json.loads(row["quality"])
        assert "cos_to_siblings" in q
    users = [r for r in rows if r["entity_type"] == "user" and r["entity_id"] == "1"]
    assert [r["slot"] for r in sorted(users, key=lambda r: r["slot"])] == [0, 1, 2, 3]
    if strategy == "proex":
        assert {r["stage"] for r in users} == {"original", "new"}
        q = json.loads(next(r for r in users if r["slot"] == 2)["quality"])
        assert "cos_to_original" in q and "angle" in q
    vecs = read_profile_vectors(
        tmp_path, "item", [str(ctx.dataset.item_ids[0]), str(ctx.dataset.item_ids[cold])]
    )
    assert vecs.vectors.shape == (2, 4, 64) and vecs.mask.all()


def test_item_prompts_use_user_profiles_and_cold_items_similar_items(ctx, tmp_path):
    cold = cold_item(ctx)
    backend = FakeBackend()
    seen: list[str] = []
    original = backend.generate

    def spy(requests):
        seen.extend(r.messages[-1][1] for r in requests)
        return original(requests)

    backend.generate = spy  # type: ignore[method-assign]
    run(ctx, tmp_path, backend=backend, strategy="reclm", users=(), items=(0, cold))
    warm_prompt = next(p for p in seen if "Toy Story" in p)
    assert "Profiles of people who" in warm_prompt
    cold_title = ctx.title(cold)
    cold_prompt = next(p for p in seen if cold_title in p)
    assert "Similar" in cold_prompt


class JunkBackend(FakeBackend):
    model_id = "junk"

    def generate(self, requests):
        self.calls += 1
        return [
            GenerationResult(text="the the the the the the the the", finish_reason="stop", model="junk")
        ] * len(requests)


def test_rejected_output_is_retried_then_replaced_by_extractive(ctx, tmp_path):
    backend = JunkBackend()
    report, _ = run(ctx, tmp_path, backend=backend, strategy="duet", users=(0,), items=(), max_retries=2)
    rows = read_profiles(tmp_path)
    assert all(r["is_fallback"] and r["stage"] == "fallback" and r["model"] == "extractive" for r in rows)
    q = json.loads(rows[0]["quality"])
    assert q["attempts"] == 3 and "format" in q["fallback_reason"]
    assert report["stats"]["fallbacks"] == 4
    assert rows[0]["text"].startswith("User 1 is a 24-year-old man")


class SameBackend(FakeBackend):
    """Every answer has the same words in a seed-dependent order: no copied 5-grams, but identical bags
    of words, so (with the bag-of-words test embedder) the new profiles violate the similarity bound."""

    WORDS = (
        "likes",
        "crime",
        "dramas",
        "thrillers",
        "Fargo",
        "clever",
        "plots",
        "strong",
        "characters",
        "dark",
    )

    def generate(self, requests):
        self.requests += len(requests)
        out = []
        for r in requests:
            words = list(np.random.default_rng(r.seed).permutation(self.WORDS))
            out.append(
                GenerationResult(text="Likes: " + " ".join(words) + ".", finish_reason="stop", model="fake")
            )
        return out


def test_similarity_constraint_regenerates_and_records(ctx, tmp_path):
    report, backend = run(ctx, tmp_path, backend=SameBackend(), users=(0,), items=(), sim_retries=2)
    rows = sorted(read_profiles(tmp_path), key=lambda r: r["slot"])
    qs = [json.loads(r["quality"]) for r in rows]
    assert qs[1]["cos_to_original"] > 0.99 and qs[1]["sim_regenerations"] == 2
    assert qs[1]["similarity_violation"] is True and len(qs[1]["sim_history"]) == 3
    # 4 chain steps (F1, F2, F3 and 3 x F4) + 2 rounds x 3 regenerations
    assert backend.requests == 3 + 3 + 6
    assert report["stats"]["sim_regenerations"] == 6


class CrashingBackend(FakeBackend):
    def __init__(self, crash_after: int) -> None:
        super().__init__()
        self.crash_after = crash_after

    def generate(self, requests):
        if self.calls >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        return super().generate(requests)


def crash_then_count(ctx, out, backend, users, items) -> int:
    """Run until ``backend`` raises its simulated crash; the generations cached by then."""
    with pytest.raises(KeyboardInterrupt):
        run(ctx, out, backend=backend, users=users, items=items)
    cache = JobCache(out / CACHE_FILE)
    try:
        return cache.count_generations()
    finally:
        cache.close()


def test_rerun_and_resume_regenerate_nothing(ctx, tmp_path):
    users, items = (0, 1, 2, 3, 4), (0, 1)
    before = crash_then_count(ctx, tmp_path, CrashingBackend(crash_after=3), users, items)
    assert before > 0 and not (tmp_path / "profiles.parquet").exists()

    report, backend = run(ctx, tmp_path, users=users, items=items)
    stats = report["stats"]
    assert stats["cache_hits"] >= before  # everything finished before the crash came from the cache
    assert stats["cache_regenerated"] == 0
    cache = JobCache(tmp_path / CACHE_FILE)
    assert cache.count_generations() == before + stats["generated"]
    cache.close()
    first = read_profiles(tmp_path)
    assert len(first) == 4 * (len(users) + len(items))

    # a full re-run: every entity is finished, nothing is generated or even asked for
    report, backend = run(ctx, tmp_path, users=users, items=items)
    assert report["stats"]["generated"] == 0 and backend.requests == 0
    assert report["stats"]["entities_skipped"] == len(users) + len(items)
    assert [r["text"] for r in read_profiles(tmp_path)] == [r["text"] for r in first]


def test_cache_key_covers_model_and_sampling():
    req = ChatRequest(messages=(("user", "hi"),), seed=1)
    assert req.cache_key("a") != req.cache_key("b")
    assert req.cache_key("a") != ChatRequest(messages=(("user", "hi"),), seed=2).cache_key("a")
    assert req.cache_key("a") != ChatRequest(messages=(("user", "hi"),), seed=1, temperature=0.1).cache_key(
        "a"
    )
    assert req.cache_key("a") == ChatRequest(messages=(("user", "hi"),), seed=1).cache_key("a")


class StreamingFake(FakeBackend):
    """A streaming backend over the fake text: ``step`` finishes a few queued requests, newest first
    (out of submission order, as a real batch finishes its shortest requests first)."""

    def __init__(self, per_step: int = 3, crash_after_steps: int | None = None) -> None:
        super().__init__()
        self.queue: list = []
        self.per_step = per_step
        self.steps = 0
        self.submitted = 0
        self.crash_after_steps = crash_after_steps

    def submit(self, request, done):
        self.submitted += 1
        self.queue.append((request, done))

    @property
    def busy(self):
        return bool(self.queue)

    def step(self):
        if self.crash_after_steps is not None and self.steps >= self.crash_after_steps:
            raise KeyboardInterrupt("simulated crash")
        self.steps += 1
        take, self.queue = self.queue[-self.per_step :], self.queue[: -self.per_step]
        for request, done in take:
            done(FakeBackend.generate(self, [request])[0])
        return len(take)


@pytest.mark.parametrize("strategy", ["proex", "reclm", "duet"])
def test_streaming_backend_writes_what_the_round_based_path_writes(ctx, tmp_path, strategy):
    cold = cold_item(ctx)
    users, items = (0, 1, 2), (0, 1, cold)
    round_report, _ = run(ctx, tmp_path / "rounds", strategy=strategy, users=users, items=items)
    stream = StreamingFake()
    from offline_jobs.llm.base import StreamingBackend

    assert isinstance(stream, StreamingBackend) and not isinstance(FakeBackend(), StreamingBackend)
    report, _ = run(ctx, tmp_path / "stream", backend=stream, strategy=strategy, users=users, items=items)
    assert stream.submitted == report["stats"]["generated"] > 0  # every request went through submit/step
    key = lambda r: (r["entity_type"], r["entity_id"], r["slot"])  # noqa: E731
    a = sorted(read_profiles(tmp_path / "rounds"), key=key)
    b = sorted(read_profiles(tmp_path / "stream"), key=key)
    assert [(key(r), r["text"], r["is_fallback"]) for r in a] == [
        (key(r), r["text"], r["is_fallback"]) for r in b
    ]
    assert report["stats"]["generated"] == round_report["stats"]["generated"]


def test_streaming_resume_after_a_crash_regenerates_nothing(ctx, tmp_path):
    users, items = (0, 1, 2, 3, 4), (0, 1)
    before = crash_then_count(ctx, tmp_path, StreamingFake(crash_after_steps=6), users, items)
    assert before > 0
    report, _ = run(ctx, tmp_path, backend=StreamingFake(), users=users, items=items)
    assert report["stats"]["cache_hits"] >= before and report["stats"]["cache_regenerated"] == 0
    assert len(read_profiles(tmp_path)) == 4 * (len(users) + len(items))
    again, backend = run(ctx, tmp_path, backend=StreamingFake(), users=users, items=items)
    assert again["stats"]["generated"] == 0 and backend.steps == 0


@pytest.mark.parametrize("backend_kind", ["rounds", "streaming"])
@pytest.mark.parametrize(
    ("owner", "method", "stage"),
    [
        (EntityText, "history_text", "proex:prompt"),  # while building its first prompt
        (StrategyContext, "row", "proex:generate"),  # after its generations
    ],
)
def test_an_isolated_failure_names_the_entity_and_the_others_are_written(
    ctx, tmp_path, monkeypatch, backend_kind, owner, method, stage
):
    original = getattr(owner, method)
    bad = str(ctx.dataset.user_ids[1])

    def failing(self, *args):
        if args[:2] in ((1,), (1, None), ("user", bad)):
            raise ValueError("invalid literal for int() with base 10: '24.0'")
        return original(self, *args)

    monkeypatch.setattr(owner, method, failing)
    backend = StreamingFake() if backend_kind == "streaming" else FakeBackend()
    cfg = GenerationConfig(strategy="proex", k=4, version="t1")
    job = ProfileJob(ctx, backend, HashEmbedder(), tmp_path, cfg, max_active=4, isolate_failures=True)
    try:
        report = job.run([0, 1, 2], [0])
    finally:
        job.close()
    [failure] = report["failed"]
    assert (failure["entity_type"], failure["entity_id"], failure["stage"]) == ("user", bad, stage)
    assert failure["reason"] == "ValueError: invalid literal for int() with base 10: '24.0'"
    assert failure["where"].startswith("tests/unit/test_profile_runner.py:") and "failing" in failure["where"]
    assert "Traceback" in failure["traceback"]
    written = {(r["entity_type"], r["entity_id"]) for r in read_profiles(tmp_path)}
    assert written == {("user", "1"), ("user", "3"), ("item", str(ctx.dataset.item_ids[0]))}
    assert report["stats"]["entities_failed"] == 1 and report["entities_missing"] == 1
    with pytest.raises(ValueError, match=r"24\.0"):  # without isolation the failure stops the job
        run(ctx, tmp_path / "strict", users=(1,), items=())


def test_a_shared_cache_answers_every_prompt_it_has_seen_whatever_the_output_and_inputs(ctx, tmp_path):
    cache = tmp_path / "shared" / CACHE_FILE

    def job_run(out: str, inputs: str) -> dict:
        cfg = GenerationConfig(strategy="proex", k=4, version="t1", inputs=inputs)
        job = ProfileJob(
            ctx, FakeBackend(), HashEmbedder(), tmp_path / out, cfg, max_active=4, cache_path=cache
        )
        try:
            return job.run([0, 1], [0])
        finally:
            job.close()

    first = job_run("run1", "day-1")
    assert first["stats"]["generated"] > 0 and not (tmp_path / "run1" / CACHE_FILE).exists()
    other_inputs = job_run("run2", "day-2")  # other inputs: entities redone, every prompt answered
    assert other_inputs["stats"]["generated"] == 0 and other_inputs["stats"]["entities_skipped"] == 0
    assert other_inputs["stats"]["cache_hits"] >= first["stats"]["generated"]
    same_inputs = job_run("run3", "day-2")  # the same inputs: the finished entities are reused
    assert same_inputs["stats"]["entities_skipped"] == 3 and same_inputs["stats"]["requests"] == 0
    texts = [
        sorted((r["entity_id"], r["slot"], r["text"]) for r in read_profiles(tmp_path / d))
        for d in ("run1", "run2", "run3")
    ]
    assert texts[0] == texts[1] == texts[2]


def test_the_config_digest_without_extra_inputs_is_the_one_from_before():
    """Fields added later leave the digest of a config that does not use them as it was; the grounding
    check (on by default), best of N and the repair change the output, so they change the digest."""
    cfg = GenerationConfig(strategy="proex", k=4, version="t1", grounding=False)
    data = asdict(cfg)
    del data["version"], data["inputs"], data["grounding"], data["candidates"], data["repair"]
    legacy = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert (
        cfg.digest()
        == legacy
        != GenerationConfig(strategy="proex", k=4, version="t1", inputs="x", grounding=False).digest()
    )
    digests = {
        GenerationConfig(strategy="proex", k=4, version="t1", **extra).digest()  # type: ignore[arg-type]
        for extra in ({"grounding": False}, {"grounding": True}, {"candidates": 2}, {"repair": True})
    }
    assert len(digests) == 4


class InventingBackend(FakeBackend):
    """Writes a fluent profile naming an invented film, except for the seeds in ``honest_seeds``."""

    model_id = "inventing"

    def __init__(self, honest: set[int] | None = None) -> None:
        super().__init__()
        self.honest = honest or set()
        self.seeds: list[int] = []

    def generate(self, requests):
        self.calls += 1
        out = []
        for req in requests:
            self.seeds.append(req.seed)
            if req.seed in self.honest:
                text = "This viewer enjoys thoughtful drama and light comedy, rated with care and patience."
            else:
                text = 'This viewer likes drama, above all the film "The Dark Knight Rider", seen every week.'
            out.append(GenerationResult(text=text, finish_reason="stop", model=self.model_id))
        return out


def test_a_profile_failing_the_grounding_check_is_retried_then_replaced(ctx, tmp_path):
    backend = InventingBackend()
    run(ctx, tmp_path, backend=backend, strategy="reclm", users=(0,), items=(), max_retries=1)
    rows = read_profiles(tmp_path)
    assert all(r["is_fallback"] and r["model"] == "extractive" for r in rows)
    q = json.loads(rows[0]["quality"])
    assert q["attempts"] == 2 and q["fallback_reason"] == ["invented_title"]
    assert q["source"] == "extractive" and q["grounding"]["passed"]
    # the fallback's label names the history items its text is grounded on
    history = {str(ctx.dataset.item_ids[i]) for i in ctx.user_items(0)}
    assert rows[0]["slot"] == 0 and q["grounding"]["grounded_on"]
    assert set(q["grounding"]["grounded_on"]) <= history
    assert q["rejected_grounding"]["titles"] == [{"span": "The Dark Knight Rider", "status": "invented"}]
    # the same run with the check off keeps the invented profiles (the old behaviour)
    run(
        ctx,
        tmp_path / "off",
        backend=InventingBackend(),
        strategy="reclm",
        users=(0,),
        items=(),
        grounding=False,
    )
    assert not any(r["is_fallback"] for r in read_profiles(tmp_path / "off"))


class MixedBackend(FakeBackend):
    """Writes two true sentences and one naming an invented film."""

    model_id = "mixed"

    def generate(self, requests):
        self.calls += 1
        text = (
            "This viewer enjoys thoughtful drama and light comedy, rated with care and patience. "
            'Above all they love "The Dark Knight Rider", seen every week.'
        )
        return [GenerationResult(text=text, finish_reason="stop", model=self.model_id) for _ in requests]


def test_the_repair_keeps_the_grounded_sentences_and_records_what_it_cut(ctx, tmp_path):
    run(ctx, tmp_path, backend=MixedBackend(), strategy="reclm", users=(0,), items=(), repair=True)
    rows = read_profiles(tmp_path)
    assert rows and not any(r["is_fallback"] for r in rows)
    for row in rows:
        assert (
            row["text"]
            == "This viewer enjoys thoughtful drama and light comedy, rated with care and patience."
        )
        q = json.loads(row["quality"])
        assert q["source"] == "llm" and q["grounding"]["passed"] and q["attempts"] == 1
        assert q["repaired"] == ["invented_title"]
        assert "repaired:dropped_1_of_2_sentences" in q["notes"]
    # without the repair the same generations are rejected and replaced
    run(ctx, tmp_path / "off", backend=MixedBackend(), strategy="reclm", users=(0,), items=(), max_retries=0)
    assert all(r["is_fallback"] for r in read_profiles(tmp_path / "off"))


def test_best_of_n_keeps_the_candidate_that_passes_and_resumes_from_the_cache(ctx, tmp_path):
    from offline_jobs.profiles.generation import CANDIDATE_STRIDE

    probe = InventingBackend()
    run(ctx, tmp_path / "probe", backend=probe, strategy="reclm", users=(0,), items=(), max_retries=0)
    first_seeds = sorted(set(probe.seeds))  # candidate 0 of every slot (attempt 0)
    honest = {s + CANDIDATE_STRIDE for s in first_seeds}  # candidate 1 of every slot tells the truth
    backend = InventingBackend(honest)
    run(
        ctx,
        tmp_path / "n2",
        backend=backend,
        strategy="reclm",
        users=(0,),
        items=(),
        max_retries=0,
        candidates=2,
    )
    rows = read_profiles(tmp_path / "n2")
    assert not any(r["is_fallback"] for r in rows)
    assert all("light comedy" in r["text"] for r in rows)
    q = json.loads(rows[0]["quality"])
    assert q["source"] == "llm" and q["grounding"]["passed"] and "best_of_2" in q["notes"]
    assert rows[0]["seed"] in honest
    # a second run with the same cache generates nothing: every candidate's key is its own seed
    again = InventingBackend(honest)
    report, _ = run(
        ctx,
        tmp_path / "n2",
        backend=again,
        strategy="reclm",
        users=(0,),
        items=(),
        max_retries=0,
        candidates=2,
    )
    assert again.calls == 0 and report["stats"]["entities_skipped"] == 1


def test_a_cold_item_profile_records_the_neighbours_its_prompt_listed(ctx, tmp_path):
    class Recording(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.prompts: list[str] = []

        def generate(self, requests):
            self.prompts.extend(str(r.messages[-1][1]) for r in requests)
            return super().generate(requests)

    cold = cold_item(ctx)
    backend = Recording()
    run(ctx, tmp_path, backend=backend, strategy="reclm", users=(), items=(cold,), grounding=False)
    rows = read_profiles(tmp_path)
    assert rows
    index = ctx.dataset.item_index()
    for row in rows:  # LLM profiles and fallbacks alike
        listed = json.loads(row["quality"])["listed"]
        assert len(listed) == 3 and str(ctx.dataset.item_ids[cold]) not in listed
        # each listed item is one the prompt named
        assert all(any(ctx.title(index[i]) in p for p in backend.prompts) for i in listed)

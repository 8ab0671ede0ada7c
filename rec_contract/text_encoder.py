"""The service-side text encoder: all-MiniLM-L6-v2 exported to ONNX, run with onnxruntime.

Imports onnxruntime, tokenizers and numpy only (the FastAPI service never imports torch or
transformers). The folder written by ``offline_jobs.jobs.embedding.export_text_encoder`` holds
``text_encoder.onnx`` (transformer, mean pooling and L2 normalisation inside the graph) and the
model's ``tokenizer.json``; :class:`OnnxTextEncoder` returns float32 ``[B, 384]`` unit vectors,
the same space as the profile vectors in the profile store (cosine > 0.999 to sentence-transformers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ONNX_FILE = "text_encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "encoder.json"
DEFAULT_MAX_LENGTH = 256


class OnnxTextEncoder:
    """Embed texts with the exported MiniLM graph. Thread-safe for concurrent ``encode`` calls."""

    def __init__(
        self,
        folder: str | Path,
        max_length: int | None = None,
        batch_size: int = 32,
        intra_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        onnx_path = folder / ONNX_FILE
        tok_path = folder / TOKENIZER_FILE
        for path in (onnx_path, tok_path):
            if not path.exists():
                raise FileNotFoundError(f"text encoder file missing: {path}")
        meta: dict[str, object] = {}
        if (folder / META_FILE).exists():
            meta = json.loads((folder / META_FILE).read_text())
        meta_len = meta.get("max_length", DEFAULT_MAX_LENGTH)
        self.max_length = int(max_length or (meta_len if isinstance(meta_len, int) else DEFAULT_MAX_LENGTH))
        self.model_id = str(meta.get("model", "all-MiniLM-L6-v2"))
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        dim = self.session.get_outputs()[0].shape[-1]
        self.dim = int(dim) if isinstance(dim, int) else int(meta.get("dim", 384))  # type: ignore[call-overload]

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        (out,) = self.session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})
        out = np.asarray(out, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """``[B, dim]`` float32, L2-normalised. A single string gives ``[1, dim]``."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sort by length so each batch pads little, then restore the caller's order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._batch([texts[i] for i in idx])
        return out

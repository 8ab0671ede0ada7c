"""MiniLM embedder and its ONNX export: the service's torch-free encoder matches sentence-transformers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.integration

TEXTS = [
    "Toy Story (1995) is an Animation, Children's and Comedy movie.",
    "User 1 is a 24-year-old man working as a technician who watched 164 movies.",
    "A reader drawn to high fantasy, intricate world-building and epic narratives; dislikes romance.",
    "short",
    "Viewers of Star Wars (1977) also watched: Return of the Jedi (1983); Raiders of the Lost Ark (1981); "
    * 12,  # longer than the 256-token limit: truncation must match too
]


@pytest.fixture(scope="module")
def embedder():
    from offline_jobs.jobs.embedding import MiniLMEmbedder

    return MiniLMEmbedder(batch_size=8)


def test_minilm_is_384d_normalised_and_batched(embedder):
    vecs = embedder.embed(TEXTS)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    one = embedder.embed([TEXTS[1]])[0]
    assert float(one @ vecs[1]) > 0.9999  # batching does not change the vector
    assert float(vecs[0] @ vecs[1]) < 0.9


@pytest.mark.filterwarnings("ignore")  # tracer and exporter chatter from torch.onnx
def test_onnx_export_parity(embedder, tmp_path):
    from offline_jobs.jobs.embedding import export_text_encoder
    from rec_contract.text_encoder import OnnxTextEncoder

    out = export_text_encoder(tmp_path / "encoder")
    assert (out / "text_encoder.onnx").exists() and (out / "tokenizer.json").exists()
    encoder = OnnxTextEncoder(out, batch_size=2)
    onnx_vecs = encoder.encode(TEXTS)
    torch_vecs = embedder.embed(TEXTS)
    cos = (onnx_vecs * torch_vecs).sum(axis=1)
    assert onnx_vecs.shape == (len(TEXTS), 384)
    assert cos.min() > 0.999, cos
    assert encoder.encode("short").shape == (1, 384)
    assert encoder.encode([]).shape == (0, 384)


def test_text_encoder_module_imports_no_torch():
    code = (
        "import sys, rec_contract.text_encoder as t; "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

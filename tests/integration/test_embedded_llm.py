"""The embedded SmolLM2-135M backends on the real GGUF (tiny outputs to keep the suite fast)."""

from __future__ import annotations

import pytest

from offline_jobs.llm.base import ChatRequest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYSTEM = "You are a recommendation assistant. You describe people's tastes in movies accurately and briefly."


def requests(n, max_tokens=12, shared_prefix=False):
    history = "\n".join(
        [
            "- Fargo (1996) | Crime, Drama | 5/5",
            "- Heat (1995) | Action, Crime | 4/5",
            "- Babe (1995) | Comedy | 2/5",
        ]
    )
    out = []
    for i in range(n):
        tail = f"Angle {i}: describe them briefly." if shared_prefix else f"User {i} profile, briefly."
        out.append(
            ChatRequest(
                messages=(("system", SYSTEM), ("user", f"Movies they watched:\n{history}\n\n{tail}")),
                max_tokens=max_tokens,
                seed=100 + i,
            )
        )
    return out


@pytest.fixture(scope="module")
def torch_backend():
    from offline_jobs.llm.torch_engine import TorchGGUFBackend

    return TorchGGUFBackend(n_seq=3, n_ctx_per_seq=512)


@pytest.fixture(scope="module")
def llama_backend():
    pytest.importorskip("llama_cpp", reason="the optional `llama` extra (make install-llama)")
    from offline_jobs.llm.llama import LlamaCppBackend

    return LlamaCppBackend(n_seq=3, n_ctx_per_seq=512, n_threads=1)


def test_torch_backend_continuous_batching_and_prefix_reuse(torch_backend):
    reqs = requests(5, shared_prefix=True)  # more requests than slots: slots are refilled
    results = torch_backend.generate(reqs)
    assert len(results) == 5
    for r in results:
        assert r.text and r.finish_reason in ("stop", "length") and 0 < r.completion_tokens <= 12
        assert r.prompt_tokens > 40 and r.model == "SmolLM2-135M-Instruct.Q4_1"
    assert torch_backend.stats["prefix_reused_tokens"] > 0
    # a retained conversation is continued without re-reading its prefix
    before = torch_backend.stats["prefilled_tokens"]
    follow = ChatRequest(
        messages=(*reqs[4].messages, ("assistant", results[4].text), ("user", "Now in one word?")),
        max_tokens=4,
        seed=7,
    )
    torch_backend.generate([follow])
    assert torch_backend.stats["prefilled_tokens"] - before < 30


PARITY_TEXTS = [
    "Fargo (1996) | Crime, Drama | 5/5\n- 12 Angry Men (1957) 100000 3.14",
    "Amélie (2001), Crouching Tiger 臥虎藏龍, 🎬🍿 émoji\ttabs  and   spaces\n\n\nend",
    "<|im_start|>user\nI love dark sci-fi thrillers and space operas.<|im_end|>\n<|im_start|>assistant\n",
    "They're into it's-a-wonderful-life'ish   stuff; don't   they? 1,234,567 (x2)",
]


def test_gguf_chat_matches_llama_cpp_ids_pieces_and_end_tokens():
    """The tokenizer the embedded backends use (transformers from the GGUF, no llama.cpp) gives the ids,
    the byte pieces and the end-of-generation set that llama.cpp's own vocabulary gives."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="the optional `llama` extra (make install-llama)")
    import ctypes

    from llama_cpp import _internals as internals

    from offline_jobs.llm.gguf_chat import GGUFChat, smollm2_path

    path = smollm2_path()
    chat = GGUFChat(path)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    prompt = chat.format_prompt(requests(1)[0].messages)
    for text in [*PARITY_TEXTS, prompt]:
        expected = list(model.tokenize(text.encode(), add_bos=model.add_bos_token(), special=True))
        assert chat.tokenize(text) == expected, text
    assert chat.vocab_size == llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(256)
    for token in range(chat.vocab_size):
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
        assert chat.piece(token) == bytes(buf.raw[:n]), token
        assert chat.is_eog(token) == bool(llama_cpp.llama_vocab_is_eog(vocab, token)), token


def test_gguf_chat_formats_decodes_and_stops_without_llama_cpp():
    from offline_jobs.llm.gguf_chat import GGUFChat, smollm2_path

    chat = GGUFChat(smollm2_path())
    prompt = chat.format_prompt((("system", "S"), ("user", "Hi")))
    turns = ("<|im_start|>system\nS<|im_end|>", "<|im_start|>user\nHi<|im_end|>", "<|im_start|>assistant\n")
    assert prompt == "\n".join(turns)
    for text in PARITY_TEXTS[:2]:
        assert chat.detokenize(chat.tokenize(text)) == text
    ids = chat.tokenize("<|im_end|>")
    assert len(ids) == 1 and chat.is_eog(ids[0]) and chat.piece(ids[0]) == b""
    split = chat.tokenize("臥")  # one character over several byte tokens: joined before decoding
    assert chat.detokenize(split) == "臥" and chat.detokenize(split[:1]) == ""


def test_llama_cpp_backend_batches(llama_backend):
    results = llama_backend.generate(requests(4, max_tokens=8))
    assert len(results) == 4 and all(r.text and 0 < r.completion_tokens <= 8 for r in results)
    assert llama_backend.stats["steps"] < 4 * 8 + 4  # several sequences per decode step


def test_both_backends_agree_on_the_greedy_first_tokens(torch_backend, llama_backend):
    req = ChatRequest(messages=requests(1)[0].messages, max_tokens=3, temperature=0.0, seed=1)
    from offline_jobs.llm.torch_engine import TorchGGUFBackend

    assert isinstance(torch_backend, TorchGGUFBackend)
    a = torch_backend.generate([req])[0]
    b = llama_backend.generate([req])[0]
    assert a.text.split()[:1] == b.text.split()[:1]
    assert torch_backend.format_prompt(req.messages) == llama_backend.format_prompt(req.messages)


def test_torch_backend_length_bands_decode_what_one_band_decodes():
    """Greedy output is the same whether the decode step attends all running rows over the longest
    row's keys or each length band over its own (prompts of very different lengths), and whatever the
    KV cache's memory held before (it is allocated, not written: NaN everywhere changes nothing)."""
    from offline_jobs.llm.torch_engine import TorchGGUFBackend

    reqs = [
        ChatRequest(
            messages=(
                ("system", SYSTEM),
                ("user", f"User {i} watched: " + "Fargo, Heat, Babe. " * (1 + 6 * (i % 3))),
            ),
            max_tokens=6,
            temperature=0.0,
            seed=i,
        )
        for i in range(24)
    ]
    outputs = []
    for bands, garbage in ((1, False), (3, False), (3, True)):
        backend = TorchGGUFBackend(n_seq=24, n_ctx_per_seq=256, n_bands=bands, min_prefix=10_000)
        if garbage:
            for layer in (*backend.cache[0], *backend.cache[1]):
                layer.fill_(float("nan"))
        outputs.append([r.text for r in backend.generate(reqs)])
        assert backend.n_bands == bands
        backend.close()
    assert outputs[0] == outputs[1] == outputs[2]


def test_dtypes_follow_the_cpu_and_every_combination_decodes_the_same_greedy_start(tmp_path):
    """bfloat16 linear layers only where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX),
    bfloat16 attention only with AMX tiles; float32 weights or attention decode what all-bfloat16
    decodes (greedy, first tokens)."""
    from offline_jobs.llm.torch_engine import TorchGGUFBackend, default_attention_dtype, default_dtype

    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    no_amx = tmp_path / "no_amx"
    no_amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    avx2 = tmp_path / "avx2"  # e.g. AMD EPYC Zen 3: bfloat16 products are emulated there
    avx2.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert default_attention_dtype(amx) == "bfloat16" and default_dtype(amx) == "bfloat16"
    assert default_attention_dtype(no_amx) == "float32" and default_dtype(no_amx) == "bfloat16"
    assert default_attention_dtype(avx2) == "float32" and default_dtype(avx2) == "float32"
    assert default_attention_dtype(tmp_path / "missing") == "float32"
    assert default_dtype(tmp_path / "missing") == "float32"

    req = ChatRequest(messages=requests(1)[0].messages, max_tokens=4, temperature=0.0, seed=1)
    texts = []
    for weights, attention in (("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("float32", "float32")):
        backend = TorchGGUFBackend(n_seq=2, n_ctx_per_seq=512, dtype=weights, attention_dtype=attention)
        assert backend.cache[0][0].dtype == getattr(backend.torch, attention)
        assert backend.model.dtype == getattr(backend.torch, weights)
        texts.append(backend.generate([req])[0].text)
        backend.close()
    assert texts[0].split()[:2] == texts[1].split()[:2] == texts[2].split()[:2]

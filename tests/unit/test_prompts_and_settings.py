"""Prompt templates are packaged data files with versions; settings select backends."""

from __future__ import annotations

import argparse
import re

import pytest

from offline_jobs.llm.fake import FakeBackend
from offline_jobs.llm.registry import available_backends, create_backend
from offline_jobs.profiles.prompts import STRATEGIES, load_prompts
from offline_jobs.settings import JobSettings


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_prompt_files_load_with_versions(strategy):
    p = load_prompts(strategy)
    assert p.version.startswith(strategy) and re.fullmatch(r"[0-9a-f]{12}", p.digest)
    assert p.full_version == f"{p.version}+{p.digest}"
    for entity_type in ("user", "item"):
        assert p.template(entity_type, "system")


def test_proex_has_four_steps_and_angles():
    p = load_prompts("proex")
    for step in ("f1", "f2", "f3", "f4"):
        assert p.template("user", step) and p.template("item", step)
    assert len(p.angles("user")) >= 3
    text = p.render("user", "f4", original="O", aspects="A", latent="L", angle="ANGLE", plural="movies")
    assert "${" not in text and text.endswith("ANGLE")  # the angle last: F4 requests share their prefix
    first = p.render("user", "f1", entity_id="7", who="", plural_cap="Movies", verb="watched", genre="genre",
                     history="- Fargo", plural="movies")  # fmt: skip
    assert "${" not in first and "User 7" in first and "- Fargo" in first


def test_custom_prompt_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('version = "mine-1"\n[user]\nsystem = "S ${plural}"\n')
    p = load_prompts("proex", f)
    assert p.version == "mine-1" and p.render("user", "system", plural="books") == "S books"
    f.write_text("[user]\nsystem = 'x'\n")
    with pytest.raises(ValueError, match="version"):
        load_prompts("proex", f)


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("PROFILEREC_LLM_BACKEND", "fake")
    monkeypatch.setenv("PROFILEREC_MAX_TOKENS", "33")
    monkeypatch.setenv("PROFILEREC_LLM_API_KEY", "secret")
    s = JobSettings()
    assert s.llm_backend == "fake" and s.max_tokens == 33
    assert "secret" not in repr(s)  # the key is a SecretStr
    assert isinstance(create_backend(s), FakeBackend)
    assert {"torch", "llama_cpp", "openai", "fake"} <= set(available_backends())


def test_cli_flags_override_settings(monkeypatch):
    import argparse

    from offline_jobs.cli.llm import settings_from_args

    monkeypatch.setenv("PROFILEREC_TEMPERATURE", "0.3")
    args = argparse.Namespace(llm_backend="openai", temperature=None, batch_size=4, llm_model="m")
    s = settings_from_args(args)
    assert (
        s.llm_backend == "openai" and s.temperature == 0.3 and s.llama_batch_seqs == 4 and s.llm_model == "m"
    )


def test_best_of_n_is_a_setting_and_a_flag_with_its_measured_default(monkeypatch):
    from offline_jobs.cli.llm import settings_from_args

    monkeypatch.delenv("PROFILEREC_PROFILE_CANDIDATES", raising=False)
    assert JobSettings().profile_candidates == 1
    assert "chosen by measurement" in (JobSettings.model_fields["profile_candidates"].description or "")
    assert settings_from_args(argparse.Namespace(candidates=3)).profile_candidates == 3
    monkeypatch.setenv("PROFILEREC_PROFILE_CANDIDATES", "2")
    assert settings_from_args(argparse.Namespace(candidates=None)).profile_candidates == 2


def test_the_grounding_repair_is_on_by_default_and_a_flag(monkeypatch):
    from offline_jobs.cli.llm import _add_llm_args, settings_from_args

    monkeypatch.delenv("PROFILEREC_GROUNDING_REPAIR", raising=False)
    assert JobSettings().grounding_repair is True
    parser = argparse.ArgumentParser()
    _add_llm_args(parser)
    assert settings_from_args(parser.parse_args(["--no-repair"])).grounding_repair is False
    assert settings_from_args(parser.parse_args([])).grounding_repair is True
    monkeypatch.setenv("PROFILEREC_GROUNDING_REPAIR", "false")
    assert settings_from_args(parser.parse_args([])).grounding_repair is False
    assert settings_from_args(parser.parse_args(["--repair"])).grounding_repair is True


def test_an_embedded_result_is_cut_at_the_request_stop_strings():
    from offline_jobs.llm.base import ChatRequest, decoded_result

    req = ChatRequest(messages=(("user", "hi"),), stop=("\nUser:", "###"))
    cut = decoded_result(req, " They like noir.\nUser: more ### x", 12, 9, "length", "m", 0.5)
    assert (cut.text, cut.finish_reason, cut.prompt_tokens, cut.completion_tokens) == (
        "They like noir.",
        "stop",
        12,
        9,
    )
    whole = decoded_result(req, " no stop here ", 3, 2, "length", "m", 0.1, error=None)
    assert whole.text == "no stop here" and whole.finish_reason == "length" and whole.model == "m"

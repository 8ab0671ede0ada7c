"""Output validation: empty, truncated, repetitive, wrong format, nonsensical, echo."""

from __future__ import annotations

from offline_jobs.profiles.validation import parse_duet, repeated_ngram_ratio, trim_to_sentence, validate

GOOD = (
    "This viewer loves dark crime dramas like Fargo and tense thrillers. They enjoy clever plots, "
    "sharp dialogue and morally complex characters."
)
VOCAB = {"fargo", "crime", "drama", "thriller"}


def test_good_profile_passes():
    v = validate(GOOD, "stop", entity_vocab=VOCAB)
    assert v.ok and v.text == GOOD and not v.reasons


def test_empty_and_short():
    assert validate("", "stop").reasons == ["empty"]
    assert validate("   ", "stop").reasons == ["empty"]
    assert "too_short" in validate("Likes Fargo.", "stop").reasons


def test_truncated_is_trimmed_or_rejected():
    cut = GOOD + " They also watch many old westerns from the"
    v = validate(cut, "length", entity_vocab=VOCAB)
    assert v.ok and v.text == GOOD and v.notes == ["trimmed_to_sentence"]
    v = validate("This viewer loves dark crime dramas like Fargo and tense thrillers with", "length")
    assert not v.ok and "truncated" in v.reasons
    assert trim_to_sentence("One. Two and") == "One."
    assert trim_to_sentence("no end") is None


def test_repetitive():
    loop = "They like action movies. " * 6
    assert "repetitive" in validate(loop, "stop").reasons
    words = ("the film is good " * 10).split()
    assert repeated_ngram_ratio(words) > 0.5


def test_nonsensical_and_off_topic():
    assert "nonsensical" in validate("1234 5678 %%%% #### @@@@ 9999 0000 ---- ;;;; 42", "stop").reasons
    gibberish = "Zorblax quimfle drantic vopple snerg klathu mibber trundle ploxine wazzum."
    assert "nonsensical" in validate(gibberish, "stop").reasons
    off_topic = "The weather today is sunny and warm, perfect for a walk in the park with friends."
    assert "nonsensical" in validate(off_topic, "stop", entity_vocab=VOCAB).reasons
    assert validate(
        off_topic, "stop", kind="latent", entity_vocab=VOCAB
    ).ok  # intermediate steps: no overlap rule


def test_echo_and_meta():
    prompt = (
        "Write this user's profile in 2 or 3 sentences: which movies they enjoy and why. Fargo crime drama."
    )
    echoed = (
        "Write this user's profile in 2 or 3 sentences: which movies they enjoy and why. Fargo crime drama."
    )
    assert "echo" in validate(echoed, "stop", prompt=prompt, entity_vocab=VOCAB).reasons
    assert "echo" in validate("I'm sorry, as an AI I cannot describe Fargo crime fans.", "stop").reasons


def test_duet_format():
    text = "Cue: dark crime stories\nPrompt: Describe the moods and plots they seek.\nProfile: " + GOOD
    parts = parse_duet(text)
    assert parts is not None and parts["cue"] == "dark crime stories"
    v = validate(text, "stop", kind="duet", entity_vocab=VOCAB)
    assert v.ok and v.text == GOOD and v.parts["prompt"].startswith("Describe")
    v = validate("Cue: crime\nProfile: " + GOOD, "stop", kind="duet")
    assert not v.ok and v.reasons == ["format"]


def test_aspects_format():
    assert validate(
        "Likes: clever plots, Fargo\nDislikes: slow romance", "stop", kind="aspects", min_words=4
    ).ok
    assert "format" in validate("Clever plots and slow romance are themes.", "stop", kind="aspects").reasons

"""The grounding check on hand-written profiles: titles in and outside the history, invented titles,
titles with another year or article, genre claims, item facts; and its use by the generation job."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from offline_jobs.context import JobContext
from offline_jobs.profiles.grounding import Grounder, title_keys
from offline_jobs.profiles.validation import validate
from training.data.dataset import InteractionDataset

TITLES = [
    ("Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    ("Usual Suspects, The (1995)", ["Crime", "Thriller"]),
    ("Heat (1995)", ["Action", "Crime", "Thriller"]),
    ("Seven (Se7en) (1995)", ["Crime", "Thriller"]),
    ("Sense and Sensibility (1995)", ["Drama", "Romance"]),
    ("Star Wars (1977)", ["Action", "Adventure", "Sci-Fi"]),
    ("Mr. Holland's Opus (1995)", ["Drama"]),
    ("Fargo (1996)", ["Crime", "Drama", "Thriller"]),
]
# user 0 watched the crime films; user 1 the others
HISTORY = {0: [1, 2, 3, 7], 1: [0, 4, 5, 6]}


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    items = pd.DataFrame(
        {
            "title": [t for t, _ in TITLES],
            "categories": [c for _, c in TITLES],
            "description": [""] * len(TITLES),
        }
    )
    users, its = zip(*[(u, i) for u, hist in HISTORY.items() for i in hist], strict=True)
    ds = InteractionDataset(
        name="toy",
        user_ids=np.array(["u0", "u1"]),
        item_ids=np.array([str(i + 1) for i in range(len(TITLES))]),
        user=np.array(users, np.int32),
        item=np.array(its, np.int32),
        timestamp=np.zeros(len(users), np.int64),
        items=items,
        users=pd.DataFrame({"age": [24, 35], "occupation": ["technician", "writer"]}),
    )
    train = sp.csr_matrix((np.ones(len(users)), (users, its)), shape=(2, len(TITLES)))
    ctx = JobContext(dataset=ds, split=SimpleNamespace(train=train), split_method="random", split_seed=0)  # type: ignore[arg-type]
    return Grounder(ctx)


def user(g: Grounder, text: str, u: int = 0):
    return g.check(text, g.user_reference(u))


def test_title_keys_fold_case_articles_years_and_alternative_titles():
    assert title_keys("Usual Suspects, The (1995)") == {"usual suspects"}
    assert title_keys("Seven (Se7en) (1995)") == {"seven", "se7en", "seven se7en"}
    assert title_keys("The Usual Suspects") == title_keys("usual suspects!")


def test_a_real_title_in_the_history_is_grounded(grounder):
    verdict = user(grounder, "They love tense crime stories such as The Usual Suspects and Fargo (1996).")
    assert verdict.passed, verdict.reasons
    assert [m.status for m in verdict.titles] == ["grounded", "grounded"]
    assert verdict.grounded_items == [1, 7]
    assert verdict.record(grounder.ctx.dataset.item_ids)["grounded_on"] == ["2", "8"]


def test_a_real_title_outside_the_history_is_a_hallucination(grounder):
    verdict = user(grounder, "They love crime stories and adore Sense and Sensibility above all.")
    assert not verdict.passed
    assert verdict.reasons == ["ungrounded_title"]
    assert verdict.ungrounded == ["Sense and Sensibility"]


def test_an_invented_title_is_a_hallucination_in_every_form(grounder):
    for text in (
        'A crime fan whose favourite film is "The Dark Knight Rider".',
        "They enjoy: 1. The Legend of Zelda (2019) | Adventure 2. Fargo",
        "A thriller fan who rewatches Midnight Harbour Blues (1987) every winter.",
    ):
        verdict = user(grounder, text)
        assert "invented_title" in verdict.reasons, text
    legend = user(grounder, "They enjoy: 1. The Legend of Zelda (2019) | Adventure 2. Fargo")
    assert [m.span for m in legend.titles if m.status == "invented"] == ["The Legend of Zelda"]


def test_ordinary_capitalised_words_are_not_titles(grounder):
    verdict = user(
        grounder,
        "User u0, a Technician from Ohio, likes Crime and Thriller films. On Sunday they watch Heat with "
        "friends in New York.",
    )
    assert verdict.titles == []  # a one-word title counts only quoted or with its year
    assert verdict.passed, verdict.reasons


def test_a_title_with_another_article_or_form_matches_and_another_year_contradicts(grounder):
    assert user(grounder, "A fan of Usual Suspects, The and of the Usual Suspects.").passed
    assert user(grounder, 'They rewatch "Se7en" and Mr. Holland\'s Opus.', u=0).ungrounded == [
        "Mr. Holland's Opus"
    ]
    wrong_year = user(grounder, "They rate The Usual Suspects (1999) highest.")
    assert wrong_year.reasons == ["fact_contradiction"]
    assert wrong_year.contradictions == ["year 1999 for The Usual Suspects"]


def test_genre_claims_are_checked_against_the_history(grounder):
    good = user(grounder, "They like crime films and thrillers.")
    assert good.categories == {"Crime": True, "Thriller": True} and good.category_precision == 1.0
    bad = user(grounder, "An animated comedy and romance lover who also likes thrillers.")
    assert bad.categories == {"Animation": False, "Comedy": False, "Romance": False, "Thriller": True}
    assert "category_claim" in bad.reasons
    assert bad.score < good.score


def test_a_user_age_the_data_contradicts_fails(grounder):
    assert user(grounder, "A 24-year-old who likes crime films.").passed
    assert user(grounder, "A 31-year-old who likes crime films.").contradictions == ["age 31"]


def test_item_facts_years_and_genres_must_not_be_contradicted(grounder):
    ref = grounder.item_reference(0)  # Toy Story (1995)
    assert grounder.check("Toy Story (1995) is an animated comedy for children and parents.", ref).passed
    wrong = grounder.check("The 2016 movie Toy Story was made on November 9th, 1985 by a studio.", ref)
    assert wrong.reasons == ["fact_contradiction"]
    assert wrong.contradictions == ["year 2016", "year 1985"]
    genre = grounder.check("Toy Story is a brutal crime thriller with a romance at its heart.", ref)
    # Romance: frequent in its audience's history (a claim about who enjoys it is supported)
    assert genre.categories == {"Crime": False, "Thriller": False, "Romance": True}
    assert "category_claim" in genre.reasons
    other = grounder.check("Toy Story feels like Star Wars (1977) for children.", ref)
    assert other.reasons == ["ungrounded_title"]
    listed = grounder.item_reference(0, neighbours=[5])  # Star Wars named in the prompt
    assert grounder.check("Toy Story feels like Star Wars (1977) for children.", listed).passed


def test_validation_rejects_with_the_grounding_reasons(grounder):
    ref = grounder.user_reference(0)
    text = 'This viewer adores crime stories, above all the film "The Dark Knight Rider" and Fargo.'
    verdict = validate(text, kind="profile", grounding=lambda t: grounder.check(t, ref))
    assert not verdict.ok and verdict.reasons == ["invented_title"]
    assert verdict.grounding is not None and verdict.grounding.score < 1
    plain = validate(text, kind="profile")
    assert plain.ok and plain.grounding is None


def test_genre_lists_with_decades_and_age_phrases_are_not_titles(grounder):
    verdict = user(
        grounder, "Their taste:\n1. Crime (1990s) and Thriller\n2. A 24-year-old who loves Fargo (1996)."
    )
    assert [m.span for m in verdict.titles] == ["Fargo"]
    assert verdict.passed, verdict.reasons
    # the age is still a fact: another age contradicts the data
    wrong = user(
        grounder, "Their taste:\n1. Crime (1990s) and Thriller\n2. A 31-year-old who loves Fargo (1996)."
    )
    assert wrong.reasons == ["fact_contradiction"]
    # an invented title in the same list is still caught
    invented = user(grounder, "Their taste:\n1. Crime (1990s) and Thriller\n2. The Legend of Zelda (2019)")
    assert "invented_title" in invented.reasons


def test_repair_keeps_the_grounded_sentences_of_a_profile_with_one_wrong_sentence(grounder):
    ref = grounder.user_reference(0)
    check = lambda t: grounder.check(t, ref)  # noqa: E731
    text = (
        "A 31-year-old night owl. They love crime films and tense thrillers, Fargo (1996) above all. "
        'They also rewatch "The Dark Knight Rider" every winter.'
    )
    strict = validate(text, kind="profile", grounding=check)
    assert not strict.ok and strict.reasons == ["fact_contradiction", "invented_title"]
    repaired = validate(text, kind="profile", grounding=check, repair=True)
    assert repaired.ok, repaired.reasons
    assert repaired.text == "They love crime films and tense thrillers, Fargo (1996) above all."
    assert repaired.notes == ["repaired:dropped_2_of_3_sentences"]
    assert repaired.grounding is not None and repaired.grounding.passed
    assert repaired.grounding.grounded_items == [7]


def test_repair_never_keeps_filler_alone_nor_fixes_other_faults(grounder):
    ref = grounder.user_reference(0)
    check = lambda t: grounder.check(t, ref)  # noqa: E731
    # what passes says nothing checkable about the history: no repair
    filler = "They have watched films for many years with friends. They adore Toy Story and animations."
    assert not validate(filler, kind="profile", grounding=check, repair=True).ok
    # a lone genre word is not enough either: a title of the data or two supported genres
    lone = "They have watched crime films for many years with friends. They adore Toy Story and animations."
    assert not validate(lone, kind="profile", grounding=check, repair=True).ok
    two = "They watch crime films and thrillers with friends every week. They adore Toy Story and animations."
    assert validate(two, kind="profile", grounding=check, repair=True).ok
    # the kept sentence is too short to be a profile
    short = "They like Fargo. They adore Toy Story and animated comedies and romances of every kind."
    assert validate(short, kind="profile", grounding=check, repair=True).reasons == [
        "category_claim",
        "ungrounded_title",
    ]
    # a fault the grounding check does not give (an echo of the prompt) is never repaired
    prompt = "They love crime films and tense thrillers, Fargo above all, and rewatch them each winter."
    echo = prompt + " They adore Toy Story."
    verdict = validate(echo, kind="profile", prompt=prompt, grounding=check, repair=True)
    assert not verdict.ok and "echo" in verdict.reasons


def test_a_year_no_film_of_the_user_history_has_contradicts(grounder):
    # user 0's history: 1995 and 1996 films
    assert user(grounder, "They love crime films from 1995 and thrillers.").passed
    made_up = user(grounder, "Michael Strowk is a 2014 British crime thriller they adore.")
    assert made_up.contradictions == ["year 2014"] and made_up.reasons == ["fact_contradiction"]
    assert user(grounder, "They grew up on 1970s crime films and thrillers.").passed  # a decade is no year

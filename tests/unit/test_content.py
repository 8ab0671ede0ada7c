"""service.content: scores on one scale, new items placed among their content neighbours."""

from __future__ import annotations

import numpy as np

from service.content import ContentModel, ContentSettings, Standardiser


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_standardiser_is_the_z_score_over_the_catalogue() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((300, 8)).astype(np.float32)
    query = rng.standard_normal(8).astype(np.float32)
    scores = matrix @ query
    z = Standardiser(matrix, rng)(query, scores)
    expected = (scores - scores.mean()) / scores.std(ddof=1)
    np.testing.assert_allclose(z, expected, rtol=1e-3, atol=1e-3)


def test_a_new_item_takes_the_vectors_of_its_nearest_items_by_content() -> None:
    content = _unit(np.eye(4, 6))
    vectors = np.array([[1, 0], [0, 2], [3, 3], [-1, 0]], np.float32)
    model = ContentModel(vectors, content, np.ones(4), ContentSettings(new_item_neighbours=1))
    text = _unit(np.array([[0.1, 0.9, 0.0, 0.0, 0.2, 0.0]]))[0]
    np.testing.assert_allclose(model.neighbour_vector(text), vectors[1])
    # several neighbours: a softmax-weighted mean, rescaled to the neighbours' mean norm
    two = ContentModel(vectors, content, np.ones(4), ContentSettings(new_item_neighbours=2))
    mixed = two.neighbour_vector(_unit(np.array([[1.0, 1.0, 0, 0, 0, 0]]))[0])
    assert mixed is not None
    np.testing.assert_allclose(mixed / np.linalg.norm(mixed), _unit(np.array([[0.5, 1.0]]))[0], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(mixed), 1.5, rtol=1e-5)
    tower = ContentModel(vectors, content, np.ones(4), ContentSettings(new_item_vectors="tower"))
    assert tower.neighbour_vector(text) is None
    assert ContentModel(vectors, None, np.ones(4), ContentSettings()).neighbour_vector(text) is None


def test_blend_weights_text_model_and_popularity() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((50, 4)).astype(np.float32)
    content = _unit(rng.standard_normal((50, 6)))
    popularity = rng.integers(0, 100, 50)
    user, text = rng.standard_normal(4).astype(np.float32), content[7]
    model_scores, text_scores = vectors @ user, content @ text
    pop_z = np.array([0.0] * 50, np.float32)

    def order(w: float, p: float, pop: np.ndarray = pop_z) -> np.ndarray:
        m = ContentModel(
            vectors, content, popularity, ContentSettings(text_weight=w, text_popularity_weight=p)
        )
        return np.argsort(-m.blend(user, text, model_scores, text_scores, pop))

    np.testing.assert_array_equal(order(1.0, 0.0), np.argsort(-text_scores))
    np.testing.assert_array_equal(order(0.0, 0.0), np.argsort(-model_scores))
    m = ContentModel(vectors, content, popularity, ContentSettings())
    assert order(0.0, 1e4, m.pop_z)[0] == int(np.argmax(popularity))
    # an item added through the API (no catalogue index) has the mean popularity prior
    assert m.popularity_z({"index": -1}) == 0.0
    assert m.popularity_z({"index": int(np.argmax(popularity))}) == float(m.pop_z.max())


def test_the_text_weight_follows_how_well_the_text_matches_any_item() -> None:
    settings = ContentSettings(text_weight=0.8, text_match_low=0.2, text_match_high=0.4)
    model = ContentModel(np.eye(3, dtype=np.float32), _unit(np.eye(3, 4)), np.ones(3), settings)
    assert model.text_weight(np.full(10, 0.1, np.float32)) == 0.0  # about the person, not the films
    assert model.text_weight(np.full(10, 0.5, np.float32)) == 0.8
    np.testing.assert_allclose(model.text_weight(np.full(10, 0.3, np.float32)), 0.4, rtol=1e-5)
    # the 10 best matches count, not the long tail
    assert model.text_weight(np.r_[np.full(10, 0.5), np.zeros(90)].astype(np.float32)) == 0.8
    assert model.text_weight(np.zeros(0, np.float32)) == 0.0

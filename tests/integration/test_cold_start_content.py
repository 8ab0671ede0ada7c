"""Text requests match the items' own text; items known only by text sit among their content
neighbours (service.content), on the session's Mult-VAE bundle and the Qdrant path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.integration.conftest import KEYS, service_settings

pytestmark = pytest.mark.integration


def _client(artefacts, tmp_path, **extra) -> Iterator[TestClient]:
    settings = service_settings(artefacts, "multvae", tmp_path, None, **extra)
    with TestClient(create_app(settings), headers=KEYS) as client:
        yield client


@pytest.fixture
def client(artefacts, tmp_path) -> Iterator[TestClient]:
    yield from _client(artefacts, tmp_path)


def _genre_share(client: TestClient, genre: str) -> int:
    body = {"text": f"I want to watch a good {genre.lower()} film", "n": 10}
    answer = client.post("/v1/recommendations", json=body)
    assert answer.status_code == 200, answer.text
    return sum(genre in item["categories"] for item in answer.json()["items"])


def test_a_genre_sentence_returns_that_genre(client: TestClient, artefacts, tmp_path) -> None:
    shares = {genre: _genre_share(client, genre) for genre in ("Horror", "Western", "Comedy", "Sci-Fi")}
    assert all(share >= 5 for share in shares.values()), shares
    # the user tower alone (text_weight 0) is what the blend improves on
    for tower_only in _client(artefacts, tmp_path / "tower", text_weight=0.0):
        before = {genre: _genre_share(tower_only, genre) for genre in shares}
    assert sum(shares.values()) > sum(before.values()), (shares, before)


def test_a_new_item_is_found_by_its_own_text_and_goes_when_deleted(client: TestClient) -> None:
    text = "A lonely lighthouse keeper finds a mermaid; a quiet Scottish fairy tale about the sea."
    body = {"title": "The Keeper of the Tide", "categories": ["Fantasy", "Romance"], "text": text}
    assert client.put("/v1/items/tide-1", json=body).status_code == 201
    ask = {"text": f"The Keeper of the Tide (Fantasy, Romance): {text}", "n": 20}
    ids = [item["item_id"] for item in client.post("/v1/recommendations", json=ask).json()["items"]]
    assert ids.index("tide-1") < 3, ids
    filtered = client.post("/v1/recommendations", json={**ask, "categories": ["Romance"]}).json()
    assert "tide-1" in [item["item_id"] for item in filtered["items"]]
    assert client.delete("/v1/items/tide-1").status_code == 204
    after = client.post("/v1/recommendations", json=ask).json()["items"]
    assert "tide-1" not in [item["item_id"] for item in after]


def test_a_copy_of_a_film_is_recommended_to_those_who_rated_the_original(
    client: TestClient, artefacts
) -> None:
    """A catalogue film added again under a new id (title, genres, no interactions) scores like the
    original for users who rated it: its vector comes from its nearest catalogue items by content."""
    dataset = artefacts.dataset
    index = dataset.item_index()["50"]  # Star Wars (1977)
    row = dataset.items.iloc[index]
    body = {
        "title": str(row["title"]),
        "categories": [str(c) for c in row["categories"]],
        "text": str(row["title"]),
    }
    assert client.put("/v1/items/copy-of-50", json=body).status_code == 201
    raters = dataset.interaction_matrix()[:, index].nonzero()[0][:20]
    ranks = []
    for user in raters:
        answer = client.get(f"/v1/users/{dataset.user_ids[user]}/recommendations", params={"n": 100}).json()
        ids = [item["item_id"] for item in answer["items"]]
        ranks.append(ids.index("copy-of-50") + 1 if "copy-of-50" in ids else 101)
    assert sorted(ranks)[len(ranks) // 2] <= 20, ranks

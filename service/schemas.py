"""Request and response models: validation at the boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from service.limits import (
    MAX_CATEGORIES,
    MAX_EXCLUDE,
    MAX_N,
    MAX_TEXT_CHARS,
    VISIBLE_TEXT,
    Category,
    EntityId,
    FreeText,
    Title,
)

Strategy = Literal["personalized", "profile_only", "popular"]
EARLIEST_EVENT = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # clocks of clients differ; a day ahead is a mistake or a forgery


class StrictModel(BaseModel):
    """Request bodies: no unknown fields, no NaN or Infinity (strict JSON: the logs stay parseable)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str
    categories: list[str] = Field(default_factory=list)
    profile_snippet: str | None = Field(None, description="present with explain=true")


class Explanation(BaseModel):
    text: str = Field(description="a profile of the user that passed the grounding check")
    source: Literal["llm", "extractive", "request"] = Field(
        description="llm: written by a language model and verified against the user's history; "
        "extractive: assembled from the user's own data (grounded by construction); request: the text "
        "this cold-start request sent"
    )
    grounded_on: list[str] = Field(
        default_factory=list,
        description="ids of the user's history items the profile names (those the grounding check "
        "matched); empty when it names none",
    )


class RecommendationResponse(BaseModel):
    user_id: str | None = None
    model_version: str
    strategy: Strategy = Field(
        description="personalized: collaborative signal (+ profiles); profile_only: profiles or text only; "
        "popular: nothing known about the user, most popular items"
    )
    items: list[RecommendedItem]
    user_profiles: list[str] | None = Field(
        None,
        description="with explain=true: the texts of `explanations` (only the user's profiles that passed "
        "the grounding check; profiles that failed it or were never checked are not returned)",
    )
    explanations: list[Explanation] | None = Field(
        None, description="with explain=true: the user's verified profiles, each with its source"
    )


class ColdStartRequest(StrictModel):
    # what the validator below requires, stated in the schema: liked items, text, or both
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["liked_items"], "properties": {"liked_items": {"minItems": 1}}},
            ]
        }
    )

    liked_items: list[EntityId] = Field(
        default_factory=list, max_length=200, description="item ids the user liked"
    )
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS, pattern=VISIBLE_TEXT)] | None = Field(
        None, description="free text about the user's tastes"
    )
    n: int = Field(20, ge=1, le=MAX_N, description=f"how many items (at most {MAX_N}, or PROFILEREC_MAX_N)")
    categories: list[Category] = Field(
        default_factory=list,
        max_length=MAX_CATEGORIES,
        description="keep only these categories (an unknown one is 422 listing the valid ones)",
    )
    exclude: list[EntityId] = Field(default_factory=list, max_length=MAX_EXCLUDE)
    explain: bool = False

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text must not be empty")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _something_to_go_on(self) -> ColdStartRequest:
        if not self.liked_items and self.text is None:
            raise ValueError("send liked_items, text, or both")
        return self


class ItemUpsertRequest(StrictModel):
    title: Title
    text: FreeText = Field(description="the item's description, used to embed it")
    categories: list[Category] = Field(default_factory=list, max_length=20)


class ItemUpsertResponse(BaseModel):
    item_id: str
    created: bool
    vector_source: Literal["model", "text"] = Field(
        description="model: a catalogue item keeps its trained vector; text: embedded from its text "
        "(zero-shot)"
    )
    model_version: str


class FeedbackEvent(StrictModel):
    user_id: EntityId
    item_id: EntityId
    type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,31}$")] = Field(
        description="one of PROFILEREC_FEEDBACK_TYPES (default: add_to_cart, click, dislike, like, "
        "purchase, rating, share, skip, view); another is 422 listing them"
    )
    timestamp: datetime | None = Field(
        None,
        description="when it happened (ISO-8601, from 1970 to one day after now); default: when received",
    )
    value: float | None = Field(None, description="optional strength, e.g. a rating (finite)")

    @field_validator("timestamp")
    @classmethod
    def _aware_and_plausible(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if not EARLIEST_EVENT <= value <= datetime.now(UTC) + FUTURE_SLACK:
            raise ValueError("timestamp must be between 1970-01-01 and one day after now")
        return value


class FeedbackResponse(BaseModel):
    accepted: int


class ProfileLabel(StrictModel):
    """A profile's explanation label (``rec_contract.explanations``)."""

    source: Literal["llm", "extractive"]
    grounded: bool | None = Field(None, description="the grounding check's verdict (null: not checked)")
    grounded_on: list[EntityId] = Field(default_factory=list, max_length=1000)


class ProfileUpsert(StrictModel):
    entity_id: EntityId
    vectors: list[list[float]] = Field(min_length=1, max_length=32, description="the K embedded profiles")
    texts: list[FreeText] = Field(min_length=1, max_length=32)
    strategy: Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z0-9_\-]*$")] = ""
    is_fallback: list[bool] | None = None
    labels: list[ProfileLabel] | None = Field(
        None,
        description="one per text: its source and grounding verdict (without them a fallback counts as "
        "extractive and grounded, any other text as unverified, never shown by explain=true)",
    )

    @model_validator(mode="after")
    def _aligned(self) -> ProfileUpsert:
        if len(self.texts) != len(self.vectors):
            raise ValueError("texts and vectors must have the same length (one text per profile)")
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError("labels and texts must have the same length (one label per profile)")
        if len({len(v) for v in self.vectors}) != 1:
            raise ValueError("every profile vector must have the same dimension")
        return self


class ProfilesUpsertRequest(StrictModel):
    entity_type: Literal["user", "item"]
    store_version: str = Field(description="must be the profile store version of the live bundle")
    profiles: list[ProfileUpsert] = Field(min_length=1, max_length=1000)


class ProfilesUpsertResponse(BaseModel):
    upserted: int
    invalidated: int


class ReadinessResponse(BaseModel):
    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, str]
    model_version: str | None = None

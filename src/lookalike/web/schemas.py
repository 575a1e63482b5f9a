"""Response shapes of the REST API, for validation and the OpenAPI docs at /docs.

They mirror the CLI's JSON (lookalike.results) plus the image ``id`` on each result.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class HitOut(BaseModel):
    rank: int = Field(description="1 = most similar")
    path: str
    score: float = Field(description="cosine similarity, higher is more similar")
    distance: float | None = Field(None, description="euclidean distance (metric=euclidean)")
    id: int = Field(description="collection id: /api/images/{id}, /api/search?id={id}")


class QueryResultOut(BaseModel):
    query: str = Field(description="the uploaded file's name, or the indexed image's path")
    results: list[HitOut]


class DuplicateMemberOut(BaseModel):
    id: int
    path: str
    score: float = Field(description="cosine similarity to the group's representative")
    width: int | None
    height: int | None
    size: int = Field(description="file size in bytes")
    verified: bool = Field(
        default=False,
        description="joined by local-feature verification (rotated, cropped, flipped or grey "
        "copy); its score is below the threshold",
    )


class DuplicateGroupOut(BaseModel):
    paths: list[str] = Field(description="members in id order")
    min_score: float = Field(description="weakest member's similarity to the representative")
    ids: list[int]
    representative: str = Field(
        description="path of members[0]; all are within threshold of it or verified against it"
    )
    keep: str = Field(description="suggested copy to keep: most pixels, largest file, oldest")
    members: list[DuplicateMemberOut] = Field(description="representative first, then by score")


class ImageOut(BaseModel):
    id: int
    path: str
    width: int | None
    height: int | None
    size: int = Field(description="file size in bytes")


class ImagePageOut(BaseModel):
    total: int
    offset: int
    limit: int
    images: list[ImageOut]


class ErrorOut(BaseModel):
    error: str = Field(description="one line for a person")

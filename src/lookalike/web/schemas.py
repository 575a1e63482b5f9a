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


class DuplicateGroupOut(BaseModel):
    paths: list[str]
    min_score: float = Field(description="weakest similarity among the links of the group")
    ids: list[int]


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

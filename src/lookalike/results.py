"""Search results as plain data, with their JSON form (the CLI/REST contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRICS = ("cosine", "euclidean")


@dataclass(frozen=True)
class Hit:
    rank: int
    id: int
    path: str
    score: float  # cosine similarity, higher is more similar
    distance: float | None = None  # euclidean distance, only with metric="euclidean"

    def to_json(self, with_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "path": self.path, "score": round(self.score, 6)}
        if self.distance is not None:
            out["distance"] = round(self.distance, 6)
        if with_id:
            out["id"] = self.id
        return out


@dataclass
class QueryResult:
    query: str
    results: list[Hit] = field(default_factory=list)

    def to_json(self, with_id: bool = False) -> dict[str, Any]:
        return {"query": self.query, "results": [h.to_json(with_id) for h in self.results]}


@dataclass(frozen=True)
class GroupMember:
    id: int
    path: str
    score: float  # cosine similarity to the group's representative (1.0 for itself)
    width: int | None = None
    height: int | None = None
    size: int = 0  # file size in bytes
    mtime_ns: int = 0
    verified: bool = False  # joined by local-feature verification, score below threshold

    def to_json(self, with_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "score": round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "size": self.size,
            "verified": self.verified,
        }
        if with_id:
            out["id"] = self.id
        return out


@dataclass(frozen=True)
class DuplicateGroup:
    """One near-duplicate group. ``members[0]`` is the representative: every member is
    within the threshold of it or was verified against it by local features. ``keep`` is
    only a suggestion; lookalike never deletes."""

    ids: list[int]  # sorted
    paths: list[str]  # in the order of ids
    min_score: float  # weakest member's similarity (below threshold if one was verified)
    members: list[GroupMember] = field(default_factory=list)
    keep: str = ""

    @property
    def representative(self) -> str:
        return self.members[0].path if self.members else ""

    def to_json(self, with_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "paths": self.paths,
            "min_score": round(self.min_score, 6),
            "representative": self.representative,
            "keep": self.keep,
            "members": [m.to_json(with_id) for m in self.members],
        }
        if with_id:
            out["ids"] = self.ids
        return out


@dataclass(frozen=True)
class DuplicatePair:
    a: str
    b: str
    score: float
    verified: bool = False  # below the threshold, confirmed by local features

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "score": round(self.score, 6), "verified": self.verified}

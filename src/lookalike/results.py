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
class DuplicateGroup:
    ids: list[int]
    paths: list[str]
    min_score: float  # weakest similarity on the links that joined the group

    def to_json(self) -> dict[str, Any]:
        return {"paths": self.paths, "min_score": round(self.min_score, 6)}

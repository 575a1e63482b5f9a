"""Search indexes: exact brute force, and approximate kinds on FAISS."""

from lookalike.index.base import MISSING_ID, SearchHits, VectorIndex
from lookalike.index.exact import ExactIndex, topk_blockwise

__all__ = ["MISSING_ID", "ExactIndex", "SearchHits", "VectorIndex", "topk_blockwise"]

"""Search indexes: exact brute force, and approximate kinds on FAISS.

``IndexManager`` (manager.py) is what the collection uses: it builds, updates, persists
and searches one of the kinds in ``KINDS``. FAISS is imported only when an approximate
index is built or loaded.
"""

from lookalike.index.base import MISSING_ID, SearchHits, VectorIndex
from lookalike.index.budget import KINDS, parse_memory_budget
from lookalike.index.exact import ExactIndex, topk_blockwise

__all__ = [
    "KINDS",
    "MISSING_ID",
    "ExactIndex",
    "SearchHits",
    "VectorIndex",
    "parse_memory_budget",
    "topk_blockwise",
]

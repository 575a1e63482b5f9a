"""Retrieval-quality evaluation on labelled image folders (`lookalike eval`).

metrics: pure NumPy metric functions; dataset: reading class/image folders; runner:
embedding with a cache and leave-one-out / query-set evaluation; report: Markdown + PNGs.
"""

"""``name@tag/tag`` model specs for the benchmarks: a model with explicit options.

``efficientnet-lite0-int8@avg/r3`` is the int8 model with average pooling and preprocessing
recipe 3 (the default before the identity bump of issues 9/10); a bare name gets the
defaults of this version (GeM, recipe 4 for the EfficientNet-Lite models).
"""

from __future__ import annotations

from lookalike.models import ModelOptions
from lookalike.models.pooling import POOLS


def model_spec(spec: str) -> tuple[str, ModelOptions]:
    """ "name@gem/r4" -> (name, options)."""
    name, _, tags = spec.partition("@")
    pool, recipe = None, None
    for tag in filter(None, tags.split("/")):
        if tag in POOLS:
            pool = tag
        elif tag[:1] == "r" and tag[1:].isdigit():
            recipe = int(tag[1:])
        else:
            raise SystemExit(
                f"{spec}: unknown model option {tag!r} ({', '.join(POOLS)}, r<recipe>)"
            )
    return name, ModelOptions(pool=pool, recipe=recipe)

from __future__ import annotations

from typing import Any

import click

from lookalike.cli.common import emit_json, json_option


@click.command("models")
@json_option
def models_command(as_json: bool) -> None:
    """Models known to lookalike: dimension, input size, weights available here now?"""
    from lookalike.models import list_models

    rows: list[dict[str, Any]] = [
        {
            "name": m.name,
            "dim": m.dim,
            "input_size": m.input_size,
            "weights_available": m.weights_available(),
            "description": m.description,
        }
        for m in list_models()
    ]
    if as_json:
        emit_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=10)
    click.echo(f"{'model':<{width}}  {'dim':>5}  {'input':>5}  weights  description")
    for r in rows:
        ok = "yes" if r["weights_available"] else "no"
        name, dim, size = r["name"], r["dim"], r["input_size"]
        click.echo(f"{name:<{width}}  {dim:>5}  {size:>5}  {ok:<7}  {r['description']}")

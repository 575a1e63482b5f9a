from __future__ import annotations

from typing import Any

import click

from lookalike.cli.common import emit_json, json_option


@click.command("models")
@json_option
def models_command(as_json: bool) -> None:
    """Models known to lookalike: dimension, input size, precision, what runs it here,
    weights available here now? The default for new collections is marked."""
    from lookalike.models import list_models
    from lookalike.models.defaults import choose_default
    from lookalike.models.runtime import gpu_available

    default = choose_default()
    gpu = gpu_available()
    rows: list[dict[str, Any]] = []
    for m in list_models():
        runtime = m.runtime
        if runtime == "onnxruntime":
            # The GPU runs a model only once its vectors agree with the CPU's.
            runtime += "-cuda" if gpu and m.precision == "fp32" else "-cpu"
        rows.append(
            {
                "name": m.name,
                "dim": m.dim,
                "input_size": m.input_size,
                "precision": m.precision,
                "runtime": runtime,
                "weights_available": m.weights_available(),
                "default": m.name == default.model,
                "description": m.description,
            }
        )
    if as_json:
        emit_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=10) + 2
    click.echo(
        f"{'model':<{width}}  {'dim':>5}  {'input':>5}  precision  {'runtime':<16}  weights  "
        "description"
    )
    for r in rows:
        ok = "yes" if r["weights_available"] else "no"
        name = r["name"] + (" *" if r["default"] else "")
        click.echo(
            f"{name:<{width}}  {r['dim']:>5}  {r['input_size']:>5}  {r['precision']:<9}  "
            f"{r['runtime']:<16}  {ok:<7}  {r['description']}"
        )
    click.echo(f"* default for new collections here: {default.model} ({default.reason})")

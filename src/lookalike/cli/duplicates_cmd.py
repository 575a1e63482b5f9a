from __future__ import annotations

from pathlib import Path

import click

from lookalike.cli.common import db_option, echo_index_note, emit_json, json_option


@click.command("duplicates")
@db_option
@click.option(
    "--threshold",
    default=0.95,
    show_default=True,
    type=click.FloatRange(-1.0, 1.0),
    help="Least cosine similarity for two images to count as near duplicates.",
)
@click.option(
    "--effort",
    default=None,
    type=click.FloatRange(min=0.1),
    help="Search width of an approximate index, relative to the width tuned for search: "
    "higher misses fewer pairs and takes longer. Exact search ignores it.  [default: 4]",
)
@json_option
def duplicates_command(
    db: Path | None, threshold: float, effort: float | None, as_json: bool
) -> None:
    """Groups of near-duplicate images (similarity >= THRESHOLD), largest first.

    \b
    Example:
      lookalike duplicates --threshold 0.97 --json
    """
    from lookalike.collection import DUPLICATES_EFFORT, Collection

    with Collection.open(db) as col:
        groups = col.duplicates(threshold=threshold, effort=effort or DUPLICATES_EFFORT)
        echo_index_note(col)
    if as_json:
        emit_json([g.to_json() for g in groups])
        return
    for n, group in enumerate(groups, 1):
        click.echo(f"group {n}: {len(group.paths)} images, min score {group.min_score:.4f}")
        for path in group.paths:
            click.echo(f"  {path}")
    if not groups:
        click.echo(f"no near duplicates at threshold {threshold}")

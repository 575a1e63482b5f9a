from __future__ import annotations

from pathlib import Path

import click

from lookalike.cli.common import db_option, echo_index_note, emit_json, json_option
from lookalike.models.pooling import GEM_GRID, GEM_TWO_STAGE

# Measured (BENCHMARKS.md, "`duplicates` on a `gem-2stage` collection"): 13 false groups
# against 6 for gem in a 416-photo library, the same planted copies found.
TWO_STAGE_NOTE = (
    "this collection's gem-2stage pooling scores similar but distinct images (textures, other "
    "views of one scene) higher than gem, for which the threshold was calibrated: expect more "
    "groups of distinct images; a collection indexed with the default pooling finds duplicates "
    "more precisely"
)

# Not measured: gem-grid is gem-2stage plus a layout part, made for `lookalike fit`.
GRID_NOTE = (
    "this collection's gem-grid pooling (made for `lookalike fit`) was not calibrated for "
    "duplicates: its gem-2stage part alone already groups more distinct images than gem; a "
    "collection indexed with the default pooling finds duplicates more precisely"
)
POOL_NOTES = {GEM_TWO_STAGE: TWO_STAGE_NOTE, GEM_GRID: GRID_NOTE}


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
@click.option(
    "--pairs",
    is_flag=True,
    help="List every pair with similarity >= THRESHOLD and its score instead of groups.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check pairs scoring below THRESHOLD (down to 0.4; for THRESHOLD <= 0.95) with "
    "local features and join "
    "those that are one image rotated, cropped, flipped or greyed (needs OpenCV).",
)
@json_option
def duplicates_command(
    db: Path | str | None,
    threshold: float,
    effort: float | None,
    pairs: bool,
    verify: bool,
    as_json: bool,
) -> None:
    """Groups of near-duplicate images, largest first. Every member of a group has
    similarity >= THRESHOLD to the group's representative or, with --verify (the
    default), was matched to it by local features ("verified"); groups do not chain.
    Each group suggests a copy to keep (most pixels, then largest file, then oldest).
    Nothing is ever deleted or moved.

    \b
    Examples:
      lookalike duplicates --threshold 0.97 --json
      lookalike duplicates --pairs --json   # [{"a", "b", "score", "verified"}]
      lookalike duplicates --no-verify      # CNN score only: faster
    """
    from lookalike.collection import DUPLICATES_EFFORT, Collection

    with Collection.open(db) as col:
        if pairs:
            found = col.duplicate_pairs(
                threshold=threshold, effort=effort or DUPLICATES_EFFORT, verify=verify
            )
        else:
            groups = col.duplicates(
                threshold=threshold, effort=effort or DUPLICATES_EFFORT, verify=verify
            )
        echo_index_note(col)
        if col.duplicates_note:
            click.echo(f"note: {col.duplicates_note}", err=True)
        note = POOL_NOTES.get(col.model_options.pool or "")
        if note:
            click.echo(f"note: {note}", err=True)
    if pairs:
        if as_json:
            emit_json([p.to_json() for p in found])
            return
        for pair in found:
            mark = "  verified" if pair.verified else ""
            click.echo(f"{pair.score:.4f}  {pair.a}  {pair.b}{mark}")
        if not found:
            click.echo(f"no near duplicates at threshold {threshold}")
        return
    if as_json:
        emit_json([g.to_json() for g in groups])
        return
    for n, group in enumerate(groups, 1):
        click.echo(f"group {n}: {len(group.paths)} images, min score {group.min_score:.4f}")
        for member in group.members:
            mark = "keep" if member.path == group.keep else "    "
            how = "  (verified)" if member.verified else ""
            click.echo(f"  {mark} {member.score:.4f}  {member.path}{how}")
    if not groups:
        click.echo(f"no near duplicates at threshold {threshold}")

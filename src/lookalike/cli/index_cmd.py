from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lookalike.cli.common import (
    build_model_options,
    db_option,
    emit_json,
    json_option,
    model_options,
    progress_bar,
    stderr_is_terminal,
)
from lookalike.index.budget import KINDS

if TYPE_CHECKING:
    from lookalike.indexer import IndexReport


@click.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@model_options
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--index",
    "index_kind",
    type=click.Choice(KINDS),
    default=None,
    help="Search index to keep (remembered by the collection). auto: exact up to "
    "50,000 images, then an approximate index tuned to recall@10 >= 0.95 that fits "
    "--memory-budget.  [default: auto]",
)
@click.option(
    "--memory-budget",
    default=None,
    metavar="SIZE",
    callback=lambda _ctx, _param, value: _check_budget(value),
    help="RAM the index may use, e.g. 4G or 512M (remembered). [default: a quarter of RAM]",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where embedding runs: local threads, or a Ray cluster (pip install 'lookalike[ray]').",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="Ray cluster for --engine ray: auto or HOST:PORT (the head's GCS); run on a node "
    "of the cluster (Ray Client, ray://, can't run Ray Data). "
    "[default: a local Ray started for this run]",
)
@json_option
def index_command(
    paths: tuple[Path, ...],
    db: Path | str | None,
    model: str | None,
    weights: Path | None,
    pool: str | None,
    adapter: Path | None,
    batch_size: int,
    index_kind: str | None,
    memory_budget: str | None,
    engine: str,
    ray_address: str | None,
    as_json: bool,
) -> None:
    """Embed the images under PATHS into the collection (only new or changed files).

    Files that can't be read are skipped and listed; the run still succeeds. A PATH that
    does not exist is reported and makes the run exit 1, after the others are indexed.

    \b
    Examples:
      lookalike index ~/Pictures ~/Downloads
      lookalike index photos/ --db ./my-db --model efficientnet-lite2 --json
      lookalike index /archive --index hnsw-sq8 --memory-budget 4G
      lookalike index /shared/photos --engine ray --ray-address auto
    """
    from lookalike.collection import Collection
    from lookalike.engines import make_engine

    if ray_address is not None and engine != "ray":
        raise click.UsageError("--ray-address needs --engine ray")

    with (
        Collection.open(
            db,
            model=model,
            model_options=build_model_options(weights, pool),
            adapter=adapter,
            index_kind=index_kind,
            memory_budget=memory_budget,
            create=True,
        ) as col,
        make_engine(engine, col.embedder_spec(), ray_address) as runner,
        progress_bar("embedding", stderr_is_terminal()) as progress,
    ):
        report = col.index(list(paths), batch_size=batch_size, progress=progress, engine=runner)
    if report.repaired:
        click.echo(
            f"repaired: {report.repaired} images whose vectors were cut off the vector file "
            "were embedded again (or dropped, if their files are gone)",
            err=True,
        )
    if as_json:
        emit_json(report.to_json())
    else:
        _print_report(report)
    if report.missing:
        # The other PATHs are indexed; a typo'd or unmounted one must not pass unnoticed.
        for path in report.missing:
            click.echo(f"error: {path}: no such file or folder", err=True)
        sys.exit(1)


def _print_report(report: IndexReport) -> None:
    click.echo(
        f"{report.added} added, {report.updated} updated, {report.moved} moved, "
        f"{report.removed} removed, {report.unchanged} unchanged; "
        f"{report.total} images in the collection ({report.model})"
    )
    if report.ignored:
        click.echo(f"{report.ignored} non-image files ignored")
    for skip in report.skipped:
        click.echo(f"skipped {skip.path}: {skip.reason}", err=True)


def _check_budget(value: str | None) -> str | None:
    """A bad --memory-budget is a usage error (exit 2), caught before any work."""
    from lookalike.errors import IndexBuildError
    from lookalike.index.budget import parse_memory_budget

    if value is not None:
        try:
            parse_memory_budget(value)
        except IndexBuildError as exc:
            raise click.BadParameter(str(exc)) from None
    return value

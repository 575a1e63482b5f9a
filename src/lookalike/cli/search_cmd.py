from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from lookalike.cli.common import (
    build_model_options,
    db_option,
    echo_index_note,
    emit_json_array,
    json_option,
)
from lookalike.models.pooling import POOLS
from lookalike.results import QueryResult


@click.command("search")
@click.argument("queries", nargs=-1, type=click.Path(path_type=Path))
@db_option
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True
)
@click.option("--all", "all_images", is_flag=True, help="List every indexed image's neighbours.")
@click.option(
    "--under",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Only images at or below this folder (with --all: those images, among themselves).",
)
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a contact sheet PNG: each query beside its neighbours with rank and score.",
)
@click.option("--model", default=None, help="Must match the collection's model if given.")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--pool", type=click.Choice(POOLS), default=None, help="Default: the collection's.")
@click.option("--adapter", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--rerank",
    default="none",
    show_default=True,
    metavar="METHOD[:SETTINGS]",
    help="Re-order each query's shortlist: none, qe (alpha-query expansion), dba "
    "(database-side augmentation), dba+qe, kr (k-reciprocal), verify (images the query is a "
    "copy or crop of first, checked by SIFT + RANSAC: slow, needs the verify extra); settings "
    "as in qe:n=3,alpha=3, kr:k1=20,k2=6,lam=0.3,shortlist=50 or "
    "verify:inliers=10,share=0.5,contrast=0.005. Scores stay the cosine similarity.",
)
@json_option
def search_command(
    queries: tuple[Path, ...],
    db: Path | str | None,
    k: int,
    metric: str,
    all_images: bool,
    under: Path | None,
    sheet: Path | None,
    model: str | None,
    weights: Path | None,
    pool: str | None,
    adapter: Path | None,
    rerank: str,
    as_json: bool,
) -> None:
    """The k indexed images most similar to each QUERY image.

    Score is the cosine similarity (1 = identical direction); with --metric euclidean the
    distance between the normalised vectors is shown too (same ranking).

    \b
    Examples:
      lookalike search cat.jpg -k 5
      lookalike search a.jpg b.png --json --sheet neighbours.png
      lookalike search --all -k 3 --json
      lookalike search cat.jpg --rerank qe
      lookalike search crop.jpg --rerank verify
      lookalike search cat.jpg --under ~/Pictures/2024
      lookalike search cat.jpg --db milvus-lite:///data/photos.db
    """
    from lookalike.collection import Collection
    from lookalike.reranking import parse_rerank

    setup = parse_rerank(rerank)

    if bool(queries) == all_images:
        raise click.UsageError("give QUERY images, or --all (not both)")
    with Collection.open(
        db, model=model, model_options=build_model_options(weights, pool), adapter=adapter
    ) as col:
        # --all streams: each batch of neighbours is printed as soon as it is found.
        results: Iterable[QueryResult] = (
            col.search_all(k=k, metric=metric, rerank=setup, under=under)
            if all_images
            else col.search(list(queries), k=k, metric=metric, rerank=setup, under=under)
        )
        if sheet is not None:
            from lookalike.sheet import contact_sheet

            results = list(results)
            rows = [
                (r.query, [(h.path, f"#{h.rank} {h.score:.3f}") for h in r.results])
                for r in results
            ]
            contact_sheet(rows).save(sheet)
        if as_json:
            emit_json_array(r.to_json() for r in results)
        else:
            _print_results(results)
        echo_index_note(col)
    if sheet is not None and not as_json:
        click.echo(f"contact sheet written to {sheet}", err=True)


def _print_results(results: Iterable[QueryResult]) -> None:
    for result in results:
        click.echo(result.query)
        for hit in result.results:
            extra = f"  distance {hit.distance:.4f}" if hit.distance is not None else ""
            click.echo(f"  {hit.rank:>3}. {hit.score:.4f}{extra}  {hit.path}")

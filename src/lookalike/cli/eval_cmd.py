from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lookalike.cli.common import (
    DbParam,
    build_model_options,
    emit_json,
    json_option,
    model_options_with,
    progress_bar,
    stderr_is_terminal,
)

if TYPE_CHECKING:
    from rich.table import Table

    from lookalike.evaluation.runner import EvalResult


def _model_names(spec: str | None) -> list[str]:
    """Split "a,b" into ["a", "b"] (order kept, repeats dropped); None: the model a new
    collection gets on this machine (models.defaults)."""
    from lookalike.models.defaults import choose_default

    if spec is None:
        return [choose_default().model]
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise click.BadParameter("give at least one model name", param_hint="--model")
    return names


@click.command("eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_options_with(
    "Model name, or several separated by commas (see `lookalike models`); "
    "default: efficientnet-lite0."
)
@click.option(
    "-k",
    "k",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Neighbours per query.",
)
@click.option(
    "--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True
)
@click.option(
    "--queries",
    "queries_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A separate query set laid out class/image (default: leave-one-out).",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a Markdown report with PNG plots and contact sheets to this folder.",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--rerank",
    default="none",
    show_default=True,
    metavar="METHOD[:SETTINGS]",
    help="Score the neighbours as `lookalike search --rerank` gives them (qe, dba, dba+qe, "
    "kr, verify; settings as there).",
)
@click.option(
    "--db",
    type=DbParam(),
    default=None,
    help=(
        "Keep the embeddings in this collection (a folder or a Milvus URI) instead of the "
        "cache; it must be of the model. One --model only."
    ),
)
@json_option
def eval_command(
    dataset_dir: Path,
    model: str | None,
    weights: Path | None,
    pool: str | None,
    adapter: Path | None,
    k: int,
    metric: str,
    queries_dir: Path | None,
    report_dir: Path | None,
    batch_size: int,
    rerank: str,
    db: Path | str | None,
    as_json: bool,
) -> None:
    """Measure retrieval quality on labelled images laid out DATASET_DIR/class/image.

    Each image is a query against all the others (leave-one-out), or with --queries each
    image of a second folder is a query against DATASET_DIR. A neighbour is relevant when
    it has the query's class. Reports precision@k, mAP@k, recall@k and k-NN vote accuracy,
    overall and per class, and which classes get confused. --model takes one name or
    several separated by commas, printed side by side (default: efficientnet-lite0).
    Embeddings are cached, so a second run on the same folder and model embeds nothing.

    \b
    Examples:
      lookalike eval imagenette/val -k 10
      lookalike eval gallery/ --queries copies/ --model raw-pixels,efficientnet-lite0
      lookalike eval fashion-mnist/ --json --report out/
      lookalike eval originals/ --queries crops/ --rerank verify
    """
    from lookalike.evaluation.runner import evaluate
    from lookalike.reranking import parse_rerank

    setup = parse_rerank(rerank)  # a bad setting fails before any embedding

    names = _model_names(model)
    if weights is not None and len(names) > 1:
        raise click.UsageError("--weights applies to one model; give a single --model")
    if db is not None and len(names) > 1:
        raise click.UsageError("--db holds one model's vectors; give a single --model")
    if report_dir is not None and importlib.util.find_spec("matplotlib") is None:
        # Checked before embedding, which may take minutes.
        raise click.UsageError("--report needs matplotlib: pip install 'lookalike[eval]'")
    options = build_model_options(weights, pool)
    results = []
    for name in names:
        with progress_bar(f"embedding ({name})", stderr_is_terminal()) as progress:
            results.append(
                evaluate(
                    dataset_dir,
                    name,
                    k=k,
                    metric=metric,
                    queries_dir=queries_dir,
                    model_options=options,
                    adapter=adapter,
                    batch_size=batch_size,
                    progress=progress,
                    db=db,
                    rerank=setup,
                )
            )
    from lookalike.evaluation.report import against_first

    versus = against_first(results)  # once, for the report and the tables or JSON
    if report_dir is not None:
        from lookalike.evaluation.report import write_report

        written = write_report(results, report_dir, versus)
    if as_json:
        data = [r.to_json() for r in results]
        for entry, compared in zip(data[1:], versus, strict=True):
            entry["against"] = compared
        emit_json(data[0] if len(data) == 1 else data)
    else:
        _print_tables(results, versus)
    for path, reason in results[0].skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    if report_dir is not None:
        click.echo(f"report written to {written}", err=True)


def _against_table(results: list[EvalResult], versus: list[dict[str, Any]]) -> Table:
    """Each later model against the first, query by query: is the difference chance?"""
    from rich.table import Table

    from lookalike.evaluation.report import against_first_rows

    k = results[0].k
    table = Table(
        title=f"query by query against {results[0].model}: queries higher / lower, "
        "two-sided sign test p; 'clearly' when p < 0.05, else 'chance'"
    )
    table.add_column("model", no_wrap=True)
    for name in (f"P@{k}", f"AP@{k}"):
        table.add_column(name, justify="right")
        table.add_column("p", justify="right")
        table.add_column("verdict", no_wrap=True)
    for cells in against_first_rows(results, versus):
        table.add_row(*cells)
    return table


def _print_tables(results: list[EvalResult], versus: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from lookalike.evaluation.metrics import top_confusions
    from lookalike.evaluation.report import per_class_rows

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    console = Console()
    first = results[0]
    k = first.k
    if first.mode == "leave-one-out":
        title = f"{first.dataset}: leave-one-out, {len(first.query_paths)} images"
    else:
        title = f"{first.queries_dir} ({len(first.query_paths)}) against {first.dataset}"
    reranked = "" if first.rerank == "none" else f", re-ranked by {first.rerank}"
    summary = Table(title=f"{title}, k={k}, {first.metric}{reranked}")
    summary.add_column("model", no_wrap=True)
    for column in ("queries", f"P@{k}", f"mAP@{k}", f"R@{k}", "k-NN acc", "embedded"):
        summary.add_column(column, justify="right")
    for r in results:
        o = r.scores.overall()
        summary.add_row(
            r.model,
            str(len(r.query_paths)),
            fmt(o["precision_at_k"]),
            fmt(o["map_at_k"]),
            fmt(o["recall_at_k"]),
            fmt(o["knn_accuracy"]),
            f"{r.embedded} ({r.embed_seconds:.1f}s)",
        )
    console.print(summary)
    if len(results) > 1:
        console.print(_against_table(results, versus))

    # One model: P@k and mAP@k per class; several: P@k of each (the report has both).
    single = len(results) == 1
    per_class = Table(title="per class")
    per_class.add_column("class")
    per_class.add_column("queries", justify="right")
    for r in results:
        per_class.add_column(f"P@{k}" if single else f"P@{k} {r.model}", justify="right")
        if single:
            per_class.add_column(f"mAP@{k}", justify="right")
    for name, queries, values in per_class_rows(results):
        shown = values if single else values[::2]  # values: P, mAP of each model in turn
        per_class.add_row(name, str(queries), *(fmt(v) for v in shown))
    console.print(per_class)

    for r in results:
        confusions = top_confusions(r.scores.confusion, r.class_names, limit=5)
        if confusions:
            console.print(f"most confused ({r.model}, k-NN vote):")
            for c in confusions:
                console.print(
                    f"  {c['true']} -> {c['predicted']}: {c['count']} "
                    f"({100 * c['share']:.0f}% of {c['true']})",
                    highlight=False,
                )

from __future__ import annotations

from pathlib import Path

import click

from lookalike.cli.common import (
    build_model_options,
    emit_json,
    json_option,
    progress_bar,
    stderr_is_terminal,
)
from lookalike.models.pooling import POOLS


@click.command("fit")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Adapter file to write (e.g. my-domain.npz); use it with --adapter.",
)
@click.option("--model", default=None, help="Model to adapt (default: efficientnet-lite0).")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Load the model's weights from this file.",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default=None,
    help=(
        "Feature pooling (default: the model's own; gem for EfficientNet-Lite). gem-grid "
        "(EfficientNet-Lite) lets the adapter see where things are: best on Fashion-MNIST."
    ),
)
@click.option(
    "--kind",
    type=click.Choice(["mlp", "linear", "pca"]),
    default="mlp",
    show_default=True,
    help="mlp/linear: learnt from the class folders; pca: PCA whitening, labels unused.",
)
@click.option(
    "--loss",
    type=click.Choice(["supcon", "softmax"]),
    default="supcon",
    show_default=True,
    help="mlp/linear: supervised contrastive, or a cosine-classifier cross-entropy.",
)
@click.option("--dim", default=256, show_default=True, type=click.IntRange(1), help="Output size.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(1))
@click.option(
    "--members",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="mlp/linear: networks trained apart and merged into one adapter (an ensemble; "
    "they share --dim); each one costs another training.",
)
@click.option(
    "--mirror/--no-mirror",
    default=True,
    show_default=True,
    help="mlp/linear: also train on the images flipped left-right (embedded once more, "
    "cached). Leave off where left and right differ (text, some logos).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same file.")
@click.option(
    "--val-fraction",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Share of images held out to measure precision@10 before/after (at most 2000).",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@json_option
def fit_command(
    dataset_dir: Path,
    out: Path,
    model: str | None,
    weights: Path | None,
    pool: str | None,
    kind: str,
    loss: str,
    dim: int,
    epochs: int,
    members: int,
    mirror: bool,
    seed: int,
    val_fraction: float,
    batch_size: int,
    as_json: bool,
) -> None:
    """Learn an adapter that pulls images of the same class together, from DATASET_DIR
    laid out class/image (one sub-folder per class).

    The model stays frozen: its vectors are computed once, of each image and of it
    flipped left-right (cached, so a second fit is quick), and a small projection is
    trained on top. Index, search and evaluate with --adapter FILE to use it.

    \b
    Examples:
      lookalike fit shoes/ --out shoes.npz
      lookalike fit shoes/ --out shoes.npz --model vgg16 --epochs 50 --seed 1 --json
      lookalike index ~/shop-photos --db shop-db --adapter shoes.npz
    """
    from lookalike.fitting import FitOptions, fit_folder

    options = FitOptions(
        kind=kind,
        loss=loss,
        dim=dim,
        epochs=epochs,
        members=members,
        mirror=mirror,
        seed=seed,
        val_fraction=val_fraction,
    )
    with progress_bar("embedding", stderr_is_terminal()) as progress:
        report = fit_folder(
            dataset_dir,
            out,
            model=model,
            model_options=build_model_options(weights, pool),
            options=options,
            batch_size=batch_size,
            progress=progress,
            log=lambda line: click.echo(line, err=True),
        )
    if as_json:
        emit_json(report.to_json())
        return
    click.echo(
        f"wrote {report.out} ({report.kind}, {report.dim_in} -> {report.dim_out}, "
        f"{report.model}): {report.train_images} images in {report.classes} classes, "
        f"{report.seconds:.1f} s"
    )
    if report.val_precision_before is not None and report.val_precision_after is not None:
        click.echo(
            f"held-out precision@10 ({report.val_images} images): "
            f"{report.val_precision_before:.3f} -> {report.val_precision_after:.3f}"
        )
    if report.skipped:
        click.echo(f"{report.skipped} files could not be read and were skipped", err=True)

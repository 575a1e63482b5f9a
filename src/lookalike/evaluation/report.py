"""A Markdown report of one or more evaluations, with PNG plots and contact sheets.

Files written to the output folder::

    report.md                 summary, per-class table, confusions, links to the pictures
    precision_at_k.png        precision@i against i = 1..k, one line per model
    confusion_<model>.png     k-NN vote confusion heatmap (rows: true class, row-normalised)
    best_<model>.png          the best queries beside their neighbours, with scores
    worst_<model>.png         the worst ones
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.evaluation.metrics import top_confusions
from lookalike.evaluation.runner import EvalResult

SHEET_QUERIES = 8  # queries per best/worst contact sheet
SHEET_NEIGHBOURS = 10  # neighbours shown per query (k may be larger)
ANNOTATE_UP_TO = 20  # confusion cells carry their count up to this many classes
LABEL_UP_TO = 40  # and the axes name the classes up to this many


def slug(name: str) -> str:
    """A model name made safe for a file name ("vgg16+resnet" -> "vgg16_resnet")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def ranked_queries(result: EvalResult) -> np.ndarray:
    """Query indices from best to worst: by AP@k, then precision@k, then path.

    Queries with nothing to find (AP undefined) are left out unless no query has an AP.
    """
    s = result.scores
    ap = s.average_precision
    usable = ~np.isnan(ap) if (~np.isnan(ap)).any() else np.ones(len(ap), dtype=bool)
    index = np.flatnonzero(usable)
    key_ap = np.nan_to_num(ap[index], nan=0.0)
    paths = np.array(result.query_paths, dtype=object)[index]
    path_rank = np.argsort(np.argsort(paths, kind="stable"), kind="stable")
    # lexsort: last key is primary. Best first: high AP, high precision, then path order.
    order = np.lexsort((path_rank, -s.precision[index], -key_ap))
    return index[order]


def plot_precision_curves(results: list[EvalResult], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot()
    for result in results:
        ks = np.arange(1, len(result.scores.curve) + 1)
        ax.plot(ks, result.scores.curve, marker="o", markersize=3, label=result.model)
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("mean precision@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Precision@k against k")
    fig.tight_layout()
    fig.savefig(path)


def plot_confusion(result: EvalResult, path: Path) -> None:
    """Rows: classes that had queries; columns: those plus any class predicted."""
    from matplotlib.figure import Figure

    matrix = result.scores.confusion
    names = result.class_names
    rows = np.flatnonzero(matrix.sum(axis=1) > 0)
    cols = np.union1d(rows, np.flatnonzero(matrix.sum(axis=0) > 0))
    sub = matrix[np.ix_(rows, cols)]
    shares = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    side = min(14.0, 3.0 + 0.45 * len(cols))
    fig = Figure(figsize=(side + 1.5, min(14.0, 3.0 + 0.45 * len(rows))), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="share of the class's queries")
    if len(cols) <= LABEL_UP_TO:
        ax.set_xticks(range(len(cols)), [names[c] for c in cols], rotation=60, ha="right")
        ax.set_yticks(range(len(rows)), [names[r] for r in rows])
    if len(cols) <= ANNOTATE_UP_TO:
        for (i, j), count in np.ndenumerate(sub):
            if count:
                colour = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xlabel("predicted (k-NN vote)")
    ax.set_ylabel("true class")
    ax.set_title(f"{result.model}: k-NN vote confusion (k={result.k})")
    fig.tight_layout()
    fig.savefig(path)


def write_sheet(result: EvalResult, queries: np.ndarray, path: Path) -> None:
    """Contact sheet: each query, then its neighbours captioned with score and class
    ("=" same class as the query, "x" another)."""
    from lookalike.sheet import contact_sheet

    labels = result.neighbour_labels()
    names = result.class_names
    shown = result.distances() if result.metric == "euclidean" else result.neighbour_scores
    prefix = "d=" if result.metric == "euclidean" else ""
    rows = []
    for q in queries:
        own = result.scores.query_labels[q]
        cells = []
        for j in range(min(result.k, SHEET_NEIGHBOURS)):
            g = int(result.neighbours[q, j])
            if g < 0:
                continue
            mark = "=" if labels[q, j] == own else "x"
            caption = f"{prefix}{float(shown[q, j]):.3f} {mark} {names[labels[q, j]]}"
            cells.append((result.gallery_paths[g], caption))
        rows.append((result.query_paths[q], cells))
    contact_sheet(rows, thumb=128).save(path)


def _summary_table(results: list[EvalResult]) -> list[str]:
    k = results[0].k
    lines = [
        f"| model | queries | P@{k} | mAP@{k} | R@{k} | k-NN accuracy | embedded now | embed s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        o = r.scores.overall()
        lines.append(
            f"| {r.model} | {len(r.query_paths)} | {_fmt(o['precision_at_k'])} | "
            f"{_fmt(o['map_at_k'])} | {_fmt(o['recall_at_k'])} | {_fmt(o['knn_accuracy'])} | "
            f"{r.embedded} | {r.embed_seconds:.1f} |"
        )
    return lines


def per_class_rows(results: list[EvalResult]) -> list[tuple[str, int, list[float | None]]]:
    """(class, queries, [P@k, mAP@k of each model in turn]) for side-by-side tables."""
    tables = [r.scores.per_class() for r in results]
    rows = []
    for name, row in tables[0].items():
        values: list[float | None] = []
        for table in tables:
            mine = table.get(name, {})
            values += [mine.get("precision_at_k"), mine.get("map_at_k")]
        rows.append((name, int(row["queries"]), values))
    return rows


def _per_class_table(results: list[EvalResult]) -> list[str]:
    k = results[0].k
    header = "| class | queries | " + " | ".join(
        f"{r.model} P@{k} | {r.model} mAP@{k}" for r in results
    )
    lines = [header + " |", "|---|---:|" + "---:|" * (2 * len(results))]
    for name, queries, values in per_class_rows(results):
        lines.append(f"| {name} | {queries} | " + " | ".join(_fmt(v) for v in values) + " |")
    return lines


def _query_list(result: EvalResult, queries: np.ndarray) -> list[str]:
    s = result.scores
    out = []
    for n, q in enumerate(queries, 1):
        ap = s.average_precision[q]
        out.append(
            f"{n}. `{result.query_paths[q]}` ({s.class_names[s.query_labels[q]]}): "
            f"P@{result.k} {s.precision[q]:.2f}, AP@{result.k} "
            f"{'–' if np.isnan(ap) else f'{ap:.2f}'}"
        )
    return out


def against_first(results: list[EvalResult]) -> list[dict[str, Any]]:
    """Each later model against the first, query by query (``EvalResult.against``)."""
    return [r.against(results[0]) for r in results[1:]]


def against_first_rows(results: list[EvalResult], versus: list[dict[str, Any]]) -> list[list[str]]:
    """Table cells of ``against_first(results)``: model, then for P@k and AP@k: higher /
    lower, the sign test's p, the verdict."""
    rows = []
    for r, compared in zip(results[1:], versus, strict=True):
        cells = [r.model]
        for key in ("precision_at_k", "map_at_k"):
            c = compared[key]
            if c is None:
                cells += ["–", "–", "no shared queries"]
            else:
                verdict = "chance" if c["verdict"] == "no clear difference" else c["verdict"]
                cells += [f"{c['better']} / {c['worse']}", f"{c['sign_test_p']:.2g}", verdict]
        rows.append(cells)
    return rows


def _against_first_table(results: list[EvalResult], versus: list[dict[str, Any]]) -> list[str]:
    k = results[0].k
    lines = [
        f"## Query by query against {results[0].model}",
        "",
        f"Queries that score higher / lower than with {results[0].model}, and the two-sided "
        "sign test's p: 'clearly' better or worse when p < 0.05, else the split is chance.",
        "",
        f"| model | P@{k} higher / lower | p | verdict | AP@{k} higher / lower | p | verdict |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(c) + " |" for c in against_first_rows(results, versus)]
    return [*lines, ""]


def write_report(
    results: list[EvalResult], out_dir: Path, versus: list[dict[str, Any]] | None = None
) -> Path:
    """Write report.md and its pictures under ``out_dir``; returns the report's path.
    ``versus``: ``against_first(results)`` when the caller has it already."""
    if not results:
        raise ValueError("no evaluation results to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    first = results[0]
    k = first.k
    if first.mode == "leave-one-out":
        setup = (
            f"Leave-one-out: each of the {len(first.query_paths)} images of `{first.dataset}` "
            f"is a query against all the others ({len(first.class_names)} classes)."
        )
    else:
        setup = (
            f"{len(first.query_paths)} queries from `{first.queries_dir}` against the "
            f"{len(first.gallery_paths)} images of `{first.dataset}`."
        )
    lines = [
        "# Retrieval quality",
        "",
        setup,
        f"k = {k}, metric = {first.metric}; written {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        *_summary_table(results),
        "",
        f"P@{k}: share of the {k} neighbours in the query's class. R@{k}: share of the "
        f"query's class found in the {k}. mAP@{k}: mean average precision, normalised by "
        f"min({k}, class size). k-NN accuracy: majority vote of the {k} labels. Queries with "
        "nothing to find (a class of one image) count as 0 in P and accuracy and are left "
        "out of R and mAP.",
        "",
        "![precision@k against k](precision_at_k.png)",
        "",
    ]
    if len(results) > 1:
        lines += _against_first_table(results, against_first(results) if versus is None else versus)
    plot_precision_curves(results, out_dir / "precision_at_k.png")

    for result in results:
        name = slug(result.model)
        lines += [f"## {result.model}", "", "### Most confused", ""]
        confusions = top_confusions(result.scores.confusion, result.class_names, limit=10)
        lines += [
            f"- {c['true']} voted as {c['predicted']}: {c['count']} queries "
            f"({100 * c['share']:.0f}% of {c['true']})"
            for c in confusions
        ] or ["- none: every k-NN vote was right"]
        plot_confusion(result, out_dir / f"confusion_{name}.png")
        lines += ["", f"![confusion heatmap](confusion_{name}.png)", ""]
        ranked = ranked_queries(result)
        n = min(SHEET_QUERIES, len(ranked))
        for title, picked in (("Best", ranked[:n]), ("Worst", ranked[::-1][:n])):
            file = f"{title.lower()}_{name}.png"
            write_sheet(result, picked, out_dir / file)
            lines += [
                f"### {title} queries",
                "",
                "Captions: score (cosine similarity; d = euclidean distance), `=` same class "
                "as the query or `x` another, and the neighbour's class.",
                "",
                f"![{title.lower()} queries]({file})",
                "",
                *_query_list(result, picked),
                "",
            ]
    lines += ["## Per class", "", *_per_class_table(results), ""]
    skipped = first.skipped
    if skipped:
        lines += [f"## Skipped files ({len(skipped)})", ""]
        lines += [f"- `{p}`: {reason}" for p, reason in skipped[:200]]
        lines.append("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path

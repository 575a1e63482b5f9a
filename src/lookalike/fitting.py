"""Learning an adapter for a domain: ``lookalike fit DATASET_DIR --out FILE``.

The images of a folder laid out ``class/image`` are embedded with the frozen model (into a
cached collection, so fitting again does not embed again), by default also flipped
left-right (``mirror``: a second view of every image, cached too), then one of:

- ``mlp`` (default): d -> 1024 -> ReLU -> dim, trained so that images of one class end up
  close together on the unit sphere, which is what the search needs;
- ``linear``: a projection d -> dim trained the same way (less capacity, faster to fit);
- ``pca``: PCA whitening learned on the vectors, labels unused (any folder will do).

Two losses train the projections. ``supcon`` (default), the supervised contrastive loss
(Khosla et al., 2020): in each batch, every image's same-class images must be its most
similar ones, at temperature 0.15; it acts on every dimension of the output, so nothing
but the class survives where it matters. ``softmax``: cross-entropy of a cosine classifier
(normalised features and class weights, fixed scale); it separates the classes but lets
any variation that the classifier ignores remain, and retrieves less well (measured on
Fashion-MNIST in BENCHMARKS.md). Each step draws one view of each image. ``members``
networks (3 by default) are trained apart and merged into one adapter of the same format:
an ensemble, whose neighbours are better than any member's.

A stratified held-out part of the images (``val_fraction``) measures precision@10 before
and after, so the report says whether the adapter helps. Training runs on the CPU with
PyTorch, seeded: the same vectors, options and seed give the same adapter file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lookalike.adapters import KINDS, Adapter, AdapterError
from lookalike.errors import ModelMismatchError
from lookalike.memory import physical_memory_bytes
from lookalike.models import DEFAULT_MODEL, Embedder, ModelOptions
from lookalike.models.torch_extra import require_torch
from lookalike.vectors import FloatArray, l2_normalize

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from lookalike.collection import Collection

LogFn = Callable[[str], None]
ProgressFn = Callable[[int, int], None]

SUPERVISED = ("linear", "mlp")
LOSSES = ("supcon", "softmax")
STANDARDIZE = ("global", "dims")
VAL_CAP = 2000  # held-out images at most: enough for a P@10 estimate, cheap to score
K = 10  # precision@K in the report
MIN_STEPS = 16  # optimiser steps per epoch, at least (smaller batches for small folders)


@dataclass(frozen=True)
class FitOptions:
    # Defaults chosen on Fashion-MNIST, on a validation split of its training images
    # (BENCHMARKS.md, Model adaptation). mlp: +2.2 points of P@10 over linear, and cheap to
    # apply (a few MFLOP per vector, against ~400 for the CNN).
    kind: str = "mlp"
    dim: int = 256  # output dimension (all members together)
    epochs: int = 15  # as good as 25 or 30 once mirrored views and 3 members are used
    seed: int = 0
    batch_size: int = 1024  # more negatives per anchor than 256: +0.3 points
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 1024  # mlp only
    standardize: str = "global"  # inputs centred, then scaled: global (+0.5) | per dims
    members: int = 3  # networks trained apart and merged into one adapter: +0.4
    mirror: bool = True  # fit_folder: also embed the images flipped left-right: +0.2
    loss: str = "supcon"  # supcon | softmax
    temperature: float = 0.15  # supcon
    scale: float = 16.0  # softmax: cosine-classifier logit scale (inverse temperature)
    label_smoothing: float = 0.0  # softmax
    val_fraction: float = 0.1

    def check(self) -> None:
        if self.kind not in KINDS:
            raise AdapterError(
                f"unknown adapter kind {self.kind!r}; use one of: {', '.join(KINDS)}"
            )
        if self.loss not in LOSSES:
            raise AdapterError(f"unknown loss {self.loss!r}; use one of: {', '.join(LOSSES)}")
        if self.standardize not in STANDARDIZE:
            raise AdapterError(
                f"unknown standardize {self.standardize!r}; use one of: {', '.join(STANDARDIZE)}"
            )
        if min(self.dim, self.epochs, self.batch_size, self.hidden, self.members) < 1:
            raise AdapterError("dim, epochs, batch size, hidden size and members must be >= 1")
        if self.members > self.dim:
            raise AdapterError(f"{self.members} members need an output of at least that size")
        if not 0.0 <= self.val_fraction < 1.0:
            raise AdapterError(f"val fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class LabelledVectors:
    """A folder's vectors, with ``labels`` indexing ``classes`` (-1: not in a class folder)."""

    vectors: FloatArray
    labels: npt.NDArray[np.int64]
    classes: list[str]
    model: dict[str, Any]  # identity of the model that made the vectors
    skipped: int = 0
    # Other views of the same images (e.g. mirrored), row for row: training draws one of
    # the views for each image at each step, a data augmentation on frozen features.
    views: list[FloatArray] = field(default_factory=list)


@dataclass
class FitReport:
    out: str
    sha256: str
    kind: str
    model: str
    dim_in: int
    dim_out: int
    images: int
    classes: int
    train_images: int
    val_images: int
    seed: int
    epochs: int
    skipped: int
    seconds: float
    final_loss: float | None = None
    val_precision_before: float | None = None  # P@10 among held-out images, no adapter
    val_precision_after: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_folder(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: str | None = None,
    model_options: ModelOptions | None = None,
    options: FitOptions | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> FitReport:
    """Embed ``dataset`` (class/image folders), learn an adapter, write it to ``out``."""
    options = options or FitOptions()
    options.check()
    if options.kind in SUPERVISED:  # say so before minutes of embedding, not after
        require_torch(f"lookalike fit --kind {options.kind}")
    started = time.perf_counter()
    mirror = options.mirror and options.kind in SUPERVISED  # pca learns from the vectors only
    data = embed_folder(dataset, model, model_options, batch_size, progress, mirror)
    adapter, report = fit_vectors(data, options, log)
    adapter.meta["dataset"] = str(Path(dataset).expanduser().absolute())
    digest = adapter.save(out)
    report.out = str(Path(out).expanduser().absolute())
    report.sha256 = digest
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def embed_folder(
    dataset: str | os.PathLike[str],
    model: str | None = None,
    model_options: ModelOptions | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    mirror: bool = False,
) -> LabelledVectors:
    """Vectors of every image under ``dataset`` with its class (first folder below it);
    ``mirror``: with the vectors of the images flipped left-right as another view.

    The vectors live in collections under the cache dir, keyed by folder, model and view:
    indexing is incremental, so a second fit embeds only new or changed images.
    """
    root = Path(dataset).expanduser().absolute()
    if not root.is_dir():
        raise AdapterError(f"{root}: not a folder; lay images out as {root}/<class>/<image>")
    model = _canonical(model or DEFAULT_MODEL)
    model_options = model_options or ModelOptions()
    paths, vectors, identity, skipped = _cached_vectors(
        root, model, model_options, batch_size, progress, mirrored=False
    )
    names = [_class_of(Path(p), root) for p in paths]
    classes = sorted({n for n in names if n is not None})
    number = {c: i for i, c in enumerate(classes)}
    labels = np.array([number[n] if n is not None else -1 for n in names], dtype=np.int64)
    data = LabelledVectors(vectors, labels, classes, identity, skipped=skipped)
    if mirror:
        m_paths, m_vectors, _, _ = _cached_vectors(
            root, model, model_options, batch_size, progress, mirrored=True
        )
        row = {p: i for i, p in enumerate(m_paths)}
        view = vectors.copy()  # an image not read the second time is its own mirror view
        for i, path in enumerate(paths):
            if path in row:
                view[i] = m_vectors[row[path]]
        data.views = [view]
    return data


def _cached_vectors(
    root: Path,
    model: str,
    model_options: ModelOptions,
    batch_size: int,
    progress: ProgressFn | None,
    mirrored: bool,
) -> tuple[list[str], FloatArray, dict[str, Any], int]:
    """(paths sorted, their vectors, the embedder's identity, files skipped) of one view."""
    from lookalike.labelled_vectors import indexed_vectors
    from lookalike.paths import cache_dir

    parts = [str(root), model, str(model_options.pool), str(model_options.weights or "")]
    key = json.dumps(parts + (["mirror"] if mirrored else [])).encode()
    db = cache_dir() / "fit" / hashlib.sha256(key).hexdigest()[:16]
    for attempt in (1, 2):
        try:
            with _open_cache(db, model, model_options, mirrored) as col:
                report = col.index([root], batch_size=batch_size, progress=progress)
                paths, vectors = indexed_vectors(col)
                identity = dict(col.backend.manifest["model"])
            break
        except ModelMismatchError:
            # The cached vectors came from other weights (a replaced file): start over.
            if attempt == 2:
                raise
            shutil.rmtree(db, ignore_errors=True)
    return paths, vectors, identity, len(report.skipped)


def _open_cache(db: Path, model: str, model_options: ModelOptions, mirrored: bool) -> Collection:
    from lookalike.collection import Collection
    from lookalike.models import create_embedder
    from lookalike.store import Store

    if not mirrored:
        return Collection.open(db, model=model, model_options=model_options, create=True)
    # Collection.open knows registered models only; this one wraps the model.
    embedder = MirroredEmbedder(create_embedder(model, model_options))
    manifest = Store.read_manifest(db)
    if manifest is None:
        store = Store.create(db, {"model": embedder.info.identity(), "adapter": None})
    else:
        store = Store(db, manifest)
    return Collection(store, model_options, None, embedder)


class MirroredEmbedder(Embedder):
    """A model fed the images flipped left-right: a second view of each training image.
    Its identity says so, so its vectors never mix with the plain model's."""

    def __init__(self, base: Embedder) -> None:
        self.base = base
        preprocessing = {**base.info.preprocessing, "mirror": True}
        self.info = dataclasses.replace(base.info, preprocessing=preprocessing)

    @property
    def draft_size(self) -> int:
        return self.base.draft_size

    def prepare(self, image: Image.Image) -> Any:
        from PIL import ImageOps

        return self.base.prepare(ImageOps.mirror(image))

    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        return self.base.embed_prepared(batch)

    @property
    def inference_lanes(self) -> int:
        return self.base.inference_lanes

    def embed_serial(self, batch: Sequence[Any]) -> FloatArray:
        return self.base.embed_serial(batch)


def _class_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) >= 2 else None


def _canonical(model: str) -> str:
    if "+" in model:
        from lookalike.models.combined import canonical_name

        return canonical_name(model)
    return model


# ----- learning ---------------------------------------------------------------------------


def fit_vectors(
    data: LabelledVectors, options: FitOptions, log: LogFn | None = None
) -> tuple[Adapter, FitReport]:
    """Learn an adapter from labelled vectors; the report is filled but for out/sha256."""
    options.check()
    log = log or (lambda _line: None)
    x = l2_normalize(data.vectors) if len(data.vectors) else data.vectors
    views = [l2_normalize(v) if len(v) else v for v in data.views]
    labelled = data.labels >= 0
    if options.kind in SUPERVISED:
        if len(data.classes) < 2:
            raise AdapterError(
                f"{options.kind} adapters learn from classes: need images in at least 2 class "
                f"folders, found {len(data.classes)} (--kind pca needs no classes)"
            )
        if not labelled.all():  # a copy of every vector only when some must go
            x, views = x[labelled], [v[labelled] for v in views]
        y = data.labels[labelled]
    else:
        y = data.labels
    if len(x) < 2:
        raise AdapterError(f"need at least 2 images to fit an adapter, found {len(x)}")
    if options.kind in SUPERVISED:
        _check_memory(len(x), int(x.shape[1]), 1 + len(views))
    train, val = split(y, options.val_fraction, options.seed)
    report = FitReport(
        out="",
        sha256="",
        kind=options.kind,
        model=str(data.model["model"]),
        dim_in=int(x.shape[1]),
        dim_out=0,
        images=len(x),
        classes=len(data.classes),
        train_images=len(train),
        val_images=len(val),
        seed=options.seed,
        epochs=options.epochs if options.kind in SUPERVISED else 0,
        skipped=data.skipped,
        seconds=0.0,
    )
    if options.kind == "pca":
        layers = pca_whitening(x[train], options.dim)
    else:
        layers, report.history = train_projection(
            x[train], y[train], len(data.classes), options, log, [v[train] for v in views]
        )
        report.final_loss = report.history[-1]["loss"] if report.history else None
    adapter = Adapter(
        kind=options.kind,
        layers=layers,
        model=data.model,
        meta={
            "seed": options.seed,
            "epochs": report.epochs,
            "classes": data.classes,
            "train_images": len(train),
            "options": {k: v for k, v in options.__dict__.items() if k != "seed"},
        },
    )
    report.dim_out = adapter.dim_out
    labelled_val = val[y[val] >= 0]
    if len(labelled_val) > 1:
        report.val_precision_before = precision_at_k(x[labelled_val], y[labelled_val])
        report.val_precision_after = precision_at_k(adapter.apply(x[labelled_val]), y[labelled_val])
        log(
            f"held-out P@{K} ({len(labelled_val)} images): "
            f"{report.val_precision_before:.4f} without the adapter, "
            f"{report.val_precision_after:.4f} with it"
        )
    return adapter, report


# Peak memory of a supervised fit, in multiples of its input (the vectors and their views):
# the input, its normalised copy, the training rows and their standardised stack, measured
# at 3.83x (benchmarks/fit_memory.py, BENCHMARKS.md "fit's memory"); rounded up.
FIT_MEMORY_FACTOR = 4.0


def fit_memory_bytes(images: int, dim: int, views: int) -> int:
    """About the most memory a supervised fit of these vectors holds at once."""
    return int(FIT_MEMORY_FACTOR * images * dim * views * 4)


def _check_memory(images: int, dim: int, views: int) -> None:
    """Refuse a fit that cannot fit in this machine's memory, rather than be killed."""
    needed, total = fit_memory_bytes(images, dim, views), physical_memory_bytes()
    if needed > total:
        raise AdapterError(
            f"fitting {images} images of {dim}-d vectors ({views} view(s) each) needs about "
            f"{needed / 2**30:.1f} GiB of memory, more than this machine's "
            f"{total / 2**30:.1f} GiB; fit on fewer images, with --no-mirror (one view), or "
            "with a --pool of smaller vectors (gem: 1280-d for lite0)"
        )


def split(
    labels: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Stratified (train, val) index arrays; val holds ~fraction of each class, capped."""
    n = len(labels)
    if fraction <= 0 or n < 4:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    fraction = min(fraction, VAL_CAP / n)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = round(fraction * len(members))
        if take and len(members) - take >= 1:
            val.append(rng.permutation(members)[:take])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def precision_at_k(vectors: FloatArray, labels: npt.NDArray[np.int64], k: int = K) -> float:
    """Mean leave-one-out precision@k with exact cosine search (small sets only)."""
    k = min(k, len(vectors) - 1)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return float(np.mean(labels[nearest] == labels[:, None]))


def pca_whitening(x: FloatArray, dim: int) -> list[tuple[FloatArray, FloatArray]]:
    """One affine layer: centre, project on the top ``dim`` principal axes, whiten."""
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x.astype(np.float64) - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    keep = min(dim, len(x) - 1, x.shape[1])
    eigvals, eigvecs = eigvals[order[:keep]], eigvecs[:, order[:keep]]
    # Axes have arbitrary signs; fix them so that equal data give equal files.
    signs = np.sign(eigvecs[np.argmax(np.abs(eigvecs), axis=0), np.arange(keep)])
    eigvecs = eigvecs * signs
    # A floor on the variances keeps near-empty axes from being blown up into noise.
    floor = 1e-3 * float(eigvals[0]) if keep else 0.0
    w = eigvecs / np.sqrt(np.maximum(eigvals, 0.0) + floor)
    b = -mean @ w
    return [(w.astype(np.float32), b.astype(np.float32))]


def train_projection(
    x: FloatArray,
    y: npt.NDArray[np.int64],
    n_classes: int,
    options: FitOptions,
    log: LogFn,
    views: list[FloatArray] | None = None,
) -> tuple[list[tuple[FloatArray, FloatArray]], list[dict[str, float]]]:
    """Train the projection (linear or mlp); see the module doc. ``views``: other vectors
    of the same images, row for row, drawn from at random in training. With several
    ``members``, each is trained on its own (own seed) and the result computes them all."""
    torch = require_torch(f"training a {options.kind} adapter")

    mean = x.mean(axis=0)
    std = x.std(axis=0)
    if options.standardize == "global":
        # One scale for all dimensions: per-dimension scaling blows the nearly-always-zero
        # dimensions of ReLU features up into noise (-0.5 points of P@10, BENCHMARKS.md).
        std = np.full_like(std, std.mean())
    std = std + 1e-6
    # (views, n, d): view 0 is the vectors themselves. Standardised in place: the whole
    # expression would hold three more copies of every view at once (BENCHMARKS.md).
    stacked = np.stack([x, *(views or [])]).astype(np.float32, copy=False)
    stacked -= mean.astype(np.float32)
    stacked /= std.astype(np.float32)
    xs = torch.from_numpy(stacked)
    ys = torch.from_numpy(y.astype(np.int64))
    members: list[list[tuple[FloatArray, FloatArray]]] = []
    history: list[dict[str, float]] = []
    threads = torch.get_num_threads()
    # One thread: these small matrices gain little from more (and lose a lot when the
    # cores are busy), and a fixed thread count keeps the arithmetic, so the file, the same.
    torch.set_num_threads(1)
    try:
        for member in range(options.members):
            seed = member_seed(options.seed, member)
            say = log if options.members == 1 else _prefixed(log, member, options.members)
            # The members share the output dimension: together they give ``dim``.
            dim = options.dim // options.members + (member < options.dim % options.members)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net, member_history = _train(
                    xs, ys, n_classes, dataclasses.replace(options, dim=dim), say, seed
                )
            members.append(_export_layers(net, mean, std))
            if options.members > 1:
                member_history = [{"member": member + 1, **h} for h in member_history]
            history += member_history
    finally:
        torch.set_num_threads(threads)
    return merge_members(members), history


def member_seed(seed: int, member: int) -> int:
    """The first member trains with ``seed`` itself (one member: the plain adapter)."""
    if member == 0:
        return seed
    return int(np.random.SeedSequence([seed, member]).generate_state(1)[0])


def _prefixed(log: LogFn, member: int, members: int) -> LogFn:
    return lambda line: log(f"member {member + 1}/{members}, {line}")


def merge_members(
    members: list[list[tuple[FloatArray, FloatArray]]],
) -> list[tuple[FloatArray, FloatArray]]:
    """One chain of layers whose output is the members' outputs side by side: first layers
    side by side on the shared input, every later layer block-diagonal. The adapter's final
    L2 normalisation then makes cosine similarity a norm-weighted mean of the members'
    (an ensemble, measured in BENCHMARKS.md), still in the plain adapter format."""
    if len(members) == 1:
        return members[0]
    merged: list[tuple[FloatArray, FloatArray]] = []
    for depth, layer in enumerate(zip(*members, strict=True)):
        ws = [w for w, _ in layer]
        if depth == 0:
            w = np.concatenate(ws, axis=1)
        else:
            w = np.zeros((sum(m.shape[0] for m in ws), sum(m.shape[1] for m in ws)), np.float32)
            row = col = 0
            for m in ws:
                w[row : row + m.shape[0], col : col + m.shape[1]] = m
                row, col = row + m.shape[0], col + m.shape[1]
        merged.append((w, np.concatenate([b for _, b in layer])))
    return merged


def _train(
    xs: torch.Tensor,
    ys: torch.Tensor,
    n_classes: int,
    options: FitOptions,
    log: LogFn,
    seed: int,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    import torch

    n_views, n, dim_in = xs.shape
    net = _network(dim_in, options)
    params = list(net.parameters())
    classifier = None
    if options.loss == "softmax":
        classifier = torch.nn.Parameter(torch.randn(n_classes, options.dim) * 0.01)
        params.append(classifier)
    optimiser = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    # At least MIN_STEPS updates per epoch, so that small folders train too.
    batch_size = max(2, min(options.batch_size, math.ceil(n / MIN_STEPS)))
    total_steps = options.epochs * math.ceil(n / batch_size)
    warmup = max(1, total_steps // 10)

    def lr_factor(step: int) -> float:
        # Linear warm-up over the first 10% of the steps, then cosine decay to zero.
        return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor)
    shuffle = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    net.train()
    for epoch in range(options.epochs):
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if n_views > 1:
                inputs = xs[torch.randint(n_views, (len(idx),), generator=shuffle), idx]
            else:
                inputs = xs[0, idx]
            z = net(inputs)
            if classifier is None:
                loss = supcon_loss(z, ys[idx], options.temperature)
            else:
                loss = softmax_loss(z, ys[idx], classifier, options)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch + 1, "loss": round(total / n, 5)})
        log(f"epoch {epoch + 1}/{options.epochs}: {options.loss} loss {total / n:.4f}")
    net.eval()
    return net, history


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss of a batch: for each anchor, minus the mean log-share of
    its same-class images in the softmax over all other images' cosine similarities."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(z, dim=1)
    self_mask = torch.eye(len(z), dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_share = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    # An anchor alone of its class in the batch has nothing to pull: it is left out.
    summed = log_share.masked_fill(~positives, 0.0).sum(dim=1)
    has = counts > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    return -(summed[has] / counts[has]).mean()


def softmax_loss(
    z: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, options: FitOptions
) -> torch.Tensor:
    import torch.nn.functional as F

    logits = options.scale * F.normalize(z, dim=1) @ F.normalize(classifier, dim=1).T
    return F.cross_entropy(logits, labels, label_smoothing=options.label_smoothing)


def _network(dim_in: int, options: FitOptions) -> torch.nn.Module:
    import torch

    if options.kind == "linear":
        return torch.nn.Sequential(torch.nn.Linear(dim_in, options.dim))
    if options.kind == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(dim_in, options.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(options.hidden, options.dim),
        )
    raise AdapterError(f"{options.kind!r} is not a trained adapter kind")


def _export_layers(
    net: torch.nn.Module, mean: FloatArray, std: FloatArray
) -> list[tuple[FloatArray, FloatArray]]:
    """The trained Linear layers as (W, b) pairs, input standardisation folded into the first."""
    import torch

    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    layers: list[tuple[FloatArray, FloatArray]] = []
    for i, layer in enumerate(linears):
        w = layer.weight.detach().double().numpy().T  # (d_in, d_out)
        b = layer.bias.detach().double().numpy()
        if i == 0:
            # layer((x - mean) / std) == x @ (W / std) + (b - (mean / std) @ W)
            w = w / std.astype(np.float64)[:, None]
            b = b - (mean.astype(np.float64) @ w)
        layers.append((w.astype(np.float32), b.astype(np.float32)))
    return layers

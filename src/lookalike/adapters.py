"""Feature adapters: a small learned map applied on top of a frozen model's vectors.

An adapter is a chain of affine layers with ReLU between them, followed by L2
normalisation: a linear projection, a two-layer MLP or a PCA whitening all take this form,
so applying one needs NumPy only. ``lookalike fit`` learns them (see ``fitting.py``).

The file is an ``.npz`` written byte-for-byte reproducibly (fixed zip timestamps, sorted
members) so that the same data and seed give the same file, and its SHA-256 identifies
it. It records the identity of the model whose vectors it was fit on; applying it to
another model's vectors is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import ModelError, ModelMismatchError
from lookalike.models.base import Embedder
from lookalike.vectors import FloatArray, l2_normalize

FORMAT = "lookalike-adapter"
FORMAT_VERSION = 1
KINDS = ("linear", "mlp", "pca")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same content, same bytes


class AdapterError(ModelError):
    """An adapter file is missing, unreadable or does not fit the model it is used with."""


@dataclass
class Adapter:
    """``layers``: (W, b) pairs, W of shape (d_in, d_out); ReLU between layers."""

    kind: str
    layers: list[tuple[FloatArray, FloatArray]]
    # The identity (ModelInfo.identity()) of the model the adapter was fit on, and how.
    model: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdapterError(
                f"unknown adapter kind {self.kind!r}; use one of: {', '.join(KINDS)}"
            )
        if not self.layers:
            raise AdapterError("an adapter needs at least one layer")
        dim = self.dim_in
        for i, (w, b) in enumerate(self.layers):
            if w.ndim != 2 or w.shape[0] != dim or b.shape != (w.shape[1],):
                raise AdapterError(
                    f"adapter layer {i}: weights {w.shape} and bias {b.shape} do not chain "
                    f"from dimension {dim}"
                )
            dim = w.shape[1]

    @property
    def dim_in(self) -> int:
        return int(self.layers[0][0].shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.layers[-1][0].shape[1])

    def apply(self, vectors: FloatArray) -> FloatArray:
        """(n, dim_in) model vectors -> (n, dim_out) adapted, L2-normalised vectors."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise AdapterError(
                f"adapter expects vectors of dimension {self.dim_in}, got shape {x.shape}"
            )
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                np.maximum(x, 0.0, out=x)
        return l2_normalize(x)

    # ----- file format -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim_in": self.dim_in,
            "dim_out": self.dim_out,
            "model": self.model,
            "meta": self.meta,
        }
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
        }
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"] = np.ascontiguousarray(w, dtype=np.float32)
            arrays[f"b{i}"] = np.ascontiguousarray(b, dtype=np.float32)
        buffer = io.BytesIO()
        # np.savez stamps members with the current time; this writes the same layout
        # (np.load reads it) with fixed timestamps, so equal adapters are equal files.
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name in sorted(arrays):
                member = io.BytesIO()
                np.lib.format.write_array(member, arrays[name], allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_TIME), member.getvalue())
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the adapter file atomically; returns its content hash."""
        from lookalike.models.weights import atomic_path

        data = self.to_bytes()
        target = Path(path).expanduser()
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        return content_hash(data)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "adapter") -> Adapter:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            header = json.loads(arrays.pop("header").tobytes().decode())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise AdapterError(
                f"{source}: not a lookalike adapter file ({type(exc).__name__}); "
                "make one with `lookalike fit`"
            ) from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise AdapterError(
                f"{source}: not a lookalike adapter file; make one with `lookalike fit`"
            )
        if header.get("format_version") != FORMAT_VERSION:
            raise AdapterError(
                f"{source}: adapter format {header.get('format_version')} is not supported "
                f"(expects {FORMAT_VERSION}); fit it again with `lookalike fit`"
            )
        layers = []
        for i in range(len(arrays) // 2):
            try:
                layers.append((arrays[f"w{i}"], arrays[f"b{i}"]))
            except KeyError:
                raise AdapterError(f"{source}: adapter layer {i} is incomplete") from None
        return cls(
            kind=str(header["kind"]),
            layers=[(w.astype(np.float32), b.astype(np.float32)) for w, b in layers],
            model=dict(header["model"]),
            meta=dict(header.get("meta", {})),
        )


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def load_adapter(path: str | os.PathLike[str]) -> tuple[Adapter, str]:
    """The adapter in a file and the file's content hash."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdapterError(
            f"adapter file {path}: {exc.strerror or exc}; make one with `lookalike fit`"
        ) from None
    return Adapter.from_bytes(data, str(path)), content_hash(data)


class AdaptedEmbedder(Embedder):
    """A model's embedder followed by an adapter: same input, adapted vectors.

    ``info`` is the base model's, with ``dim`` set to the adapter's output dimension (the
    vectors a collection stores); ``adapter_identity`` records which adapter it is.
    """

    def __init__(self, base: Embedder, adapter: Adapter, path: Path, digest: str) -> None:
        self.base = base
        self.adapter = adapter
        self.path = path
        self.digest = digest
        self.info = dataclasses.replace(base.info, dim=adapter.dim_out)

    @property
    def draft_size(self) -> int:
        return self.base.draft_size

    def prepare(self, image: Any) -> Any:
        return self.base.prepare(image)

    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        if not batch:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return self.adapter.apply(self.base.embed_prepared(batch))

    @property
    def inference_lanes(self) -> int:
        return self.base.inference_lanes

    def embed_serial(self, batch: Sequence[Any]) -> FloatArray:
        if not batch:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return self.adapter.apply(self.base.embed_serial(batch))

    def adapter_identity(self) -> dict[str, Any]:
        """Recorded in a collection's manifest; see ``same_adapter``."""
        return {
            "path": str(self.path),
            "sha256": self.digest,
            "kind": self.adapter.kind,
            "dim_in": self.adapter.dim_in,
            "dim_out": self.adapter.dim_out,
        }


def apply_adapter(embedder: Embedder, path: str | os.PathLike[str]) -> AdaptedEmbedder:
    """``embedder`` followed by the adapter in ``path``, which must have been fit on it."""
    path = Path(path).expanduser().absolute()
    adapter, digest = load_adapter(path)
    check_fit_on(adapter, embedder.info.identity(), path)
    return AdaptedEmbedder(embedder, adapter, path, digest)


def check_fit_on(adapter: Adapter, identity: Mapping[str, Any], path: Path) -> None:
    """Refuse an adapter fit on vectors of another model (``identity``: ModelInfo's)."""
    # Through JSON, as the adapter file stores it (tuples become lists).
    ours = json.loads(json.dumps(dict(identity)))
    if adapter.model != ours:
        diff = sorted(
            k for k in set(ours) | set(adapter.model) if ours.get(k) != adapter.model.get(k)
        )
        raise ModelMismatchError(
            f"adapter {path} was fit on {adapter.model.get('model')!r} vectors, which differ "
            f"from {ours['model']!r} here (in {', '.join(diff)}); fit one for this model: "
            f"`lookalike fit DATASET_DIR --model {ours['model']} --out FILE`"
        )


def check_recorded_adapter(
    recorded: Mapping[str, Any] | None, path: str | os.PathLike[str], collection: Path | str
) -> None:
    """Refuse ``path`` unless it holds the adapter a collection's vectors were made with."""
    path = Path(path).expanduser()
    try:
        digest = content_hash(path.read_bytes())
    except OSError as exc:
        raise AdapterError(f"adapter file {path}: {exc.strerror or exc}") from None
    if not same_adapter(recorded, {"sha256": digest}):
        made_with = f"adapter {recorded.get('path')!r}" if recorded else "no adapter"
        raise ModelMismatchError(
            f"{collection} was built with {made_with}, not {str(path)!r}; vectors from "
            "different adapters can't be mixed: use the same --adapter, or another --db folder"
        )


def same_adapter(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Do two manifest records name the same adapter? Compared by content, not by path,
    so moving the file does not orphan a collection."""
    if a is None or b is None:
        return a is None and b is None
    return a.get("sha256") == b.get("sha256")

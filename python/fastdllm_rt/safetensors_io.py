"""Reading safetensors files without copying them through Python.

A file is memory-mapped; its JSON header is parsed and every entry checked
against the file (dtype, shape, byte range) so that a truncated or malformed
file fails here with the file and tensor named, before any native code reads it.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterator

from .errors import LoadError

# safetensors dtype tag -> (our dtype name, bytes per element)
FLOAT_DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2)}
KNOWN_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(LoadError):
    """A safetensors file is malformed, truncated or holds an unsupported tensor."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors tag, e.g. "BF16"
    shape: tuple
    begin: int  # absolute byte offsets in the file
    end: int


class SafetensorsFile:
    """One memory-mapped .safetensors file. Use as a context manager."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise SafetensorsError(f"{path}: cannot open: {e.strerror}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.entries = self._read_header()
            self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
            self._view = memoryview(self._mmap) if self._mmap is not None else None
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> Dict[str, TensorEntry]:
        p = self.path
        if self.size < 8:
            raise SafetensorsError(f"{p}: file is truncated ({self.size} bytes, no header length)")
        (n,) = struct.unpack("<Q", self._file.read(8))
        if n > MAX_HEADER_BYTES or 8 + n > self.size:
            raise SafetensorsError(f"{p}: header length {n} does not fit in a file of {self.size} bytes "
                                   "(truncated or not a safetensors file)")
        raw = self._file.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{p}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{p}: header is not a JSON object")
        data_start = 8 + n
        entries = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (b, e) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
                b, e = int(b), int(e)
                if not all(isinstance(d, int) and d >= 0 for d in shape):
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"{p}: tensor '{name}' has a malformed header entry: {info!r}") from None
            if dtype not in KNOWN_DTYPES:
                raise SafetensorsError(f"{p}: tensor '{name}' has unknown dtype '{dtype}'")
            nbytes = math.prod(shape) * KNOWN_DTYPES[dtype]
            if e - b != nbytes or b < 0:
                raise SafetensorsError(f"{p}: tensor '{name}' ({dtype}{list(shape)}) needs {nbytes} bytes "
                                       f"but its data_offsets [{b}, {e}] span {e - b}")
            if data_start + e > self.size:
                raise SafetensorsError(f"{p}: tensor '{name}' ends at byte {data_start + e} but the file has "
                                       f"only {self.size} bytes (truncated file)")
            entries[name] = TensorEntry(name, dtype, shape, data_start + b, data_start + e)
        return entries

    def data(self, name: str) -> memoryview:
        """A zero-copy view of the tensor's bytes (release it before close())."""
        ent = self.entries[name]
        return self._view[ent.begin:ent.end]

    def close(self):
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self) -> Iterator[TensorEntry]:
        return iter(self.entries.values())


def write_safetensors(path: str, tensors: Dict[str, "object"], metadata: Dict[str, str] = None) -> None:
    """Writes numpy arrays as a .safetensors file. A tensor may be given as
    (uint16 array, "BF16") to store bfloat16 bits; plain arrays map float32 ->
    F32, float16 -> F16. Used by the demo model writer (no torch needed)."""
    import numpy as np

    tags = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int32"): "I32"}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        arr, tag = (t if isinstance(t, tuple) else (t, None))
        arr = np.ascontiguousarray(arr)
        tag = tag or tags[arr.dtype]
        data = arr.tobytes()
        header[name] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)

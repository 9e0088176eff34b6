"""Reading safetensors files without copying them through Python.

A file is memory-mapped; its JSON header is parsed and checked as strictly as
the reference library (huggingface/safetensors) checks it, so that a
truncated, malformed or ambiguous file fails here with the file and tensor
named, before any native code reads it: integer sizes and offsets only, every
tensor's bytes exactly its dtype x shape, the data regions back to back from
byte 0 (no overlap, no gap, in any order in the header) and ending exactly at
the end of the file. tests/test_safetensors_fuzz.py holds the two to the same
verdict on mutated headers.
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
# Every tag the format defines, with its size in bits (sub-byte types pack).
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
MAX_HEADER_BYTES = 100 * 1000 * 1000  # as the reference library
U64_MAX = (1 << 64) - 1


def _uint(v) -> bool:
    """A JSON unsigned integer (not a bool, float or string) that fits 64 bits."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U64_MAX


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
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise SafetensorsError(f"{p}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{p}: header is not a JSON object")
        meta = header.get("__metadata__")
        if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
            raise SafetensorsError(f"{p}: '__metadata__' must map strings to strings, got {meta!r}")
        data_start = 8 + n
        spans = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict) or not all(k in info for k in ("dtype", "shape", "data_offsets")):
                raise SafetensorsError(f"{p}: tensor '{name}' has a malformed header entry (needs dtype, shape and "
                                       f"data_offsets): {info!r}")
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
                raise SafetensorsError(f"{p}: tensor '{name}' has unknown dtype {dtype!r}")
            if not isinstance(shape, list) or not all(_uint(d) for d in shape):
                raise SafetensorsError(f"{p}: tensor '{name}' has a malformed shape {shape!r} (non-negative "
                                       "integers expected)")
            if not isinstance(offsets, list) or len(offsets) != 2 or not all(_uint(o) for o in offsets):
                raise SafetensorsError(f"{p}: tensor '{name}' has malformed data_offsets {offsets!r} (two "
                                       "non-negative integers expected)")
            bits = math.prod(shape) * DTYPE_BITS[dtype]
            if bits > U64_MAX:
                raise SafetensorsError(f"{p}: tensor '{name}' ({dtype}{shape}) is too large")
            if bits % 8:
                raise SafetensorsError(f"{p}: tensor '{name}' ({dtype}{shape}) does not end on a byte boundary")
            spans.append((offsets[0], offsets[1], name, dtype, tuple(shape), bits // 8))
        # The data regions, in offset order, must tile [0, end of file) exactly.
        spans.sort(key=lambda t: (t[0], t[1]))
        entries, at = {}, 0
        for b, e, name, dtype, shape, nbytes in spans:
            if b != at or e < b:
                raise SafetensorsError(f"{p}: tensor '{name}' has data_offsets [{b}, {e}], but the data regions must "
                                       f"follow each other without gap or overlap (the previous one ends at {at})")
            if e - b != nbytes:
                raise SafetensorsError(f"{p}: tensor '{name}' ({dtype}{list(shape)}) needs {nbytes} bytes "
                                       f"but its data_offsets [{b}, {e}] span {e - b}")
            if data_start + e > self.size:
                raise SafetensorsError(f"{p}: tensor '{name}' ends at byte {data_start + e} but the file has "
                                       f"only {self.size} bytes (truncated file)")
            entries[name] = TensorEntry(name, dtype, shape, data_start + b, data_start + e)
            at = e
        if data_start + at != self.size:
            raise SafetensorsError(f"{p}: the tensors' data ends at byte {data_start + at} but the file has "
                                   f"{self.size} bytes (trailing bytes, or offsets that do not cover the data)")
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


def bf16_bits(a) -> "object":
    """float32 values as bfloat16 bit patterns (uint16), rounded to nearest
    even as torch does: the array write_safetensors stores with tag "BF16"."""
    import numpy as np

    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


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

"""safetensors headers are read as strictly as the reference library reads
them. A bounded, seeded mutation fuzzer over a real checkpoint's header
(offsets shifted, overlapping, out of order or with gaps; sizes and offsets as
strings, floats, booleans or negatives; dtypes and shapes changed; trailing or
missing bytes; metadata of the wrong type) holds our reader
(fastdllm_rt.safetensors_io) to the `safetensors` package's verdict on every
case, and loads each case in a subprocess through the whole loader and the
native model, so that a crash is a test failure, not a lost process."""
import concurrent.futures
import json
import os
import random
import shutil
import struct
import subprocess
import sys

import pytest

from model_factory import make_config, write_model

CASES = 96
SEED = 20261201

PROBE = r"""
import sys
import fastdllm_rt
from fastdllm_rt.safetensors_io import SafetensorsFile
path, folder = sys.argv[1:3]
try:
    with SafetensorsFile(path) as f:
        for e in f:
            v = f.data(e.name)
            bytes(v[:8])
            v.release()
    print("accept")
except fastdllm_rt.LoadError as e:
    print("reject", e)
try:
    fastdllm_rt.load_model(folder)
    print("loaded")
except fastdllm_rt.LoadError as e:
    print("load error", str(e).splitlines()[0][:200])
"""


def split(raw: bytes):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(header, data: bytes, pad: bytes = b"") -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    h += pad
    return struct.pack("<Q", len(h)) + h + data


def mutate(rng: random.Random, header: dict, data: bytes):
    """One mutation (sometimes two) of a valid file; returns (description, bytes)."""
    h = json.loads(json.dumps(header))
    names = [k for k in h if k != "__metadata__"]
    t = rng.choice(names)
    other = rng.choice([n for n in names if n != t])
    kind = rng.randrange(20)
    d = data
    if kind == 0:
        k = rng.choice([-8, -4, -1, 1, 4, 8])
        b, e = h[t]["data_offsets"]
        h[t]["data_offsets"] = [max(0, b + k), max(0, e + k)]  # shifted: overlaps or leaves a gap
    elif kind == 1:
        h[t]["data_offsets"][rng.randrange(2)] += rng.choice([-2, -1, 1, 2])  # size no longer matches
    elif kind == 2:
        h[t]["data_offsets"] = list(h[other]["data_offsets"])  # two tensors on the same bytes
    elif kind == 3:
        h[t]["data_offsets"][rng.randrange(2)] = rng.choice(["0", 0.0, 1.5, -1, True, None, [0]])
    elif kind == 4:
        if h[t]["shape"]:
            h[t]["shape"][rng.randrange(len(h[t]["shape"]))] = rng.choice(["3", 2.0, -1, True, None])
    elif kind == 5:
        h[t]["dtype"] = rng.choice(["F64", "I32", "F16", "BF16", "U8", "F8_E4M3", "F4", "f32", "Q7", 7, None])
    elif kind == 6:
        if h[t]["shape"]:
            i = rng.randrange(len(h[t]["shape"]))
            h[t]["shape"][i] += rng.choice([-1, 1])
    elif kind == 7:
        d = data + b"\0" * rng.choice([1, 4, 8, 1000])  # trailing bytes
    elif kind == 8:
        d = data[: len(data) - rng.choice([1, 4, 64])]  # truncated
    elif kind == 9:
        del h[t][rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == 10:
        h[t]["extra"] = "ignored"  # unknown keys are allowed
    elif kind == 11:
        h["__metadata__"] = rng.choice([{"format": 1}, "pt", [1], {"a": None}, None, {"format": "pt"}])
    elif kind == 12:
        # a gap before the first region, data padded to keep every other size right
        for n in names:
            h[n]["data_offsets"] = [o + 8 for o in h[n]["data_offsets"]]
        d = b"\0" * 8 + data
    elif kind == 13:
        return "header padded with spaces (valid)", join(h, d, pad=b"  " * rng.randrange(1, 9))
    elif kind == 14:
        raw = join(h, d)
        n = struct.unpack("<Q", raw[:8])[0] + rng.choice([-3, -1, 1, 5])
        return f"header length off ({n})", struct.pack("<Q", n) + raw[8:]
    elif kind == 15:
        h[t]["data_offsets"] = [h[t]["data_offsets"][1], h[t]["data_offsets"][0]]  # reversed
    elif kind == 16:
        h[t]["shape"] = rng.choice([[], [0], 5, "x", [[1]]])
    elif kind == 17:
        raw = json.dumps(h).encode()
        i = rng.randrange(len(raw))
        return f"byte {i} of the header flipped", join(raw[:i] + bytes([raw[i] ^ 0x20]) + raw[i + 1:], d)
    elif kind == 18:
        h[t] = rng.choice([[1, 2], "x", 3, None])
    else:
        h["__metadata__"] = {"format": "pt"}
        # two tensors exchange their regions: valid when their sizes agree, else a size error
        h[t]["data_offsets"], h[other]["data_offsets"] = h[other]["data_offsets"], h[t]["data_offsets"]
    return f"mutation {kind} on '{t}'", join(h, d)


def reference_verdict(path: str) -> bool:
    from safetensors import safe_open
    try:
        with safe_open(path, framework="np") as f:
            list(f.keys())
        return True
    except Exception:  # the reference raises its own error types
        return False


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fuzz_base"))
    write_model(d, make_config(num_hidden_layers=1), seed=2)
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        return d, f.read()


def run_probe(path, folder):
    return subprocess.run([sys.executable, "-c", PROBE, path, folder], capture_output=True, text=True, timeout=120)


def test_header_mutations_get_the_reference_verdict(base, tmp_path):
    folder0, raw = base
    header, data = split(raw)
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES):
        desc, blob = mutate(rng, header, data)
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        shutil.copy(os.path.join(folder0, "config.json"), folder / "config.json")
        path = str(folder / "model.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        cases.append((desc, path, str(folder), reference_verdict(path)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda c: run_probe(c[1], c[2]), cases))
    accepted = 0
    for (desc, path, folder, want), r in zip(cases, runs):
        assert r.returncode == 0, f"{desc}: the loader crashed (exit {r.returncode}): {r.stderr[-2000:]}"
        lines = r.stdout.splitlines()
        got = lines[0] == "accept"
        assert got == want, f"{desc}: ours {lines[0]!r}, the reference {'accepts' if want else 'rejects'}"
        if not got:
            assert path in lines[0], f"{desc}: the error does not name the file: {lines[0]}"
        accepted += got
        assert lines[1].startswith(("loaded", "load error"))
    assert 0 < accepted < CASES  # the fuzzer exercised both verdicts


@pytest.mark.parametrize("edit,why", [
    (lambda h, d: (h, d + b"\0"), "trailing bytes"),
    (lambda h, d: (shift(h, 4), b"\0" * 4 + d), "a gap before the first tensor"),
    (lambda h, d: (overlap(h), d), "overlapping tensors"),
    (lambda h, d: (set_offsets(h, ["0", None]), d), "offsets as strings"),
    (lambda h, d: (set_offsets(h, [0.0, None]), d), "offsets as floats"),
])
def test_known_bad_headers_name_the_file_and_tensor(base, tmp_path, edit, why):
    import fastdllm_rt
    from fastdllm_rt.safetensors_io import SafetensorsFile
    folder0, raw = base
    h, d = edit(*split(raw))
    path = tmp_path / "model.safetensors"
    path.write_bytes(join(h, d))
    assert not reference_verdict(str(path)), why
    with pytest.raises(fastdllm_rt.LoadError, match=str(path)):
        SafetensorsFile(str(path))


def first(h):
    return min((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])


def shift(h, k):
    for n in h:
        if n != "__metadata__":
            h[n]["data_offsets"] = [o + k for o in h[n]["data_offsets"]]
    return h


def overlap(h):
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    b, e = h[names[1]]["data_offsets"]
    h[names[1]]["data_offsets"] = [b - 4, e - 4]
    return h


def set_offsets(h, vals):
    t = first(h)
    h[t]["data_offsets"] = [v if v is not None else o for v, o in zip(vals, h[t]["data_offsets"])]
    return h

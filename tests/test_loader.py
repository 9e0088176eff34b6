"""Loading model folders: single and sharded files, tied and untied heads, and
every kind of bad input raising a LoadError that names the file and the key or
tensor; the process keeps working afterwards."""
import json
import os
import shutil
import struct

import numpy as np
import pytest
import torch

import fastdllm_rt
from fastdllm_rt import LoadError
from model_factory import make_config, random_weights, write_model


def logits(model, tokens):
    T = fastdllm_rt._C._testing
    pool = T.make_pool(model, 8, 4)
    table = T.PageTable(pool)
    table.reserve_tokens(len(tokens))
    return T.forward(model, pool, [dict(tokens=np.asarray(tokens, np.int32), pages=list(table.pages))])


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return write_model(str(tmp_path_factory.mktemp("good")), make_config(), seed=1)


@pytest.fixture
def broken(tmp_path, good_dir):
    """A fresh copy of the good model to break."""
    d = tmp_path / "m"
    shutil.copytree(good_dir, d)
    return d


def test_config_fields(good_dir):
    c = fastdllm_rt.read_config(good_dir)
    assert (c.hidden_size, c.head_dim, c.num_key_value_heads, c.bd_size) == (80, 16, 1, 32)
    assert c.mask_token_id == 330 and c.stop_token_id == 2 and c.eos_token_ids == (2,)


def test_config_defaults(tmp_path):
    cfg = make_config(vocab_size=152000)
    for k in ("mask_token_id", "head_dim", "bd_size", "num_key_value_heads"):
        cfg.pop(k)
    cfg["eos_token_id"] = [151645, 151643]
    cfg["stop_token_id"] = 7
    cfg["intermediate_size"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    c = fastdllm_rt.read_config(str(tmp_path))
    assert c.mask_token_id == 151665 and c.head_dim == 16 and c.bd_size == 32 and c.num_key_value_heads == 5
    assert c.stop_token_id == 7 and c.eos_token_ids == (151645, 151643)


def test_single_and_sharded_agree(tmp_path):
    cfg = make_config()
    w = random_weights(cfg, seed=2)
    a = fastdllm_rt.load_model(write_model(str(tmp_path / "one"), cfg, w))
    b = fastdllm_rt.load_model(write_model(str(tmp_path / "four"), cfg, w, shards=4))
    np.testing.assert_array_equal(logits(a, [1, 2, 3]), logits(b, [1, 2, 3]))


def test_tied_ignores_stored_lm_head(tmp_path):
    cfg = make_config(tie_word_embeddings=True)
    w = random_weights(cfg, seed=2)
    a = fastdllm_rt.load_model(write_model(str(tmp_path / "a"), cfg, dict(w)))
    w["lm_head.weight"] = torch.randn(cfg["vocab_size"], cfg["hidden_size"])
    b = fastdllm_rt.load_model(write_model(str(tmp_path / "b"), cfg, w))
    np.testing.assert_array_equal(logits(a, [5, 6]), logits(b, [5, 6]))


def edit_config(d, **kv):
    p = d / "config.json"
    cfg = json.loads(p.read_text())
    for k, v in kv.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg))


def rewrite_tensors(d, fn):
    from safetensors.torch import load_file, save_file
    p = str(d / "model.safetensors")
    t = load_file(p)
    fn(t)
    save_file(t, p)


CONFIG_CASES = [
    (dict(hidden_size=None), "missing required key 'hidden_size'"),
    (dict(num_hidden_layers="2"), "'num_hidden_layers' must be an integer"),
    (dict(num_key_value_heads=2), r"'num_attention_heads' \(5\) must be a multiple of 'num_key_value_heads' \(2\)"),
    (dict(num_key_value_heads=0), "'num_key_value_heads' must be >= 1"),
    (dict(rope_scaling={"type": "yarn"}), "'rope_scaling'"),
    (dict(model_type="llama"), "'model_type' is 'llama'"),
    (dict(mask_token_id=999), "'mask_token_id' 999 is outside the vocabulary"),
    (dict(eos_token_id=None), "neither 'stop_token_id' nor 'eos_token_id'"),
    (dict(rms_norm_eps=-1.0), r"'rms_norm_eps' must be a finite number in \[0, 0.1\], got -1.0"),
    (dict(tie_word_embeddings="yes"), "'tie_word_embeddings' must be true or false"),
    # values that do not fit or make no sense are errors naming the key, never wrapped or run
    (dict(num_hidden_layers=4294967298), "'num_hidden_layers' must be <= 4096, got 4294967298"),
    (dict(vocab_size=2 ** 40), "'vocab_size' must be <= 16777216"),
    (dict(rope_theta=float("inf")), "'rope_theta' must be a finite number"),
    (dict(rope_theta=float("nan")), "'rope_theta' must be a finite number"),
    (dict(rms_norm_eps=1e30), "'rms_norm_eps' must be a finite number in"),
    (dict(mask_token_id=2), "'mask_token_id' and the stop token .* are both 2"),
    (dict(eos_token_id=[2, "x"]), "'eos_token_id' must be a token id or a list of them"),
    # features the runtime does not implement are refused by name
    (dict(use_sliding_window=True, sliding_window=4096), "'use_sliding_window': true is not supported"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "'layer_types' must all be 'full_attention'"),
    (dict(quantization_config={"quant_method": "gptq"}),
     "'quantization_config' does not fit tensor 'model.layers.0.mlp.down_proj.weight': group_size 128 does not divide "
     "in_features 136"),
    (dict(quantization_config={"quant_method": "bitsandbytes"}),
     "'quantization_config.quant_method' 'bitsandbytes' is not supported"),
    (dict(quantization_config="gptq"), "'quantization_config' must be an object"),
]


@pytest.mark.parametrize("edit,msg", [
    (dict(num_hidden_layers=4000), r"tensor 'model.layers.\d+\.\S+' is missing from the checkpoint \(and 47975 more\)"),
    (dict(hidden_size=10 ** 6), r"tensor '.*' has shape \[\d+(, \d+)?\], expected"),
    (dict(intermediate_size=4000000), r"tensor 'model.layers.0.mlp.down_proj.weight' has shape"),
])
def test_config_checked_against_headers_before_allocating(broken, edit, msg):
    """A config that asks for a huge model fails on the checkpoint's headers
    at once, before anything is allocated for it (no climbing RSS, no bad_alloc)."""
    import resource
    edit_config(broken, **edit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LoadError, match=msg):
        fastdllm_rt.load_model(str(broken))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: well under 200 MB


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_named(broken, bad):
    def f(t):
        t["model.layers.1.mlp.down_proj.weight"][3, 7] = bad
    rewrite_tensors(broken, f)
    with pytest.raises(LoadError, match=r"model\.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' holds 1 "
                                        r"non-finite values \(NaN or inf\)"):
        fastdllm_rt.load_model(str(broken))
    for dtype in ("bfloat16", "float16"):  # the converting and packing paths check too
        with pytest.raises(LoadError, match="holds 1 non-finite values"):
            fastdllm_rt.load_model(str(broken), dtype=dtype)


@pytest.mark.parametrize("edit,msg", CONFIG_CASES)
def test_bad_config(broken, good_dir, edit, msg):
    edit_config(broken, **edit)
    with pytest.raises(LoadError, match=msg) as e:
        fastdllm_rt.load_model(str(broken))
    assert "config.json" in str(e.value)
    assert fastdllm_rt.load_model(good_dir).ready  # still works


def test_config_not_json(broken):
    (broken / "config.json").write_text("{not json")
    with pytest.raises(LoadError, match=r"config\.json: not valid JSON"):
        fastdllm_rt.load_model(str(broken))


def test_no_such_folder(tmp_path):
    with pytest.raises(LoadError, match="not a directory"):
        fastdllm_rt.load_model(str(tmp_path / "nope"))
    with pytest.raises(LoadError, match=r"config\.json: not found"):
        fastdllm_rt.load_model(str(tmp_path))


def test_no_weights(broken):
    os.remove(broken / "model.safetensors")
    with pytest.raises(LoadError, match="no model.safetensors or model.safetensors.index.json"):
        fastdllm_rt.load_model(str(broken))


def test_missing_tensor(broken):
    rewrite_tensors(broken, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(LoadError, match="tensor 'model.layers.1.mlp.up_proj.weight' is missing"):
        fastdllm_rt.load_model(str(broken))


def test_misshaped_tensor(broken):
    def f(t):
        t["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(17, 80)
    rewrite_tensors(broken, f)
    with pytest.raises(LoadError, match=r"model\.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' "
                                        r"has shape \[17, 80\], expected \[16, 80\]"):
        fastdllm_rt.load_model(str(broken))


def test_unsupported_dtype(broken):
    def f(t):
        t["model.norm.weight"] = torch.zeros(80, dtype=torch.int32)
    rewrite_tensors(broken, f)
    with pytest.raises(LoadError, match="tensor 'model.norm.weight' has dtype I32"):
        fastdllm_rt.load_model(str(broken))


def test_truncated_file(broken):
    p = broken / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(LoadError, match=r"model\.safetensors: tensor '.*' ends at byte \d+ but the file has only"):
        fastdllm_rt.load_model(str(broken))


@pytest.mark.parametrize("payload,msg", [
    (b"\x01\x02", "file is truncated"),
    (struct.pack("<Q", 10 ** 12) + b"{}", "header length"),
    (struct.pack("<Q", 5) + b"{oops", "header is not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "header is not a JSON object"),
])
def test_malformed_header(broken, payload, msg):
    (broken / "model.safetensors").write_bytes(payload)
    with pytest.raises(LoadError, match=msg):
        fastdllm_rt.load_model(str(broken))


def test_bad_header_entry(broken):
    hdr = json.dumps({"model.norm.weight": {"dtype": "F32", "shape": [80], "data_offsets": [0, 10]}}).encode()
    (broken / "model.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(10))
    with pytest.raises(LoadError, match=r"tensor 'model.norm.weight' \(F32\[80\]\) needs 320 bytes"):
        fastdllm_rt.load_model(str(broken))
    hdr = json.dumps({"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}).encode()
    (broken / "model.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(1))
    with pytest.raises(LoadError, match="tensor 'x' has unknown dtype 'Q7'"):
        fastdllm_rt.load_model(str(broken))


def test_sharded_index_errors(tmp_path):
    d = tmp_path / "sh"
    write_model(str(d), make_config(), shards=2)
    idx = d / "model.safetensors.index.json"
    good = json.loads(idx.read_text())
    bad = json.loads(json.dumps(good))
    bad["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors"
    idx.write_text(json.dumps(bad))
    with pytest.raises(LoadError, match="tensor 'model.norm.weight' is in shard 'model-00009-of-00009.safetensors', "
                                        "which does not exist"):
        fastdllm_rt.load_model(str(d))
    other = [s for s in set(good["weight_map"].values()) if s != good["weight_map"]["model.norm.weight"]][0]
    bad["weight_map"]["model.norm.weight"] = other
    idx.write_text(json.dumps(bad))
    with pytest.raises(LoadError, match=f"{other}: tensor 'model.norm.weight' is listed in the index but not"):
        fastdllm_rt.load_model(str(d))
    idx.write_text("{}")
    with pytest.raises(LoadError, match="not a safetensors index"):
        fastdllm_rt.load_model(str(d))
    idx.write_text(json.dumps(good))
    assert fastdllm_rt.load_model(str(d)).ready


def test_bad_dtype_argument(good_dir):
    with pytest.raises(LoadError, match="dtype must be one of"):
        fastdllm_rt.load_model(good_dir, dtype="int3")


def test_native_model_checks_names_and_shapes(good_dir):
    cfg = fastdllm_rt.read_config(good_dir)
    m = fastdllm_rt._C.Model(cfg.native_dict(), "float32")
    with pytest.raises(ValueError, match="unexpected tensor 'model.foo'"):
        m.set_weight("model.foo", b"\0" * 4, "float32", [1])
    with pytest.raises(ValueError, match="missing tensor"):
        m.finalize()
    with pytest.raises(ValueError, match="no weights yet"):
        logits(m, [1])

"""Low-bit models end to end: GPTQ (4 and 8 bits, act-order, sym and asym, v1
and v2 zero points) and AWQ checkpoints of tiny Qwen2 models load and match the
same model with its weights dequantized to fp32; RTN at load; Engine.logits
against the PyTorch reference; bad quantized checkpoints name the problem.

The integer kernels round activations to bf16 on AVX-512 machines (the bf16
GEMMs do too) and keep fp32 on AVX2, so logits are compared within that
rounding; greedy generation is compared token for token on the fp32 path."""
import json
import os

import numpy as np
import pytest
import torch

from fastdllm_rt import Engine
from fastdllm_rt.errors import LoadError
from fastdllm_rt.safetensors_io import write_safetensors

import quant_checkpoint as qc
from model_factory import make_config, random_weights, write_model
from reference import RefQwen2, block_causal_mask

QCFG = make_config(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=1,
                   head_dim=32)
MATRICES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj")


def rtn_codes(w, bits, group, sym):
    """Test-side round-to-nearest (GPTQ's quantizer convention), written apart from the package's."""
    n, k = w.shape
    g = group if group > 0 else k
    wg = w.reshape(n, k // g, g)
    lo, hi = np.minimum(wg.min(2), 0), np.maximum(wg.max(2), 0)
    maxq = (1 << bits) - 1
    if sym:
        s = np.maximum(-lo, hi) * 2 / maxq
        z = np.full_like(s, (maxq + 1) // 2)
    else:
        s = (hi - lo) / maxq
        z = np.clip(np.round(-lo / s), 1, maxq)  # >= 1: storable in the v1 layout
    s = s.astype(np.float16).astype(np.float32)  # what the checkpoint stores
    q = np.clip(np.round(wg / s[:, :, None]) + z[:, :, None], 0, maxq).astype(np.uint8).reshape(n, k)
    return q, z.astype(np.int64), s


def write_quantized(path, cfg, method="gptq", bits=4, group=64, desc_act=False, sym=False, v1=True, seed=0,
                    same_g_idx=True):
    """A quantized checkpoint of random weights; returns the dequantized fp32 weights (torch)."""
    rng = np.random.default_rng(seed)
    w = random_weights(cfg, seed)
    tensors, deq = {}, {}
    for name, t in w.items():
        base = name[:-len(".weight")]
        if not any(base.endswith(m) for m in MATRICES):
            tensors[name] = t.numpy().astype(np.float16)
            deq[name] = torch.from_numpy(t.numpy().astype(np.float16).astype(np.float32))
            continue
        a = t.numpy()
        n, k = a.shape
        g = group if group > 0 else k
        g_idx = None
        if desc_act:
            # q/k/v and gate/up see the same input, so GPTQ gives them one act-order
            key = (k, base.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"), base.split(".")[2])
            if same_g_idx:
                g_idx = qc.act_order_g_idx(k, g, np.random.default_rng(hash(key) % 1000))
            else:
                g_idx = qc.act_order_g_idx(k, g, rng)
        if method == "gptq":
            gi = g_idx if g_idx is not None else np.arange(k) // g
            # quantize along the act-order groups: permute, quantize contiguous groups, un-permute
            order = np.argsort(gi, kind="stable")
            q, z, s = rtn_codes(a[:, order], bits, group, sym)
            qn = np.empty_like(q)
            qn[:, order] = q
            packed = qc.pack_gptq(qn, z, s, bits, group, g_idx=g_idx, v1=v1)
            W = qc.dequant_gptq(packed, bits, v1=v1)
        else:
            q, z, s = rtn_codes(a, 4, group, sym)
            packed = qc.pack_awq(q, z, s, group)
            W = qc.dequant_awq(packed, group)
        for suffix, arr in packed.items():
            tensors[f"{base}.{suffix}"] = arr
        deq[name] = torch.from_numpy(np.asarray(W, np.float32))
    if method == "gptq":
        qconf = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": desc_act, "sym": sym,
                 "checkpoint_format": "gptq" if v1 else "gptq_v2"}
    else:
        qconf = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    write_folder(path, dict(cfg, torch_dtype="float16", quantization_config=qconf), tensors)
    return deq


def write_folder(path, config, tensors):
    """config.json and model.safetensors of a checkpoint written by these tests."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    write_safetensors(os.path.join(path, "model.safetensors"), tensors)


def dense_twin(path, cfg, deq):
    """The fp32 model with the dequantized weights."""
    return write_model(path, dict(cfg), weights=deq, dtype=torch.float32)


PROMPTS = [[5, 17, 99, 3, 41, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
            30, 31, 32, 33, 34, 35, 36, 37], [7, 8, 200]]


CASES = [
    dict(method="gptq", bits=4, group=64, desc_act=False, sym=False, v1=True),
    dict(method="gptq", bits=4, group=32, desc_act=True, sym=True, v1=True),
    dict(method="gptq", bits=8, group=-1, desc_act=False, sym=True, v1=True),
    dict(method="gptq", bits=8, group=64, desc_act=True, sym=False, v1=False),
    dict(method="awq", bits=4, group=64, sym=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_quantized_checkpoint_matches_dequantized_fp32(tmp_path, isa, case):
    deq = write_quantized(str(tmp_path / "q"), QCFG, **case)
    twin = dense_twin(str(tmp_path / "d"), QCFG, deq)
    with Engine(str(tmp_path / "q"), max_batch_size=2, kv_dtype="float32") as eq, Engine(twin, max_batch_size=2) as ed:
        assert eq.model.weight_format == f"int{case['bits']}"
        assert eq.model.weight_bytes < ed.model.weight_bytes
        for ids in PROMPTS:
            lq, ld = eq.logits(ids), ed.logits(ids)
            assert lq.shape == (len(ids), QCFG["vocab_size"])
            qc.assert_logits_close(lq, ld, isa)
        if isa == "avx2":  # fp32 activations: the same decisions, token for token
            for ids in PROMPTS:
                rq = eq.generate_ids(ids, max_new_tokens=48, threshold=0.9)
                rd = ed.generate_ids(ids, max_new_tokens=48, threshold=0.9)
                assert rq.token_ids == rd.token_ids and rq.num_forwards == rd.num_forwards


def test_quantized_model_batches_like_alone(tmp_path):
    write_quantized(str(tmp_path / "q"), QCFG, method="gptq", bits=4, group=64)
    with Engine(str(tmp_path / "q"), max_batch_size=4) as e:
        alone = [e.generate_ids(p, max_new_tokens=40) for p in PROMPTS]
        together = e.generate_ids(PROMPTS, max_new_tokens=40)
        assert [r.token_ids for r in together] == [r.token_ids for r in alone]
        assert [r.num_forwards for r in together] == [r.num_forwards for r in alone]
        assert e.stats()["pages_in_use"] == 0


def test_unfused_mlp_path(tmp_path, isa):
    """intermediate_size not a multiple of 16: gate/up run as a plain GEMM, then SiLU*mul."""
    cfg = make_config(hidden_size=64, intermediate_size=104, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=32)
    deq = write_quantized(str(tmp_path / "q"), cfg, method="gptq", bits=4, group=8)
    twin = dense_twin(str(tmp_path / "d"), cfg, deq)
    with Engine(str(tmp_path / "q"), kv_dtype="float32") as eq, Engine(twin) as ed:
        qc.assert_logits_close(eq.logits(PROMPTS[0]), ed.logits(PROMPTS[0]), isa)


@pytest.mark.parametrize("fmt,bits,group", [("int8", 8, None), ("int4", 4, None), ("int4", 4, 32)])
def test_rtn_at_load_matches_its_dequantized_weights(tmp_path, isa, fmt, bits, group):
    w = random_weights(QCFG, 3)
    path = write_model(str(tmp_path / "f"), dict(QCFG), weights=w)
    deq = {}
    for name, t in w.items():
        if any(name.endswith(m + ".weight") for m in MATRICES):
            g = (0 if bits == 8 else 128) if group is None else group
            q, z, s = rtn_codes_package_free(t.numpy(), bits, g)
            deq[name] = torch.from_numpy(((q.reshape(q.shape[0], -1, s.shape[1] and q.shape[1] // s.shape[1])
                                           - z[:, :, None]) * s[:, :, None]).reshape(q.shape).astype(np.float32))
        else:
            deq[name] = t
    twin = dense_twin(str(tmp_path / "d"), QCFG, deq)
    kw = {} if group is None else {"group_size": group}
    with Engine(path, quantize=fmt, **kw) as eq, Engine(twin) as ed:
        assert eq.model.weight_format == fmt
        qc.assert_logits_close(eq.logits(PROMPTS[0]), ed.logits(PROMPTS[0]), isa)


def rtn_codes_package_free(w, bits, group):
    """The documented RTN rule: int8 symmetric (zero 128, scale 2 max|w| / 255),
    int4 asymmetric (range including 0, zero >= 1), per group of `group` inputs."""
    n, k = w.shape
    g = group or k
    wg = w.reshape(n, k // g, g).astype(np.float32)
    lo, hi = np.minimum(wg.min(2), 0), np.maximum(wg.max(2), 0)
    maxq = (1 << bits) - 1
    if bits == 8:
        s = (np.maximum(-lo, hi) * 2 / maxq).astype(np.float32)
        z = np.full_like(s, 128)
    else:
        s = ((hi - lo) / maxq).astype(np.float32)
        z = np.clip(np.round(-lo / s), 1, maxq)
    q = np.clip(np.round(wg / s[:, :, None]) + z[:, :, None], 0, maxq)
    return q.reshape(n, k), z, s


def test_logits_equal_the_reference_prefill(tmp_path):
    """Engine.logits = the model's own prefill: block-causal attention over
    positions from 0, also when chunked to max_batch_tokens."""
    w = random_weights(QCFG, 5)
    path = write_model(str(tmp_path / "f"), dict(QCFG), weights=w)
    ref = RefQwen2(QCFG, w)
    ids = list(range(3, 3 + 77))
    for bs in (32, 16):
        want, _ = ref.forward(ids, list(range(len(ids))), mask=block_causal_mask(0, len(ids), bs))
        for mbt in (1024, 32):
            with Engine(path, max_batch_tokens=mbt) as e:
                got = e.logits(ids, block_size=bs)
                np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
                assert e.stats()["pages_in_use"] == 0


def test_logits_bad_input(tmp_path):
    path = write_model(str(tmp_path / "f"), dict(QCFG))
    with Engine(path) as e:
        with pytest.raises(ValueError, match="token_ids is empty"):
            e.logits([])
        with pytest.raises(ValueError, match="token id 5000 at index 1 is outside the vocabulary"):
            e.logits([1, 5000])
        with pytest.raises(ValueError, match="block_size"):
            e.logits([1, 2], block_size=0)
        assert e.logits([1, 2]).shape == (2, QCFG["vocab_size"])  # still usable


def _edit_config(path, **qc_over):
    p = os.path.join(path, "config.json")
    with open(p) as f:
        c = json.load(f)
    c["quantization_config"].update(qc_over)
    with open(p, "w") as f:
        json.dump(c, f)


@pytest.mark.parametrize("over,msg", [
    (dict(bits=3), "'quantization_config.bits' is 3"),
    (dict(quant_method="bitsandbytes"), "'quantization_config.quant_method' 'bitsandbytes' is not supported"),
    (dict(checkpoint_format="marlin"), "'quantization_config.checkpoint_format' 'marlin'"),
    (dict(group_size=48), r"does not fit tensor 'model.layers.0.\S+.weight': group_size 48 does not divide"),
    (dict(group_size=32), r"tensor 'model.layers.0.\S+.qzeros' has shape \[4, 16\], expected \[8, 16\]"),
    (dict(desc_act="yes"), "'quantization_config.desc_act' must be bool"),
])
def test_bad_quantization_config_names_the_key(tmp_path, over, msg):
    path = str(tmp_path / "q")
    write_quantized(path, QCFG, method="gptq", bits=4, group=64)
    _edit_config(path, **over)
    with pytest.raises(LoadError, match=msg):
        Engine(path)


def test_mismatched_act_order_in_fused_matrices_is_refused(tmp_path):
    path = str(tmp_path / "q")
    write_quantized(path, QCFG, method="gptq", bits=4, group=32, desc_act=True, same_g_idx=False)
    with pytest.raises(LoadError, match=r"its input order \(g_idx\) differs from that of 'model.layers.0.\S+'; fused matrices"):
        Engine(path)


def test_quantize_refuses_a_quantized_checkpoint(tmp_path):
    path = str(tmp_path / "q")
    write_quantized(path, QCFG, method="gptq", bits=4, group=64)
    with pytest.raises(LoadError, match="already quantized"):
        Engine(path, quantize="int8")
    with pytest.raises(LoadError, match="quantize must be one of"):
        Engine(write_model(str(tmp_path / "f"), dict(QCFG)), quantize="int2")


def test_logits_during_close_do_not_hang(tmp_path):
    """A logits call queued while the engine closes returns or raises; it never blocks."""
    import threading
    path = write_model(str(tmp_path / "f"), dict(QCFG))
    for _ in range(5):
        e = Engine(path)
        box = []

        def call():
            try:
                for _ in range(50):
                    e.logits(list(range(3, 200)))
            except (ValueError, RuntimeError) as ex:
                box.append(str(ex))

        t = threading.Thread(target=call)
        t.start()
        e.close()
        t.join(20)
        assert not t.is_alive()
        assert all("closed" in m for m in box), box


def write_fp8(path, cfg, block=None, scale_shape="channel", seed=0, bad_scale=False):
    """An fp8 (E4M3) checkpoint of random weights, scales per channel / tensor / block;
    returns the dequantized fp32 weights, decoded with torch's float8_e4m3fn."""
    rng = np.random.default_rng(seed)
    w = random_weights(cfg, seed)
    tensors, deq = {}, {}
    for name, t in w.items():
        base = name[:-len(".weight")]
        if not any(base.endswith(m) for m in MATRICES):
            tensors[name] = t.numpy()
            deq[name] = t
            continue
        a = t.numpy()
        n, k = a.shape
        if block:
            bn, bk = block
            s = (rng.random((-(-n // bn), -(-k // bk))) * 0.01 + 0.001).astype(np.float32)
            full = np.repeat(np.repeat(s, bn, 0), bk, 1)[:n, :k]
            tensors[base + ".weight_scale_inv"] = s
        else:
            s = (rng.random((n, 1)) * 0.01 + 0.001).astype(np.float32) if scale_shape == "channel" \
                else np.float32(0.004).reshape(())
            full = np.broadcast_to(s, (n, k)) if s.ndim else np.full((n, k), s, np.float32)
            tensors[base + ".weight_scale"] = s if s.ndim else np.asarray(s)
        q = torch.from_numpy(a / full).to(torch.float8_e4m3fn)
        tensors[name] = (q.view(torch.uint8).numpy(), "F8_E4M3")
        deq[name] = q.float() * torch.from_numpy(np.ascontiguousarray(full))
    if bad_scale:
        tensors["model.layers.0.mlp.down_proj.weight_scale"] = np.ones((3,), np.float32)
    qconf = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    if block:
        qconf["weight_block_size"] = list(block)
    write_folder(path, dict(cfg, torch_dtype="float32", quantization_config=qconf), tensors)
    return deq


@pytest.mark.parametrize("block,scale", [(None, "channel"), (None, "tensor"), ((64, 64), None), ((48, 80), None)])
def test_fp8_checkpoint_matches_its_dequantized_weights(tmp_path, block, scale):
    """fp8 checkpoints (E4M3 weights, weight_scale or block weight_scale_inv) load
    dequantized to the model dtype (here fp32: exact), token for token."""
    deq = write_fp8(str(tmp_path / "q"), QCFG, block=block, scale_shape=scale)
    twin = dense_twin(str(tmp_path / "d"), QCFG, deq)
    with Engine(str(tmp_path / "q")) as eq, Engine(twin) as ed:
        np.testing.assert_array_equal(eq.logits(PROMPTS[0]), ed.logits(PROMPTS[0]))
        a, b = eq.generate_ids(PROMPTS[0], max_new_tokens=32), ed.generate_ids(PROMPTS[0], max_new_tokens=32)
        assert a.token_ids == b.token_ids and a.num_forwards == b.num_forwards


def test_fp8_bad_scales_name_the_tensor(tmp_path):
    write_fp8(str(tmp_path / "q"), QCFG, bad_scale=True)
    with pytest.raises(LoadError, match=r"model.layers.0.mlp.down_proj.weight_scale' has shape \[3\]"):
        Engine(str(tmp_path / "q"))


@pytest.mark.parametrize("tied", [False, True])
def test_int8_lm_head_matches_its_dequantized_weights(tmp_path, isa, tied):
    """lm_head="int8": the output head as int8 codes with one scale per row (a
    tied model keeps its float embedding for the lookup), through the fused
    greedy reduction and the sampled / logits rows alike; with int4 layers too."""
    cfg = dict(QCFG, tie_word_embeddings=tied)
    w = random_weights(cfg, 4)
    path = write_model(str(tmp_path / "f"), dict(cfg), weights=w)
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    q, z, s = rtn_codes_package_free(w[head].numpy(), 8, 0)
    deq = dict(w)
    deq["lm_head.weight"] = torch.from_numpy(((q - z) * s).astype(np.float32))
    twin = dense_twin(str(tmp_path / "d"), dict(cfg, tie_word_embeddings=False), deq)
    with Engine(path, lm_head="int8") as eq, Engine(twin) as ed:
        assert eq.model.lm_head_format == "int8" and eq.model.weight_format == "dense"
        qc.assert_logits_close(eq.logits(PROMPTS[0]), ed.logits(PROMPTS[0]), isa)
        a, b = eq.generate_ids(PROMPTS[0], max_new_tokens=32), ed.generate_ids(PROMPTS[0], max_new_tokens=32)
        if isa == "avx2":  # the fp32 path: the same logits up to summation order, the same tokens
            assert a.token_ids == b.token_ids and a.num_forwards == b.num_forwards
    with Engine(path, quantize="int4", group_size=32, lm_head="int8") as e:
        assert e.model.lm_head_format == "int8" and e.model.weight_format == "int4"
        assert len(e.generate_ids(PROMPTS[1], max_new_tokens=16).token_ids) > 0
    with pytest.raises(LoadError, match="lm_head must be None"):
        Engine(path, lm_head="int4")

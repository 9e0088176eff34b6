"""The CUDA kernels' host-side launch decisions (ops/launch_plans.h), checked
on the CPU: which GEMM a linear takes, and how attention splits its work."""
import pytest

from fastdllm_rt import _C

plans = _C.plans


@pytest.mark.parametrize("m,want", [(1, "sm90_small_m"), (8, "sm90_small_m"), (32, "sm90_small_m"),
                                    (64, "sm90_small_m"), (65, "sm90_large"), (4096, "sm90_large")])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_gemm_by_token_rows(m, want, dtype):
    assert plans.choose_gemm(dtype, m, 1536, 8960) == want


@pytest.mark.parametrize("dtype,n,k", [("float32", 1536, 1536), ("float32", 8, 8), ("bfloat16", 1537, 1536),
                                       ("float16", 1536, 37), ("bfloat16", 23, 37)])
def test_other_weights_and_unaligned_sizes_take_simt(dtype, n, k):
    assert plans.choose_gemm(dtype, 8, n, k) == "simt"


@pytest.mark.parametrize("len_q", [1, 5, 8, 32, 64, 127, 4096])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("n_kv", [1, 31, 32, 33, 544, 4128, 32768])
def test_attention_split_covers_every_key_once(len_q, kv_heads, n_kv):
    p = plans.attention(len_q, kv_heads, n_kv)
    assert p["query_tiles"] * 4 >= len_q > (p["query_tiles"] - 1) * 4
    kps, splits = p["keys_per_split"], p["splits"]
    assert kps % 32 == 0 and kps > 0
    assert splits * kps >= n_kv > (splits - 1) * kps  # every key in exactly one split, no empty split
    assert splits <= (n_kv + 31) // 32  # never more splits than key tiles


def test_decoding_shapes_fill_the_gpu_and_prefill_gets_one_split():
    # Qwen2.5-1.5B (2 kv heads) decoding a 32-token block over 512 cached tokens:
    # 8 query tiles x 2 kv heads = 16 CTAs before splitting; splitting keys gives >= 132 (H100 SMs)
    p = plans.attention(32, 2, 544)
    assert 2 * p["query_tiles"] * p["splits"] >= 132
    p = plans.attention(1, 4, 4096)  # one token of the 7B shape over 4k keys
    assert 4 * p["query_tiles"] * p["splits"] >= 132
    p = plans.attention(4096, 2, 4096)  # prefill: 2048 CTAs already
    assert p["splits"] == 1 and p["keys_per_split"] >= 4096


def test_logit_rows_bucket():
    b = plans.logit_rows_bucket
    assert [b(k, 32) for k in range(0, 33)] == [0, 1, 2, 4, 4] + [8] * 4 + [16] * 8 + [32] * 16
    assert [b(k, 8) for k in range(0, 9)] == [0, 1, 2, 4, 4, 8, 8, 8, 8]
    assert b(5, 6) == 6 and b(7, 6) == 7  # capped at n; more rows than tokens are kept as asked
    # the denoising shapes of a 32/8 block fit the graph cache: 6 + 4 keys, not 32 + 8
    assert len({b(k, 32) for k in range(1, 33)}) == 6 and len({b(k, 8) for k in range(1, 9)}) == 4

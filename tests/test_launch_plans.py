"""The CUDA kernels' host-side launch decisions (core/launch_plans.h), checked
on the CPU: which GEMM a linear takes, how attention splits the work of a
ragged batch, and the shape buckets replayed forwards are keyed by."""
import numpy as np
import pytest

from fastdllm_rt._C import _testing as T

plans = T.plans


@pytest.mark.parametrize("m,want", [(1, "sm90_small_m"), (8, "sm90_small_m"), (32, "sm90_small_m"),
                                    (64, "sm90_small_m"), (65, "sm90_large"), (4096, "sm90_large")])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_gemm_by_token_rows(m, want, dtype):
    assert plans.choose_gemm(dtype, m, 1536, 8960) == want


@pytest.mark.parametrize("dtype,n,k", [("float32", 1536, 1536), ("float32", 8, 8), ("bfloat16", 1537, 1536),
                                       ("float16", 1536, 37), ("bfloat16", 23, 37)])
def test_other_weights_and_unaligned_sizes_take_simt(dtype, n, k):
    assert plans.choose_gemm(dtype, 8, n, k) == "simt"


def check_plan(qo, kv_len, kv_heads, target):
    p = plans.attention(qo, kv_len, kv_heads, target)
    kps = p["keys_per_split"]
    assert kps % 32 == 0 and kps > 0
    work = np.array(p["work"], np.int64).reshape(-1, 5)
    seen = {}
    for q0, nq, k0, k1, split in work:
        assert 1 <= nq <= 4
        s = int(np.searchsorted(qo, q0, side="right") - 1)
        assert qo[s] <= q0 and q0 + nq <= qo[s + 1]  # a tile never crosses sequences
        assert 0 <= k0 <= k1 <= kv_len[s] and k1 - k0 <= kps
        for t in range(q0, q0 + nq):
            assert split < p["part_count"][t]
            seen.setdefault(t, []).append((k0, k1, p["part_base"][t] + split))
    parts = set()
    for t in range(qo[-1]):
        ranges = sorted(seen[t])
        s = int(np.searchsorted(qo, t, side="right") - 1)
        # every key of the query's sequence exactly once, each split non-empty unless there are no keys
        assert ranges[0][0] == 0 and ranges[-1][1] == kv_len[s]
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(r[1] > r[0] for r in ranges) or kv_len[s] == 0
        parts.update(r[2] for r in ranges)
    assert len(parts) == p["num_parts"] == sum(p["part_count"])  # every partial slot once
    assert len(work) <= plans.work_capacity(qo[-1], len(kv_len), kv_heads, target)
    assert p["num_parts"] <= plans.parts_capacity(qo[-1], kv_heads, target)
    return p, work


@pytest.mark.parametrize("lens", [[(1, 1)], [(32, 544)], [(5, 40), (1, 3), (17, 17), (8, 64)],
                                  [(32, 600), (8, 4128), (32, 33), (4096, 4096)], [(3, 0), (4, 9)]])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("target", [1, 13, 264])
def test_attention_plan_covers_every_key_once(lens, kv_heads, target):
    qo = np.cumsum([0] + [q for q, _ in lens]).tolist()
    check_plan(qo, [k for _, k in lens], kv_heads, target)


def test_plan_sizes_splits_by_real_lengths():
    # Qwen2.5-1.5B (2 kv heads) decoding a 32-token block over 544 keys: 8 query
    # tiles x 2 kv heads = 16 CTAs before splitting; splitting keys gives >= 132
    p, work = check_plan([0, 32], [544], 2, 264)
    assert 2 * len(work) >= 132
    # a long and a short sequence in one batch: the long one gets more splits
    p, work = check_plan([0, 32, 64], [4096, 64], 2, 264)
    assert p["part_count"][0] > p["part_count"][40] >= 1
    # prefill-sized work gets one split
    p, _ = check_plan([0, 4096], [4096], 2, 264)
    assert max(p["part_count"]) == 1


def test_buckets():
    assert [plans.token_bucket(n) for n in (1, 8, 9, 64, 65, 96, 257, 512, 513)] == \
        [8, 8, 16, 64, 96, 96, 320, 512, 0]
    assert [plans.seq_bucket(n) for n in (1, 2, 3, 5, 17)] == [1, 2, 4, 8, 32]
    b = plans.logit_rows_bucket
    assert [b(k, 32) for k in range(0, 33)] == [0, 1, 2, 4, 4] + [8] * 4 + [16] * 8 + [32] * 16
    assert b(5, 6) == 6 and b(7, 6) == 7  # capped at n; more rows than tokens are kept as asked

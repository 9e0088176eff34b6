"""Level-1 KV pages: allocation, reference counts, sharing, budget errors."""
import pytest

import fastdllm_rt
from fastdllm_rt._C import _testing as T


def test_pages_return_to_the_pool():
    pool = T.PagePool(2, 1, 8, 4, 5)
    a, b = T.PageTable(pool), T.PageTable(pool)
    a.reserve_tokens(9)  # 3 pages of 4 tokens
    assert len(a.pages) == 3 and pool.pages_in_use == 3
    for p in a.pages[:2]:  # prefix sharing: b points at a's first two pages
        b.share(p)
    assert b.pages == a.pages[:2] and pool.refcount(a.pages[0]) == 2
    a.clear()
    assert pool.pages_in_use == 2  # the shared pages live on in b
    b.clear()
    assert pool.pages_in_use == 0
    a.reserve_tokens(20)  # freed pages are reused: the whole pool fits again
    assert sorted(a.pages) == [0, 1, 2, 3, 4]
    del a
    assert pool.pages_in_use == 0


def test_budget_exceeded_is_clear_and_atomic():
    pool = T.PagePool(2, 1, 8, 4, 3)
    t = T.PageTable(pool)
    t.reserve_tokens(8)
    with pytest.raises(fastdllm_rt.MemoryBudgetError, match=r"KV cache budget exceeded: all 3 pages \(4 tokens"):
        t.reserve_tokens(16)
    assert len(t.pages) == 2 and pool.pages_in_use == 2  # nothing half-allocated
    t.reserve_tokens(12)
    assert pool.pages_in_use == 3
    assert issubclass(fastdllm_rt.MemoryBudgetError, MemoryError)


def test_bf16_pages_are_half_the_bytes():
    f32 = T.PagePool(3, 2, 16, 8, 2)
    bf16 = T.PagePool(3, 2, 16, 8, 2, kv_dtype="bfloat16")
    assert f32.page_bytes == 3 * 2 * 2 * 8 * 16 * 4 and bf16.page_bytes * 2 == f32.page_bytes


def test_bad_geometry():
    with pytest.raises(ValueError, match="bad geometry"):
        T.PagePool(0, 1, 8, 4, 3)
    with pytest.raises(ValueError, match="max_pages must be"):
        T.PagePool(1, 1, 8, 4, 0)
    with pytest.raises(ValueError, match="kv_dtype must be 'float32' or 'bfloat16', got 'float16'"):
        T.PagePool(1, 1, 8, 4, 3, kv_dtype="float16")
    pool = T.PagePool(1, 1, 8, 4, 3)
    with pytest.raises(ValueError, match="release of page 2, which is not allocated"):
        pool.release(2)

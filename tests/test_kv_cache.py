"""Level-1 KV pages: allocation, reference counts, sharing, budget errors."""
import pytest

import fastdllm_rt
from fastdllm_rt import _C


def test_pages_return_to_the_pool():
    pool = _C.PagePool(2, 1, 8, 4, 5)
    a, b = _C.PageTable(pool), _C.PageTable(pool)
    a.reserve_tokens(9)  # 3 pages of 4 tokens
    assert len(a.pages) == 3 and pool.pages_in_use == 3
    b.share_from(a, 2)  # prefix sharing: b points at a's first two pages
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
    pool = _C.PagePool(2, 1, 8, 4, 3)
    t = _C.PageTable(pool)
    t.reserve_tokens(8)
    with pytest.raises(fastdllm_rt.MemoryBudgetError, match=r"KV cache budget exceeded: all 3 pages \(max_pages=3"):
        t.reserve_tokens(16)
    assert len(t.pages) == 2 and pool.pages_in_use == 2  # nothing half-allocated
    t.reserve_tokens(12)
    assert pool.pages_in_use == 3
    assert issubclass(fastdllm_rt.MemoryBudgetError, MemoryError)


def test_bad_geometry():
    with pytest.raises(ValueError, match="bad geometry"):
        _C.PagePool(0, 1, 8, 4, 3)
    with pytest.raises(ValueError, match="max_pages must be"):
        _C.PagePool(1, 1, 8, 4, 0)

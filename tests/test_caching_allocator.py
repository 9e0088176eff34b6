"""The device caching allocator's logic (core/caching_allocator.h), run over
host memory with a byte budget so that CI checks it without a GPU."""
import pytest

from fastdllm_rt._C import _testing as T

MiB = 1 << 20


def test_round_size():
    r = T.HostCachingAllocator.round_size
    assert r(0) == 512 and r(1) == 512 and r(512) == 512 and r(513) == 1024
    assert r(MiB - 1) == MiB
    assert r(MiB) == 2 * MiB and r(2 * MiB) == 2 * MiB and r(2 * MiB + 1) == 4 * MiB


def test_reuse_without_raw_allocation():
    a = T.HostCachingAllocator(64 * MiB)
    p = a.allocate(3000)
    a.release(p)
    # the same size class comes back from the cache, also for a slightly smaller request
    assert a.allocate(2600) == p
    s = a.stats()
    assert s["raw_allocs"] == 1 and s["cache_hits"] == 1 and s["in_use_bytes"] == 3072
    q = a.allocate(3000)  # p is in use: a new block
    assert q != p and a.stats()["raw_allocs"] == 2
    a.release(p)
    a.release(q)
    assert a.stats()["cached_bytes"] == 2 * 3072 and a.stats()["in_use_bytes"] == 0


def test_steady_state_decode_loop_makes_no_raw_allocations():
    """The pattern of one forward (scratch for each GEMM, then the logits) repeated."""
    a = T.HostCachingAllocator(256 * MiB)
    sizes = [32 * 1536 * 2, 32 * 2048 * 4, 32 * 17920 * 4, 0, 32 * 151936 * 4]
    for step in range(5):
        for n in sizes:
            p = a.allocate(n)
            a.release(p)
        if step == 0:
            after_first = a.stats()["raw_allocs"]
    assert a.stats()["raw_allocs"] == after_first


def test_big_cached_block_not_used_for_a_tiny_request():
    a = T.HostCachingAllocator(64 * MiB)
    big = a.allocate(8 * MiB)
    a.release(big)
    small = a.allocate(4096)  # more than 2x waste: a fresh block
    assert small != big
    assert a.allocate(5 * MiB) == big  # within 2x: reused


def test_out_of_budget_empties_the_cache_then_retries():
    a = T.HostCachingAllocator(10 * MiB)
    p = a.allocate(6 * MiB)
    a.release(p)  # 6 MiB parked in the cache
    q = a.allocate(1 * MiB)  # fits beside it
    a.release(q)
    # 8 MiB does not fit next to the cached blocks: they are returned, then it fits
    r = a.allocate(8 * MiB)
    assert a.raw_bytes == 8 * MiB and a.stats()["cached_bytes"] == 0
    with pytest.raises(MemoryError, match="budget"):
        a.allocate(4 * MiB)  # nothing cached to give back
    a.release(r)
    a.empty_cache()
    assert a.raw_bytes == 0 and a.stats()["raw_frees"] == a.stats()["raw_allocs"]


def test_zero_bytes_take_nothing():
    a = T.HostCachingAllocator(MiB)
    assert a.allocate(0) == 0
    assert a.stats()["raw_allocs"] == 0 and a.stats()["in_use_bytes"] == 0


def test_release_of_unknown_pointer_is_ignored():
    a = T.HostCachingAllocator(MiB)
    a.release(12345)
    a.release(0)
    assert a.stats()["cached_bytes"] == 0

"""ByteLRU: bounded in bytes, least-recently-used out first, one computation per key."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attn.compute.cache import ByteLRU


def sized_cache(max_bytes: int) -> ByteLRU[bytes]:
    return ByteLRU(max_bytes, size_of=len)


def test_a_stored_value_comes_back_and_a_missing_one_is_none():
    cache = sized_cache(100)
    cache.put("a", b"x" * 10)
    assert cache.get("a") == b"x" * 10
    assert cache.get("b") is None
    assert "a" in cache and "b" not in cache


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 120)), max_size=80))
def test_many_puts_never_exceed_the_byte_bound(puts):
    cache = sized_cache(100)
    for key, size in puts:
        cache.put(key, b"x" * size)
        stats = cache.stats()
        assert stats.bytes <= 100
        assert stats.entries == len(cache)
    present = [key for key in range(21) if key in cache]
    assert cache.stats().bytes == sum(len(cache.get(key)) for key in present)


def test_the_least_recently_used_entry_is_evicted_first():
    cache = sized_cache(30)
    for key in "abc":
        cache.put(key, b"x" * 10)
    cache.get("a")  # 'b' is now the least recently used
    cache.put("d", b"x" * 10)
    assert "b" not in cache
    assert all(key in cache for key in "acd")
    assert cache.stats().evictions == 1


def test_an_entry_larger_than_the_bound_is_not_stored_and_evicts_nothing():
    cache = sized_cache(50)
    cache.put("small", b"x" * 40)
    cache.put("huge", b"x" * 51)
    assert "huge" not in cache
    assert cache.get("small") == b"x" * 40
    assert cache.stats().bytes == 40


def test_replacing_a_key_counts_its_bytes_once():
    cache = sized_cache(100)
    cache.put("a", b"x" * 30)
    cache.put("a", b"y" * 50)
    assert cache.get("a") == b"y" * 50
    assert (cache.stats().entries, cache.stats().bytes) == (1, 50)


def test_a_key_replaced_by_an_oversized_value_never_serves_the_stale_one():
    cache = sized_cache(100)
    cache.put("a", b"old")
    cache.put("a", b"n" * 101)
    assert cache.get("a") is None
    assert cache.stats().bytes == 0


def test_the_bound_must_be_positive():
    with pytest.raises(ValueError):
        sized_cache(0)


def test_get_or_compute_computes_once_then_serves_the_cache():
    cache = sized_cache(100)
    calls = []

    def compute() -> bytes:
        calls.append(1)
        return b"value"

    assert cache.get_or_compute("k", compute) == b"value"
    assert cache.get_or_compute("k", compute) == b"value"
    assert len(calls) == 1
    stats = cache.stats()
    assert (stats.misses, stats.hits) == (1, 1)


def held_until_all_arrive(parked: threading.Semaphore, others: int, result):
    """A computation for a race of 1 + `others` requests of one key: the first call (the
    leader) waits until the `others` are waiting on its flight, then returns `result()`.
    A second call means there is no single flight: it lets the leader go at once, so a
    broken cache fails the test in milliseconds. Returns (compute, calls, all_arrived)."""
    calls: list[int] = []
    leader = threading.Lock()
    all_arrived = threading.Event()

    def compute():
        calls.append(threading.get_ident())
        if leader.acquire(blocking=False):
            if all(parked.acquire(timeout=10) for _ in range(others)):
                all_arrived.set()
        else:  # a second computation of the key: no single flight; let the leader go
            parked.release(others)
        return result()

    return compute, calls, all_arrived


def run_all(targets) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)


def test_concurrent_requests_for_one_key_compute_it_once(parked):
    cache = sized_cache(1000)
    compute, calls, all_arrived = held_until_all_arrive(parked, 7, lambda: b"answer")
    results = [None] * 8

    def request(i):
        results[i] = cache.get_or_compute("same", compute)

    run_all([lambda i=i: request(i) for i in range(8)])
    assert len(calls) == 1
    assert all_arrived.is_set()  # the other seven asked while the computation ran
    assert all(r is results[0] for r in results) and results[0] == b"answer"


def test_different_keys_compute_in_parallel():
    cache = sized_cache(1000)
    a_running, b_running = threading.Event(), threading.Event()

    def compute_a():
        a_running.set()
        assert b_running.wait(5), "key b waited for key a"
        return b"a"

    def compute_b():
        b_running.set()
        assert a_running.wait(5), "key a waited for key b"
        return b"b"

    results = {}
    threads = [
        threading.Thread(target=lambda: results.__setitem__("a", cache.get_or_compute("a", compute_a))),
        threading.Thread(target=lambda: results.__setitem__("b", cache.get_or_compute("b", compute_b))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {"a": b"a", "b": b"b"}


def test_a_failed_computation_reaches_every_waiter_and_is_not_cached(parked):
    cache = sized_cache(1000)

    def explode():
        raise RuntimeError("model exploded")

    compute, calls, all_arrived = held_until_all_arrive(parked, 3, explode)
    errors = []

    def request():
        try:
            cache.get_or_compute("k", compute)
        except RuntimeError as exc:
            errors.append(exc)

    run_all([request] * 4)
    assert len(calls) == 1  # the waiters did not run the computation themselves
    assert all_arrived.is_set()  # the other three asked while the computation ran
    assert [str(e) for e in errors] == ["model exploded"] * 4
    assert all(e is errors[0] for e in errors)  # each waiter got the one computation's error
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: b"recovered") == b"recovered"


class Refused(RuntimeError):
    """An answer to one request only (a platform's refusal)."""


def test_a_private_error_reaches_no_waiter_each_computes_for_itself(parked):
    cache = ByteLRU(1000, size_of=len, private=(Refused,))

    def refused():
        raise Refused("your quota is spent")

    first, calls, all_arrived = held_until_all_arrive(parked, 2, refused)
    outcomes = []

    def request():
        try:
            outcomes.append(cache.get_or_compute("k", lambda: first() if not calls else b"mine"))
        except Refused as exc:
            outcomes.append(str(exc))

    run_all([request] * 3)
    assert all_arrived.is_set()  # the other two asked while the refused computation ran
    assert sorted(outcomes, key=str) == [b"mine", b"mine", "your quota is spent"]
    assert cache.get("k") == b"mine"


def test_an_oversized_computed_value_is_returned_but_not_kept():
    cache = sized_cache(10)
    assert cache.get_or_compute("k", lambda: b"x" * 11) == b"x" * 11
    assert "k" not in cache

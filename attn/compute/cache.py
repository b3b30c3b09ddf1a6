"""An LRU cache bounded in bytes, shared by all users, safe under concurrent access.

Concurrent requests for the same key wait for one computation instead of each running
the model ("single flight"). A failure is never cached; one of the kinds named `private`
(a platform's answer to that one request, say its quota) is not handed to the requests
waiting on it either: each of them then computes for itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0
    max_bytes: int = 0


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None


class ByteLRU(Generic[V]):
    def __init__(self, max_bytes: int, size_of: Callable[[V], int],
                 private: tuple[type[BaseException], ...] = ()):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = int(max_bytes)
        self._size_of = size_of
        self._private = private
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self._stats = CacheStats(max_bytes=self.max_bytes)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            self._stats.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        size = int(self._size_of(value))
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                return  # never evict everything for one value that cannot fit anyway
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= old
                self._stats.evictions += 1

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    self._stats.hits += 1
                    return item[0]
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
                    self._stats.misses += 1
            if leader:
                return self._lead(key, flight, compute)
            flight.done.wait()
            if isinstance(flight.error, self._private):
                continue  # the leader's own answer: try again, as leader or behind a new one
            if flight.error is not None:
                raise flight.error
            with self._lock:
                self._stats.hits += 1
            return flight.value

    def _lead(self, key: Hashable, flight: _Flight, compute: Callable[[], V]) -> V:
        try:
            flight.value = compute()
            self.put(key, flight.value)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def stats(self) -> CacheStats:
        with self._lock:
            s = self._stats
            return CacheStats(s.hits, s.misses, s.evictions, len(self._items), self._bytes, self.max_bytes)

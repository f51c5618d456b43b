"""The bounded queues between the live pipeline and the tracks that release its output."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotQueue(Generic[T]):
    """A bounded, flushable queue of items keyed by the clock slot they belong to.

    The producer puts items for future slots; the track takes the item of the current slot
    and everything older is discarded (it missed its slot).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: dict[int, T] = {}
        self._taken = -1  # highest slot taken so far
        self.dropped = 0
        """Items discarded because their slot had passed (late or skipped)."""

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, slot: object) -> bool:
        return slot in self._items

    def put(self, slot: int, item: T) -> bool:
        """Store ``item`` for ``slot``; False (not stored) when the slot has passed or the
        queue is full, which a correct producer never causes."""
        if slot <= self._taken:
            self.dropped += 1
            return False
        if slot not in self._items and len(self._items) >= self.capacity:
            return False
        self._items[slot] = item
        return True

    def take(self, slot: int) -> T | None:
        """The item of ``slot`` (None if there is none); items of earlier slots are dropped."""
        stale = [s for s in self._items if s < slot]
        for s in stale:
            del self._items[s]
        self.dropped += len(stale)
        self._taken = max(self._taken, slot)
        return self._items.pop(slot, None)

    def flush(self, after: int | None = None) -> int:
        """Drop every item (or only those of slots > ``after``); return how many."""
        doomed = [s for s in self._items if after is None or s > after]
        for s in doomed:
            del self._items[s]
        return len(doomed)

    def last_slot(self) -> int | None:
        """Highest slot holding an item."""
        return max(self._items) if self._items else None


class DropOldestQueue(Generic[T]):
    """A bounded async queue whose :meth:`put` never blocks: when full the oldest item goes."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T | None] = deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self.dropped = 0
        """Items discarded because the consumer lagged."""
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Append ``item``; drop the oldest item if the queue is full."""
        if self.closed:
            return
        maxlen = self._items.maxlen
        if maxlen is not None and len(self._items) == maxlen:
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        """End the queue: :meth:`get` returns None once the queued items are gone."""
        if not self.closed:
            self.closed = True
            self._items.append(None)  # may displace the oldest item; the end matters more
            self._ready.set()

    async def get(self) -> T | None:
        """The next item, or None when the queue was closed."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is None:
            self._items.append(None)  # every later get() sees the end too
        return item

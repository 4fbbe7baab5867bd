"""In-process "this payment changed" notifications, for live pages (server-sent events).

Each subscriber gets its own queue; a slow or gone subscriber never blocks the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from .storage import Transaction


class PaymentEvents:
    def __init__(self, queue_size: int = 16) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Transaction]]] = {}
        self._queue_size = queue_size

    @contextlib.contextmanager
    def subscribe(self, checkout_request_id: str) -> Iterator[asyncio.Queue[Transaction]]:
        queue: asyncio.Queue[Transaction] = asyncio.Queue(self._queue_size)
        self._subscribers.setdefault(checkout_request_id, set()).add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(checkout_request_id, set())
            subscribers.discard(queue)
            if not subscribers:
                self._subscribers.pop(checkout_request_id, None)

    def publish(self, tx: Transaction) -> None:
        for queue in self._subscribers.get(tx.checkout_request_id, ()):
            if queue.full():  # only the newest state matters to a page
                queue.get_nowait()
            queue.put_nowait(tx)

    def followed(self) -> list[str]:
        """The payments some page here is following."""
        return list(self._subscribers)

    def subscriber_count(self, checkout_request_id: str) -> int:
        return len(self._subscribers.get(checkout_request_id, ()))

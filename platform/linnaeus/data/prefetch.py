"""Prepares device batches ahead of the consumer, in a background thread on a side CUDA stream.

Notable:
- With `decode=gpu` the trainer used to fetch, decode and crop each batch on its own thread between
  two steps, leaving the GPU idle meanwhile. Here a thread keeps up to `depth` batches ready: its
  kernels (nvJPEG, crops) go to a side stream, and the consumer's stream waits on an event recorded
  after each batch, so the two overlap and the consumer never reads a half-written tensor.
- Tensors made on the side stream are handed to the consumer's stream with `record_stream`, so the
  caching allocator does not reuse their memory while the training step may still read it.
- An exception in the thread is raised in the consumer at the batch where it happened. The thread holds
  only the queue and a stop flag, never the Prefetcher, so dropping the Prefetcher (or `close()`) stops
  it even when it is blocked on a full queue; a consumer never waits on a thread that has gone.
- On CPU the same code runs without streams (CI tests it there).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterator

import torch

_END = object()
_POLL_S = 0.1


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(items: queue.Queue, stopping: threading.Event, item) -> bool:
    while not stopping.is_set():
        try:
            items.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(make: Callable[[], Iterator[dict]], items: queue.Queue, stopping: threading.Event,
             device: torch.device, side: torch.cuda.Stream | None) -> None:
    try:
        if side is not None:
            torch.cuda.set_device(device)  # a new thread starts on device 0
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for batch in make():
                event = None
                if side is not None:
                    event = torch.cuda.Event()
                    event.record(side)
                if not _put(items, stopping, (batch, event)):
                    return
    except BaseException as exc:  # handed to the consumer, raised there
        _put(items, stopping, _Failure(exc))
        return
    _put(items, stopping, _END)


class Prefetcher:
    """Iterates `make()`'s batches (dicts of tensors), up to `depth` ahead of the consumer."""

    def __init__(self, make: Callable[[], Iterator[dict]], device: torch.device | str, depth: int = 2):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopping = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=_produce, args=(make, self.queue, self.stopping, self.device, side),
                                       name="batch-prefetch", daemon=True)
        self.thread.start()

    def __iter__(self) -> "Prefetcher":
        return self

    def _get(self):
        while True:
            try:
                return self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self.done or not self.thread.is_alive() and self.queue.empty():
                    return _END

    def __next__(self) -> dict:
        if self.done:
            raise StopIteration
        item = self._get()
        if item is _END or isinstance(item, _Failure):
            self.done = True
            if item is _END:
                raise StopIteration
            raise item.exc
        batch, event = item
        if event is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(event)
            for value in batch.values():
                if isinstance(value, torch.Tensor) and value.is_cuda:
                    value.record_stream(consumer)
        return batch

    def close(self) -> None:
        self.done = True
        self.stopping.set()
        self.thread.join(timeout=5)

    def __del__(self) -> None:
        self.stopping.set()

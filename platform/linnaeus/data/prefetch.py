"""Prepares device batches ahead of the consumer, in a background thread on a side CUDA stream.

Notable:
- With `decode=gpu` the trainer used to fetch, decode and crop each batch on its own thread between
  two steps, leaving the GPU idle meanwhile. Here a thread keeps up to `depth` batches ready: its
  kernels (nvJPEG, crops) go to a side stream, and the consumer's stream waits on an event recorded
  after each batch, so the two overlap and the consumer never reads a half-written tensor.
- Tensors made on the side stream are handed to the consumer's stream with `record_stream`, so the
  caching allocator does not reuse their memory while the training step may still read it.
- An exception in the thread is raised in the consumer at the batch where it happened; `close()` (or
  dropping the iterator) stops the thread even when it is blocked on a full queue.
- On CPU the same code runs without streams (CI tests it there).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterator

import torch

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Iterates `make()`'s batches (dicts of tensors), up to `depth` ahead of the consumer."""

    def __init__(self, make: Callable[[], Iterator[dict]], device: torch.device | str, depth: int = 2):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopping = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._run, args=(make,), name="batch-prefetch", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[], Iterator[dict]]) -> None:
        if self.side is not None:
            torch.cuda.set_device(self.device)  # a new thread starts on device 0
        context = torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext()
        try:
            with context:
                for batch in make():
                    event = None
                    if self.side is not None:
                        event = torch.cuda.Event()
                        event.record(self.side)
                    if not self._put((batch, event)):
                        return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failure(exc))
            return
        self._put(_END)

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> dict:
        if self.done:
            raise StopIteration
        item = self.queue.get()
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
        self.stopping.set()
        self.thread.join(timeout=5)

    def __del__(self) -> None:
        self.stopping.set()

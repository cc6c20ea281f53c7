"""An LRU cache of label text embeddings, one entry per (model, label text, templates).

Notable:
- Entries are per label, not per label list: a request whose 1,000 labels share 990 with an earlier
  one encodes 10 texts. Keys carry the model's weight digest, so two models never share an entry.
- Hits and misses are counted for the service's metrics; the cache holds CPU tensors (a few KB each).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import torch


class LabelCache:
    def __init__(self, max_entries: int = 100_000):
        if max_entries < 1:
            raise ValueError(f"label cache: max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # the service computes in worker threads

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_compute(self, keys: Sequence[Hashable],
                       compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """[len(keys), D]: cached rows as they are, `compute(missing positions)` for the rest."""
        with self._lock:
            rows = [self._get(key) for key in keys]
            missing = [i for i, row in enumerate(rows) if row is None]
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if missing:
            computed = compute(missing).detach().float().cpu()
            with self._lock:
                for i, row in zip(missing, computed):
                    rows[i] = row = row.clone()  # a view would keep the whole computed batch alive
                    self._put(keys[i], row)
        return torch.stack(rows)

    def _get(self, key: Hashable) -> torch.Tensor | None:
        row = self._entries.get(key)
        if row is not None:
            self._entries.move_to_end(key)
        return row

    def _put(self, key: Hashable, row: torch.Tensor) -> None:
        self._entries[key] = row
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

"""Top-k by dot product for large query and key sets, a memory-bounded block of queries at a time.

Notable:
- A block holds at most `chunk` queries and `budget` similarities, so queries x keys never exists whole
  (a million images x 10,000 species is 40 GB; 8,192 texts x a million images 32 GB).
- Runs where the inputs are (the GPU when evaluation has one); the indices come back on the CPU, where
  the labels they are compared with live.
"""

from __future__ import annotations

import torch

BUDGET = 2**27  # similarities per block: 512 MB of float32


def top_k(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int = 16384, budget: int = BUDGET
          ) -> torch.Tensor:
    """[len(queries), min(k, len(keys))] indices of each query's best keys (rows of `keys`)."""
    keys = keys.to(queries.device)
    k = min(k, len(keys))
    rows = max(1, min(chunk, budget // max(len(keys), 1)))
    return torch.cat([(queries[i:i + rows].float() @ keys.T.float()).topk(k, dim=1).indices.cpu()
                      for i in range(0, len(queries), rows)])

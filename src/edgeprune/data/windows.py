"""Token windows: what calibration and training text becomes (``(n, seq_len)`` ids and where they came from)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenWindows:
    """``ids``: ``(n, seq_len)`` token ids; ``source``: where they came from (for reports)."""

    ids: torch.Tensor
    source: str

    def __post_init__(self):
        if self.ids.ndim != 2 or self.ids.dtype != torch.long:
            raise ValueError(f"ids must be a (n, seq_len) long tensor, got {tuple(self.ids.shape)} {self.ids.dtype}")

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.ids.shape[1]

    @property
    def tokens(self) -> int:
        return self.ids.numel()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` windows drawn without replacement (all of them, shuffled, if ``n >= len``)."""
        order = torch.randperm(len(self), generator=generator)
        return self.ids[order[: min(n, len(self))]]

    def describe(self) -> dict:
        return {"source": self.source, "windows": len(self), "seq_len": self.seq_len, "tokens": self.tokens}

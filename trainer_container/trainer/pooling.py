"""Mean pooling's numerator as a module: what the hybrid's sentence encoder runs (on PyTorch or exported to ONNX
Runtime) and what its contrastive tuning trains through, so both pool a note the same way."""

from __future__ import annotations

import torch
from torch import nn


class TokenSums(nn.Module):
    """The encoder's hidden states summed over each window's real tokens (mean pooling's numerator): the part of
    the hybrid a runtime such as ONNX Runtime may run instead of PyTorch (`SentenceEncoder.forward`)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return {"sums": (hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)).sum(1)}

"""A small character-level causal transformer, for ``lscape train --model-def examples/charlm/model.py:build``.

Input: ``(N, T)`` int64 character codes; output: ``(N, T, vocab)`` next-character scores. Each position
attends to itself and the positions before it (a causal mask), so position ``t`` predicts token ``t+1``.
"""

from __future__ import annotations

import torch
from torch import nn


class CharLM(nn.Module):
    """Token and position embeddings, ``layers`` pre-norm transformer blocks, a final norm, a linear head."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, context: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)  # (vocab, d_model)
        self.pos = nn.Embedding(context, d_model)  # (context, d_model)
        block = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` codes -> ``(N, T, vocab)`` scores."""
        steps = x.shape[1]
        h = self.embed(x) + self.pos(torch.arange(steps, device=x.device))  # (N, T, d_model)
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=x.device, dtype=h.dtype)
        return self.head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


def build(vocab: int = 128, d_model: int = 32, heads: int = 2, layers: int = 2, context: int = 32) -> CharLM:
    """The model; ``vocab`` 128 covers the ASCII codes that ``make_data.py`` writes."""
    return CharLM(vocab, d_model, heads, layers, context)

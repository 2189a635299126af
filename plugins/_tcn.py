"""A causal temporal convolution network (WaveNet-style), time-major.

    a_i = tanh(W_f *d a_{i-1}) * sigmoid(W_g *d a_{i-1})     -- gated, filter size 2, dilation d
    h_i = h_{i-1} + W_r a_i                                   -- residual connection

The output at step t reads the inputs at steps <= t only: every convolution pads on the left
(the past) alone, so trailing padding of shorter sequences never reaches their real steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class GatedCausalBlock(nn.Module):
    """One gated, residual, causal dilated convolution over (B, C, T)."""

    def __init__(self, channels: int, dilation: int, kernel: int = 2) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(channels, 2 * channels, kernel, dilation=dilation)
        self.residual = nn.Conv1d(channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        filt, gate = self.conv(F.pad(h, (self.pad, 0))).chunk(2, dim=1)
        return h + self.residual(torch.tanh(filt) * torch.sigmoid(gate))


class CausalTCN(nn.Module):
    """``layers`` gated blocks of ``channels``, dilations cycling through 1, 2, ..., 2^(cycle-1);
    :meth:`forward` maps features (T, B, C) to every block's output, time-major (T, B, C) each."""

    def __init__(self, channels: int, layers: int, cycle: int = 5) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(GatedCausalBlock(channels, 2 ** (i % cycle)) for i in range(layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        h = x.permute(1, 2, 0)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h.permute(2, 0, 1))
        return outs

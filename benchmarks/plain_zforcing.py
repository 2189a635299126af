"""A plain eager Z-Forcing, written the way the authors' code computes it.

One ``nn.LSTMCell`` step per time step fed with ``torch.cat([Linear(z_t), emb(u_t)])``,
``nn.Sequential`` MLPs for the prior, the posterior and the auxiliary network, all evaluated
inside the time loop, and ``[t]`` indexing of the per-step inputs: nothing hoisted, nothing
fused. It is the baseline of ``benchmarks/train_step.py --vs-plain`` and the reference of
``tests/test_fast_path.py``, so it follows seqvae's semantics exactly where they differ from
the authors' code:

- the decoder and the backward RNN have their own input embeddings;
- each sequence is reversed within its own length before the backward LSTM;
- the auxiliary cost follows ``summary-reconstruction``'s ``gradient`` option (``aux_gradient``
  here): ``authors`` (the default, as the authors' code and seqvae's default) detaches only
  the target b_t, so the cost reaches the whole posterior network, the backward LSTM and the
  decoder; ``local`` reads z_t recomputed from detached (h_{t-1}, b_t) with the same noise, so
  it trains the auxiliary network and the in-loop posterior layers only, never the RNNs nor
  the b_t-side weights of the posterior's first layer;
- the backward language-model head is off (its weight is 0 in the built-in composition).

It imports nothing from seqvae.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LOG_2PI = math.log(2.0 * math.pi)


class LReLU(nn.Module):
    """Leaky ReLU (slope 1/3) clamped to [-3, 3], as in the authors' code."""

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 1.0 / 3.0).clamp(-3.0, 3.0)


@dataclass
class PlainDims:
    x_dim: int = 200
    emb: int = 512
    rnn: int = 1024
    mlp: int = 512
    z: int = 256


def _gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))


def _gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    return 0.5 * (
        logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0
    )


def _reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Each sequence reversed within its length: an index_select over time, as the authors
    reverse their (unpadded) batches, with the index made per sequence."""
    steps, batch = x.shape[:2]
    t = torch.arange(steps, device=x.device).unsqueeze(1)
    lengths = lengths.unsqueeze(0)
    index = torch.where(t < lengths, lengths - 1 - t, t)
    rows = (index * batch + torch.arange(batch, device=x.device)).reshape(-1)
    return x.reshape(steps * batch, -1).index_select(0, rows).view_as(x)


class PlainZForcing(nn.Module):
    """Z-Forcing with a Gaussian output, a linear emission and the Gaussian auxiliary cost."""

    def __init__(self, dims: PlainDims, aux_gradient: str = "authors") -> None:
        super().__init__()
        if aux_gradient not in ("authors", "local"):
            raise ValueError(f"aux_gradient: expected 'authors' or 'local', got {aux_gradient!r}")
        self.aux_gradient = aux_gradient
        d = self.dims = dims
        self.emb_fwd = nn.Linear(d.x_dim, d.emb)
        self.emb_bwd = nn.Linear(d.x_dim, d.emb)
        self.bwd_mod = nn.LSTM(d.emb, d.rnn)
        self.gen_mod = nn.Linear(d.z, d.mlp)
        self.fwd_mod = nn.LSTMCell(d.mlp + d.emb, d.rnn)
        self.pri_mod = nn.Sequential(nn.Linear(d.rnn, d.mlp), LReLU(), nn.Linear(d.mlp, 2 * d.z))
        self.inf_mod = nn.Sequential(nn.Linear(2 * d.rnn, d.mlp), LReLU(), nn.Linear(d.mlp, 2 * d.z))
        self.aux_mod = nn.Sequential(nn.Linear(d.rnn + d.z, d.mlp), LReLU(), nn.Linear(d.mlp, 2 * d.rnn))
        self.fwd_out_mod = nn.Linear(d.rnn, 2 * d.x_dim)

    def forward(
        self, u: Tensor, x: Tensor, mask: Tensor, noise: Tensor, kl_weight: float, aux_weight: float
    ) -> dict[str, Tensor]:
        """Per-sequence terms and the training loss for time-major (T, B, D) inputs."""
        steps, batch = x.shape[:2]
        rnn = self.dims.rnn
        lengths = mask.sum(0).long()
        b_states, _ = self.bwd_mod(_reverse_padded(self.emb_bwd(x), lengths))
        b_states = _reverse_padded(b_states, lengths) * mask.unsqueeze(-1)
        u_emb = self.emb_fwd(u)

        # the local aux path's copy of the posterior's first layer: h-part trainable, b-part not
        first = self.inf_mod[0]
        w_h, w_b = first.weight[:, :rnn], first.weight[:, rnn:]

        h = u.new_zeros(batch, rnn)
        c = u.new_zeros(batch, rnn)
        hs, klds, auxs = [], [], []
        for t in range(steps):
            b = b_states[t]
            pri_mu, pri_logvar = torch.clamp(self.pri_mod(h), -8.0, 8.0).chunk(2, 1)
            inf_mu, inf_logvar = torch.clamp(self.inf_mod(torch.cat((h, b), 1)), -8.0, 8.0).chunk(2, 1)
            klds.append(_gaussian_kl(inf_mu, inf_logvar, pri_mu, pri_logvar).sum(1))
            z = inf_mu + torch.exp(0.5 * inf_logvar) * noise[t]

            if aux_weight:  # switched off, the seqvae objective skips it in training too
                b_det = b.detach()  # the target: detached on both paths
                if self.aux_gradient == "local":
                    h_aux = h.detach()
                    local = F.linear(h_aux, w_h) + F.linear(b_det, w_b.detach(), first.bias.detach())
                    local = torch.clamp(self.inf_mod[2](self.inf_mod[1](local)), -8.0, 8.0)
                    loc_mu, loc_logvar = local.chunk(2, 1)
                    z_aux = loc_mu + torch.exp(0.5 * loc_logvar) * noise[t]
                else:  # the authors' fwd_pass: h_{t-1} and z_t with their graphs
                    h_aux, z_aux = h, z
                aux_params = self.aux_mod(torch.cat((h_aux, z_aux), 1))
                aux_mu, aux_logvar = torch.clamp(aux_params, -8.0, 8.0).chunk(2, 1)
                auxs.append(_gaussian_log_prob(b_det, torch.tanh(aux_mu), aux_logvar).sum(1))

            h, c = self.fwd_mod(torch.cat((self.gen_mod(z), u_emb[t]), 1), (h, c))
            hs.append(h)

        out_mu, out_logvar = self.fwd_out_mod(torch.stack(hs)).chunk(2, -1)
        log_px = (_gaussian_log_prob(x, out_mu, out_logvar.clamp(-8.0, 8.0)).sum(-1) * mask).sum(0)
        kl = (torch.stack(klds) * mask).sum(0)
        aux = (torch.stack(auxs) * mask).sum(0) if auxs else torch.zeros_like(kl)
        loss = (-log_px + kl_weight * kl - aux_weight * aux).mean()
        return {"loss": loss, "log_px": log_px, "kl": kl, "aux": aux, "elbo": log_px - kl}

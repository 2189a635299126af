"""The engine's path for decoders with parallel latents: no step loop.

    precompute on u_1, x_1..x_T  ->  context  ->  latent layers top-down, each for all steps  ->
    emission

A decoder with :attr:`seqvae.slots.Decoder.parallel_latents` draws its latent layers through
``draw(l, cond_l)``; here the prior gives p(z^l | cond_l) and the encoder q(z^l | cond_l,
features), both for all steps at once, and the layers are concatenated over the latent
dimension (layer 0 first) into the Trace's fields, so that the analytic KL, the IWAE weights and
the noise (one (T, B, sum Z_l) draw) need nothing else. Nothing here knows which model it runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqvae.slots import LatentLayer


def offsets(layers: tuple[LatentLayer, ...]) -> list[int]:
    """Where each layer's dimensions start in the concatenated latent."""
    out, start = [], 0
    for layer in layers:
        out.append(start)
        start += layer.z_dim
    return out


def pack_cond(layers: tuple[LatentLayer, ...], conds: list[Tensor]) -> Tensor:
    """The Trace's cond from per-layer conds [z^{l+1}, d^l]: every d^l, then every z^{l+1}, the
    order of the declared fields (``d_t``, ``z_above``)."""
    det = [c[..., layer.above_dim:] for layer, c in zip(layers, conds, strict=True)]
    above = [c[..., :layer.above_dim] for layer, c in zip(layers, conds, strict=True)]
    return torch.cat(det + above, dim=-1)


def unpack_cond(layers: tuple[LatentLayer, ...], cond: Tensor) -> list[Tensor]:
    """The inverse of :func:`pack_cond`."""
    det_sizes = [layer.cond_dim - layer.above_dim for layer in layers]
    parts = cond.split(det_sizes + [layer.above_dim for layer in layers], dim=-1)
    n = len(layers)
    return [torch.cat([parts[n + i], parts[i]], dim=-1) for i in range(n)]


def unroll(model, pre: dict[str, Tensor], features: Tensor, noise: Tensor) -> dict:
    """Draw every layer from the posterior for all steps at once; the Trace's latent fields
    and the decoder's out (T, B, F)."""
    decoder = model.decoder
    layers = decoder.latent_layers
    starts = offsets(layers)
    drawn: dict[int, tuple] = {}

    def draw(index: int, cond: Tensor) -> Tensor:
        if index in drawn:
            raise RuntimeError(f"decoder {decoder.name!r} drew latent layer {index} twice")
        prior = model.prior.layer(index, cond)
        mu, logvar = model.encoder.posterior_layer(index, cond, features, prior)
        eps = noise[..., starts[index]:starts[index] + layers[index].z_dim]
        z = torch.addcmul(mu, torch.exp(0.5 * logvar), eps)
        drawn[index] = (cond, mu, logvar, z, *prior)
        return z

    out = decoder.latents(pre, draw)
    if sorted(drawn) != list(range(len(layers))):
        raise RuntimeError(f"decoder {decoder.name!r} drew latent layers {sorted(drawn)} of {len(layers)}")
    cond, mu, logvar, z, prior_mu, prior_logvar = zip(*(drawn[i] for i in range(len(layers))), strict=True)
    return {"out": out, "cond": pack_cond(layers, list(cond)), "post_mu": torch.cat(mu, -1),
            "post_logvar": torch.cat(logvar, -1), "z": torch.cat(z, -1), "prior_mu": torch.cat(prior_mu, -1),
            "prior_logvar": torch.cat(prior_logvar, -1)}  # fmt: skip


def local_posterior(trace) -> tuple[Tensor, Tensor]:
    """(mu, logvar) of q from the trace's detached conds and features, layer by layer (for
    :meth:`seqvae.model.Trace.local_z`)."""
    layers = trace.layers
    conds = unpack_cond(layers, trace.cond.detach())
    features = trace.features.detach()
    starts = offsets(layers)
    mus, logvars = [], []
    for i, (layer, cond) in enumerate(zip(layers, conds, strict=True)):
        span = slice(starts[i], starts[i] + layer.z_dim)
        prior = (trace.prior_mu[..., span].detach(), trace.prior_logvar[..., span].detach())
        mu, logvar = trace.encoder.posterior_layer(i, cond, features, prior)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus, -1), torch.cat(logvars, -1)


@torch.no_grad()
def sample(model, n: int, steps: int, device, static: Tensor | None) -> Tensor:
    """Ancestral sampling, one step at a time: at step t the decoder's causal precompute runs on
    the whole prefix u_1..u_t (plus a placeholder u_{t+1} that nothing at steps <= t reads), every
    layer's earlier latents are kept and only step t's drawn from the prior, top-down; O(T^2)
    work, exact for causal networks."""
    decoder = model.decoder
    x_prev = torch.zeros(1, n, model.x_dim, device=device)
    history: dict[int, Tensor] = {}
    xs = []

    def draw(index: int, cond: Tensor) -> Tensor:
        mu, logvar = model.prior.layer(index, cond[-1:])
        z_t = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        past = history.get(index)
        history[index] = z_t if past is None else torch.cat([past, z_t])
        return history[index]

    for t in range(steps):
        u = torch.cat([x_prev, torch.zeros_like(x_prev[:1])])  # u_1..u_{t+1}
        pre, _ = decoder.precompute(u)
        if static is not None:
            pre = {**pre, "static": static.unsqueeze(0).expand(t + 2, -1, -1)}
        out = decoder.latents(pre, draw)
        z = torch.cat([history[i] for i in range(len(decoder.latent_layers))], -1)
        params = decoder.emission(out, z, {k: v[: t + 1] for k, v in pre.items()})
        x_t = model.likelihood.sample(params[-1:])
        xs.append(x_t[0])
        x_prev = torch.cat([x_prev, x_t])
    return torch.stack(xs)

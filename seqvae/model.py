"""The engine: one generic unroll for every composition.

    precompute (decoder, then encoder)  ->  step loop over t  ->  batched prior and emission

Nothing here knows which model it runs; see :mod:`seqvae.slots` for the contracts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import layered
from seqvae.flow import InverseAutoregressiveFlow
from seqvae.fused import step_loop, unbind_steps
from seqvae.nn import gaussian_kl, gaussian_log_prob
from seqvae.slots import AuxObjective, Decoder, Encoder, Likelihood, Prior, State, StaticEncoder


@dataclass
class Noise:
    """The standard-normal draws behind one forward pass's latents."""

    steps: Tensor | None  # (T, B, Z) behind z_t
    static: Tensor | None = None  # (B, F) behind a sequence-level f

    def columns(self, start: int, stop: int) -> Noise:
        """The draws of batch columns ``start:stop``."""
        return self.part(None, slice(start, stop))

    def part(self, steps: int | None, columns: slice) -> Noise:
        """The draws of the first ``steps`` steps (None: all) of batch ``columns``."""
        return Noise(None if self.steps is None else self.steps[:steps, columns],
                     None if self.static is None else self.static[columns])  # fmt: skip


@dataclass
class Trace:
    """Everything one unroll produced, time-major. Auxiliary objectives read from it."""

    u: Tensor  # (T, B, D) inputs, u_t = x_{t-1}
    x: Tensor  # (T, B, D) targets
    mask: Tensor  # (T, B) 1 on real steps
    params: Tensor  # (T, B, P) emission parameters
    pre: dict[str, Tensor]  # the decoder's precompute
    likelihood: Likelihood  # scores observations (for auxiliary objectives that predict x)
    z: Tensor | None = None  # (T, B, Z)
    cond: Tensor | None = None  # (T, B, C) what prior and posterior read
    post_mu: Tensor | None = None
    post_logvar: Tensor | None = None
    prior_mu: Tensor | None = None
    prior_logvar: Tensor | None = None
    summary: Tensor | None = None  # (T, B, S) the encoder's per-step summary
    features: Tensor | None = None  # (T, B, F) the encoder's posterior features
    noise: Tensor | None = None  # (T, B, Z) the standard-normal draws behind z
    encoder: Encoder | None = None
    post_log_prob: Tensor | None = None
    """(T, B) log q(z_t | .) of a flow posterior, summed over z's dimensions; None when q is
    the encoder's Gaussian (post_mu, post_logvar), whose density the methods below use."""
    flow: InverseAutoregressiveFlow | None = None
    static_mu: Tensor | None = None  # (B, F) q(f | x) of a sequence-level latent f
    static_logvar: Tensor | None = None
    static_z: Tensor | None = None  # (B, F) the f the decoder read
    layers: tuple = ()
    """The decoder's latent layers (:class:`seqvae.slots.LatentLayer`) when it draws them without
    a step loop: z, cond and the (mu, logvar) fields concatenate them (:mod:`seqvae.layered`)."""

    def local_z(self) -> Tensor:
        """z recomputed from detached (cond_t, features_t) and the same noise.

        The values equal ``z``, but gradients reach only the posterior network's own
        in-loop parameters, never the encoder's sequence model or the decoder's recurrence.
        Auxiliary objectives that must not train the inference RNN (a reconstruction cost
        on a backward summary) read this instead of ``z``.
        """
        if self.layers:
            mu, logvar = layered.local_posterior(self)
            return torch.addcmul(mu, torch.exp(0.5 * logvar), self.noise)
        prior = None
        if self.encoder.uses_prior:
            prior = (self.prior_mu.detach(), self.prior_logvar.detach())
        cond = self.cond.detach()
        mu, logvar = self.encoder.posterior(cond, self.features.detach(), prior)
        z = torch.addcmul(mu, torch.exp(0.5 * logvar), self.noise)
        return z if self.flow is None else self.flow.transform(z, cond)

    def static_log_ratio(self) -> Tensor:
        """log N(f; 0, I) - log q(f | x) per sequence (B,), for the sampled f."""
        zeros = torch.zeros_like(self.static_z)
        log_p = gaussian_log_prob(self.static_z, zeros, zeros)
        return (log_p - gaussian_log_prob(self.static_z, self.static_mu, self.static_logvar)).sum(-1)

    def kl_static(self) -> Tensor | None:
        """Analytic KL(q(f | x) || N(0, I)) per sequence (B,), or None without a static latent."""
        if self.static_z is None:
            return None
        zeros = torch.zeros_like(self.static_mu)
        return gaussian_kl(self.static_mu, self.static_logvar, zeros, zeros).sum(-1)

    def kl_per_dim(self) -> Tensor:
        """Analytic KL(q || p) per step and latent dimension (T, B, Z), masked.

        With a flow posterior this is the KL of the flow's *base* Gaussian (the encoder's
        (mu, logvar)) to the prior: a diagnostic of which dimensions the encoder uses, which
        does not sum to the flow's KL (that has no per-dimension form; see :meth:`kl`)."""
        if self.z is None:
            return self.mask.new_zeros(*self.mask.shape, 0)
        kl = gaussian_kl(self.post_mu, self.post_logvar, self.prior_mu, self.prior_logvar)
        return kl * self.mask.unsqueeze(-1)

    def log_q(self) -> Tensor:
        """log q(z_t | .) per step (T, B), unmasked: the flow's density, or the Gaussian's."""
        if self.post_log_prob is not None:
            return self.post_log_prob
        return gaussian_log_prob(self.z, self.post_mu, self.post_logvar).sum(-1)

    def log_p(self) -> Tensor:
        """log p(z_t | cond_t) per step (T, B), unmasked."""
        return gaussian_log_prob(self.z, self.prior_mu, self.prior_logvar).sum(-1)

    def kl(self, per_dim: Tensor | None = None) -> Tensor:
        """The KL term per sequence (B,), masked: analytic for the encoder's Gaussian (from
        ``per_dim``, :meth:`kl_per_dim`'s result, where the caller has it already); for a flow
        posterior, which has no closed form, the single-sample estimate
        sum_t log q(z_t) - log p(z_t) at the trace's z."""
        if self.post_log_prob is None:
            return (self.kl_per_dim() if per_dim is None else per_dim).sum((0, 2))
        return ((self.log_q() - self.log_p()) * self.mask).sum(0)


class SequenceModel(nn.Module):
    """A composition of slot components, unrolled by one generic loop."""

    def __init__(
        self,
        likelihood: Likelihood,
        decoder: Decoder,
        encoder: Encoder | None = None,
        prior: Prior | None = None,
        aux: dict[str, AuxObjective] | None = None,
        *,
        x_dim: int,
        z_dim: int = 0,
        flow: InverseAutoregressiveFlow | None = None,
        static: StaticEncoder | None = None,
    ) -> None:
        super().__init__()
        self.static = static
        self.likelihood = likelihood
        self.decoder = decoder
        self.encoder = encoder
        self.prior = prior
        self.aux = nn.ModuleDict(aux or {})
        self.flow = flow
        """Applied to the posterior sample inside each step (``model.encoder.flow``); None: q is
        the encoder's Gaussian."""
        self.x_dim = x_dim
        self.z_dim = z_dim
        self.compile_step = False
        """Run each step through ``torch.compile`` (training only; compiles on first use)."""
        self.fast_path = True
        """Run the step loop inside :func:`seqvae.fused.step_loop`, where in-loop layers defer
        their weight gradients; False runs plain autograd, which must compute the same (the
        conformance suite's ``fast-path`` property compares the two)."""
        self._compiled = None

    def draw_noise(self, steps: int, batch: int, device: torch.device | str, dtype: torch.dtype) -> Noise | None:
        """The noise that :meth:`forward` draws when given none, from torch's generator, in the
        same order (a static latent's first); None for a model without latents. A data-parallel
        rank draws its global batch's and passes its own columns, so that N ranks draw what
        one process draws."""
        static = self._draw_static(batch, device, dtype) if self.static is not None else None
        if not self.decoder.uses_latent:
            return None if static is None else Noise(None, static)
        return Noise(torch.randn(steps, batch, self.z_dim, device=device, dtype=dtype), static)

    def _draw_static(self, batch: int, device, dtype) -> Tensor:
        return torch.randn(batch, self.static.static_dim, device=device, dtype=dtype)

    def forward(self, u: Tensor, x: Tensor, mask: Tensor, noise: Tensor | Noise | None = None) -> Trace:
        """Unroll over a time-major batch; ``noise`` (a :class:`Noise`, or the (T, B, Z) draws
        behind z alone) fixes the posterior samples."""
        noise = noise if isinstance(noise, Noise) or noise is None else Noise(noise)
        steps, batch = x.shape[:2]
        parallel = self.decoder.parallel_latents
        # without a step loop the decoder reads u_1, x_1..x_T: u_{t+1} = x_t, but x_t itself where u_{t+1}
        # is padding (seqvae.slots.Decoder.parallel_latents)
        pre, _ = self.decoder.precompute(torch.cat([u[:1], x]) if parallel else u)
        static = {}
        if self.static is not None:  # f first: the decoder's context and precompute carry it
            mu_f, logvar_f = self.static(x, mask)
            eps = noise.static if noise is not None and noise.static is not None else \
                self._draw_static(batch, x.device, mu_f.dtype)  # fmt: skip
            f = torch.addcmul(mu_f, torch.exp(0.5 * logvar_f), eps)
            pre = {**pre, "static": f.unsqueeze(0).expand(steps + parallel, -1, -1)}
            static = {"static_mu": mu_f, "static_logvar": logvar_f, "static_z": f}
        state = self.decoder.initial_state(u.shape[1])
        if not self.decoder.uses_latent:
            out, _ = self.decoder.unroll(pre, state)
            params = self.decoder.emission(out, None, pre)
            return Trace(u=u, x=x, mask=mask, params=params, pre=pre, likelihood=self.likelihood, **static)

        enc = self.encoder.precompute(x, mask, self.decoder.context(pre, x))
        noise = noise.steps if noise is not None else None
        if noise is None:
            noise = torch.randn(steps, batch, self.z_dim, device=x.device, dtype=enc.features.dtype)
        if parallel:
            drawn = layered.unroll(self, pre, enc.features, noise)
            pre = {key: value[:steps] for key, value in pre.items()}
            params = self.decoder.emission(drawn.pop("out"), drawn["z"], pre)
            return Trace(u=u, x=x, mask=mask, params=params, pre=pre, likelihood=self.likelihood, summary=enc.summary,
                         features=enc.features, noise=noise, encoder=self.encoder, layers=self.decoder.latent_layers,
                         **drawn, **static)  # fmt: skip
        conds, mus, logvars, zs, prior_mus, prior_logvars, outs, log_qs = [], [], [], [], [], [], [], []
        step = self._compiled_step() if self.compile_step and torch.is_grad_enabled() else self._step
        # in-loop layers (seqvae.fused.LoopLinear) defer their weight gradients to one GEMM each
        with step_loop(steps) if self.fast_path else contextlib.nullcontext():
            # unbind once: indexing [t] inside the loop would allocate a full-size gradient per
            # step; unbind_steps also lets in-loop layers add a whole precomputed sequence at once
            pre_steps = _unbind_dict(pre) or [{}] * steps  # a decoder may precompute nothing
            feature_steps = unbind_steps(enc.features)
            noise_steps = noise.unbind(0)
            for pre_t, feature_t, noise_t in zip(pre_steps, feature_steps, noise_steps, strict=True):
                state, out_t, (cond, mu, logvar, z, prior, log_q) = step(state, pre_t, feature_t, noise_t)
                conds.append(cond)
                mus.append(mu)
                logvars.append(logvar)
                zs.append(z)
                outs.append(out_t)
                if prior is not None:
                    prior_mus.append(prior[0])
                    prior_logvars.append(prior[1])
                if log_q is not None:
                    log_qs.append(log_q)

        if all(c is o for c, o in zip(conds[1:], outs[:-1], strict=True)) and conds[0].shape == outs[0].shape:
            # out_t is the state that the decoder passes as cond_{t+1}: one stack serves both
            states = torch.stack([conds[0], *outs])
            cond, out = states[:-1], states[1:]
        elif all(c is o for c, o in zip(conds, outs, strict=True)):  # out_t is cond_t itself
            cond = out = torch.stack(outs)
        else:
            cond, out = torch.stack(conds), torch.stack(outs)
        if prior_mus:
            prior_mu, prior_logvar = torch.stack(prior_mus), torch.stack(prior_logvars)
        else:  # one batched call over all steps instead of T small ones
            prior_mu, prior_logvar = self.prior(cond)
        z = torch.stack(zs)
        params = self.decoder.emission(out, z, pre)
        return Trace(
            u=u, x=x, mask=mask, params=params, pre=pre, likelihood=self.likelihood, z=z, cond=cond,
            post_mu=torch.stack(mus), post_logvar=torch.stack(logvars),
            prior_mu=prior_mu, prior_logvar=prior_logvar, summary=enc.summary,
            features=enc.features, noise=noise, encoder=self.encoder,
            post_log_prob=torch.stack(log_qs) if log_qs else None, flow=self.flow, **static,
        )  # fmt: skip

    def _step(self, state: State, pre_t: dict[str, Tensor], feature_t: Tensor, noise_t: Tensor):
        """One step of the unroll: the new state, out_t, and what ``draw`` saw and returned:
        (cond_t, posterior mu and logvar, z_t, the prior's (mu, logvar) or None, and log q(z_t)
        for a flow posterior or None)."""
        drawn = []

        def draw(cond: Tensor) -> Tensor:
            prior = self.prior(cond) if self.encoder.uses_prior else None
            mu, logvar = self.encoder.posterior(cond, feature_t, prior)
            z = torch.addcmul(mu, torch.exp(0.5 * logvar), noise_t)
            log_q = None
            if self.flow is not None:  # on this step's sample: what the recurrence reads is z^K
                z, log_q = self.flow(z, logvar, noise_t, cond)
            drawn.append((cond, mu, logvar, z, prior, log_q))
            return z

        state, out_t = self.decoder.step(state, pre_t, draw)
        if len(drawn) != 1:
            raise RuntimeError(f"decoder {self.decoder.name!r} called draw {len(drawn)} times in one step")
        return state, out_t, drawn[0]

    def _compiled_step(self):
        if self._compiled is None:
            self._compiled = torch.compile(self._step)
        return self._compiled

    @torch.no_grad()
    def sample(self, n: int, steps: int, device: torch.device | str = "cpu") -> Tensor:
        """Ancestral sampling from the prior: (steps, n, D), feeding each x_t back as u_{t+1}."""
        f = None if self.static is None else torch.randn(n, self.static.static_dim, device=device)
        if self.decoder.parallel_latents:
            return layered.sample(self, n, steps, device, f)
        u = torch.zeros(1, n, self.x_dim, device=device)
        state = self.decoder.initial_state(n)
        carry = None
        xs, zs = [], []

        def draw(cond: Tensor) -> Tensor:
            mu, logvar = self.prior(cond)
            zs.append(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
            return zs[-1]

        for _ in range(steps):
            pre, carry = self.decoder.precompute(u, carry)
            if f is not None:  # f ~ N(0, I), once per sequence
                pre = {**pre, "static": f.unsqueeze(0)}
            pre_t = {k: v[0] for k, v in pre.items()}
            zs.clear()
            if self.decoder.uses_latent:
                state, out_t = self.decoder.step(state, pre_t, draw)
                out = out_t.unsqueeze(0)
            else:
                out, state = self.decoder.unroll(pre, state)
            z = zs[0].unsqueeze(0) if zs else None
            x_t = self.likelihood.sample(self.decoder.emission(out, z, pre))
            xs.append(x_t[0])
            u = x_t
        return torch.stack(xs)


def _unbind_dict(tensors: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    keys = list(tensors)
    if not keys:
        return []
    per_key = [unbind_steps(tensors[k]) for k in keys]
    return [dict(zip(keys, values, strict=True)) for values in zip(*per_key, strict=True)]

"""Building blocks shared by components: clamped activations, Gaussian heads and densities.

Everything here is generic maths; components import it so that a Gaussian KL or an MLP
is written once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqvae import native
from seqvae.fused import LoopLinear
from seqvae.fused_chain import LoopSequential, run_chain

LOG_2PI = math.log(2.0 * math.pi)


_HARDTANH_BACKWARD = torch.ops.aten.hardtanh_backward.default
_LEAKY_RELU_BACKWARD = torch.ops.aten.leaky_relu_backward.default
"""The overloads themselves: a call through the op packet costs about 0.6 us more."""


class ClampedLeakyReLU(nn.Module):
    """Leaky ReLU followed by a clamp: keeps activations bounded in long unrolls."""

    def __init__(self, slope: float = 1.0 / 3.0, bound: float = 3.0) -> None:
        super().__init__()
        self.slope = slope
        self.bound = bound

    def forward(self, x: Tensor) -> Tensor:
        # hardtanh is clamp with a one-kernel backward (clamp's takes four); they differ only
        # in the gradient at exactly +-bound
        return F.hardtanh(F.leaky_relu(x, self.slope), -self.bound, self.bound)

    def in_loop_kernels(self):
        """(forward_, backward_from_output) for :mod:`seqvae.fused_chain`: the same kernels in
        place, and the input gradient from the output y. hardtanh's backward zeroes it where y is
        at a bound; leaky ReLU's, given its output, scales it where y <= 0, which is where the
        input was <= 0 for a slope >= 0 (the only case it supports)."""
        if self.slope < 0:
            return None
        slope, bound = self.slope, self.bound

        def forward_(y: Tensor) -> Tensor:
            return F.hardtanh_(F.leaky_relu_(y, slope), -bound, bound)

        def backward(grad: Tensor, y: Tensor) -> Tensor:
            grad = _HARDTANH_BACKWARD(grad, y, -bound, bound)
            return _LEAKY_RELU_BACKWARD(grad, y, slope, True)

        return forward_, backward

    def extra_repr(self) -> str:
        return f"slope={self.slope:.4g}, bound={self.bound}"


def mlp(
    sizes: list[int],
    activation: type[nn.Module] = ClampedLeakyReLU,
    linear: type[nn.Linear] = nn.Linear,
) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last).

    ``linear=LoopLinear`` (:mod:`seqvae.fused`) for an MLP that runs inside the step loop: a
    :class:`~seqvae.fused_chain.LoopSequential`, one autograd node per step there."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i > 0:
            layers.append(activation())
        layers.append(linear(n_in, n_out))
    return LoopSequential(*layers) if issubclass(linear, LoopLinear) else nn.Sequential(*layers)


def split_gaussian(params: Tensor, bound: float = 8.0) -> tuple[Tensor, Tensor]:
    """Split the last dimension into (mu, logvar), both clamped to [-bound, bound]."""
    mu, logvar = F.hardtanh(params, -bound, bound).chunk(2, dim=-1)  # a clamp, see ClampedLeakyReLU
    return mu, logvar


def gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mu, exp(logvar)) (broadcasting); sum over the event dimensions yourself.

    One autograd node that saves two tensors, (x - mu) and exp(-logvar), where the composed
    expression saves three and makes five full-size temporaries: on whole sequences (an
    auxiliary cost over T x B x 1024 values) that difference sets the training step's peak
    memory. Not twice differentiable.
    """
    return _GaussianLogProb.apply(x, mu, logvar)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Elementwise KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))), broadcasting.

    One autograd node, like :func:`gaussian_log_prob`; not twice differentiable."""
    return _GaussianKL.apply(mu_q, logvar_q, mu_p, logvar_p)


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """``grad`` summed over the dimensions an input of ``shape`` was broadcast along."""
    return grad if grad.shape == shape else grad.sum_to_size(shape)


class _GaussianLogProb(torch.autograd.Function):
    # log N = -0.5 (log 2pi + logvar + d^2 v),  d = x - mu, v = exp(-logvar)
    # d/dmu = d v = -d/dx,  d/dlogvar = 0.5 (d^2 v - 1)
    # The first product of each chain has the full broadcast shape; the rest work in place.

    @staticmethod
    def forward(ctx, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        d = x - mu
        v = logvar.neg().exp_()
        out = torch.mul(d, v).mul_(d).add_(logvar).add_(LOG_2PI).mul_(-0.5)
        ctx.save_for_backward(d, v)  # not the inputs: a saved view would keep its whole base alive
        ctx.shapes = x.shape, mu.shape, logvar.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        d, v = ctx.saved_tensors
        x_shape, mu_shape, logvar_shape = ctx.shapes
        need_x, need_mu, need_logvar = ctx.needs_input_grad
        g_mu = torch.mul(g, d).mul_(v)  # g d v
        g_logvar = None
        if need_logvar:  # 0.5 g (d^2 v - 1) = 0.5 (g_mu d - g)
            g_logvar = _reduce_to(torch.mul(g_mu, d).sub_(g).mul_(0.5), logvar_shape)
        g_x = _reduce_to(-g_mu, x_shape) if need_x else None
        return g_x, _reduce_to(g_mu, mu_shape) if need_mu else None, g_logvar


class _GaussianKL(torch.autograd.Function):
    # KL = 0.5 (lp - lq + (e^lq + d^2) v - 1),  d = mu_q - mu_p, v = exp(-lp)
    # d/dmu_q = d v = -d/dmu_p,  d/dlq = 0.5 (e^lq v - 1),  d/dlp = 0.5 (1 - (e^lq + d^2) v)

    @staticmethod
    def forward(ctx, mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
        d = mu_q - mu_p
        v = logvar_p.neg().exp_()
        ratio = torch.exp(logvar_q).mul(v)  # e^lq v: remade in backward rather than saved
        out = torch.add(torch.mul(d, v).mul_(d), ratio).add_(logvar_p).sub_(logvar_q).sub_(1.0).mul_(0.5)
        ctx.save_for_backward(d, v, logvar_q)
        ctx.shapes = mu_q.shape, logvar_q.shape, mu_p.shape, logvar_p.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        d, v, logvar_q = ctx.saved_tensors
        s_mu_q, s_lq, s_mu_p, s_lp = ctx.shapes
        need_mu_q, need_lq, need_mu_p, need_lp = ctx.needs_input_grad
        g_mu = torch.mul(g, d).mul_(v)  # g d v
        g_lq = g_lp = None
        if need_lq or need_lp:
            g_ratio = torch.exp(logvar_q).mul(v).sub_(1.0).mul_(g).mul_(0.5)  # 0.5 g (e^lq v - 1)
            if need_lp:  # 0.5 g (1 - e^lq v - d^2 v) = -0.5 g_mu d - g_ratio
                g_lp = _reduce_to(torch.mul(g_mu, d).mul_(-0.5).sub_(g_ratio), s_lp)
            if need_lq:
                g_lq = _reduce_to(g_ratio, s_lq)
        return (
            _reduce_to(g_mu, s_mu_q) if need_mu_q else None,
            g_lq,
            _reduce_to(-g_mu, s_mu_p) if need_mu_p else None,
            g_lp,
        )


def lengths_from_mask(mask: Tensor) -> Tensor:
    """Lengths (B,) of a time-major prefix mask (T, B)."""
    return mask.sum(0).long()


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a time-major batch (T, B, ...) within its own length.

    Step t < L_b of sequence b goes to L_b - 1 - t; padding steps stay where they are. Running a
    forward RNN over the result reads every sequence from its last real step backwards and
    meets padding only after the real steps, so padding cannot leak into the states; applying
    this function again restores the original order.
    """
    steps, batch = x.shape[:2]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    # one row gather over the flattened (T * B) rows: about 2.5x faster than gather along
    # dim 0 with an index expanded over the features, forward and backward
    rows = (index * batch + torch.arange(batch, device=x.device)).reshape(-1)
    return x.reshape(steps * batch, *x.shape[2:]).index_select(0, rows).view_as(x)


def backward_rnn_states(rnn: nn.RNNBase, inputs: Tensor, mask: Tensor) -> Tensor:
    """States (T, B, H) of a fused RNN run over each sequence from its last real step back to
    its first, returned in the original order and zero on padding.

    The state at step t summarises inputs t..L_b of its sequence; one call for the whole batch.
    """
    lengths = lengths_from_mask(mask)
    states, _ = rnn(reverse_padded(inputs, lengths))
    return reverse_padded(states, lengths) * mask.unsqueeze(-1)


def lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM update from pre-activation gates (..., 4H) in (i, f, g, o) order: (h, c).

    On CPU, for 2-D float32 or float64 inputs, one native kernel forward and one backward
    (:mod:`seqvae.native`; in float32 its sigmoid and tanh are within a few 1e-7 of
    PyTorch's); elsewhere, or without that kernel, the composed cell below. Not twice
    differentiable on the native path.
    """
    if (
        gates.device.type == "cpu"
        and gates.dim() == 2
        and gates.dtype in _NATIVE_DTYPES
        and c.dtype == gates.dtype
        and not torch.compiler.is_compiling()
    ):
        op = native.lstm_cell_op()
        if op is not None:
            return op(gates, c)
    return lstm_cell_composed(gates, c)


_NATIVE_DTYPES = (torch.float32, torch.float64)


def lstm_cell_composed(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`lstm_cell` in PyTorch ops: any device, dtype and batch shape."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def diagonal_gmm_log_prob(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log sum_k pi_k N(x; mu_k, diag(exp(logvar_k))): x (..., D), logits (..., K),
    mu and logvar (..., K, D) -> (...). Computed with logsumexp over the components."""
    per_component = gaussian_log_prob(x.unsqueeze(-2), mu, logvar).sum(-1)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + per_component, dim=-1)


class SplitMLP(nn.Module):
    """MLP([a, b]) whose first layer is split into a part acting on a and one acting on b.

    For a posterior whose input is partly known before the step loop (a: sequence features,
    run through :meth:`first` once for all steps) and partly only inside it (b: the step's
    condition). ``forward(first(a), b)`` equals an MLP applied to the concatenation [a, b];
    ``b_dim = 0`` drops b. ``layers`` counts the hidden layers (at least 1). The layers after
    the split run once per step, so they are :class:`~seqvae.fused.LoopLinear` layers.
    """

    def __init__(self, a_dim: int, b_dim: int, hidden: int, layers: int, out_dim: int) -> None:
        super().__init__()
        self.a = nn.Linear(a_dim, hidden)
        self.b = LoopLinear(b_dim, hidden, bias=False) if b_dim else None
        self.act = ClampedLeakyReLU()
        self.rest = mlp([hidden] * max(layers, 1) + [out_dim], linear=LoopLinear)

    def first(self, a: Tensor) -> Tensor:
        """The a-part of the first layer's pre-activation (..., hidden)."""
        return self.a(a)

    def forward(self, first_a: Tensor, b: Tensor | None = None) -> Tensor:
        if self.b is None:
            return run_chain((self.act, *self.rest), first_a)
        return run_chain((self.b, self.act, *self.rest), b, add=first_a)  # one node per step in the loop

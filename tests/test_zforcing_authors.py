"""seqvae's Z-Forcing (``gradient: authors``, the default) computes what the authors' code computes.

``authors_fwd_pass`` below transcribes the step loop of the authors' ``fwd_pass``
(sordonia/zforcing, model.py) in plain PyTorch: per step, the prior MLP on h_{t-1}, the
posterior MLP on cat(h_{t-1}, b_t), the reparameterised z_t, the auxiliary MLP on
cat(h_{t-1} or h_{t-1} * 0, z_t) scored against the detached b_t (only the target is detached),
then an LSTM cell on cat(emb(u_t), Linear(z_t)). The backward states are computed as seqvae
defines them (each sequence reversed within its own length, so padding never reaches b_t);
the masks only zero the padded steps' terms.

seqvae stores some of these weights in another layout, the same function class:
Linear(z_t) followed by the cell's input weights is one z -> 4H matrix ``latent_gates`` (the
cell's two biases and W_ih Linear's bias fold into ``input_gates.bias``), the posterior's first
layer is split into ``post_cond`` (the h half) and ``post_summary`` (the b half, with the
bias), and with ``z_force`` the auxiliary net's first layer has only the z columns (the
authors multiply h by 0, so the h columns get no gradient). The weights are copied across,
both run in float64 on one batch with the same noise, and the terms and the gradients of
every seqvae parameter (the authors' gradients mapped back to seqvae's names) must agree.
The engine runs its fast path (in-loop layers deferring their weight gradients).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from seqvae import fused
from seqvae.composition import build_model, load_composition
from seqvae.objective import compute_terms

X, EMB, RNN, BWD_EMB, BWD, MLP, PRI, AUX, Z, GEN = 3, 8, 12, 7, 10, 9, 7, 6, 4, 5
"""Sizes: x, decoder embedding and LSTM, encoder embedding and LSTM, posterior MLP, prior MLP,
aux MLP, z, and the authors' Linear(z) (at least Z, so that its gradient determines seqvae's
folded matrix's)."""
UPDATE = 3000  # beta 0.35, alpha 0.15: the training loss mixes every term


def log_prob_gaussian(x, mu, log_var):
    return -0.5 * math.log(2 * math.pi) - log_var / 2 - (x - mu) ** 2 / (2 * torch.exp(log_var))


def gaussian_kld(mu_left, logvar_left, mu_right, logvar_right):
    spread = (torch.exp(logvar_left) + (mu_left - mu_right) ** 2) / torch.exp(logvar_right)
    return 0.5 * (logvar_right - logvar_left + spread - 1.0)


def lrelu(x):
    return F.leaky_relu(x, 1.0 / 3.0).clamp(-3.0, 3.0)


def two_layer(p, name, x):
    return F.linear(lrelu(F.linear(x, p[f"{name}.0.w"], p[f"{name}.0.b"])), p[f"{name}.2.w"], p[f"{name}.2.b"])


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """nn.LSTMCell's update, (i, f, g, o) order."""
    i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def backward_states(p, x, lengths):
    """b_t = LSTM_bwd(b_{t+1}, emb(x_t)) over each sequence's own steps; zeros on padding."""
    steps, batch = x.shape[:2]
    out = x.new_zeros(steps, batch, BWD)
    for i, length in enumerate(lengths):
        h = c = x.new_zeros(1, BWD)
        states = []
        for t in reversed(range(length)):
            emb = F.linear(x[t, i : i + 1], p["bwd_emb.w"], p["bwd_emb.b"])
            h, c = lstm_cell(emb, h, c, p["bwd.w_ih"], p["bwd.w_hh"], p["bwd.b_ih"], p["bwd.b_hh"])
            states.append(h[0])
        out[:length, i] = torch.stack(states[::-1])
    return out


def authors_fwd_pass(p, u, x, mask, lengths, eps, z_force, use_l2):
    """Per-sequence log p(x | z), KL and the auxiliary log-likelihood (the authors' aux cost
    is its negative), summed over each sequence's real steps."""
    steps, batch = x.shape[:2]
    bwd_states = backward_states(p, x, lengths)
    x_emb = F.linear(u, p["emb.w"], p["emb.b"])
    h_step = c_step = u.new_zeros(batch, RNN)
    hs, klds, auxs = [], [], []
    for step in range(steps):
        b_step = bwd_states[step]
        pri_mu, pri_logvar = torch.clamp(two_layer(p, "pri", h_step), -8.0, 8.0).chunk(2, 1)
        inf_mu, inf_logvar = torch.clamp(two_layer(p, "inf", torch.cat((h_step, b_step), 1)), -8.0, 8.0).chunk(2, 1)
        klds.append(gaussian_kld(inf_mu, inf_logvar, pri_mu, pri_logvar).sum(1))
        z_step = inf_mu + torch.exp(0.5 * inf_logvar) * eps[step]
        h_step_ = h_step * 0.0 if z_force else h_step
        aux_mu, aux_logvar = torch.clamp(two_layer(p, "aux", torch.cat((h_step_, z_step), 1)), -8.0, 8.0).chunk(2, 1)
        b_step_ = b_step.detach()  # only the target is detached
        if use_l2:
            auxs.append(-torch.sum((b_step_ - torch.tanh(aux_mu)) ** 2, 1))
        else:
            auxs.append(torch.sum(log_prob_gaussian(b_step_, torch.tanh(aux_mu), aux_logvar), 1))
        gen = F.linear(z_step, p["gen.w"], p["gen.b"])
        h_step, c_step = lstm_cell(
            torch.cat((x_emb[step], gen), 1), h_step, c_step, p["fwd.w_ih"], p["fwd.w_hh"], p["fwd.b_ih"], p["fwd.b_hh"]
        )
        hs.append(h_step)
    out_mu, out_logvar = F.linear(torch.stack(hs), p["out.w"], p["out.b"]).chunk(2, -1)
    log_px = log_prob_gaussian(x, out_mu, torch.clamp(out_logvar, -8.0, 8.0)).sum(-1)
    masked = lambda terms: (torch.stack(terms) * mask).sum(0)  # noqa: E731
    return (log_px * mask).sum(0), masked(klds), masked(auxs)


def authors_params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    shapes = {
        "emb.w": (EMB, X), "emb.b": (EMB,), "bwd_emb.w": (BWD_EMB, X), "bwd_emb.b": (BWD_EMB,),
        "bwd.w_ih": (4 * BWD, BWD_EMB), "bwd.w_hh": (4 * BWD, BWD), "bwd.b_ih": (4 * BWD,), "bwd.b_hh": (4 * BWD,),
        "pri.0.w": (PRI, RNN), "pri.0.b": (PRI,), "pri.2.w": (2 * Z, PRI), "pri.2.b": (2 * Z,),
        "inf.0.w": (MLP, RNN + BWD), "inf.0.b": (MLP,), "inf.2.w": (2 * Z, MLP), "inf.2.b": (2 * Z,),
        "aux.0.w": (AUX, RNN + Z), "aux.0.b": (AUX,), "aux.2.w": (2 * BWD, AUX), "aux.2.b": (2 * BWD,),
        "gen.w": (GEN, Z), "gen.b": (GEN,),
        "fwd.w_ih": (4 * RNN, EMB + GEN), "fwd.w_hh": (4 * RNN, RNN), "fwd.b_ih": (4 * RNN,), "fwd.b_hh": (4 * RNN,),
        "out.w": (2 * X, RNN), "out.b": (2 * X,),
    }  # fmt: skip
    # scale 0.5: pre-activations mostly inside the clamps, so every path carries gradient
    return {k: (0.5 * torch.randn(s, generator=g, dtype=torch.float64)).requires_grad_() for k, s in shapes.items()}


def seqvae_model(z_force: bool, cost: str):
    comp = load_composition("zforcing", [
        f"model.latent_dim={Z}", f"model.decoder.embed={EMB}", f"model.decoder.hidden={RNN}",
        f"model.encoder.embed={BWD_EMB}", f"model.encoder.hidden={BWD}", f"model.encoder.mlp={MLP}",
        f"model.prior.hidden={PRI}", f"model.aux.reconstruction.hidden={AUX}",
        f"model.aux.reconstruction.z_force={str(z_force).lower()}", f"model.aux.reconstruction.cost={cost}",
    ])  # fmt: skip
    assert comp.aux["reconstruction"].options.gradient == "authors"  # the default
    return build_model(comp, X).double(), comp


def copy_into_seqvae(p, model, z_force: bool) -> None:
    w_iz, w_ie = p["fwd.w_ih"][:, EMB:], p["fwd.w_ih"][:, :EMB]
    aux_first = p["aux.0.w"][:, RNN:] if z_force else p["aux.0.w"]
    pairs = {
        "decoder.embed.weight": p["emb.w"], "decoder.embed.bias": p["emb.b"],
        "decoder.input_gates.weight": w_ie,
        "decoder.input_gates.bias": p["fwd.b_ih"] + p["fwd.b_hh"] + w_iz @ p["gen.b"],
        "decoder.hidden_gates.weight": p["fwd.w_hh"],
        "decoder.latent_gates.weight": w_iz @ p["gen.w"],
        "decoder.emit.0.weight": p["out.w"], "decoder.emit.0.bias": p["out.b"],
        "encoder.embed.weight": p["bwd_emb.w"], "encoder.embed.bias": p["bwd_emb.b"],
        "encoder.rnn.weight_ih_l0": p["bwd.w_ih"], "encoder.rnn.weight_hh_l0": p["bwd.w_hh"],
        "encoder.rnn.bias_ih_l0": p["bwd.b_ih"], "encoder.rnn.bias_hh_l0": p["bwd.b_hh"],
        "encoder.post_cond.weight": p["inf.0.w"][:, :RNN],
        "encoder.post_summary.weight": p["inf.0.w"][:, RNN:], "encoder.post_summary.bias": p["inf.0.b"],
        "encoder.post_out.weight": p["inf.2.w"], "encoder.post_out.bias": p["inf.2.b"],
        "prior.net.0.weight": p["pri.0.w"], "prior.net.0.bias": p["pri.0.b"],
        "prior.net.2.weight": p["pri.2.w"], "prior.net.2.bias": p["pri.2.b"],
        "aux.reconstruction.net.0.weight": aux_first, "aux.reconstruction.net.0.bias": p["aux.0.b"],
        "aux.reconstruction.net.2.weight": p["aux.2.w"], "aux.reconstruction.net.2.bias": p["aux.2.b"],
    }  # fmt: skip
    state = model.state_dict()
    assert set(state) - {k for k in state if k.startswith("aux.bwd.")} == set(pairs)
    with torch.no_grad():
        for key, value in pairs.items():
            state[key].copy_(value)


def grads_in_seqvae_names(p, z_force: bool) -> dict[str, torch.Tensor]:
    """The authors' gradients as gradients of seqvae's parameters, by the chain rule through
    the weight map of :func:`copy_into_seqvae`. The folded z -> 4H matrix L = W_iz A (A:
    Linear(z)'s weight, a its bias) gets dW_iz = dL A^T + dbias a^T, solved for dL."""
    grad = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in p.items()}
    w_iz = p["fwd.w_ih"][:, EMB:].detach()
    a_w, a_b = p["gen.w"].detach(), p["gen.b"].detach()
    g_bias = grad["fwd.b_ih"]
    torch.testing.assert_close(grad["fwd.b_hh"], g_bias, rtol=0, atol=0)
    g_latent = (grad["fwd.w_ih"][:, EMB:] - torch.outer(g_bias, a_b)) @ torch.linalg.pinv(a_w.t())
    # the rest of the chain rule, as a check that g_latent is the whole story
    torch.testing.assert_close(grad["gen.w"], w_iz.t() @ g_latent, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad["gen.b"], w_iz.t() @ g_bias, rtol=1e-10, atol=1e-12)
    if z_force:  # h * 0: the aux net's h columns learn nothing
        assert torch.count_nonzero(grad["aux.0.w"][:, :RNN]) == 0
    return {
        "decoder.embed.weight": grad["emb.w"], "decoder.embed.bias": grad["emb.b"],
        "decoder.input_gates.weight": grad["fwd.w_ih"][:, :EMB], "decoder.input_gates.bias": g_bias,
        "decoder.hidden_gates.weight": grad["fwd.w_hh"], "decoder.latent_gates.weight": g_latent,
        "decoder.emit.0.weight": grad["out.w"], "decoder.emit.0.bias": grad["out.b"],
        "encoder.embed.weight": grad["bwd_emb.w"], "encoder.embed.bias": grad["bwd_emb.b"],
        "encoder.rnn.weight_ih_l0": grad["bwd.w_ih"], "encoder.rnn.weight_hh_l0": grad["bwd.w_hh"],
        "encoder.rnn.bias_ih_l0": grad["bwd.b_ih"], "encoder.rnn.bias_hh_l0": grad["bwd.b_hh"],
        "encoder.post_cond.weight": grad["inf.0.w"][:, :RNN],
        "encoder.post_summary.weight": grad["inf.0.w"][:, RNN:], "encoder.post_summary.bias": grad["inf.0.b"],
        "encoder.post_out.weight": grad["inf.2.w"], "encoder.post_out.bias": grad["inf.2.b"],
        "prior.net.0.weight": grad["pri.0.w"], "prior.net.0.bias": grad["pri.0.b"],
        "prior.net.2.weight": grad["pri.2.w"], "prior.net.2.bias": grad["pri.2.b"],
        "aux.reconstruction.net.0.weight": grad["aux.0.w"][:, RNN:] if z_force else grad["aux.0.w"],
        "aux.reconstruction.net.0.bias": grad["aux.0.b"],
        "aux.reconstruction.net.2.weight": grad["aux.2.w"], "aux.reconstruction.net.2.bias": grad["aux.2.b"],
    }  # fmt: skip


def _fast_path(monkeypatch, path: str) -> list:
    """In-loop layers through probes (the default at these sizes) or weight hubs, the weight
    gradients folded over several chunks of steps; returns the hubs made."""
    made = []
    monkeypatch.setattr(fused, "FLUSH_ROWS", 4)
    if path == "hub":
        monkeypatch.setattr(fused, "HUB_MIN_ELEMENTS", 0)
    for cls in (fused.WeightHub, fused.ProbeHub):
        init = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _init=init: made.append(self) or _init(self, *a))
    return made


def _batch(lengths):
    steps, batch = max(lengths), len(lengths)
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(steps + 1, batch, X, generator=g, dtype=torch.float64)
    mask = (torch.arange(steps).unsqueeze(1) < torch.tensor(lengths)).double()
    noise = torch.randn(steps, batch, Z, generator=g, dtype=torch.float64)
    return seq[:-1], seq[1:], mask, noise


CLOSE = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cost", ["gaussian", "l2"])
@pytest.mark.parametrize("z_force", [False, True])
@pytest.mark.parametrize("lengths", [(6, 6, 6), (6, 4, 2)])
@pytest.mark.parametrize("path", ["probe", "hub"])
def test_seqvae_matches_the_authors_fwd_pass_in_terms_and_aux_gradients(path, lengths, z_force, cost, monkeypatch):
    made = _fast_path(monkeypatch, path)
    p = authors_params()
    model, comp = seqvae_model(z_force, cost)
    copy_into_seqvae(p, model, z_force)
    u, x, mask, noise = _batch(lengths)

    trace = model(u, x, mask, noise)
    kind = fused.WeightHub if path == "hub" else fused.ProbeHub
    assert [type(hub) for hub in made] == [kind] * 3  # [W_hh, W_z] and the posterior's two layers
    terms = compute_terms(model, trace, comp, update=UPDATE, training=False)
    aux = model.aux["reconstruction"](trace)
    log_px, kl, aux_ref = authors_fwd_pass(p, u, x, mask, lengths, noise, z_force, cost == "l2")
    torch.testing.assert_close(terms.log_px, log_px, **CLOSE)
    torch.testing.assert_close(terms.kl, kl, **CLOSE)
    torch.testing.assert_close((aux * mask).sum(0), aux_ref, **CLOSE)
    torch.testing.assert_close(terms.aux["reconstruction"], aux_ref, **CLOSE)

    # the gradients of the aux term alone
    model.zero_grad(set_to_none=True)
    (aux * mask).sum().backward()
    aux_ref.sum().backward()
    _assert_same_gradients(model, p, z_force)
    # the authors' path reaches the backward LSTM and the decoder, never the prior or the emission
    grads = dict(model.named_parameters())
    assert grads["encoder.rnn.weight_hh_l0"].grad.abs().sum() > 0
    assert grads["decoder.hidden_gates.weight"].grad.abs().sum() > 0
    assert grads["prior.net.0.weight"].grad is None and grads["decoder.emit.0.weight"].grad is None

    # and of the whole training loss
    model.zero_grad(set_to_none=True)
    for v in p.values():
        v.grad = None
    train = compute_terms(model, model(u, x, mask, noise), comp, update=UPDATE)
    train.loss.backward()
    beta, alpha = comp.objective.kl_weight.at(UPDATE), comp.aux["reconstruction"].weight.at(UPDATE)
    assert 0 < beta < 1 and 0 < alpha < 1
    log_px, kl, aux_ref = authors_fwd_pass(p, u, x, mask, lengths, noise, z_force, cost == "l2")
    loss_ref = (-log_px + beta * kl - alpha * aux_ref).mean()
    torch.testing.assert_close(train.loss, loss_ref, **CLOSE)
    loss_ref.backward()
    _assert_same_gradients(model, p, z_force)


def _assert_same_gradients(model, p, z_force: bool) -> None:
    expected = grads_in_seqvae_names(p, z_force)
    got = {k: v.grad for k, v in model.named_parameters() if not k.startswith("aux.bwd.")}
    assert got.keys() == expected.keys()
    for name, grad in got.items():
        grad = torch.zeros_like(expected[name]) if grad is None else grad
        torch.testing.assert_close(grad, expected[name], **CLOSE, msg=lambda m, n=name: f"{n}: {m}")

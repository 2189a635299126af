"""The baselines (VRNN, SRNN, RNN, STORN, DKF) as MODELS.md states them: what feeds what."""

from __future__ import annotations

import json

import pytest
import torch
from seqvae_plugins.npz_dataset import NpzDataset
from torch import nn

from seqvae.composition import build_model, load_composition
from seqvae.nn import gaussian_kl, gaussian_log_prob, split_gaussian
from seqvae.objective import compute_terms
from seqvae.train import train
from tests.conftest import batch

VRNN = [
    "model.latent_dim=3", "model.decoder.hidden=8", "model.decoder.x_features=6",
    "model.decoder.x_layers=2", "model.decoder.z_features=5", "model.decoder.z_layers=2",
    "model.decoder.emission_hidden=7", "model.decoder.emission_layers=2",
    "model.encoder.hidden=6", "model.encoder.layers=2",
]  # fmt: skip
PRIOR = ["model.prior.hidden=5", "model.prior.layers=2"]
RNN = ["model.decoder.embed=6", "model.decoder.hidden=8"]
TINY = {
    "vrnn": VRNN + PRIOR,
    "vrnn-gmm": VRNN + PRIOR + ["model.likelihood.components=3"],
    "vrnn-i": VRNN,
    "srnn": [
        "model.latent_dim=3", "model.decoder.embed=5", "model.decoder.hidden=8",
        "model.decoder.emission_hidden=7", "model.encoder.embed=5", "model.encoder.hidden=6",
        "model.encoder.mlp=7", "model.prior.hidden=5",
    ],
    "rnn": RNN,
    "rnn-gmm": RNN + ["model.likelihood.components=3"],
    "storn": [
        "model.latent_dim=3", "model.decoder.embed=6", "model.decoder.hidden=8",
        "model.encoder.embed=5", "model.encoder.hidden=7", "model.encoder.mlp=6",
    ],
    "dkf": [
        "model.latent_dim=3", "model.decoder.emission_hidden=6", "model.encoder.embed=5",
        "model.encoder.hidden=7", "model.prior.hidden=6",
    ],
}  # fmt: skip
"""Small sizes for every slot of each baseline composition."""
BASELINES = list(TINY)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is faster, and far faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_baseline(name: str, *overrides: str, x_dim: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    comp = load_composition(name, [*TINY[name], "train.eval_every=0", *overrides])
    return build_model(comp, x_dim), comp


def _noise(model, steps: int, size: int, seed: int = 5) -> torch.Tensor | None:
    if not model.z_dim:
        return None
    return torch.randn(steps, size, model.z_dim, generator=torch.Generator().manual_seed(seed))


def _elbo(model, comp, u, x, mask, noise):
    return compute_terms(model, model(u, x, mask, noise), comp, training=False).elbo


# --------------------------------------------------------------------------- every baseline


@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_builds_by_name_runs_and_samples(name):
    model, comp = tiny_baseline(name)
    trace = model(*batch())
    terms = compute_terms(model, trace, comp)
    assert torch.isfinite(terms.loss) and terms.elbo.shape == (2,)
    terms.loss.backward()
    assert model.sample(3, 4).shape == (4, 3, 3)


@pytest.mark.parametrize("name", BASELINES)
def test_appended_padding_leaves_the_masked_elbo_unchanged(name):
    model, comp = tiny_baseline(name)
    u, x, mask = batch(steps=6, size=3)
    mask[4:, 1] = 0.0  # sequences of lengths 6, 4 and 6
    mask[5:, 2] = 0.0  # and 5
    noise = _noise(model, 6, 3)
    base = _elbo(model, comp, u, x, mask, noise)
    g = torch.Generator().manual_seed(9)
    pad = 4  # garbage, not zeros: nothing of it may reach a real step
    u2 = torch.cat([u, 50 * torch.randn(pad, 3, 3, generator=g)])
    x2 = torch.cat([x, 50 * torch.randn(pad, 3, 3, generator=g)])
    u2[4:6, 1], x2[4:6, 1] = 50.0, -50.0  # also garbage inside the batch's own padding
    u2[5:6, 2], x2[5:6, 2] = 50.0, -50.0
    mask2 = torch.cat([mask, torch.zeros(pad, 3)])
    noise2 = (
        None if noise is None else torch.cat([noise, torch.randn(pad, 3, model.z_dim, generator=g)])
    )
    torch.testing.assert_close(
        _elbo(model, comp, u2, x2, mask2, noise2), base, rtol=1e-5, atol=1e-4
    )


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_trains_on_a_tiny_npz(name, toy_npz, tmp_path):
    model, comp = tiny_baseline(name, "train.log_every=1", "train.batch_size=16", "train.lr=3e-3")
    train(comp, NpzDataset(toy_npz, None), tmp_path / name, max_steps=30, seed=0, progress=False)
    losses = _losses(tmp_path / name)
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, losses


def test_components_are_shared_not_copied_per_model():
    def component(name, slot):
        return load_composition(name).slots[slot].component

    assert component("vrnn-i", "prior") == component("storn", "prior") == "standard-normal"
    assert component("vrnn", "prior") == component("srnn", "prior") == "gaussian-mlp"
    assert component("vrnn-gmm", "likelihood") == component("rnn-gmm", "likelihood") == "gmm"
    assert component("srnn", "decoder") == component("dkf", "decoder") == "state-space"
    assert component("storn", "decoder") == component("zforcing", "decoder") == "latent-lstm"


# --------------------------------------------------------------------------- VRNN


def _vrnn_unroll(decoder, u: torch.Tensor, z: torch.Tensor):
    """The decoder's loop with the latents given, so that only the inputs move."""
    pre, _ = decoder.precompute(u)
    state = decoder.initial_state(u.shape[1])
    outs = []
    for t in range(u.shape[0]):
        state, out = decoder.step(state, {k: v[t] for k, v in pre.items()}, lambda cond, t=t: z[t])
        outs.append(out)
    out = torch.stack(outs)
    return out, decoder.emission(out, z, pre)


def test_vrnn_emission_at_t_does_not_read_x_t_but_h_t_does():
    model, _ = tiny_baseline("vrnn")
    u, x, mask = batch(steps=6)
    z = torch.randn(6, 2, 3)
    h, params = _vrnn_unroll(model.decoder, u, z)  # out_t = h_{t-1}
    t = 2
    u2 = u.clone()
    u2[t + 1] += 1.0  # x_t reaches the decoder only as the input u_{t+1}
    h2, params2 = _vrnn_unroll(model.decoder, u2, z)
    torch.testing.assert_close(params2[: t + 1], params[: t + 1])  # emissions up to x_t
    assert not torch.allclose(params2[t + 1], params[t + 1])
    torch.testing.assert_close(h2[: t + 1], h[: t + 1])  # h_0 .. h_{t-1}
    assert not torch.allclose(h2[t + 1], h[t + 1])  # h_t = LSTM(h_{t-1}, [phi_x(x_t), phi_z(z_t)])


def test_vrnn_h0_is_zero_and_the_emission_reads_z_t_and_h_t_minus_1():
    model, _ = tiny_baseline("vrnn")
    u, x, mask = batch(steps=5)
    u[0] = 3.0  # whatever u_1 is, h_0 is the zero state
    trace = model(u, x, mask)
    assert torch.count_nonzero(trace.cond[0]) == 0
    assert torch.count_nonzero(trace.cond[1]) > 0
    dec = model.decoder
    expected = dec.emit(torch.cat([dec.phi_z(trace.z), trace.cond], -1))
    torch.testing.assert_close(trace.params, expected)


def test_vrnn_first_step_sends_no_gradient_and_sampling_shuts_only_step_1(monkeypatch):
    """h_0 = 0 comes from shutting step 1's input and output gates (plugins/vrnn_lstm.py): what
    reaches the recurrence at step 1 gets exactly no gradient, and a sampler, which calls
    precompute once per step, gets the zero state at step 1 only."""
    model, _ = tiny_baseline("vrnn")
    u, x, mask = batch(steps=4)
    u.requires_grad_(True)
    trace = model(u, x, mask, _noise(model, 4, 2))
    (trace.params.sum() + trace.post_mu.sum()).backward()
    assert u.grad[0].abs().max() == 0  # u_1 feeds only step 1's (shut) update
    assert u.grad[1].abs().max() > 0
    conds = []
    forward = model.prior.forward
    monkeypatch.setattr(model.prior, "forward", lambda cond: conds.append(cond.clone()) or forward(cond))
    model.sample(2, 3)
    assert torch.count_nonzero(conds[0]) == 0
    assert torch.count_nonzero(conds[1]) > 0 and torch.count_nonzero(conds[2]) > 0


def test_vrnn_posterior_reads_x_t_through_the_decoders_phi_x():
    model, _ = tiny_baseline("vrnn")
    u, x, mask = batch(steps=5)
    noise = _noise(model, 5, 2)
    trace = model(u, x, mask, noise)
    enc, dec = model.encoder, model.decoder
    assert enc.embed is None  # no features of its own: phi_x is the decoder's
    features = enc.net.first(dec.phi_x(x))
    mu, logvar = split_gaussian(enc.net(features, trace.cond))
    torch.testing.assert_close(trace.post_mu, mu)
    torch.testing.assert_close(trace.post_logvar, logvar)
    x2 = x.clone()
    x2[3] += 1.0  # filtering: x_t moves q at t, not before
    trace2 = model(u, x2, mask, noise)
    torch.testing.assert_close(trace2.post_mu[:3], trace.post_mu[:3])
    assert not torch.allclose(trace2.post_mu[3], trace.post_mu[3])
    own, _ = tiny_baseline("vrnn", "model.encoder.features=own", "model.encoder.embed=4")
    assert own.encoder.embed is not None and own.encoder.net.a.in_features == 4


def test_vrnn_i_prior_is_standard_normal_and_its_kl_closed_form():
    model, comp = tiny_baseline("vrnn-i")
    trace = model(*batch())
    assert torch.count_nonzero(trace.prior_mu) == 0 and torch.count_nonzero(trace.prior_logvar) == 0
    kl = 0.5 * (trace.post_mu.pow(2) + trace.post_logvar.exp() - 1 - trace.post_logvar)
    torch.testing.assert_close(trace.kl_per_dim(), kl)


# --------------------------------------------------------------------------- SRNN


def test_srnn_d_is_one_fused_gru_call_shared_with_the_posterior():
    model, _ = tiny_baseline("srnn")
    dec = model.decoder
    assert isinstance(dec.rnn, nn.GRU) and isinstance(model.encoder.rnn, nn.GRU)
    calls = []
    dec.rnn.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    u, x, mask = batch(steps=6)
    trace = model(u, x, mask)
    assert calls == [(6, 2, 5)]  # one call over all steps
    d, _ = nn.GRU.forward(dec.rnn, dec.embed(u))
    torch.testing.assert_close(trace.pre["d"], d)
    z_prev = torch.cat([torch.zeros_like(trace.z[:1]), trace.z[:-1]])
    torch.testing.assert_close(trace.cond, torch.cat([z_prev, d], -1))  # cond_t = [z_{t-1}, d_t]
    torch.testing.assert_close(trace.params, dec.emit(torch.cat([trace.z, d], -1)))
    # the sampler streams d through the GRU's carried state
    pre_a, carry = dec.precompute(u[:4])
    pre_b, _ = dec.precompute(u[4:], carry)
    torch.testing.assert_close(torch.cat([pre_a["d"], pre_b["d"]]), d)


def _resq_delta(enc, z_prev, a):
    """MLP([z_{t-1}, a_t]) written as one MLP on the concatenation."""
    net = enc.net
    first = nn.functional.linear(
        torch.cat([z_prev, a], -1), torch.cat([net.b.weight, net.a.weight], 1), net.a.bias
    )
    return split_gaussian(net.rest(net.act(first)))


def test_srnn_resq_posterior_is_the_prior_mean_plus_an_mlp():
    model, _ = tiny_baseline("srnn")
    enc = model.encoder
    assert enc.uses_prior
    u, x, mask = batch(steps=6)
    trace = model(u, x, mask)
    a = enc.precompute(x, mask, trace.pre["d"]).summary
    delta, logvar = _resq_delta(enc, trace.cond[..., :3], a)
    prior_mu, _ = model.prior(trace.cond)
    torch.testing.assert_close(trace.prior_mu, prior_mu)
    torch.testing.assert_close(trace.post_mu, prior_mu + delta)
    torch.testing.assert_close(trace.post_logvar, logvar)

    plain, _ = tiny_baseline("srnn", "model.encoder.resq=false")
    assert not plain.encoder.uses_prior  # the engine may then batch the prior after the loop
    trace = plain(u, x, mask)
    a = plain.encoder.precompute(x, mask, trace.pre["d"]).summary
    torch.testing.assert_close(trace.post_mu, _resq_delta(plain.encoder, trace.cond[..., :3], a)[0])


@pytest.mark.parametrize("inference, reads_future", [("smooth", True), ("filter", False)])
def test_srnn_smoothing_posterior_reads_the_future_and_filtering_does_not(inference, reads_future):
    model, _ = tiny_baseline("srnn", f"model.encoder.inference={inference}")
    u, x, mask = batch(steps=5)
    noise = _noise(model, 5, 2)
    base = model(u, x, mask, noise)
    x2 = x.clone()
    x2[4] += 1.0
    moved = model(u, x2, mask, noise)
    # x_5 moves q(z_1 | ...) only through the backward GRU; the filter sees x_1..x_4 only
    assert torch.allclose(moved.post_mu[:4], base.post_mu[:4]) is not reads_future
    assert not torch.allclose(moved.post_mu[4], base.post_mu[4])


# --------------------------------------------------------------------------- RNN


def test_rnn_elbo_is_its_exact_log_likelihood():
    model, comp = tiny_baseline("rnn")
    assert model.encoder is None and model.prior is None
    u, x, mask = batch(steps=6)
    mask[4:, 1] = 0.0
    terms = compute_terms(model, model(u, x, mask), comp, training=False)
    assert torch.equal(terms.kl, torch.zeros(2))
    torch.testing.assert_close(terms.elbo, terms.log_px)
    dec = model.decoder
    out, _ = nn.LSTM.forward(dec.rnn, dec.embed(u))
    mu, logvar = dec.emit(out).chunk(2, -1)
    exact = (gaussian_log_prob(x, mu, logvar.clamp(-8, 8)).sum(-1) * mask).sum(0)
    torch.testing.assert_close(terms.elbo, exact)
    assert torch.equal(terms.loss, -terms.log_px.mean())


def test_rnn_unroll_carries_its_state_between_chunks():
    model, _ = tiny_baseline("rnn")
    dec = model.decoder
    u, _, _ = batch(steps=6)
    pre, _ = dec.precompute(u)
    full, last = dec.unroll(pre, dec.initial_state(2))
    state, outs = dec.initial_state(2), []
    for t in range(6):
        out, state = dec.unroll(dec.precompute(u[t : t + 1])[0], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs), full)
    torch.testing.assert_close(state[0], last[0])


# --------------------------------------------------------------------------- STORN, DKF


def test_storn_posterior_reads_only_the_past_and_present_and_its_prior_is_fixed():
    model, _ = tiny_baseline("storn")
    assert model.encoder.net.b is None  # q(z_t | x_{1:t}): no h_{t-1}
    u, x, mask = batch(steps=5)
    noise = _noise(model, 5, 2)
    base = model(u, x, mask, noise)
    assert torch.count_nonzero(base.prior_mu) == 0 and torch.count_nonzero(base.prior_logvar) == 0
    x2 = x.clone()
    x2[2] += 1.0
    moved = model(u, x2, mask, noise)
    torch.testing.assert_close(moved.post_mu[:2], base.post_mu[:2])
    assert not torch.allclose(moved.post_mu[2], base.post_mu[2])


def test_dkf_is_a_markov_chain_with_a_combiner_posterior():
    model, _ = tiny_baseline("dkf")
    dec, enc = model.decoder, model.encoder
    u, x, mask = batch(steps=5)
    trace = model(u, x, mask)
    z0 = dec.z0.expand(2, -1).unsqueeze(0)
    torch.testing.assert_close(trace.cond, torch.cat([z0, trace.z[:-1]]))  # cond_t = z_{t-1}
    torch.testing.assert_close(trace.params, dec.emit(trace.z))  # p(x_t | z_t)
    b = enc.precompute(x, mask, None).summary
    combined = 0.5 * (torch.tanh(enc.from_cond(trace.cond)) + b)
    mu, logvar = split_gaussian(enc.out(combined))
    torch.testing.assert_close(trace.post_mu, mu)
    # the gated transition starts out close to the identity on z_{t-1}
    prior = model.prior
    gate = torch.sigmoid(prior.gate(trace.cond))
    expected = (1 - gate) * trace.cond + gate * prior.proposal(trace.cond)
    torch.testing.assert_close(trace.prior_mu, expected)
    kl = gaussian_kl(trace.post_mu, trace.post_logvar, trace.prior_mu, trace.prior_logvar)
    torch.testing.assert_close(trace.kl_per_dim(), kl)

"""Z-Forcing as MODELS.md states it: what feeds what, and where gradients may flow."""

import pytest
import torch

from seqvae.composition import Schedule
from seqvae.nn import reverse_padded
from seqvae.objective import compute_terms
from tests.conftest import batch, tiny_model


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def _aux_grads(*overrides):
    """Gradients of the masked, summed auxiliary cost alone, per parameter name."""
    model, _ = tiny_model("zforcing", *overrides)
    u, x, mask = batch()
    trace = model(u, x, mask)
    aux = (model.aux["reconstruction"](trace) * mask).sum()
    return _grads(model, -aux)


def _nonzero(grads, *prefixes):
    chosen = {n: g for n, g in grads.items() if n.startswith(prefixes)}
    return chosen and all(g is not None and g.abs().sum() > 0 for g in chosen.values())


def _zero(grads, *prefixes):
    chosen = {n: g for n, g in grads.items() if n.startswith(prefixes)}
    return chosen and all(g is None or torch.count_nonzero(g) == 0 for g in chosen.values())


def test_local_aux_cost_trains_only_the_aux_net_and_the_in_loop_posterior_layers():
    grads = _aux_grads("model.aux.reconstruction.gradient=local")
    assert _zero(grads, "encoder.rnn.", "encoder.embed.")
    assert _nonzero(grads, "aux.reconstruction.")
    # the in-loop posterior layers learn from the cost; the b_t-side layer belongs to the
    # precompute over b_t, which this path must not train
    posterior = [n for n in grads if n.startswith(("encoder.post_cond", "encoder.post_out"))]
    assert len(posterior) == 3 and _nonzero(grads, "encoder.post_cond", "encoder.post_out")
    assert _zero(grads, "encoder.post_summary")
    assert _zero(grads, "decoder.", "prior.")


DECODER_RECURRENCE = ("decoder.hidden_gates", "decoder.latent_gates", "decoder.input_gates", "decoder.embed")


@pytest.mark.parametrize("z_force", [False, True])
@pytest.mark.parametrize("cost", ["gaussian", "l2"])
def test_authors_aux_cost_trains_posterior_backward_rnn_and_decoder_but_not_prior_or_emission(z_force, cost):
    """The default: only the target b_t is detached, as in the authors' fwd_pass. With z_force
    the aux net no longer reads h_{t-1}, but z_t does (the posterior reads [h_{t-1}, b_t]), so
    the decoder's recurrence still learns from the cost."""
    overrides = [f"model.aux.reconstruction.z_force={str(z_force).lower()}", f"model.aux.reconstruction.cost={cost}"]
    grads = _aux_grads(*overrides)
    assert _nonzero(grads, "aux.reconstruction.")
    assert _nonzero(grads, "encoder.post_cond", "encoder.post_out", "encoder.post_summary")
    assert _nonzero(grads, "encoder.rnn.", "encoder.embed.")
    for prefix in DECODER_RECURRENCE:
        assert _nonzero(grads, prefix), prefix
    assert _zero(grads, "prior.")
    assert _zero(grads, "decoder.emit.")
    assert _zero(grads, "aux.bwd.")


def test_authors_is_the_default_and_both_paths_compute_the_same_value():
    model, _ = tiny_model()
    assert model.aux["reconstruction"].options.gradient == "authors"
    trace = model(*batch())
    authors = model.aux["reconstruction"](trace)
    model.aux["reconstruction"].options.gradient = "local"
    torch.testing.assert_close(model.aux["reconstruction"](trace), authors)


@pytest.mark.parametrize("gradient", ["authors", "local"])
def test_z_force_removes_h_from_the_aux_input(gradient):
    for z_force, in_dim in ((True, 4), (False, 12 + 4)):
        model, _ = tiny_model(
            "zforcing",
            f"model.aux.reconstruction.z_force={str(z_force).lower()}",
            f"model.aux.reconstruction.gradient={gradient}",
        )
        assert model.aux["reconstruction"].net[0].in_features == in_dim
        trace = model(*batch())
        base = model.aux["reconstruction"](trace)
        fixed_z = trace.local_z()
        trace.local_z = lambda z=fixed_z: z  # keep z fixed and move h_{t-1} only
        trace.cond = trace.cond + 1.0
        moved = model.aux["reconstruction"](trace)
        assert torch.allclose(base, moved) is z_force


def test_l2_aux_cost_is_the_squared_error_to_tanh_mu():
    model, _ = tiny_model("zforcing", "model.aux.reconstruction.cost=l2", "model.aux.reconstruction.z_force=true")
    trace = model(*batch())
    mu, _ = model.aux["reconstruction"].net(trace.z).chunk(2, -1)
    expected = -(trace.summary - torch.tanh(mu.clamp(-8, 8))).pow(2).sum(-1)
    torch.testing.assert_close(model.aux["reconstruction"](trace), expected)


def test_backward_states_ignore_padding_and_read_the_future():
    model, _ = tiny_model()
    enc = model.encoder
    u, x, mask = batch(steps=5, size=1)
    full = enc.precompute(x, mask, None).summary[:, 0]
    # the same sequence padded with garbage to 9 steps
    pad_x = torch.cat([x, 50 * torch.randn(4, 1, 3)])
    pad_mask = torch.cat([mask, torch.zeros(4, 1)])
    padded = enc.precompute(pad_x, pad_mask, None).summary[:, 0]
    torch.testing.assert_close(padded[:5], full)
    assert torch.count_nonzero(padded[5:]) == 0
    # b_t summarises x_t..x_T: changing x_4 changes b_0..b_4 but not... there is nothing after
    x2 = x.clone()
    x2[2] += 1.0
    changed = enc.precompute(x2, mask, None).summary[:, 0]
    assert torch.allclose(changed[3:], full[3:]) and not torch.allclose(changed[:3], full[:3])


def test_reverse_padded_reverses_within_each_length_and_is_an_involution():
    x = torch.arange(5.0).view(5, 1, 1).repeat(1, 2, 1)
    lengths = torch.tensor([5, 3])
    rev = reverse_padded(x, lengths)
    assert rev[:, 0, 0].tolist() == [4, 3, 2, 1, 0]
    assert rev[:, 1, 0].tolist() == [2, 1, 0, 3, 4]
    torch.testing.assert_close(reverse_padded(rev, lengths), x)


def test_padding_leaves_the_masked_elbo_unchanged():
    model, comp = tiny_model()
    model.eval()
    u, x, mask = batch(steps=6, size=2)
    noise = torch.randn(10, 2, 4)
    short = compute_terms(model, model(u, x, mask, noise[:6]), comp, training=False)
    pad = lambda t, v: torch.cat([t, v])  # noqa: E731
    garbage = 100 * torch.randn(4, 2, 3)
    long = compute_terms(
        model,
        model(pad(u, garbage), pad(x, garbage), pad(mask, torch.zeros(4, 2)), noise),
        comp,
        training=False,
    )
    torch.testing.assert_close(long.elbo, short.elbo)
    torch.testing.assert_close(long.aux["reconstruction"], short.aux["reconstruction"])


def test_prior_reads_h_prev_and_posterior_reads_h_prev_and_b():
    model, _ = tiny_model()
    u, x, mask = batch()
    trace = model(u, x, mask)
    # cond_t is the decoder's state before step t: zeros at t = 1, then the LSTM output h_{t-1}
    assert torch.count_nonzero(trace.cond[0]) == 0
    h, _ = model.decoder.initial_state(2)
    torch.testing.assert_close(trace.prior_mu, model.prior(trace.cond)[0])
    enc = model.encoder.precompute(x, mask, None)
    mu, _ = model.encoder.posterior(trace.cond[3], enc.features[3], None)
    torch.testing.assert_close(trace.post_mu[3], mu)
    assert h.shape == (2, 12)


def test_backward_lm_predicts_x_t_from_b_next_and_trains_the_backward_rnn():
    model, comp = tiny_model("zforcing", "model.aux.bwd.weight=1.0")
    u, x, mask = batch(steps=5, size=1)
    trace = model(u, x, mask)
    head = model.aux["bwd"].head
    b_next = torch.cat([trace.summary[1:], torch.zeros_like(trace.summary[:1])])
    expected = model.likelihood.log_prob(head(b_next), x)
    torch.testing.assert_close(model.aux["bwd"](trace), expected)
    grads = _grads(model, -model.aux["bwd"](trace).sum())
    assert grads["encoder.rnn.weight_hh_l0"].abs().sum() > 0


def test_cond_ln_variant_conditions_the_layer_norm_on_z():
    model, _ = tiny_model("zforcing", "model.decoder.cond_ln=true")
    assert not hasattr(model.decoder, "latent_gates")
    u, x, mask = batch()
    noise = torch.randn(6, 2, 4)
    a = model(u, x, mask, noise).params
    b = model(u, x, mask, noise + 1.0).params
    assert not torch.allclose(a, b)
    grads = _grads(model, -model.likelihood.log_prob(model(u, x, mask, noise).params, x).sum())
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("decoder.latent_film"))


def test_kl_annealing_and_aux_schedules_follow_the_reference_steps():
    _, comp = tiny_model()
    kl = comp.objective.kl_weight
    assert (kl.at(0), kl.at(2000), kl.at(16000), kl.at(10**6)) == (0.2, 0.30000000000000004, 1.0, 1.0)
    aux = comp.aux["reconstruction"].weight
    assert aux.at(0) == 0.0005 and abs(aux.at(1000) - 0.0505) < 1e-12 and aux.at(10**6) == 0.5
    assert Schedule(1.0, 0.0, 0.25).at(2) == 0.5


def test_free_bits_floor_the_training_kl_per_dimension():
    model, comp = tiny_model("zforcing", "objective.free_bits=5.0", "objective.kl_weight=1.0")
    trace = model(*batch())
    terms = compute_terms(model, trace, comp, training=True)
    aux = sum(spec.weight.at(0) * terms.aux[k] for k, spec in comp.aux.items() if k in terms.aux)
    floored = trace.kl_per_dim().clamp_min(5.0).sum((0, 2))
    torch.testing.assert_close(terms.loss, (-terms.log_px + floored - aux).mean())
    assert (floored > terms.kl).all()

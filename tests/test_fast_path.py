"""The engine's fast step loop computes what a plain eager Z-Forcing computes.

The plain reference (``benchmarks/plain_zforcing.py``) is written the authors' way:
Linear(z_t) concatenated with emb(u_t) into an ``nn.LSTMCell``, MLPs inside the loop. The
engine's decoder folds Linear(z_t) and the cell's input weights into one z -> 4H matrix and
its in-loop layers defer their weight gradients (``seqvae.fused``); with weights copied across
and the same noise, the terms and every gradient must agree.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.plain_zforcing import PlainDims, PlainZForcing
from seqvae import fused
from seqvae.composition import build_model, load_composition
from seqvae.fused import LoopLinear, WeightHub, step_loop
from seqvae.objective import compute_terms

DIMS = PlainDims(x_dim=3, emb=8, rnn=12, mlp=9, z=4)
UPDATE = 100


PATHS = ["probe", "hub", "plain"]
"""How in-loop layers get their weight gradients: small layers' probes (the default for these
tiny test layers), the weight hubs of large layers, or plain autograd (deferral off)."""


def _take_path(monkeypatch, path: str) -> list:
    """Send every in-loop layer down ``path``; returns the list the hubs made get appended to."""
    made = []
    monkeypatch.setattr(fused, "FLUSH_ROWS", 8)  # the weight gradient over several chunks
    if path == "hub":
        monkeypatch.setattr(fused, "HUB_MIN_ELEMENTS", 0)
    if path == "plain":
        monkeypatch.setattr(fused, "DEFER_MIN_ELEMENTS", float("inf"))
    for cls in (fused.WeightHub, fused.ProbeHub):
        init = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _init=init: made.append(self) or _init(self, *a))
    return made


def _engine(dims: PlainDims = DIMS):
    comp = load_composition("zforcing", [
        f"model.latent_dim={dims.z}", f"model.decoder.embed={dims.emb}", f"model.decoder.hidden={dims.rnn}",
        f"model.encoder.embed={dims.emb}", f"model.encoder.hidden={dims.rnn}", f"model.encoder.mlp={dims.mlp}",
        f"model.prior.hidden={dims.mlp}", f"model.aux.reconstruction.hidden={dims.mlp}",
    ])  # fmt: skip
    return build_model(comp, dims.x_dim).double(), comp


def _copy_plain_into_engine(plain: PlainZForcing, engine) -> None:
    """Engine weights from the plain model's: the folded z -> 4H matrix is W_ih[:, :mlp] @ A,
    and the gate bias absorbs both LSTM biases and W_ih[:, :mlp] @ a (a: Linear(z)'s bias)."""
    mlp = plain.dims.mlp
    w_iz, w_ie = plain.fwd_mod.weight_ih[:, :mlp], plain.fwd_mod.weight_ih[:, mlp:]
    cell = plain.fwd_mod
    rnn = plain.dims.rnn
    first = plain.inf_mod[0]
    pairs = {
        "decoder.embed.weight": plain.emb_fwd.weight, "decoder.embed.bias": plain.emb_fwd.bias,
        "decoder.input_gates.weight": w_ie,
        "decoder.input_gates.bias": cell.bias_ih + cell.bias_hh + w_iz @ plain.gen_mod.bias,
        "decoder.hidden_gates.weight": cell.weight_hh,
        "decoder.latent_gates.weight": w_iz @ plain.gen_mod.weight,
        "decoder.emit.0.weight": plain.fwd_out_mod.weight, "decoder.emit.0.bias": plain.fwd_out_mod.bias,
        "encoder.embed.weight": plain.emb_bwd.weight, "encoder.embed.bias": plain.emb_bwd.bias,
        **{f"encoder.rnn.{k}": v for k, v in plain.bwd_mod.named_parameters()},
        "encoder.post_cond.weight": first.weight[:, :rnn],
        "encoder.post_summary.weight": first.weight[:, rnn:], "encoder.post_summary.bias": first.bias,
        "encoder.post_out.weight": plain.inf_mod[2].weight, "encoder.post_out.bias": plain.inf_mod[2].bias,
        **{f"prior.net.{k}": v for k, v in plain.pri_mod.named_parameters()},
        **{f"aux.reconstruction.net.{k}": v for k, v in plain.aux_mod.named_parameters()},
    }  # fmt: skip
    state = engine.state_dict()
    missing = set(state) - set(pairs) - {k for k in state if k.startswith("aux.bwd.")}
    assert not missing, missing
    with torch.no_grad():
        for key, value in pairs.items():
            state[key].copy_(value)


def _plain_grads_from_engine(plain: PlainZForcing, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the plain model's gradients must be, by the chain rule through the weight map."""
    mlp, rnn = plain.dims.mlp, plain.dims.rnn
    w_iz = plain.fwd_mod.weight_ih[:, :mlp].detach()
    a_w, a_b = plain.gen_mod.weight.detach(), plain.gen_mod.bias.detach()
    g_lat, g_bias = grads["decoder.latent_gates.weight"], grads["decoder.input_gates.bias"]
    expected = {
        "emb_fwd.weight": grads["decoder.embed.weight"], "emb_fwd.bias": grads["decoder.embed.bias"],
        "emb_bwd.weight": grads["encoder.embed.weight"], "emb_bwd.bias": grads["encoder.embed.bias"],
        "gen_mod.weight": w_iz.t() @ g_lat, "gen_mod.bias": w_iz.t() @ g_bias,
        "fwd_mod.weight_ih": torch.cat([g_lat @ a_w.t() + torch.outer(g_bias, a_b),
                                        grads["decoder.input_gates.weight"]], 1),
        "fwd_mod.weight_hh": grads["decoder.hidden_gates.weight"],
        "fwd_mod.bias_ih": g_bias, "fwd_mod.bias_hh": g_bias,
        "inf_mod.0.weight": torch.cat([grads["encoder.post_cond.weight"], grads["encoder.post_summary.weight"]], 1),
        "inf_mod.0.bias": grads["encoder.post_summary.bias"],
        "inf_mod.2.weight": grads["encoder.post_out.weight"], "inf_mod.2.bias": grads["encoder.post_out.bias"],
        "fwd_out_mod.weight": grads["decoder.emit.0.weight"], "fwd_out_mod.bias": grads["decoder.emit.0.bias"],
    }  # fmt: skip
    for prefix, source in (("bwd_mod.", "encoder.rnn."), ("pri_mod.", "prior.net."),
                           ("aux_mod.", "aux.reconstruction.net.")):  # fmt: skip
        expected.update({prefix + k[len(source):]: g for k, g in grads.items() if k.startswith(source)})
    assert expected.keys() == dict(plain.named_parameters()).keys()
    assert rnn == plain.dims.rnn
    return expected


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("lengths", [(7, 7, 7), (7, 4, 2)])
def test_engine_matches_the_plain_implementation_in_terms_and_gradients(lengths, path, monkeypatch):
    made = _take_path(monkeypatch, path)
    torch.manual_seed(0)
    plain = PlainZForcing(DIMS).double()
    engine, comp = _engine()
    _copy_plain_into_engine(plain, engine)

    steps, batch = max(lengths), len(lengths)
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(steps + 1, batch, DIMS.x_dim, generator=g, dtype=torch.float64)
    u, x = seq[:-1], seq[1:]
    mask = (torch.arange(steps).unsqueeze(1) < torch.tensor(lengths)).double()
    noise = torch.randn(steps, batch, DIMS.z, generator=g, dtype=torch.float64)

    terms = compute_terms(engine, engine(u, x, mask, noise), comp, update=UPDATE)
    kind = {"probe": fused.ProbeHub, "hub": fused.WeightHub}.get(path)
    assert [type(hub) for hub in made] == [kind] * (3 if kind else 0)  # [W_hh, W_z], the posterior's two
    terms.loss.backward()
    kl_weight = comp.objective.kl_weight.at(UPDATE)
    aux_weight = comp.aux["reconstruction"].weight.at(UPDATE)
    out = plain(u, x, mask, noise, kl_weight, aux_weight)
    out["loss"].backward()

    close = dict(rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(terms.loss, out["loss"], **close)
    torch.testing.assert_close(terms.elbo, out["elbo"], **close)
    torch.testing.assert_close(terms.kl, out["kl"], **close)
    torch.testing.assert_close(terms.aux["reconstruction"], out["aux"], **close)
    grads = {k: p.grad for k, p in engine.named_parameters() if not k.startswith("aux.bwd.")}
    assert all(g is not None for g in grads.values())
    expected = _plain_grads_from_engine(plain, grads)
    for name, param in plain.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], **close, msg=lambda m, n=name: f"{n}: {m}")


def _recurrence(x: torch.Tensor, h0: torch.Tensor, layer: nn.Module, out: nn.Module) -> torch.Tensor:
    """h_t = tanh(x_t + layer(h_{t-1})), read out by ``out`` at every step."""
    h, ys = h0, []
    for x_t in x.unbind(0):
        h = torch.tanh(x_t + layer(h))
        ys.append(out(h))
    return torch.stack(ys)


@pytest.mark.parametrize("path", PATHS)
def test_loop_linear_gradients_match_plain_autograd(path, monkeypatch):
    made = _take_path(monkeypatch, path)
    torch.manual_seed(0)
    layer, out = LoopLinear(5, 5).double(), LoopLinear(5, 3, bias=False).double()
    ref_layer, ref_out = nn.Linear(5, 5).double(), nn.Linear(5, 3, bias=False).double()
    ref_layer.load_state_dict(layer.state_dict())
    ref_out.load_state_dict(out.state_dict())
    x = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 5, dtype=torch.float64)
    with step_loop(6):
        y = _recurrence(x, h0, layer, out)
    assert len(made) == (0 if path == "plain" else 2)
    y_ref = _recurrence(x, h0, ref_layer, ref_out)
    torch.testing.assert_close(y, y_ref)
    weight = torch.randn_like(y)
    params = [x, *layer.parameters(), *out.parameters()]
    got = torch.autograd.grad((y * weight).sum(), params)
    want = torch.autograd.grad((y_ref * weight).sum(), [x, *ref_layer.parameters(), *ref_out.parameters()])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # outside a loop a LoopLinear is an nn.Linear and builds no hub
    torch.testing.assert_close(layer(h0), ref_layer(h0))
    with step_loop(6):
        assert (fused.loop_hub(layer, batch_shape=(4,)) is None) == (path == "plain")
    assert fused.loop_hub(layer, batch_shape=(4,)) is None


def _two_layer_recurrence_inputs(steps: int) -> tuple[torch.Tensor, ...]:
    """(x, u, h0, W, V, b) for h_t = tanh(x_t + [h, u_t] @ [W, V]^T + b), float64, all trainable."""
    torch.manual_seed(0)
    shapes = [(steps, 3, 2), (steps, 3, 1), (3, 2), (2, 2), (2, 1), (2,)]
    return tuple(torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in shapes)


def test_weight_hub_passes_gradcheck():
    """Two layers in one hub, as ``linear_sum`` uses it: h_t = tanh(x_t + [h, u_t] @ [W, V]^T + b)."""

    def unroll(x, u, h0, w, v, bias):
        hub = WeightHub([w, v], [bias, None])
        h, hs = h0, []
        for x_t, u_t in zip(x.unbind(0), u.unbind(0), strict=True):
            h = torch.tanh(hub.linear(h, u_t, add=x_t))
            hs.append(h)
        return torch.stack(hs)

    assert torch.autograd.gradcheck(unroll, _two_layer_recurrence_inputs(4))


def test_probe_hub_passes_gradcheck_with_calls_beyond_its_steps():
    """Two layers with one bias through probes for 3 of 5 calls: the last two calls, and one of
    another batch shape, fall back to plain autograd and the gradients still add up."""
    fallbacks = []

    def unroll(x, u, h0, w, v, bias):
        hub = fused.ProbeHub([w, v], [bias, None], steps=3, batch_shape=(3,))
        h, hs = h0, []
        for x_t, u_t in zip(x.unbind(0), u.unbind(0), strict=True):
            y = hub.linear(h, u_t, add=x_t)
            if y is None:
                fallbacks.append(len(hs))
                y = F.linear(h, w, bias) + F.linear(u_t, v) + x_t
            assert hub.linear(h[:1], u_t[:1]) is None  # another batch shape: never a probe
            h = torch.tanh(y)
            hs.append(h)
        return torch.stack(hs)

    assert torch.autograd.gradcheck(unroll, _two_layer_recurrence_inputs(5))
    assert fallbacks[:2] == [3, 4]


def test_probes_fold_a_whole_added_sequence_and_fall_back_on_any_other_add():
    """The adds are the steps of one sequence split by unbind_steps: the probes hold that
    sequence plus the bias and pass its gradient on. A step given another tensor (here step 2
    gets its slice plus zero), and the steps after it, fall back to plain autograd."""
    folded = []

    def unroll(x, u, h0, w, v, bias):
        with fused.step_loop(5):
            steps = fused.unbind_steps(x)
            sequences = fused._LOOP.get().sequences
            hub = fused.ProbeHub([w, v], [bias, None], 5, (3,), add=steps[0], sequences=sequences)
            assert hub.source is x
            h, hs = h0, []
            for t, (x_t, u_t) in enumerate(zip(steps, u.unbind(0), strict=True)):
                add = x_t + 0.0 if t == 2 else x_t
                y = hub.linear(h, u_t, add=add)
                folded.append(y is not None)
                if y is None:
                    y = F.linear(h, w, bias) + F.linear(u_t, v) + add
                h = torch.tanh(y)
                hs.append(h)
        return torch.stack(hs)

    assert torch.autograd.gradcheck(unroll, _two_layer_recurrence_inputs(5))
    assert folded[:5] == [True, True, False, False, False]


def test_folded_probes_hold_no_sequence_once_the_loop_forward_ends():
    """Backward needs only the graph: a precomputed sequence that nothing else holds is freed
    when the loop ends (at TIMIT sizes the decoder's input gates are 21 MB), and its gradient
    still arrives."""
    torch.manual_seed(0)
    layer = LoopLinear(4, 6)
    x = torch.randn(5, 3, 6, requires_grad=True)
    h = torch.zeros(3, 4)
    with fused.step_loop(5):
        sequence = x * 2.0
        alive = weakref.ref(sequence)
        hs = []
        for x_t in fused.unbind_steps(sequence):
            h = torch.tanh(layer(h, add=x_t))[:, :4]
            hs.append(h)
        assert fused.loop_hub(layer).source is sequence  # folded
        del sequence, x_t
    gc.collect()
    assert alive() is None
    torch.stack(hs).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and layer.weight.grad.abs().sum() > 0


def test_large_loop_layers_use_packed_weights_and_agree_with_nn_linear():
    """[h, u_t] @ [W, V]^T + b + x_t through one packed hub (float32, as in training on CPU)."""
    size = 768  # W alone is above HUB_MIN_ELEMENTS and PACK_MIN_ELEMENTS: packed on CPU where oneDNN is available
    torch.manual_seed(0)
    layer, side = LoopLinear(size, size), LoopLinear(64, size, bias=False)
    ref, ref_side = nn.Linear(size, size), nn.Linear(64, size, bias=False)
    ref.load_state_dict(layer.state_dict())
    ref_side.load_state_dict(side.state_dict())
    x = torch.randn(5, 8, size, requires_grad=True)
    u = torch.randn(5, 8, 64, requires_grad=True)
    h0 = torch.randn(8, size)
    seen = []

    with step_loop(5):
        h, ys = h0, []
        for x_t, u_t in zip(x.unbind(0), u.unbind(0), strict=True):
            h = torch.tanh(fused.linear_sum([layer, side], [0.05 * h, u_t], add=x_t))
            hub = fused.loop_hub(layer, side)
            seen.append((hub, hub.packed is not None))
            ys.append(h)
    y = torch.stack(ys)
    h, ys_ref = h0, []
    for x_t, u_t in zip(x.unbind(0), u.unbind(0), strict=True):
        h = torch.tanh(ref(0.05 * h) + ref_side(u_t) + x_t)
        ys_ref.append(h)
    y_ref = torch.stack(ys_ref)
    assert all(hub is seen[0][0] for hub, _ in seen)  # one hub per group of layers and loop
    assert all(packed for _, packed in seen) == fused._can_pack(layer.weight)
    assert seen[0][0].packed is None  # released when the loop's forward ends
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    weight = torch.randn_like(y)
    got = torch.autograd.grad((y * weight).sum(), [x, u, layer.weight, layer.bias, side.weight])
    want = torch.autograd.grad((y_ref * weight).sum(), [x, u, ref.weight, ref.bias, ref_side.weight])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_step_computes_what_the_eager_step_computes():
    engine, comp = _engine()
    engine.float()
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(6, 2, DIMS.x_dim, generator=g)
    u, x, mask = seq[:-1], seq[1:], torch.ones(5, 2)
    noise = torch.randn(5, 2, DIMS.z, generator=g)
    results = []
    for compiled in (False, True):
        engine.compile_step = compiled
        engine.zero_grad(set_to_none=True)
        torch._dynamo.utils.counters.clear()
        terms = compute_terms(engine, engine(u, x, mask, noise), comp, update=UPDATE)
        terms.loss.backward()
        results.append((terms.loss.detach(), {k: p.grad.clone() for k, p in engine.named_parameters() if p.grad is not None}))
    # one graph per step: a break (the in-loop layers' loop lookup once did it) costs 0.78x vs 0.55x plain
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5)

"""STCN (Aksan & Hilliges 2019) through the parallel-latent contract: no loop over time in
training, a top-down hierarchy whose prior never reads x_t, the hierarchical KL and IWAE
weights from the concatenated layers, ancestral sampling, the command line, bench rows, the
paper's TIMIT settings and published numbers, and refusals of parts that do not fit."""

from __future__ import annotations

import json

import pytest
import torch
from seqvae_plugins.stcn_decoder import layer_sizes

from seqvae.cli import main
from seqvae.composition import build_model, load_composition, published_numbers
from seqvae.errors import ConfigError
from seqvae.evaluate import iwae_bound
from seqvae.nn import gaussian_kl
from seqvae.objective import compute_terms
from seqvae.resolve import preset_overrides
from seqvae.testing.batches import make_batch
from seqvae.testing.data import write_demo_npz
from tests.bounds import weights_and_elbo
from tests.conftest import sample_then_eval

NAMES = ["stcn", "stcn-dense", "stcn-gmm", "stcn-dense-gmm"]
SMALL = ["model.latent_dim=7", "model.decoder.latent_layers=3", "model.decoder.channels=8",
         "model.decoder.vertical_dilation=2", "model.decoder.output_layers=2", "model.decoder.output_channels=6",
         "model.encoder.hidden=9", "model.prior.hidden=10", "model.likelihood.components=2"]  # fmt: skip


def _model(name: str = "stcn-dense", *extra: str):
    sets = [s for s in SMALL if "components" not in s or "gmm" in name]
    comp = load_composition(name, [*sets, *extra])
    torch.manual_seed(0)
    return build_model(comp, 3).double(), comp


def _batch(model, steps: int, lengths=None, seed: int = 1):
    torch.manual_seed(seed)
    return tuple(t.double() for t in make_batch(model, steps, 3, lengths=lengths))


def _graph_nodes(root) -> int:
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return len(seen)


def _nodes_of_loss(model, comp, steps: int) -> int:
    u, x, mask = _batch(model, steps)
    return _graph_nodes(compute_terms(model.train(), model(u, x, mask), comp, update=10).loss.grad_fn)


@pytest.mark.parametrize("name", NAMES)
def test_training_has_no_python_loop_over_time(name):
    model, comp = _model(name)
    assert _nodes_of_loss(model, comp, 8) == _nodes_of_loss(model, comp, 16)
    # the counter sees a loop where there is one: a step-loop model's graph grows with T
    loop = build_model(load_composition("dkf", ["model.latent_dim=3", "model.encoder.hidden=5"]), 3).double()
    dkf = load_composition("dkf")
    assert _nodes_of_loss(loop, dkf, 16) > _nodes_of_loss(loop, dkf, 8)


def test_latent_sizes_halve_upwards_as_in_the_paper():
    assert layer_sizes(496, 5) == [256, 128, 64, 32, 16]
    assert layer_sizes(7, 3) == [4, 2, 1] and layer_sizes(4, 5) == [1, 1, 1, 1]
    model, _ = _model()
    assert [layer.z_dim for layer in model.decoder.latent_layers] == [4, 2, 1]
    assert [layer.above_dim for layer in model.decoder.latent_layers] == [2, 1, 0]


def test_the_prior_never_reads_x_t_and_the_posterior_does():
    model, _ = _model()
    u, x, mask = _batch(model, 6)
    noise = torch.randn(6, 3, 7, dtype=torch.float64)
    base = model(u, x, mask, noise)
    x2 = x.clone()
    x2[3] += 1.0  # x_4 changes (and u_5 = x_4 with it)
    u2 = u.clone()
    u2[4] = x2[3]
    moved = model(u2, x2, mask, noise)
    # the top layer's prior reads d_{t-1}: unchanged up to and including step 4
    top = slice(6, 7)
    torch.testing.assert_close(moved.prior_mu[:4, :, top], base.prior_mu[:4, :, top])
    assert not torch.allclose(moved.post_mu[3, :, top], base.post_mu[3, :, top])  # q(z_4) read x_4
    torch.testing.assert_close(moved.post_mu[:3], base.post_mu[:3])  # nothing before step 4 read it
    assert not torch.allclose(moved.prior_mu[4, :, top], base.prior_mu[4, :, top])  # p(z_5) reads x_4


def test_the_kl_is_the_sum_of_the_layers_analytic_kls_at_the_upper_layers_samples():
    model, comp = _model()
    u, x, mask = _batch(model, 6, lengths=[6, 4, 2])
    trace = model(u, x, mask)
    kl = compute_terms(model, trace, comp, training=False).kl
    by_layer, start = 0, 0
    for layer in model.decoder.latent_layers:
        span = slice(start, start + layer.z_dim)
        start += layer.z_dim
        per = gaussian_kl(trace.post_mu[..., span], trace.post_logvar[..., span],
                          trace.prior_mu[..., span], trace.prior_logvar[..., span])  # fmt: skip
        by_layer = by_layer + (per.sum(-1) * mask).sum(0)
    torch.testing.assert_close(kl, by_layer)
    # the layer below's prior is conditioned on the sample of the layer above (top-down)
    lowest = model.decoder.latent_layers[0]
    z_above = model.decoder.latent_layers[1]
    cond_l0 = torch.cat([trace.z[..., lowest.z_dim:lowest.z_dim + z_above.z_dim],
                         trace.pre["d"][..., :lowest.feature_dim]], -1)  # fmt: skip
    torch.testing.assert_close(model.prior.layer(0, cond_l0)[0], trace.prior_mu[..., :lowest.z_dim])


def test_a_posterior_is_the_precision_weighted_prior_and_encoder_term():
    model, _ = _model()
    cond = torch.randn(5, 2, model.decoder.latent_layers[2].cond_dim, dtype=torch.float64)
    features = torch.randn(5, 2, model.decoder.context_dim, dtype=torch.float64)
    prior = (torch.randn(5, 2, 1, dtype=torch.float64), torch.randn(5, 2, 1, dtype=torch.float64))
    mu, logvar = model.encoder.posterior_layer(2, cond, features, prior)
    from seqvae.nn import split_gaussian

    d = features[..., 16:24]
    m, s = split_gaussian(model.encoder.nets[2](d))
    precision = torch.exp(-prior[1]) + torch.exp(-s)
    torch.testing.assert_close(logvar, -torch.log(precision))
    torch.testing.assert_close(mu, (prior[0] * torch.exp(-prior[1]) + m * torch.exp(-s)) / precision)


@pytest.mark.parametrize("name", ["stcn", "stcn-dense-gmm"])
def test_iwae_weights_average_to_the_elbo_and_the_bound_orders_above_it(name):
    model, comp = _model(name)
    model.eval()
    u, x, mask = _batch(model, 5, lengths=[5, 3, 2])
    mean_log_w, elbo, error = weights_and_elbo(model, comp, u, x, mask, draws=3000)
    assert bool(((mean_log_w - elbo).abs() < 4 * error).all()), (mean_log_w, elbo, error)
    with torch.no_grad():
        batch = type("B", (), {"u": u, "x": x, "mask": mask})
        torch.manual_seed(3)
        k1, k64 = iwae_bound(model, batch, 1), iwae_bound(model, batch, 64)
        assert bool((k64 >= elbo - 4 * error).all()) and bool((k64 >= k1).all())


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_ancestral_and_has_the_stored_shape(name):
    model, _ = _model(name)
    torch.manual_seed(0)
    samples = model.float().sample(4, 7)
    assert samples.shape == (7, 4, 3) and bool(torch.isfinite(samples).all())


def test_noise_columns_give_a_sub_batch_what_the_whole_batch_gives_it():
    model, comp = _model()
    u, x, mask = _batch(model, 6, lengths=[6, 4, 2])
    noise = model.draw_noise(6, 3, "cpu", torch.float64)
    whole = compute_terms(model, model(u, x, mask, noise), comp, training=False).elbo
    part = model(u[:, 1:3], x[:, 1:3], mask[:, 1:3], noise.columns(1, 3))
    torch.testing.assert_close(compute_terms(model, part, comp, training=False).elbo, whole[1:3])


def test_train_sample_and_eval_from_the_command_line(tmp_path, capsys):
    npz = write_demo_npz(tmp_path / "toy.npz", dims=3, steps=10)
    sets = [a for item in [*SMALL[:-1], "train.eval_every=0"] for a in ("--set", item)]
    out = tmp_path / "run"
    assert main(["train", "--model", "stcn", "--dataset", "npz", "--data", str(npz), "--out", str(out),
                 "--max-steps", "3", *sets]) == 0  # fmt: skip
    checkpoint = out / "checkpoints" / "last.pt"
    assert sample_then_eval(checkpoint, npz, tmp_path / "s.npz", capsys)["kl"] > 0


def test_bench_runs_the_stcn_compositions(tmp_path):
    npz = write_demo_npz(tmp_path / "toy.npz", dims=3, steps=8)
    sets = [a for item in [*SMALL[:-1], "train.eval_every=0"] for a in ("--set", item)]
    out = tmp_path / "bench"
    assert main(["bench", "--models", "stcn,stcn-dense", "--dataset", "npz", "--data", str(npz), "--out", str(out),
                 "--max-steps", "2", "--iwae-k", "4", *sets]) == 0  # fmt: skip
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["stcn", "stcn-dense"]
    assert all(r["error"] is None and r["iwae"] is not None for r in rows)


def test_the_defaults_are_the_papers_timit_settings_and_its_numbers_are_published():
    comp = load_composition("stcn-dense-gmm")
    decoder = comp.slots["decoder"].options
    assert (decoder.channels, decoder.latent_layers, decoder.vertical_dilation, decoder.dense) == (512, 5, 5, True)
    assert (decoder.output_layers, decoder.output_channels, comp.latent_dim) == (5, 512, 496)
    assert comp.slots["likelihood"].options.components == 20
    assert (comp.slots["prior"].options.hidden, comp.slots["prior"].options.layers) == (512, 2)
    assert (comp.slots["encoder"].options.hidden, comp.slots["encoder"].options.layers) == (512, 2)
    # the TIMIT preset keeps STCN's own protocol, not the reference batch 32 / clip 100
    timit = load_composition("stcn-dense-gmm", preset_overrides(None, "timit", "stcn-dense-gmm"))
    train = timit.train
    assert (train.batch_size, train.lr, train.clip, train.adam_eps) == (20, 1e-3, 1.0, 1e-8)
    assert (train.lr_decay.factor, train.lr_decay.every, train.lr_decay.per) == (0.98, 1000, "update")
    kl = timit.objective.kl_weight
    assert kl.at(0) == 0.0 and kl.at(5000) == pytest.approx(0.5) and kl.at(20000) == 1.0
    numbers = published_numbers()["timit"]
    assert [numbers[n] for n in NAMES] == [64913, 70294, 69195, 77438]


def test_parts_that_draw_one_z_t_per_step_are_refused_under_stcn_and_back():
    with pytest.raises(ConfigError) as info:
        build_model(load_composition("stcn", ["model.prior.component=gaussian-mlp"]), 3)
    message = str(info.value)
    assert "prior 'gaussian-mlp' does not fit decoder 'stcn' (model.decoder.component)" in message
    assert "model.prior.component: ladder-mlp" in message
    with pytest.raises(ConfigError) as info:
        build_model(load_composition("zforcing", ["model.encoder.component=ladder-posterior"]), 3)
    assert "encoder 'ladder-posterior' does not fit decoder 'latent-lstm'" in str(info.value)
    assert "model.decoder.component: stcn" in str(info.value)
    with pytest.raises(ConfigError, match=r"model\.encoder\.flow\.steps: expected 0"):
        load_composition("stcn", ["model.encoder.flow.steps=2"])


def test_local_z_recomputes_z_and_trains_only_the_posterior_networks():
    model, _ = _model()
    u, x, mask = _batch(model, 6, lengths=[6, 4, 2])
    trace = model(u, x, mask)
    local = trace.local_z()
    torch.testing.assert_close(local, trace.z)
    model.zero_grad(set_to_none=True)
    local.sum().backward()
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {"encoder"}

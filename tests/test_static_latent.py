"""A sequence-level latent f (the ``static`` slot; DSAE, Li & Mandt 2018): drawn once per
sequence, its KL to N(0, I) once per sequence in the loss, the ELBO and the IWAE weights,
reported apart, and refused where nothing reads it."""

from __future__ import annotations

import json

import pytest
import torch

from seqvae.cli import main
from seqvae.composition import build_model, load_composition
from seqvae.errors import ConfigError
from seqvae.evaluate import evaluate, iwae_bound
from seqvae.model import Noise
from seqvae.objective import compute_terms
from seqvae.testing import shrink
from seqvae.testing.batches import make_batch
from tests.bounds import weights_and_elbo
from tests.conftest import sample_then_eval

SMALL = ["model.static.dim=5", "model.static.embed=6", "model.static.hidden=7", "model.latent_dim=3",
         "model.decoder.hidden=8", "model.decoder.emission_hidden=9", "model.encoder.embed=6",
         "model.encoder.hidden=7", "model.prior.hidden=8"]  # fmt: skip


def _model(name: str = "dsae", seed: int = 0):
    comp = load_composition(name, SMALL)
    torch.manual_seed(seed)
    return build_model(comp, 3).double(), comp


def _batch(model, lengths=(6, 4, 2)):
    torch.manual_seed(1)
    return tuple(t.double() for t in make_batch(model, max(lengths), len(lengths), lengths=list(lengths)))


@pytest.mark.parametrize("name", ["dsae", "dsae-factorised"])
def test_the_kl_of_f_is_analytic_once_per_sequence_and_in_the_elbo(name):
    model, comp = _model(name)
    u, x, mask = _batch(model)
    trace = model(u, x, mask)
    terms = compute_terms(model, trace, comp, training=False)
    mu, logvar = trace.static_mu, trace.static_logvar
    closed = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)  # KL(N(mu, s^2) || N(0, I))
    torch.testing.assert_close(terms.kl_static, closed, rtol=1e-12, atol=1e-12)
    assert terms.kl_static.shape == (3,) and bool((terms.kl_static > 0).all())
    torch.testing.assert_close(terms.elbo, terms.log_px - terms.kl - terms.kl_static, rtol=0, atol=0)
    # f is one draw per sequence, the same at every step the decoder reads
    f = trace.pre["static"]
    assert torch.equal(f, trace.static_z.unsqueeze(0).expand_as(f))
    # the annealed loss weighs f's KL like the rest: at weight beta the loss is -log_px + beta (kl + kl_f)
    train = compute_terms(model, trace, comp, update=0)
    beta = comp.objective.kl_weight.at(0)
    expected = (-terms.log_px + beta * (terms.kl + terms.kl_static)).mean()
    torch.testing.assert_close(train.loss, expected, rtol=1e-12, atol=1e-12)


def test_gradients_reach_the_static_encoder_through_the_kl_and_the_emission():
    model, comp = _model()
    u, x, mask = _batch(model)
    compute_terms(model, model(u, x, mask), comp, training=False).elbo.sum().backward()
    for name, p in model.static.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_iwae_weights_score_f_and_average_to_the_elbo():
    model, comp = _model()
    model.eval()
    u, x, mask = _batch(model)
    # the single-sample log weight's mean is the ELBO (analytic KLs) up to sampling error
    mean_log_w, elbo, error = weights_and_elbo(model, comp, u, x, mask, draws=4000)
    assert bool(((mean_log_w - elbo).abs() < 4 * error).all()), (mean_log_w, elbo, error)
    with torch.no_grad():
        torch.manual_seed(3)
        batch = type("B", (), {"u": u, "x": x, "mask": mask})
        assert bool((iwae_bound(model, batch, 64) >= elbo - 4 * error).all())


def test_noise_columns_give_a_sub_batch_what_the_whole_batch_gives_it():
    """What data-parallel ranks rely on: the whole batch's draws (f's first), sliced."""
    model, comp = _model()
    u, x, mask = _batch(model)
    torch.manual_seed(11)
    drawn = model(u, x, mask)  # draws its own noise
    torch.manual_seed(11)
    noise = model.draw_noise(6, 3, "cpu", torch.float64)
    given = model(u, x, mask, noise)
    assert torch.equal(drawn.static_z, given.static_z) and torch.equal(drawn.z, given.z)
    whole = compute_terms(model, given, comp, training=False).elbo
    part = model(u[:, 1:3], x[:, 1:3], mask[:, 1:3], noise.columns(1, 3))
    torch.testing.assert_close(compute_terms(model, part, comp, training=False).elbo, whole[1:3])
    assert isinstance(noise, Noise) and noise.static.shape == (3, 5)


def test_evaluation_reports_f_apart_and_its_active_units(toy_npz):
    import numpy as np

    from seqvae.data import Split

    model, comp = _model()
    arrays = np.load(toy_npz)
    split = Split(arrays["u_test"], arrays["x_test"], arrays["mask_test"])
    ev = evaluate(model.float(), comp, split, iwae_k=2)
    report = ev.report("nats per sequence")
    assert report["kl_static"] == pytest.approx(ev.sums["kl_static"] / 64) and report["kl_static"] > 0
    assert 0 <= report["active_units_static"] <= 5
    assert report["elbo"] == pytest.approx((ev.sums["recon"] - ev.sums["kl"] - ev.sums["kl_static"]) / 64)
    # z's KL per step beside f's per sequence, whatever the unit: per sequence the KL of z is
    # its per-step KL times the mean length
    steps = float(split.mask.sum())
    assert report["kl_per_step"] == pytest.approx(ev.sums["kl"] / steps) and report["kl_per_step"] > 0
    assert report["kl"] == pytest.approx(report["kl_per_step"] * steps / 64)
    assert ev.report("nats per step")["kl_per_step"] == pytest.approx(report["kl_per_step"])
    # a model without a static latent reports none
    plain = build_model(shrink(load_composition("dkf")), 3)
    assert evaluate(plain, comp, split).report("nats per sequence")["kl_static"] is None


def test_train_eval_and_sample_from_the_command_line(toy_npz, tmp_path, capsys):
    out = tmp_path / "dsae"
    sets = [a for s in [*SMALL, "train.eval_every=3", "train.log_every=1", "train.batch_size=16"]
            for a in ("--set", s)]  # fmt: skip
    assert main(["train", "--model", "dsae", "--dataset", "npz", "--data", str(toy_npz), "--out", str(out),
                 "--max-steps", "6", *sets]) == 0  # fmt: skip
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(record["kl_static"] > 0 for record in log)
    result = sample_then_eval(out / "checkpoints" / "last.pt", toy_npz, tmp_path / "s.npz", capsys, iwae_k=2)
    assert result["kl_static"] > 0 and result["active_units_static"] is not None and result["kl_per_step"] > 0


def test_tensorboard_gets_the_kl_of_f_per_sequence_and_of_z_per_step(toy_npz, tmp_path):
    from seqvae_plugins.npz_dataset import NpzDataset
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from seqvae.train import train

    comp = load_composition("dsae", [*SMALL, "train.eval_every=2", "train.batch_size=16"])
    writer = SummaryWriter(str(tmp_path / "tb"))
    train(comp, NpzDataset(toy_npz, None), tmp_path / "run", max_steps=4, writer=writer, progress=False)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    val = {tag: [e.value for e in events.Scalars(tag)] for tag in ("val/kl_static", "val/kl_per_step")}
    assert len(val["val/kl_static"]) == len(val["val/kl_per_step"]) == 2
    assert all(v > 0 for values in val.values() for v in values)


def test_a_static_latent_needs_a_decoder_that_reads_it_and_back():
    with pytest.raises(ConfigError, match=r"model\.static: decoder 'latent-lstm' does not read .* \(dsae\)"):
        load_composition("zforcing", ["model.static.component=bilstm-static"])
    with pytest.raises(ConfigError, match=r"model\.static: missing slot: decoder 'dsae' reads .* \(bilstm-static\)"):
        load_composition("dsae", ["model.static=null"])


def test_a_prior_that_reads_nothing_under_dsae_is_refused_naming_both():
    comp = load_composition("dsae-factorised", [*SMALL, "model.prior.component=standard-normal"])
    with pytest.raises(ConfigError) as caught:
        build_model(comp, 3)
    message = str(caught.value)
    assert caught.value.path == "model.prior.component"
    assert "prior 'standard-normal' does not fit decoder 'dsae'" in message and "Fix: model.prior.component:" in message

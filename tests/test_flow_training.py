"""Flow posteriors end to end: the conformance suite, `seqvae train --set
model.encoder.flow.steps=2`, sampling, eval, bench, the published numbers, and the fast path."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from seqvae import fused
from seqvae.cli import main, open_dataset
from seqvae.composition import build_model, load_composition, published_numbers
from seqvae.objective import compute_terms
from seqvae.resolve import paper_number
from seqvae.testing import conformance
from seqvae.testing.data import write_demo_npz
from tests.conftest import sample_then_eval
from tests.test_flow_elbo import TINY

FLOW = ["model.encoder.flow.steps=2", "model.encoder.flow.hidden=6"]
JSB_PICKLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb" / "jsb-chorales-quarter.pkl"


@pytest.mark.parametrize("context", ["false", "true"])
@pytest.mark.parametrize("name", ["dkf", "zforcing"])
def test_a_flow_on_either_model_passes_the_conformance_suite(name, context):
    report = conformance.check_composition(name, overrides=[*FLOW, f"model.encoder.flow.context={context}"])
    assert report.passed == [check.name for check in conformance.CHECKS]
    assert report.composition.slots["encoder"].flow.steps == 2


@pytest.mark.parametrize("name", ["dkf", "zforcing"])
def test_train_with_a_flow_by_set_then_sample_and_eval(name, tmp_path, capsys):
    npz = write_demo_npz(tmp_path / "toy.npz", dims=3, steps=10)
    sets = [a for item in [*TINY[name], *FLOW, "train.eval_every=0"] for a in ("--set", item)]
    out = tmp_path / "run"
    assert main(["train", "--model", name, "--dataset", "npz", "--data", str(npz), "--out", str(out),
                 "--max-steps", "3", *sets]) == 0  # fmt: skip
    checkpoint = out / "checkpoints" / "last.pt"
    assert "flow:" in (out / "config.yaml").read_text()  # the run's composition keeps its flow
    assert sample_then_eval(checkpoint, npz, tmp_path / "x.npz", capsys)["kl"] > 0


def test_bench_runs_the_flow_compositions(tmp_path):
    npz = write_demo_npz(tmp_path / "toy.npz", dims=3, steps=8)
    sets = [a for item in [*TINY["dkf"], "model.encoder.flow.hidden=6", "train.eval_every=0"] for a in ("--set", item)]
    out = tmp_path / "bench"
    assert main(["bench", "--models", "dkf-iaf,dkf-iaf1", "--dataset", "npz", "--data", str(npz), "--out", str(out),
                 "--max-steps", "2", "--iwae-k", "4", *sets]) == 0  # fmt: skip
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["dkf-iaf", "dkf-iaf1"]
    assert all(r["error"] is None and r["iwae"] is not None for r in rows)


def test_the_published_flow_numbers_are_keyed_to_the_quarter_note_pickle():
    table = published_numbers()["by_data"]["9908980786c4"]
    assert (table["dkf-iaf1"], table["dkf-iaf"], table["unit"]) == (6.82, 6.80, "nats per step")
    if not JSB_PICKLE.is_file():
        pytest.skip(f"{JSB_PICKLE} absent")
    dataset = open_dataset("jsb", str(JSB_PICKLE))
    assert paper_number(published_numbers(), "jsb", dataset, "dkf-iaf") == 6.80


@contextmanager
def _path(name: str):
    """In-loop layers (the flow's MADE layers among them) through one weight-gradient path."""
    saved = fused.HUB_MIN_ELEMENTS, fused.DEFER_MIN_ELEMENTS, fused.FLUSH_ROWS
    fused.FLUSH_ROWS = 8  # several chunks
    if name == "hub":
        fused.HUB_MIN_ELEMENTS = 0
    if name == "plain":
        fused.DEFER_MIN_ELEMENTS = float("inf")
    try:
        yield
    finally:
        fused.HUB_MIN_ELEMENTS, fused.DEFER_MIN_ELEMENTS, fused.FLUSH_ROWS = saved


@pytest.mark.parametrize("name", ["dkf", "zforcing"])
def test_the_fast_path_gives_the_plain_elbo_and_gradients_with_a_flow(name):
    comp = load_composition(name, [*TINY[name], *FLOW, "model.encoder.flow.context=true"])
    torch.manual_seed(0)
    model = build_model(comp, 3).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 3, 3, generator=gen, dtype=torch.float64)
    u = torch.cat([torch.zeros_like(x[:1]), x[:-1]])
    mask = (torch.arange(7).unsqueeze(1) < torch.tensor([7, 4, 2])).double()
    noise = torch.randn(7, 3, model.z_dim, generator=gen, dtype=torch.float64)
    results = {}
    for path in ("plain", "probe", "hub"):
        model.zero_grad()
        with _path(path):
            terms = compute_terms(model, model(u, x, mask, noise), comp, update=50)
            terms.loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results[path] = terms.elbo.detach(), terms.loss.detach(), grads
    elbo, loss, grads = results["plain"]
    assert any(k.startswith("flow.") for k in grads)
    for path in ("probe", "hub"):
        other_elbo, other_loss, other_grads = results[path]
        torch.testing.assert_close(other_elbo, elbo, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(other_loss, loss, rtol=1e-10, atol=1e-10)
        assert other_grads.keys() == grads.keys()
        for k in grads:
            torch.testing.assert_close(other_grads[k], grads[k], rtol=1e-9, atol=1e-10, msg=lambda m, k=k, p=path: f"{p} {k}: {m}")


def test_the_compiled_step_computes_what_the_eager_step_computes_with_a_flow():
    comp = load_composition("zforcing", [*TINY["zforcing"], *FLOW, "model.encoder.flow.context=true"])
    torch.manual_seed(0)
    model = build_model(comp, 3)
    gen = torch.Generator().manual_seed(3)
    seq = torch.randn(6, 2, 3, generator=gen)
    u, x, mask, noise = seq[:-1], seq[1:], torch.ones(5, 2), torch.randn(5, 2, 3, generator=gen)
    results = []
    for compiled in (False, True):
        model.compile_step = compiled
        model.zero_grad(set_to_none=True)
        torch._dynamo.utils.counters.clear()
        terms = compute_terms(model, model(u, x, mask, noise), comp, update=10)
        terms.loss.backward()
        results.append((terms.loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}  # the masked layers compile whole
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith("flow.") for k in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5)


def test_seqvae_components_shows_the_flow_block_of_any_encoder(capsys):
    assert main(["components", "filtering-mlp"]) == 0
    out = capsys.readouterr().out
    assert "model.encoder.flow.KEY" in out and "steps: int = 0" in out

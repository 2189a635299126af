"""Every built-in composition computes what it computed before the slot contract declared
cond_t, the encoder's summary and the fast path (issue 13): float64 ELBO per sequence, the
training loss (auxiliary terms included) and the gradient norm, on fixed weights, data and
noise. The numbers were recorded from the code before that change."""

from __future__ import annotations

import pytest
import torch

from seqvae.composition import build_model, builtin_compositions, load_composition
from seqvae.objective import compute_terms
from seqvae.testing import shrink
from seqvae.testing.batches import make_batch

BEFORE = {
    "zforcing": ([-36.96132345854938, -22.445628207439384, -8.650156481233367], 22.23830261990007, 3.975243177462835),
    "zforcing-noaux": ([-36.96132345854938, -22.445628207439384, -8.650156481233367], 21.987161692486406, 3.9748832192522214),
    "vrnn": ([-37.11320499545844, -22.524766930775687, -9.498290488923864], 23.045420805052668, 5.785721443893417),
    "vrnn-gmm": ([-36.12788926509921, -25.491373412503624, -8.65507295676912], 23.42477854479065, 5.499003059374391),
    "vrnn-i": ([-37.15137585483674, -22.550295922116604, -9.510684133271258], 23.0707853034082, 5.344199990890906),
    "srnn": ([-37.497351876994955, -22.714841372129847, -9.54802457957263], 23.253405942899146, 7.556612685184364),
    "rnn": ([-38.329003102907215, -22.591766863850562, -8.613791508833128], 23.178187158530303, 6.235905959229853),
    "rnn-gmm": ([-34.49667536466953, -23.980093043529124, -8.229946007312865], 22.235571471837172, 2.0597989755080732),
    "storn": ([-36.04037660349105, -21.855832649385473, -8.412696528358005], 22.102968593744844, 4.3795796412183625),
    "dkf": ([-42.67893617170475, -24.897952664019535, -9.150233661911587], 23.26444911406793, 6.271548571812904),
}  # fmt: skip
"""name -> (ELBO of each of three sequences, training loss at update 100, gradient norm)."""

INTRODUCED = {
    "dkf-iaf": ([-42.228468659519265, -24.657094225556417, -8.92271549095765], 23.16485664286377, 5.944953980918654),
    "dkf-iaf1": ([-40.82443007281821, -23.932066498455548, -7.641614685238864], 22.949274612390493, 6.1099018999750925),
    "dsae": ([-40.24288173093008, -23.235259993921886, -9.666873018532552], 24.381671581128174, 7.8856046748069595),
    "dsae-factorised": ([-42.39007188141095, -25.121942364238063, -10.447957196622776], 25.98665714742393,
                        10.935348335560686),
    # the latent hierarchies without a step loop (parallel latents), pinned as introduced
    "stcn": ([-45.80751584513609, -32.48105673355657, -11.262461586396526], 27.38796646200798, 34.14640741357117),
    "stcn-dense": ([-42.95784255404821, -22.327936050585958, -10.250739119383251], 22.607655195013393,
                   8.786082302906756),
    "stcn-dense-gmm": ([-35.48702829485064, -25.89097033554006, -9.91491389686656], 22.080753816251704,
                       5.781019061859926),
    "stcn-gmm": ([-38.21485939887827, -21.868215128278074, -9.061130282018908], 21.580743142509913,
                 6.433037174787843),
}  # fmt: skip
"""The compositions added with the flow posterior and the static slot (session 5), and the STCN
compositions (parallel latent layers), pinned as they were introduced, so that a later change
of the contract shows up in them too."""
PINS = {**BEFORE, **INTRODUCED}


def test_every_builtin_composition_is_pinned():
    assert set(PINS) == set(builtin_compositions())


@pytest.mark.parametrize("name", sorted(PINS))
def test_builtin_composition_computes_what_it_computed_before_the_contract_change(name):
    comp = shrink(load_composition(name))
    torch.manual_seed(0)
    model = build_model(comp, 3).double()
    torch.manual_seed(1)
    u, x, mask = (t.double() for t in make_batch(model, 6, 3, lengths=[6, 4, 2]))
    noise = torch.randn(6, 3, model.z_dim, dtype=torch.float64) if model.decoder.uses_latent else None
    terms = compute_terms(model.train(), model(u, x, mask, noise), comp, update=100)
    terms.loss.backward()
    grad_norm = sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None) ** 0.5
    elbo, loss, norm = PINS[name]
    close = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms.elbo.detach(), torch.tensor(elbo, dtype=torch.float64), **close)
    assert float(terms.loss) == pytest.approx(loss, rel=1e-10)
    assert grad_norm == pytest.approx(norm, rel=1e-9)

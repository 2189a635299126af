"""Monte-Carlo checks of the bounds shared by the tests of several slots."""

from __future__ import annotations

import torch

from seqvae.evaluate import log_weights
from seqvae.objective import compute_terms


def weights_and_elbo(model, comp, u, x, mask, draws: int):
    """Over ``draws`` posterior samples per sequence: the mean single-sample log weight, the
    mean ELBO (analytic KLs) and the standard error of the former, each (B,). The two means
    agree up to sampling error when the log weights score what the ELBO's KL terms do."""
    batch = x.shape[1]
    with torch.no_grad():
        rep = lambda t: t.repeat(1, draws, *([1] * (t.dim() - 2)))  # noqa: E731
        trace = model(rep(u), rep(x), rep(mask))
        log_w = log_weights(trace).view(draws, batch)
        elbo = compute_terms(model, trace, comp, training=False).elbo.view(draws, batch).mean(0)
    return log_w.mean(0), elbo, log_w.std(0) / draws**0.5

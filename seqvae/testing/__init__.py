"""The conformance suite: the same generic tests for every composition and component.

Built-in and third-party components pass the same checks, in the spirit of Pyro's generic
distribution tests. From a plugin's own pytest suite::

    from seqvae.registry import build_registry
    from seqvae.testing import conformance

    import my_plugin

    registry = build_registry(extra=[my_plugin])   # or default_registry() once installed

    def test_my_model_conforms():
        conformance.check_composition("my-model.yaml", registry=registry)

    def test_my_prior_conforms():   # placed in a built-in composition's prior slot
        conformance.check_component("prior", "my-prior", registry=registry)

The properties (``conformance.CHECKS``; each check's docstring states it exactly):

- ``shapes``: emission params (T, B, P), z and (mu, logvar) (T, B, Z), cond (T, B, C),
  log-probabilities and auxiliary terms (T, B), for several batch sizes and lengths;
- ``padding``: garbage on padded steps (mask 0) changes no sequence's masked ELBO or auxiliary
  terms, with the posterior noise fixed;
- ``seed``: the same seed gives the same model, loss and samples;
- ``gradients``: the ELBO reaches every model parameter, each auxiliary term its own network;
- ``save-load``: a weights-only checkpoint rebuilds a model with identical outputs;
- ``sampling``: ``SequenceModel.sample`` gives finite, valid observations of the right shape.
- ``device``: on the ``meta`` device (no data, any accelerator's stand-in) the model trains
  through the fast path and samples: no tensor made on a fixed device, no value read back.
- ``fast-path``: in float64, the ELBO and every parameter gradient are the same with the
  engine's fast step loop on (probes and weight hubs) and off; no plain ``nn.Linear`` runs
  inside the loop (in-loop layers are ``seqvae.fused.LoopLinear``).

Two kinds are also checked on their own (:mod:`seqvae.testing.likelihoods`,
:mod:`seqvae.testing.datasets`; each property's docstring states it exactly):

- ``conformance.check_likelihood(NAME)``: ``shapes``; ``normalised`` (exp(log_prob) sums to 1
  over every outcome of a binary or categorical support, integrates to 1 by quadrature for
  real values); ``sampling`` (``sample`` passes a chi-square or Kolmogorov-Smirnov test against
  ``log_prob``, after Pyro's goodness-of-fit tests);
- ``conformance.check_dataset(NAME, PATH)``: ``declarations`` (unit, support, likelihood, the
  not-found hints), ``not-found`` (an empty folder is a UserError naming it), ``splits``,
  ``shapes``, ``masks`` (0/1, a prefix of each row), ``support`` (finite values of the declared
  support), ``inputs`` (u_t = x_{t-1}).

Compositions are shrunk to tiny sizes generically (:func:`shrink`), so the suite runs in
seconds on a CPU.
"""

from seqvae.testing.shrink import SIZE_WORDS, is_size_option, shrink
from seqvae.testing.subjects import Case, ConformanceError, ConformanceSkip, Subject

__all__ = [
    "SIZE_WORDS", "Case", "ConformanceError", "ConformanceSkip", "Subject", "is_size_option",
    "shrink",
]  # fmt: skip

"""The slot interfaces every model is assembled from.

A model is one component per slot: a *decoder* (generative recurrence and emission
parameters), a *likelihood* (the output distribution family), and, for latent-variable
models, a *prior* and an *encoder* (inference network), plus zero or more *auxiliary
objectives*. The engine (:mod:`seqvae.model`) only ever talks to these interfaces.

The step contract covers the common dependency structures of stochastic RNNs (README.md,
"How a model is assembled", has a table for the built-in models):

- cond_t, what the prior and posterior read at step t, is what the decoder passes to
  ``draw``: named fields it declares (:meth:`Decoder.cond_fields`: a deterministic state
  h_{t-1}, the previous latent z_{t-1}, a forward state d_t, ...; :mod:`seqvae.contract`);
- the posterior's sequence-level features come from the encoder's own RNN over x, from the
  decoder's ``context`` (features the decoder shares), or both;
- emission parameters may read the new state, the old one, z_t and per-step precompute;
- what each component reads of cond_t, of the decoder's context and of the encoder's summary
  is declared too (:meth:`Component.reads`, :meth:`Encoder.summary_reads`): the builder
  refuses a composition whose parts do not fit, naming both;
- layers that run once per step inside the loop are :class:`seqvae.fused.LoopLinear` (or
  :func:`seqvae.fused.linear_sum`), and in-loop MLPs :class:`seqvae.fused_chain.LoopSequential`
  (what ``seqvae.nn.mlp(..., linear=LoopLinear)`` builds: one autograd node per step): the
  engine's fast path, which the conformance suite's ``fast-path`` property checks against plain
  autograd for every composition.
- a decoder with :attr:`Decoder.parallel_latents` has no step loop: it draws a hierarchy of
  latent layers z_t^L..z_t^1, each for all steps at once, top-down, through
  :meth:`Decoder.latents`; the prior and the encoder then give one layer's Gaussian at a time
  (:meth:`Prior.layer`, :meth:`Encoder.posterior_layer`), and the Trace concatenates the layers
  over the latent dimension (see :class:`LatentLayer`).
- q(z_t | .) is the encoder's diagonal Gaussian, or that Gaussian pushed through a flow that
  the engine owns (``model.encoder.flow``, :mod:`seqvae.flow`): z_t is then the flow's output
  wherever the decoder, the prior and the next step read it, and the KL is sampled.

A decoder whose recurrence reads x_t *after* emitting it applies that update at the start of
step t+1, where x_t is the input u_{t+1}: every decoder reads u_t = x_{t-1} at step t, which
also makes ancestral sampling uniform.

Components are ``nn.Module`` subclasses constructed as ``Cls(options, ctx)``, where ``options``
is an instance of the class's ``Options`` dataclass (validated from YAML) and ``ctx`` a
:class:`BuildContext` holding the dimensions fixed by the slots built before it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from seqvae.contract import Reads

if TYPE_CHECKING:
    from seqvae.model import Trace

State = tuple[Tensor, ...]
"""A decoder's recurrent state: a tuple of (B, ...) tensors."""

Draw = Callable[[Tensor], Tensor]
"""``draw(cond_t) -> z_t``: given what the prior and posterior condition on at step t, return
z_t (a posterior sample in training, a prior sample when generating)."""

LayerDraw = Callable[[int, Tensor], Tensor]
"""``draw(l, cond) -> z^l``: latent layer ``l`` (0 the lowest) for all steps at once, given
what its prior and posterior condition on, cond (T, B, C_l); returns (T, B, Z_l)."""


@dataclass(frozen=True)
class LatentLayer:
    """One layer of a decoder with parallel latents (:attr:`Decoder.parallel_latents`).

    Layer l's cond (T, B, cond_dim) is [z^{l+1}, d^l]: the layer above's sample (its first
    ``above_dim`` entries; 0 at the top) and what the decoder computed from the inputs
    u_{<=t} = x_{<t} (never x_t). The encoder's posterior of layer l also reads its slice of the
    decoder's context, entries ``feature_start:feature_start + feature_dim`` (d_t^l, which has
    read x_t). The Trace concatenates the layers' z, (mu, logvar) of q and p in layer order
    over the latent dimension, and their cond as every layer's d^l, then every layer's z^{l+1}
    (the declared fields ``d_t``, ``z_above``). Summed over that dimension, the analytic KL is
    sum_l KL(q(z^l | z^{l+1}, .) || p(z^l | z^{l+1}, .)) at the posterior sample of the layer
    above, and log q - log p the IWAE weight of the whole hierarchy."""

    z_dim: int
    cond_dim: int
    above_dim: int = 0
    feature_start: int = 0
    feature_dim: int = 0


@dataclass
class NoOptions:
    """For components without options."""


@dataclass
class BuildContext:
    """Dimensions known when a component is built; build order is likelihood, decoder,
    encoder, prior, auxiliary objectives, and each fills in what it fixes."""

    x_dim: int
    """Size of one stored observation x_t (for class indices: 1)."""
    z_dim: int = 0
    """Latent size; 0 for latent-free models."""
    likelihood: Likelihood | None = None
    param_dim: int = 0
    """Number of emission parameters per step (set by the likelihood)."""
    cond_dim: int = 0
    """Size of cond_t, what the prior and posterior read at step t (set by the decoder)."""
    context_dim: int = 0
    """Size of the per-step sequence features the decoder shares with encoders (0: none)."""
    summary_dim: int = 0
    """Size of the per-step summary the encoder shares with auxiliary objectives (0: none)."""
    static_dim: int = 0
    """Size of the sequence-level latent f (set by the static slot; 0: none)."""
    path: str = "model"
    """YAML path of the slot being built, for error messages."""
    cond_fields: dict[str, int] | None = None
    """The decoder's declared fields of cond_t, in order, with sizes (None: undeclared)."""
    context_fields: dict[str, int] | None = None
    """The decoder's declared fields of its context (None: undeclared)."""
    summary_reads: frozenset[str] | None = None
    """What the encoder's summary at step t has read (None: undeclared)."""
    latent_layers: tuple[LatentLayer, ...] = ()
    """The decoder's latent layers when it has :attr:`Decoder.parallel_latents` (else empty)."""
    extra: dict[str, Any] = field(default_factory=dict)


class Component(nn.Module):
    """Base of every slot component: a registered ``name`` and an ``Options`` dataclass."""

    slot: ClassVar[str]
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any, ctx: BuildContext) -> None:
        super().__init__()
        self.options = options

    @classmethod
    def reads(cls, options: Any, ctx: BuildContext) -> Reads:
        """What this component, with ``options``, needs of the decoder's cond_t and context and
        of the encoder's summary (:class:`seqvae.contract.Reads`); the builder checks it before
        building the component. The default needs nothing: the component is never refused."""
        return Reads()


class Likelihood(Component, ABC):
    """Output distribution family p(x_t | params_t); owns how observations are embedded."""

    slot = "likelihood"
    support: ClassVar[str | None] = None
    """What x holds: "real", "binary" or "categorical" (see :data:`seqvae.data.SUPPORTS`); a
    data set of another support refuses this likelihood before training. None: unchecked."""

    @abstractmethod
    def param_dim(self, x_dim: int) -> int:
        """Number of parameters per step for observations of size ``x_dim``."""

    @abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | params), summed over feature dimensions: (..., P), (..., D) -> (...)."""

    @abstractmethod
    def sample(self, params: Tensor) -> Tensor:
        """Draw observations (..., D) in the stored format."""

    @abstractmethod
    def input_embedding(self, x_dim: int, out_dim: int) -> nn.Module:
        """A module mapping stored observations (..., x_dim) to features (..., out_dim)."""


class Decoder(Component, ABC):
    """Generative recurrence and emission parameters.

    Set ``self.cond_dim`` (and ``self.context_dim`` if :meth:`context` returns features) in
    ``__init__``. The engine calls :meth:`precompute` once per sequence, :meth:`initial_state`,
    then :meth:`step` for t = 1..T, then :meth:`emission` once over all steps. Work that does not
    depend on the recurrence belongs in :meth:`precompute` or :meth:`emission`, where it runs as
    a few large batched operations instead of T small ones.
    """

    slot = "decoder"
    uses_latent: ClassVar[bool] = True
    """False for deterministic decoders; those implement :meth:`unroll` instead of the loop."""
    cond_for_prior: ClassVar[bool] = False
    """True: the recurrence behind cond_t feeds nothing but the prior and the posterior (its
    emission does not read it); a prior that reads nothing of cond_t, under an encoder that
    reads none of it either, is then refused (the recurrence would never be trained)."""
    reads_static: ClassVar[bool] = False
    """True: the decoder reads the sequence-level latent f of the ``static`` slot. The engine
    adds it to the precompute as ``pre["static"]``, f broadcast over the steps (T, B, F),
    before :meth:`context`, the step loop and :meth:`emission` read it; when generating, f is
    drawn from N(0, I) once per sequence. A composition with a static slot needs such a
    decoder, and such a decoder a static slot."""
    parallel_latents: ClassVar[bool] = False
    """True: no step loop. The engine calls :meth:`precompute` once on the inputs one step
    further, u_1, x_1..x_T (u_{t+1} = x_t; x_t itself where u_{t+1} is padding): one pass of a
    causal network then gives both what step t's prior may read, from positions <= t, and what
    its posterior reads, position t+1; then :meth:`context`, :meth:`latents` and
    :meth:`emission` (whose precompute is cut to T steps). Set ``self.latent_layers``
    (:class:`LatentLayer`, lowest first; their z_dim add up to latent_dim) in ``__init__``;
    the prior and encoder must implement the per-layer methods (``Reads(layered=True)``,
    checked at build time). Generation re-runs :meth:`precompute` on
    the whole prefix at every step (O(T^2), exact for a causal network)."""
    latent_layers: tuple[LatentLayer, ...] = ()
    cond_dim: int = 0
    context_dim: int = 0

    @classmethod
    def cond_fields(cls, options: Any, ctx: BuildContext) -> dict[str, int] | None:
        """The named fields of cond_t, in the order they are concatenated, with their sizes
        (names from :data:`seqvae.contract.FIELDS`: ``h_prev``, ``z_prev``, ``d_t``); they add
        up to ``cond_dim`` and none has read x_t. ``{}``: no cond_t. None (the default):
        undeclared, so nothing is checked against it (deprecated)."""
        return None

    @classmethod
    def context_fields(cls, options: Any, ctx: BuildContext) -> dict[str, int] | None:
        """The named fields of :meth:`context`, as :meth:`cond_fields` (``x_t`` here: features
        of the current observation); they add up to ``context_dim``."""
        return None

    @abstractmethod
    def precompute(self, u: Tensor, carry: Any = None) -> tuple[dict[str, Tensor], Any]:
        """Loop-independent work over the inputs u (T, B, D), u_t = x_{t-1}.

        Returns time-major per-step tensors (T, B, ...) handed to :meth:`step` one step at a
        time, and a ``carry`` that lets a sampler call this again on the next chunk of inputs
        (a fused RNN over u returns its last hidden state; stateless decoders return None).
        """

    @abstractmethod
    def initial_state(self, batch: int) -> State:
        """The state before step 1."""

    def step(self, state: State, pre_t: dict[str, Tensor], draw: Draw) -> tuple[State, Tensor]:
        """One generative step: call ``draw(cond_t)`` exactly once to obtain z_t, then return
        the new state and out_t, the per-step tensor that :meth:`emission` reads."""
        raise NotImplementedError(f"decoder {self.name!r} has no step loop")

    def latents(self, pre: dict[str, Tensor], draw: LayerDraw) -> Tensor:
        """Decoders with :attr:`parallel_latents`: call ``draw(l, cond_l)`` once per latent
        layer, top-down (l = L-1 first), each over all T steps (``pre`` has T+1: build cond from
        its first T, whose step t has read x_{<t}), and return out (T, B, F) for :meth:`emission`."""
        raise NotImplementedError(f"decoder {self.name!r} draws no parallel latents")

    def unroll(self, pre: dict[str, Tensor], state: State) -> tuple[Tensor, State]:
        """Latent-free decoders: out (T, B, F) for all steps at once (a fused RNN), and the
        state after the last step."""
        raise NotImplementedError(f"decoder {self.name!r} has no fused unroll")

    @abstractmethod
    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        """Emission parameters (T, B, P) from the stacked outputs, latents and precompute."""

    def context(self, pre: dict[str, Tensor], x: Tensor) -> Tensor | None:
        """Per-step features (T, B, context_dim) that encoders may read at step t, computed by
        the decoder's own modules from its precompute and/or the targets x (T, B, D): a
        deterministic forward state d_t, or a feature extractor phi_x(x_t) shared with the
        posterior. None if the decoder shares nothing."""
        return None


@dataclass
class EncoderFeatures:
    """What an encoder computes once per sequence."""

    features: Tensor
    """(T, B, F): the loop-independent part of the posterior input at each step."""
    summary: Tensor | None = None
    """(T, B, S): a summary of the observations per step (a backward RNN's b_t) that
    auxiliary objectives may reconstruct; zero on padding."""


class Encoder(Component, ABC):
    """Inference network: gives q(z_t | cond_t, features_t) at each step.

    Set ``self.summary_dim`` in ``__init__`` when :meth:`precompute` returns a summary.

    An encoder returns a diagonal Gaussian and nothing else; a richer posterior is the
    composition's choice, not the encoder's: with ``model.encoder.flow.steps: K`` the engine
    draws z^0 from this Gaussian inside the step, pushes it through K inverse autoregressive
    steps (optionally reading cond_t) and hands z^K to the decoder. The YAML key ``flow`` of the
    encoder slot is therefore the engine's and cannot be an encoder option.
    """

    slot = "encoder"
    uses_prior: ClassVar[bool] = False
    """True if :meth:`posterior` needs the prior's (mu, logvar) at step t (residual posteriors);
    the engine then evaluates the prior inside the loop instead of once after it."""
    summary_dim: int = 0

    @classmethod
    def summary_reads(cls, options: Any, ctx: BuildContext) -> frozenset[str] | None:
        """Which observations the summary at step t has read, relative to t: a set of
        :data:`seqvae.contract.PAST` (x_{<t}), ``CURRENT`` (x_t), ``FUTURE`` (x_{>t}); empty for
        an encoder without a summary. ``ctx`` holds the decoder's declared fields, for an
        encoder whose RNN reads the decoder's context (``contract.backward_scan`` and
        ``forward_scan`` derive the set). None (the default): undeclared, not checked."""
        return None

    @abstractmethod
    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        """Sequence-level work: x (T, B, D), mask (T, B), the decoder's context or None."""

    @abstractmethod
    def posterior(
        self, cond: Tensor, features: Tensor, prior: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z_t | ...), each (..., Z); called with (B, ...) inputs at one step
        inside the loop, and with (T, B, ...) inputs by :meth:`seqvae.model.Trace.local_z`."""

    def posterior_layer(
        self, layer: int, cond: Tensor, features: Tensor, prior: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of latent layer ``layer`` for all steps (T, B, Z_l), under a decoder
        with parallel latents (declare ``Reads(layered=True)``): cond (T, B, C_l) as the prior's,
        ``features`` the whole of :meth:`precompute`'s, and the prior's (mu, logvar) of the
        layer (a ladder posterior combines them)."""
        raise NotImplementedError(f"encoder {self.name!r} has no per-layer posterior")


class Prior(Component, ABC):
    """p(z_t | cond_t) as a diagonal Gaussian; must work on any leading shape, because the
    engine evaluates it on all steps at once after the loop when it can.

    The engine computes KL(q || p) analytically from the posterior's and the prior's
    (mu, logvar) -- or, for a flow posterior, as the sample's log q(z_t) - log p(z_t) --, scores
    log p(z) with them in the IWAE bound and draws z_t from them when generating, so a prior that
    is not one diagonal Gaussian (a mixture) does not fit this slot; a product of Gaussian
    experts does (docs/writing-plugins.md builds one).
    """

    slot = "prior"

    @abstractmethod
    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar), each (..., Z), from cond (..., C)."""

    def layer(self, layer: int, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of latent layer ``layer`` (..., Z_l) under a decoder with parallel
        latents (declare ``Reads(layered=True)``), from that layer's cond (..., C_l)."""
        raise NotImplementedError(f"prior {self.name!r} has no per-layer form")


class AuxObjective(Component, ABC):
    """An extra per-step term of the training objective, weighted by a schedule.

    Returns a (T, B) tensor to be *maximised* (a log-likelihood, or a negated cost); the engine
    masks it and multiplies it by the composition's weight for this objective. Auxiliary terms
    never enter the reported ELBO.
    """

    slot = "aux"

    @abstractmethod
    def forward(self, trace: Trace) -> Tensor:
        """Per-step term (T, B) from the unrolled model."""


class StaticEncoder(Component, ABC):
    """A sequence-level latent f: its posterior q(f | x_{1:T}) as a diagonal Gaussian; its
    prior is N(0, I).

    Set ``self.static_dim`` (the size of f) in ``__init__``. The engine draws one f per
    sequence before the step loop (f = mu + sigma * eps), hands it to the decoder
    (:attr:`Decoder.reads_static`), adds KL(q(f | x) || N(0, I)) once per sequence to the KL
    (reported on its own as ``kl_static``), and scores log N(f; 0, I) - log q(f | x) in the
    IWAE bound. A composition names it under ``model.static``.
    """

    slot = "static"
    static_dim: int = 0

    @abstractmethod
    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(f | x_{1:T}), each (B, F), from x (T, B, D) and its mask (T, B)
        (padding must not change them)."""


SLOTS: dict[str, type[Component]] = {
    "likelihood": Likelihood,
    "static": StaticEncoder,
    "decoder": Decoder,
    "encoder": Encoder,
    "prior": Prior,
    "aux": AuxObjective,
}
"""Model slots, in build order."""

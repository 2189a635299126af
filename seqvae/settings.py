"""The ``objective`` and ``train`` sections of a composition: how the per-step terms combine
into the loss, and the optimiser and loop settings. Every value is checked by ``validate``
before any work starts, with the YAML path in the message."""

from __future__ import annotations

from dataclasses import dataclass, field

from seqvae.schedules import Decay, Per, Schedule


@dataclass
class ObjectiveConfig:
    """How the per-step terms combine into the training loss."""

    kl_weight: Schedule = field(default_factory=lambda: Schedule(1.0))
    free_bits: float = 0.0
    """Minimum KL in nats per step and latent dimension (0: off)."""

    def validate(self) -> str | None:
        return None if self.free_bits >= 0 else f"free_bits: expected a number >= 0 (0: off), got {self.free_bits}"


@dataclass
class TrainConfig:
    """Optimiser and loop settings."""

    lr: float = 1e-3
    lr_decay: Decay = field(default_factory=Decay)
    """Exponential decay of ``lr`` by update or by epoch (see :class:`seqvae.schedules.Decay`)."""
    adam_eps: float = 1e-8
    clip: float = 100.0
    """Gradient-norm clip; 0 disables."""
    batch_size: int = 32
    log_every: int = 50
    eval_every: int = 500
    """Validation ELBO every this many updates (or epochs, ``eval_per: epoch``; 0: only at
    the end)."""
    eval_per: Per = "update"
    val_iwae_k: int = 0
    """Importance samples for the validation IWAE bound (0: ELBO only)."""
    bucket: int = 0
    """Batch sequences of similar length together, in pools of this many batches (0: off)."""
    compile: bool = False
    """Run each step of the unroll through torch.compile (``SequenceModel.compile_step``): a few
    percent faster at small sizes after seconds of compiling, slower at large ones."""
    max_consecutive_skips: int = 10
    """An update whose loss or gradient norm is not finite is skipped (and counted); after this
    many in a row the run stops (its weights no longer give a finite loss)."""

    def validate(self) -> str | None:
        positive = {"batch_size": self.batch_size, "lr": self.lr, "adam_eps": self.adam_eps,
                    "log_every": self.log_every, "max_consecutive_skips": self.max_consecutive_skips}  # fmt: skip
        for key, value in positive.items():
            if not value > 0 or value != value or value == float("inf"):
                return f"{key}: expected a positive finite number, got {value}"
        at_least_zero = {"clip": self.clip, "eval_every": self.eval_every, "val_iwae_k": self.val_iwae_k,
                         "bucket": self.bucket}  # fmt: skip
        for key, value in at_least_zero.items():
            if not value >= 0 or value == float("inf"):
                return f"{key}: expected a finite number >= 0 (0: off), got {value}"
        return None

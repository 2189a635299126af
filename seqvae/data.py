"""Data: the data-set slot and time-major batching.

A data set turns files on disk into splits of padded sequences: ``u`` (inputs, u_t = x_{t-1}),
``x`` (targets) and ``mask`` (1 on real steps, a prefix of every row). Models see time-major
batches (T, B, D).

A split may hold torch tensors or numpy arrays, ``np.memmap`` included: a corpus prepared into
an on-disk cache is never read whole; only the rows of a batch are read and become float32
tensors. A data set declares, as class attributes, what its numbers mean (``unit``), what its
values are (``support``, so that a model with the wrong likelihood is refused before training)
and, for the not-found message, which files it expects and where such a corpus comes from. A
data set whose values are known only once its file is read (``npz``) declares ``support = None``
and sets ``support``, ``likelihood`` and ``unit`` on the instance.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from seqvae.distributed import shard_bounds
from seqvae.errors import UserError
from seqvae.slots import NoOptions

Array = Tensor | np.ndarray
"""What a split holds: a tensor, or a numpy array (np.memmap included) read row by row."""

UNITS = ("nats per sequence", "nats per step", "nats per image", "perplexity")
"""How results on a data set are normalised (see :func:`in_unit`)."""

SUPPORTS = ("real", "binary", "categorical")
"""What the values of x are: real vectors, 0/1 vectors, or one class index per step."""

SPLITS = ("train", "valid", "test")

FINGERPRINT_CHUNK_BYTES = 1 << 24
"""Rows are hashed this many bytes at a time, so a memory-mapped corpus is never read whole."""


@dataclass
class Batch:
    """A time-major batch."""

    u: Tensor  # (T, B, D)
    x: Tensor  # (T, B, D)
    mask: Tensor  # (T, B)
    offset: int = 0
    total: int | None = None
    """A data-parallel rank's batch is columns ``offset : offset + B`` of a global batch of
    ``total`` columns (padded to the global batch's length); None: the batch is the whole one."""

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.u.to(device), self.x.to(device), self.mask.to(device), self.offset, self.total)


@dataclass
class Split:
    """One split held batch-major (N, T, D); padding is trimmed per batch.

    ``u``, ``x`` and ``mask`` are tensors or numpy arrays of any numeric dtype (uint8 piano
    rolls, int32 word ids, float32 memory-mapped audio); batches are always float32 tensors.
    """

    u: Array
    x: Array
    mask: Array

    def __post_init__(self) -> None:
        n, steps = self.x.shape[:2]
        if (
            len(self.x.shape) != 3
            or tuple(self.u.shape) != tuple(self.x.shape)
            or tuple(self.mask.shape) != (n, steps)
        ):
            raise UserError(
                f"split shapes do not fit: u {tuple(self.u.shape)}, x {tuple(self.x.shape)}, "
                f"mask {tuple(self.mask.shape)}; expected u and x (N, T, D) and mask (N, T)"
            )

    @classmethod
    def shifted(cls, seq: Array, mask: Array) -> Split:
        """The split of sequences ``seq`` (N, T + 1, D) predicted from their own past:
        u = seq[:, :-1], x = seq[:, 1:] (views, nothing is copied); ``mask`` is (N, T)."""
        return cls(seq[:, :-1], seq[:, 1:], mask)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def x_dim(self) -> int:
        return self.x.shape[-1]

    @property
    def steps(self) -> int:
        """Number of real (unmasked) steps in the split."""
        if isinstance(self.mask, Tensor):
            return int(self.mask.sum().item())
        return int(np.sum(self.mask, dtype=np.float64))

    def batch(self, idx: Tensor | Sequence[int], length: int | None = None) -> Batch:
        """The rows ``idx`` as a time-major float32 batch, trimmed to its longest sequence
        (or to ``length`` steps)."""
        idx = torch.as_tensor(idx, dtype=torch.long).cpu().reshape(-1)
        mask = _rows(self.mask, idx)
        # trim trailing all-padding steps: whole-utterance test sets vary a lot in length
        if length is None:
            length = int(mask.sum(1).max().item()) if len(idx) else 0
        return Batch(
            _rows(self.u, idx, length).transpose(0, 1),
            _rows(self.x, idx, length).transpose(0, 1),
            mask[:, :length].transpose(0, 1),
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        bucket: int = 0,
        skip: int = 0,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[Batch]:
        """Batches of ``batch_size`` rows, in order or shuffled.

        ``bucket`` > 0 (with ``shuffle``): rows are drawn at random in pools of ``bucket``
        batches, sorted by length within each pool, and the batches are visited in random
        order. Sequences of similar length then share a batch, so little time goes into
        padding, while every epoch still sees every row once.

        ``skip``: the first ``skip`` batches of the order are passed over without being read (a
        run resumed in the middle of an epoch draws the epoch's order again and skips its start).

        ``shard=(rank, size)``: each batch is the ``rank``-th of ``size`` contiguous column
        slices of the global batch (the order is the same in every rank: same ``generator``),
        padded to the global batch's length; only those rows are read (:mod:`seqvae.distributed`).
        """
        order = (
            torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        )
        groups = [order[start : start + batch_size] for start in range(0, len(self), batch_size)]
        if shuffle and bucket > 0:
            lengths = _rows(self.mask, torch.arange(len(self))).sum(1)
            pool = bucket * batch_size
            groups = []
            for start in range(0, len(self), pool):
                chunk = order[start : start + pool]
                chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
                groups += list(chunk.split(batch_size))
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator)]
        for idx in groups[skip:]:
            if shard is None:
                yield self.batch(idx)
                continue
            start, stop = shard_bounds(len(idx), *shard)
            length = int(_rows(self.mask, idx).sum(1).max().item())  # the global batch's
            yield replace(self.batch(idx[start:stop], length), offset=start, total=len(idx))


def _rows(array: Array, idx: Tensor, length: int | None = None) -> Tensor:
    """``array[idx, :length]`` as a float32 tensor; a numpy array reads only those rows."""
    if isinstance(array, Tensor):
        rows = array[idx] if length is None else array[idx, :length]
        return rows if rows.dtype == torch.float32 else rows.float()
    index = idx.numpy()
    # sorted reads are sequential on disk (np.memmap); the rows go back in the asked order
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    rows = array[sorted_index] if length is None else array[sorted_index, :length]
    rows = rows[np.argsort(order, kind="stable")]
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


class Dataset(ABC):
    """Base of registered data sets: ``Cls(path, options)`` then :meth:`split` by name.

    Class attributes a data set declares:

    - ``unit``: how its results are reported, one of :data:`UNITS`.
    - ``support`` and ``likelihood``: what the values are (one of :data:`SUPPORTS`) and the
      registered likelihood that fits them; :meth:`check_model` refuses a model whose
      likelihood declares another support. ``support = None`` means "known once the file is
      read": :meth:`check_support` then checks nothing and the instance sets ``support``,
      ``likelihood`` and ``unit`` itself (the class values are defaults an instance may
      override).
    - ``sample_rate``: for audio, the rate in Hz of the stored waveform (see :meth:`denormalise`).
    - ``embedded``: true when the data set works without any files (``path`` is then None).
    - ``expected_files`` and ``source_hint``: what a folder of this data set holds and where
      such a corpus comes from, both quoted when no data is found.

    An instance sets ``classes`` (the number of classes, for categorical data).
    """

    slot: ClassVar[str] = "dataset"
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    # defaults: an instance may set its own once it has read its file
    unit: str = "nats per sequence"
    support: str | None = "real"
    likelihood: str | None = "gaussian"
    sample_rate: ClassVar[int | None] = None
    embedded: ClassVar[bool] = False
    expected_files: ClassVar[str] = ""
    source_hint: ClassVar[str] = ""
    classes: int | None = None

    def __init__(self, path: Path | None, options: object) -> None:
        self.path = Path(path) if path is not None else None
        self.options = options

    @abstractmethod
    def split(self, name: str) -> Split:
        """The split ``train``, ``valid`` or ``test``."""

    @property
    def x_dim(self) -> int:
        """Size of one stored observation x_t."""
        return self.split("train").x_dim

    @cached_property
    def fingerprint(self) -> str:
        """12 hex digits hashing the content of the three splits (x and mask, with their shapes).

        It depends on the decoded values only, not on the file they came from: the same data
        stored as a pickle or as JSON has the same fingerprint, so a results row can say which
        data it was measured on. x is hashed as uint8 when binary, else as float32; the mask as
        float32.
        """
        digest = hashlib.sha256()
        x_dtype = np.uint8 if self.support == "binary" else np.float32
        for name in SPLITS:
            split = self.split(name)
            for field, array, dtype in (("x", split.x, x_dtype), ("mask", split.mask, np.float32)):
                digest.update(
                    f"{name}.{field} {tuple(array.shape)} {np.dtype(dtype).str}\n".encode()
                )
                _hash_rows(digest, array, dtype)
        return digest.hexdigest()[:12]

    def denormalise(self, x: Tensor) -> Tensor:
        """Undo the data set's normalisation: model-space values back to the source's units.

        For audio this is the waveform in [-1, 1] at ``sample_rate``: flatten the last two
        dimensions of a (T, frame) sequence to get T * frame samples. The default is the
        identity (data stored in its own units).
        """
        return x

    def check_model(
        self,
        likelihood: type | None = None,
        likelihood_options: object | None = None,
        x_dim: int | None = None,
        where: str = "model.likelihood",
    ) -> None:
        """Raise :class:`UserError` when a model cannot be trained or scored on this data.

        ``likelihood`` is the likelihood component's class: a class that declares a
        ``support`` other than the data's is refused, and a categorical likelihood needs
        ``classes`` equal to the data set's. ``x_dim``, the feature size a model was built
        for (from a checkpoint), must equal the data's.
        """
        if x_dim is not None and x_dim != self.x_dim:
            raise UserError(
                f"data set {self.name!r} ({self._where()}) has {self.x_dim} features per step; "
                f"the model was built for {x_dim}"
            )
        if likelihood is None:
            return
        _refuse_other_support(self.name, self.support, likelihood, where, _fix(self, where))
        classes = getattr(likelihood_options, "classes", None)
        if self.classes is not None and classes is not None and classes != self.classes:
            raise UserError(
                f"{where}.classes is {classes}, but data set {self.name!r} has {self.classes} "
                f"classes ({self._where()}); use {_fix(self, where)}"
            )

    @classmethod
    def check_support(
        cls, likelihood: type, where: str = "model.likelihood", fix: str | None = None
    ) -> None:
        """Refuse a likelihood class declaring a ``support`` other than the data's; needs no
        instance, so a mismatch is found before a corpus is prepared. A class whose support is
        None (known once the file is read) passes here; :meth:`check_model` checks it."""
        if cls.support is None:
            return
        _refuse_other_support(cls.name, cls.support, likelihood, where, fix or _fix(cls, where))

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "embedded"


def _refuse_other_support(
    dataset: str, support: str | None, likelihood: type, where: str, fix: str
) -> None:
    models = getattr(likelihood, "support", None)
    if support is not None and models is not None and models != support:
        component = getattr(likelihood, "name", likelihood.__name__)
        raise UserError(
            f"{where}: {component!r} models {models} values, but data set {dataset!r} "
            f"holds {support} values; use {fix}"
        )


def _hash_rows(digest, array: Array, dtype: type) -> None:
    """Feed ``array``'s values as ``dtype`` to ``digest``, a few rows at a time."""
    row_bytes = max(1, math.prod(array.shape[1:]) * np.dtype(dtype).itemsize)
    step = max(1, FINGERPRINT_CHUNK_BYTES // row_bytes)
    for start in range(0, array.shape[0], step):
        rows = array[start : start + step]
        if isinstance(rows, Tensor):
            rows = rows.detach().cpu().numpy()
        digest.update(np.ascontiguousarray(rows, dtype=dtype).tobytes())


def _fix(data: Dataset | type[Dataset], where: str) -> str:
    """The --set options that give a composition the likelihood ``data`` needs."""
    fix = f"--set {where}.component={data.likelihood}"
    classes = getattr(data, "classes", None)
    return fix + (f" --set {where}.classes={classes}" if classes is not None else "")


def in_unit(unit: str, log_likelihood: float, sequences: float, steps: float) -> float:
    """A split's summed log-likelihood (or bound) in a data set's ``unit``.

    ``nats per sequence`` is the mean log-likelihood per sequence (higher is better, as in the
    speech tables); ``nats per step`` and ``nats per image`` are negative log-likelihoods
    (lower is better); ``perplexity`` is exp(NLL / number of target tokens).
    """
    if unit == "nats per sequence":
        return log_likelihood / max(sequences, 1.0)
    if unit == "nats per step":
        return -log_likelihood / max(steps, 1.0)
    if unit == "nats per image":
        return -log_likelihood / max(sequences, 1.0)
    if unit == "perplexity":
        return math.exp(min(-log_likelihood / max(steps, 1.0), 700.0))
    raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")


def options_dict(options: Any) -> dict[str, Any]:
    """A data set's options as a plain dict (for cache keys)."""
    return asdict(options) if is_dataclass(options) else {}

"""Data-parallel training: ``torchrun --nproc_per_node=N -m seqvae train ...``.

torchrun starts N processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous
address in their environment; :func:`world` reads them (a process torchrun did not start is a
world of one, and then nothing here does anything). Every rank draws the same global batches from the same
shuffle generator and reads only its own columns of each (:meth:`seqvae.data.Split.batches`
``shard=``), padded to the global batch's length. It draws the global batch's posterior noise
and keeps its columns, and weighs its mean loss by its share of the batch. DistributedDataParallel's
gradient average is then the gradient of the global batch's mean loss, and N processes compute
what one process computes with the same ``train.batch_size``, to float rounding.

Rank 0 alone validates, logs and writes checkpoints; the others wait for it. Every rank resumes
from the same ``last.pt``. The backend is gloo on CPU and nccl on CUDA, one GPU per process
(``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from seqvae.errors import UserError

TIMEOUT = timedelta(hours=2)
"""How long ranks wait at a collective, e.g. for rank 0's validation on a large corpus."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False
    """Started by torchrun: then a process group and DDP even for one process (so that
    ``--nproc_per_node=1`` on a single GPU runs the nccl path too)."""

    @property
    def main(self) -> bool:
        """Whether this process logs and writes (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.launched

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(rank, size)`` for :meth:`seqvae.data.Split.batches`, None in a single process."""
        return (self.rank, self.size) if self.parallel else None


def world(environ: dict[str, str] | None = None) -> World:
    """This process's place among torchrun's processes (a world of one without torchrun)."""
    environ = os.environ if environ is None else environ
    values = {}
    for key, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        text = environ.get(key, default)
        if not text.isdigit():
            raise UserError(f"${key}={text!r}: expected a non-negative integer (torchrun sets it)")
        values[key] = int(text)
    if values["WORLD_SIZE"] < 1 or values["RANK"] >= values["WORLD_SIZE"]:
        raise UserError(f"$RANK={values['RANK']} and $WORLD_SIZE={values['WORLD_SIZE']}: expected 0 <= RANK < "
                        "WORLD_SIZE (start data-parallel runs with torchrun)")  # fmt: skip
    return World(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], launched="WORLD_SIZE" in environ)


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Columns ``[start, stop)`` of an ``n``-column batch that ``rank`` of ``size`` reads:
    contiguous, sizes differing by at most one."""
    return rank * n // size, (rank + 1) * n // size


def start(w: World, device: str) -> str:
    """Join the process group (when ``w`` is parallel); returns this rank's device."""
    if not w.parallel:
        return device
    import torch.distributed as dist

    if device.startswith("cuda"):
        if torch.cuda.device_count() <= w.local_rank:
            visible = torch.cuda.device_count()
            raise UserError(f"--device cuda: local rank {w.local_rank} has no GPU of its own ({visible} visible); "
                            "start at most that many processes per node (--nproc_per_node)")  # fmt: skip
        device = f"cuda:{w.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return device


def stop(w: World, finished: bool = True) -> None:
    """Leave the process group. A rank that ``finished`` first waits for the others (rank 0
    validates and writes the last checkpoint after the last update): a rank that tore its
    group down while another still used it was aborted by gloo. A rank that failed leaves at
    once, and torchrun stops the others."""
    if w.parallel:
        import torch.distributed as dist

        if dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, w: World, device: str) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when ``w`` is parallel (the same module otherwise).
    Parameters a step leaves unused (an auxiliary objective whose weight is zero) are allowed."""
    if not w.parallel:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def total(value: float, w: World, device: str) -> float:
    """The sum of ``value`` over the ranks (the value itself in a single process)."""
    if not w.parallel:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def totals(values: dict[str, float], w: World, device: str) -> dict[str, float]:
    """Each value summed over the ranks, in one collective."""
    if not w.parallel or not values:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(values, tensor.tolist(), strict=True))


def agree(flag: bool, w: World, device: str) -> bool:
    """Whether ``flag`` holds on every rank (so that all ranks take the same branch)."""
    return total(0.0 if flag else 1.0, w, device) == 0.0


def barrier(w: World) -> None:
    if w.parallel:
        import torch.distributed as dist

        dist.barrier()


def share(batch) -> float:
    """The fraction of the global batch that ``batch`` holds (1 for a whole batch)."""
    return 1.0 if batch.total is None else batch.x.shape[1] / batch.total


def fill_empty(batch):
    """A rank whose slice of a short global batch is empty still runs forward and backward
    (DistributedDataParallel's gradient average is collective): one all-padding column,
    whose masked loss is zero and which :func:`share` weighs by zero anyway."""
    if batch.x.shape[1] > 0:
        return batch
    from dataclasses import replace

    def column(tensor):
        return tensor.new_zeros((tensor.shape[0], 1, *tensor.shape[2:]))

    return replace(batch, u=column(batch.u), x=column(batch.x), mask=column(batch.mask))


def shard_noise(model, batch, dtype: torch.dtype):
    """The posterior noise of a rank's columns: drawn for the whole global batch, as one
    process draws it, and sliced (None for a whole batch: the model draws its own)."""
    if batch.total is None:
        return None
    noise = model.draw_noise(batch.x.shape[0], batch.total, batch.x.device, dtype)
    if noise is None:
        return None
    start, stop = batch.offset, batch.offset + batch.x.shape[1]
    if stop > batch.total:  # fill_empty's stand-in column past the end: any column serves
        start, stop = 0, batch.x.shape[1]
    return noise.columns(start, stop)

"""Time full training steps (forward, backward, clip, Adam) of a composition.

    python benchmarks/train_step.py --model zforcing --dims timit --batch 32 --seq-len 40 --steps 10
    python benchmarks/train_step.py --model zforcing --dims small --steps 20 --vs-plain --json

Reports the median, min and max seconds per step after warm-up, the GFLOP per step (matrix
products counted from their shapes, forward and backward, plus an analytic count for fused RNN
kernels), the achieved GFLOP/s, the machine's fp32 matmul rate measured in the same run (2048^3)
and the peak resident memory of a process that trains only this model. ``--vs-plain`` also
times a plain eager Z-Forcing (``benchmarks/plain_zforcing.py``) alternately with the engine's
model (plain, engine, plain, engine, ...) and prints the ratio engine / plain of every pair and
their median. With ``--json`` the last line printed is one JSON object.

Thread settings: ``--threads N`` calls ``torch.set_num_threads(N)`` (default: torch's choice,
one thread per core); the script sets no OpenMP wait policy (see benchmarks/README.md for why).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for benchmarks.plain_zforcing; seqvae itself comes from the install

from benchmarks.plain_zforcing import PlainDims, PlainZForcing  # noqa: E402
from seqvae import fused  # noqa: E402
from seqvae.composition import Composition, build_model, load_composition  # noqa: E402
from seqvae.objective import compute_terms  # noqa: E402
from seqvae.train import adam  # noqa: E402

X_DIM = 200  # TIMIT frames of 200 samples
DIMS = {
    "timit": {"emb": 512, "rnn": 1024, "mlp": 512, "z": 256},
    "small": {"emb": 128, "rnn": 256, "mlp": 128, "z": 64},
}
MLP_ENCODERS = {"filtering-mlp", "ladder-posterior"}
"""Encoders whose ``hidden`` option is an MLP width rather than an RNN state."""
UPDATE = 1000
"""The optimiser update whose schedule values (KL and auxiliary weights) the steps use."""


def size_overrides(name: str, dims: str) -> list[str]:
    """``--set`` overrides that give every slot of composition ``name`` the chosen sizes.

    ``timit`` is the built-in compositions' own (speech) sizes, and for Z-Forcing exactly the
    authors' TIMIT setting. ``small`` maps option names onto the small sizes: embeddings and
    feature extractors to emb, recurrent states to rnn, MLP widths and TCN channels to mlp, the
    latent to z.
    """
    if dims == "timit":
        return []
    d = DIMS[dims]
    comp = load_composition(name)
    out = [f"model.latent_dim={d['z']}"]
    # TCN channels: STCN-large's 512 map to a quarter, as Z-Forcing's 1024-unit states to 256
    by_name = {"embed": "emb", "x_features": "emb", "mlp": "mlp", "cond_mlp": "mlp",
               "z_features": "mlp", "emission_hidden": "mlp", "channels": "mlp", "output_channels": "mlp"}  # fmt: skip
    specs = [(f"model.{slot}", slot, spec) for slot, spec in comp.slots.items()]
    specs += [(f"model.aux.{key}", "aux", spec) for key, spec in comp.aux.items()]
    for path, slot, spec in specs:
        for f in fields(spec.options):
            value = getattr(spec.options, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                continue  # 0 switches a part off; keep it off
            size = by_name.get(f.name)
            if f.name == "hidden":  # a recurrent state, except in MLP-only components
                mlp_only = slot in ("prior", "aux") or spec.component in MLP_ENCODERS
                size = "mlp" if mlp_only else "rnn"
            if size:
                out.append(f"{path}.{f.name}={d[size]}")
    return out


def build_engine(name: str, dims: str, seed: int = 0, device: str = "cpu") -> tuple[nn.Module, Composition]:
    torch.manual_seed(seed)
    comp = load_composition(name, size_overrides(name, dims))
    return build_model(comp, X_DIM).to(device), comp


def make_batch(steps: int, batch: int, seed: int = 1, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(steps + 1, batch, X_DIM, generator=g)
    return tuple(t.to(device) for t in (seq[:-1].contiguous(), seq[1:].contiguous(), torch.ones(steps, batch)))


def engine_step_fn(model: nn.Module, comp: Composition, data) -> Callable[[], float]:
    optimizer = adam(model.parameters(), lr=comp.train.lr, eps=comp.train.adam_eps)  # as seqvae.train's
    u, x, mask = data
    clip = comp.train.clip if comp.train.clip > 0 else math.inf

    def step() -> float:  # the body of seqvae.train.train's loop
        trace = model(u, x, mask)
        terms = compute_terms(model, trace, comp, update=UPDATE)
        del trace  # as in seqvae.train: what backward needs, autograd holds
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        loss = terms.loss.item()
        optimizer.step()
        return loss

    return step


PLAIN_SLOTS = {"likelihood": "gaussian", "decoder": "latent-lstm", "encoder": "backward-lstm", "prior": "gaussian-mlp"}


def check_plain_matches(comp: Composition) -> None:
    """The plain reference is Z-Forcing with a Gaussian output; refuse anything else."""
    used = {slot: spec.component for slot, spec in comp.slots.items()}
    aux = {spec.component for key, spec in comp.aux.items() if spec.weight.at(UPDATE) != 0.0}
    decoder = comp.slots["decoder"].options
    if used != PLAIN_SLOTS or aux - {"summary-reconstruction"} or decoder.cond_ln or decoder.emission_hidden:
        sys.exit(f"--vs-plain: the plain reference is Z-Forcing ({PLAIN_SLOTS}); {comp.name} is not")


def plain_step_fn(dims: str, comp: Composition, data, seed: int = 0) -> Callable[[], float]:
    d = DIMS[dims]
    torch.manual_seed(seed)
    device = data[0].device
    model = PlainZForcing(PlainDims(x_dim=X_DIM, emb=d["emb"], rnn=d["rnn"], mlp=d["mlp"], z=d["z"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-5)
    u, x, mask = data
    kl_weight = comp.objective.kl_weight.at(UPDATE)
    aux_weight = comp.aux["reconstruction"].weight.at(UPDATE) if "reconstruction" in comp.aux else 0.0

    def step() -> float:
        noise = torch.randn(x.shape[0], x.shape[1], d["z"], device=device)
        loss = model(u, x, mask, noise, kl_weight, aux_weight)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        value = loss.item()
        optimizer.step()
        return value

    step.model = model  # for the FLOP count
    return step


def count_gflop(step: Callable[[], float], model: nn.Module) -> float:
    """GFLOP of one training step: every matrix product counted from its shapes (forward and
    backward), plus 3x the forward FLOPs of fused RNN kernels the counter does not see (oneDNN's
    LSTM on CPU; forward, input gradient and weight gradient each cost about one forward)."""
    rnn_flops = [0]
    seen_before = [0]

    def rnn_pre_hook(module: nn.RNNBase, inputs) -> None:
        seen_before[0] = counter.get_total_flops()

    def rnn_hook(module: nn.RNNBase, inputs, output) -> None:
        if counter.get_total_flops() > seen_before[0]:
            return  # a decomposed RNN (GRU on CPU): its products were counted, backward too
        steps, batch = inputs[0].shape[:2]
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        size, hidden, directions = module.input_size, module.hidden_size, 2 if module.bidirectional else 1
        for _ in range(module.num_layers):
            rnn_flops[0] += 3 * 2 * steps * batch * gates * hidden * (size + hidden) * directions
            size = hidden * directions

    def packed_linear_flop(x_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape) * out_shape[-1]  # oneDNN products with prepacked weights

    custom = {}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        custom[torch.ops.mkldnn._linear_pointwise] = packed_linear_flop
    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    handles = [m.register_forward_pre_hook(rnn_pre_hook) for m in rnns]
    handles += [m.register_forward_hook(rnn_hook) for m in rnns]
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    try:
        with counter:
            step()
    finally:
        for handle in handles:
            handle.remove()
    return (counter.get_total_flops() + rnn_flops[0]) / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int = 2048, reps: int = 5, device: str = "cpu") -> float:
    """The device's fp32 matmul rate now: median of ``reps`` products of two n x n matrices."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def timed(step: Callable[[], float]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent that
    started it, whose RSS would otherwise set a floor)."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    return _status_mb("VmRSS")


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
"""glibc hands blocks of 64 KiB and more straight back to the system when they are freed, so
that the peak RSS follows the peak of live tensors instead of the allocator's free lists."""


def child_memory_mb(args: argparse.Namespace, impl: str) -> dict[str, float]:
    """Peak RSS of a fresh process that trains only ``impl`` (engine or plain) for 4 steps, and
    how far it rose above the RSS before the first step (model, optimiser and data built)."""
    cmd = [sys.executable, __file__, "--model", args.model, "--dims", args.dims, "--batch", str(args.batch),
           "--seq-len", str(args.seq_len), "--steps", "3", "--warmup", "1", "--memory-child", impl,
           "--device", args.device]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for part in args.without:
        cmd += ["--without", part]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **MALLOC_ENV}).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zforcing", help="built-in composition name or YAML file")
    p.add_argument("--dims", choices=sorted(DIMS), default="timit")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=40)
    p.add_argument("--steps", type=int, default=10, help="timed steps (pairs with --vs-plain)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]; each timed step ends in loss.item(), a sync")
    p.add_argument("--compile", action="store_true", help="run the engine's step through torch.compile")
    p.add_argument("--without", action="append", default=[], choices=["pack", "defer"],
                   help="ablation: no prepacked weights (pack), or no loop hubs at all (defer: plain "
                        "autograd for every in-loop layer, hence no packing and no merged products)")
    p.add_argument("--vs-plain", action="store_true", help="also time the plain eager Z-Forcing, alternately")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--memory-child", choices=["engine", "plain"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    load_at_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "pack" in args.without:
        fused.PACK_MIN_ELEMENTS = math.inf
    if "defer" in args.without:
        fused.DEFER_MIN_ELEMENTS = math.inf

    data = make_batch(args.seq_len, args.batch, device=args.device)
    if args.memory_child == "plain":
        comp = load_composition(args.model, size_overrides(args.model, args.dims))
        step = plain_step_fn(args.dims, comp, data)
    else:
        model, comp = build_engine(args.model, args.dims, device=args.device)
        model.compile_step = args.compile
        step = engine = engine_step_fn(model, comp, data)
    if args.memory_child:
        before = rss_mb()
        for _ in range(args.warmup + args.steps):
            step()
        peak = peak_rss_mb()
        out = {"peak_rss_mb": peak, "training_mb": peak - before}
        if torch.device(args.device).type == "cuda":
            out["peak_device_mb"] = torch.cuda.max_memory_allocated(args.device) / 2**20
        print(json.dumps(out))
        return 0
    if args.vs_plain:
        check_plain_matches(comp)
    plain = plain_step_fn(args.dims, comp, data) if args.vs_plain else None

    start = time.perf_counter()
    engine()  # compiles the step with --compile
    first_step_s = time.perf_counter() - start
    rate_before = matmul_gflops(device=args.device)
    for _ in range(args.warmup):
        engine()
        if plain:
            plain()
    engine_times, plain_times, ratios = [], [], []
    for _ in range(args.steps):
        if plain:
            plain_times.append(timed(plain))
        engine_times.append(timed(engine))
        if plain:
            ratios.append(engine_times[-1] / plain_times[-1])
    rate = max(rate_before, matmul_gflops(device=args.device))

    gflop = count_gflop(engine, model)
    result = {"model": args.model, "dims": args.dims, "batch": args.batch, "seq_len": args.seq_len,
              "device": args.device, "threads": torch.get_num_threads(), "compile": args.compile,
              "without": args.without, "first_step_s": first_step_s,
              **summary(engine_times), "gflop": gflop}  # fmt: skip
    result["gflops"] = gflop / result["median_s"]
    result["matmul_gflops"] = rate
    result["fraction_of_matmul"] = result["gflops"] / rate
    if plain:
        plain_gflop = count_gflop(plain, plain.model)
        result["plain"] = {**summary(plain_times), "gflop": plain_gflop}
        result["plain"]["gflops"] = plain_gflop / result["plain"]["median_s"]
        result["pairs"] = len(ratios)
        result["ratios"] = ratios
        result["ratio_median"] = statistics.median(ratios)
    if not args.no_memory:
        result.update(child_memory_mb(args, "engine"))
        if plain:
            result["plain"].update(child_memory_mb(args, "plain"))
    result["load_avg_at_start"] = load_at_start
    result["load_avg"] = os.getloadavg()  # the benchmark's own threads count here

    print(f"{args.model} ({args.dims} dims, batch {args.batch}, {args.seq_len} steps, {result['threads']} "
          f"threads, load average {load_at_start[0]:.2f} at start, {result['load_avg'][0]:.2f} at the end)")
    if args.compile:
        print(f"  first step, compiling included: {first_step_s:.1f} s")
    print(f"  engine: median {result['median_s']:.4f} s/step (min {result['min_s']:.4f}, "
          f"max {result['max_s']:.4f}), {gflop:.1f} GFLOP/step, {result['gflops']:.1f} GFLOP/s "
          f"= {100 * result['fraction_of_matmul']:.0f}% of matmul {rate:.1f} GFLOP/s")  # fmt: skip
    if plain:
        pr = result["plain"]
        print(f"  plain:  median {pr['median_s']:.4f} s/step (min {pr['min_s']:.4f}, max {pr['max_s']:.4f}), "
              f"{pr['gflop']:.1f} GFLOP/step, {pr['gflops']:.1f} GFLOP/s")
        print("  engine/plain per pair: " + " ".join(f"{r:.3f}" for r in ratios))
        print(f"  median ratio over {len(ratios)} pairs: {result['ratio_median']:.3f}")
    if "peak_rss_mb" in result:
        def mem(r: dict) -> str:
            return f"{r['peak_rss_mb']:.0f} MB ({r['training_mb']:.0f} MB above the built model)"

        extra = f", plain {mem(result['plain'])}" if plain else ""
        print(f"  peak RSS: engine {mem(result)}{extra}")
        if "peak_device_mb" in result:
            extra = f", plain {result['plain']['peak_device_mb']:.0f} MB" if plain else ""
            print(f"  peak {args.device} memory allocated: engine {result['peak_device_mb']:.0f} MB{extra}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training step throughput against a matmul ceiling measured on the same device (issue 24.4).

Usage: python -m benchmarks.train_throughput [--presets small paper] [--batch 1 4] [--steps 20]
       [--compile] [--no-channels-last] [--device auto|cpu|cuda]

For each preset's model (`build_model` of its `model:` section on its sample shape) and batch
size, the training step of train/loop.py without the data and the allreduce: forward under the
preset's precision (`train.precision` "auto": bf16 on CUDA, fp32 on the CPU), MSE loss in fp32,
backward, gradient clipping, the optimizer step; on random inputs of the sample shape (the time
of a step does not depend on the values). channels_last is on on CUDA (train/fast_paths.py),
`--compile` trains through torch.compile. Steps are timed with the device synchronized, after
`--warmup` steps (cuDNN autotuning, compilation), and the median is reported.

Printed per row: ms per sample, achieved TFLOP/s (`train.flops.count_flops`: conv/linear
multiply-adds × 2, forward + backward, per sample) and its fraction of the ceiling: the best
of several square matmuls (8192² in bf16 on CUDA, 2048² in fp32 on the CPU) timed here. On
the CPU, a preset whose step would take longer than `--cpu-budget-s` at that ceiling (`paper`:
hundreds of TFLOP per step) is skipped with a message instead of run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stemdl.configs import load_config
from stemdl.train.arrangements import build_model
from stemdl.train.fast_paths import batch_to, to_memory_format, training_forward, use_channels_last
from stemdl.train.flops import count_flops
from stemdl.train.optim import build_optimizer
from stemdl.train.precision import resolve_precision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        began = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def matmul_ceiling_flops(device: torch.device) -> tuple[float, str]:
    """FLOP/s of the best square matmul here: bf16 8192² on CUDA, fp32 2048² on the CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    best = min(_median_s(lambda: torch.matmul(a, b, out=out), device, 5, 2) for _ in range(3))
    return 2 * n**3 / best, f"{str(dtype).removeprefix('torch.')} {n}² matmul"


def step_time_s(preset: str, batch: int, device: torch.device, steps: int, warmup: int,
                compile_model: bool, channels_last: bool | None) -> tuple[float, float]:
    """(median seconds per training step, training FLOP per sample) of `preset` at `batch`."""
    config = load_config(preset)
    shape = config.simulation.sample_shape
    torch.manual_seed(0)
    model = build_model(config.model, shape).to(device)
    cost = count_flops(model, shape.input_shape)
    nhwc = use_channels_last(channels_last, device)
    to_memory_format(model, nhwc)
    forward = training_forward(model, compile_model)
    optimizer = build_optimizer(model, config.train)
    precision = resolve_precision(config.train.precision, device)
    cbed = batch_to(torch.randn(batch, *shape.input_shape, device=device), nhwc)
    target = torch.randn(batch, *shape.target_shape, device=device)
    model.train()

    def step() -> None:
        with precision.autocast():
            prediction = forward(cbed)
        loss = F.mse_loss(prediction.float(), target)
        loss.backward()
        if config.train.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _median_s(step, device, steps, warmup), float(cost.training_flops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="keep NCHW on CUDA (channels_last is the CUDA default)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--cpu-budget-s", type=float, default=60.0,
                        help="on the CPU, skip a preset whose step would take longer")
    args = parser.parse_args()
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    ceiling, what = matmul_ceiling_flops(device)
    print(f"device {label}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"ceiling {ceiling / 1e12:.2f} TFLOP/s ({what}); compile {args.compile}, "
          f"channels_last {use_channels_last(False if args.no_channels_last else None, device)}")
    print("| preset | batch | ms/step | ms/sample | GFLOP/sample | TFLOP/s | of ceiling |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for preset in args.presets:
        for batch in args.batch:
            steps, warmup = args.steps, args.warmup
            if device.type == "cpu":
                config = load_config(preset)
                flops = count_flops(build_model(config.model, config.simulation.sample_shape),
                                    config.simulation.sample_shape.input_shape).training_flops
                estimate_s = flops * batch / ceiling
                if estimate_s > args.cpu_budget_s:
                    print(f"| {preset} | {batch} | skipped: a step is {flops * batch / 1e12:.1f} "
                          f"TFLOP, ≥ {estimate_s:.0f} s at this CPU's ceiling | | | | |",
                          flush=True)
                    continue
                if estimate_s > args.cpu_budget_s / 10:  # one timed step, no warm-up
                    steps, warmup = 1, 0
            seconds, flops_per_sample = step_time_s(
                preset, batch, device, steps, warmup, args.compile,
                False if args.no_channels_last else None)
            achieved = flops_per_sample * batch / seconds
            print(f"| {preset} | {batch} | {seconds * 1e3:.1f} | {seconds * 1e3 / batch:.2f} | "
                  f"{flops_per_sample / 1e9:.2f} | {achieved / 1e12:.3f} | "
                  f"{achieved / ceiling:.0%} |", flush=True)


if __name__ == "__main__":
    main()

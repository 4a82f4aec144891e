"""The training loop: `train_main(config, store_url, out_dir, stage_dir, resume)`.

One call per rank (torchrun, srun, jsrun, mpirun, or alone). After `train.launch` has joined
the process group and staged the data, every step is

    batch → forward (autocast) → loss (fp32) → backward, with the grouped allreduce overlapping
    it → synchronize() → unscale → clip → LARC → optimizer step → LR schedule → EMA

Exact resume. A checkpoint holds everything the next step depends on: weights, optimizer,
loss scaler, schedule, EMA, and the data position (epoch, batches done in it). The data order is
a pure function of (seed, epoch, rank) in the loader, and the random state of step s (dropout)
is reseeded from (seed, rank, s) before the step, so no generator state needs saving: a run
killed at any point and resumed from its last checkpoint repeats the lost steps bit for bit on
the CPU in fp32, and loses at most `checkpoint_every` steps.

Checkpoint selection. `checkpoint.pt` is always the latest state (what a resume continues
from). Every validation whose Pearson r (`SELECTION_METRIC`, on the validation split, never
the test split) beats all earlier ones of the run also writes `best.pt`, the same full state
at that step, so the model that is scored and used for prediction is chosen on validation
data alone; a resumed run reads the best figure so far back from `best.pt`.

Steps per epoch are agreed as the minimum over ranks (ranks hold whole shards, so their sample
counts differ): a rank with more data skips its last batches rather than wait in an allreduce
nobody else joins.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stemdl.configs import StemdlConfig, StemdlError, UsageError
from stemdl.datasets.loader import make_dataloader
from stemdl.datasets.physical_scale import thickness_by_index, training_scale
from stemdl.train.arrangements import build_model
from stemdl.train.checkpoint import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    SELECTION_METRIC,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from stemdl.train.collectives import all_agree, all_min, all_sum, average_buffers
from stemdl.train.fast_paths import (
    batch_to,
    to_memory_format,
    training_forward,
    use_channels_last,
)
from stemdl.train.flops import ModelCost, count_flops
from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.launch import LaunchContext, launch, partition_data
from stemdl.train.lr_schedule import make_scheduler
from stemdl.train.optim import (
    ExponentialMovingAverage,
    LarcWeightDecay,
    apply_larc,
    build_optimizer,
)
from stemdl.train.physical_metrics import shape_amplitude_parts, standardize_by_truth
from stemdl.train.precision import resolve_precision
from stemdl.train.run_log import RunLogger
from stemdl.train.store_fit import check_store_fits
from stemdl.train.validation import evaluate_split, evaluation_weights


class DataRefusedError(StemdlError, ValueError):
    """Another rank refused its share of the data; this rank stops with it."""


class EmptySplitError(StemdlError, ValueError):
    """The store holds no sample of a split the run needs; a metric of nothing is no metric."""


class OutputNotSharedError(StemdlError, RuntimeError):
    """--out is not one directory for every rank: some see its checkpoint, others do not."""


class OutputExistsError(StemdlError, FileExistsError):
    """The output folder holds a checkpoint and `--resume` was not given."""


@dataclass
class TrainResult:
    """What `train_main` returns (on every rank; the numbers are global)."""

    out_dir: Path
    checkpoint: Path
    steps: int
    total_steps: int
    world_size: int
    device: str
    precision: str
    resumed_from_step: int | None
    final_train_loss: float
    initial_validation: dict[str, float] | None
    validation: dict[str, float]
    samples_per_s: float
    flops_per_s: float
    model_cost: ModelCost
    wall_s: float
    rank: int = 0  # this process's global rank: one summary per job is printed by rank 0
    best_checkpoint: Path | None = None  # best.pt: the best validation SELECTION_METRIC
    best_validation: dict[str, float] = field(default_factory=dict)  # its metrics and step

    def summary(self) -> str:
        val = self.validation
        start = ""
        if self.initial_validation:
            start = f" (from {self.initial_validation['mse']:.4g} untrained)"
        resumed = f", resumed at step {self.resumed_from_step}" if self.resumed_from_step else ""
        return (
            f"trained {self.steps}/{self.total_steps} steps on {self.world_size} rank(s) "
            f"({self.device}, {self.precision})"
            f"{resumed} in {self.wall_s:.1f} s (after setup); train loss {self.final_train_loss:.4g}; "
            f"validation MSE {val.get('mse', float('nan')):.4g}{start}, "
            f"PSNR {val.get('psnr_db', float('nan')):.2f} dB, SSIM {val.get('ssim', float('nan')):.3f}; "
            f"{self.samples_per_s:.1f} samples/s, {self.flops_per_s / 1e9:.4g} GFLOP/s; "
            f"checkpoint {self.checkpoint}"
            + (f"; best validation {SELECTION_METRIC} "
               f"{self.best_validation.get(SELECTION_METRIC, float('nan')):.4f} at step "
               f"{int(self.best_validation.get('step', -1))} ({self.best_checkpoint.name})"
               if self.best_checkpoint is not None else "")
        )


@dataclass
class Position:
    """Optimizer steps done, and where in the data the next one starts."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0

    def advance(self, steps_per_epoch: int) -> None:
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch == steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0


@dataclass
class _Window:
    """Sums over the steps since the last log line."""

    loss_sum: torch.Tensor | float = 0.0  # a tensor once a step is added: no per-step sync
    steps: int = 0
    samples: int = 0
    data_s: float = 0.0
    step_s: float = 0.0
    wait_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def step_seed(seed: int, rank: int, step: int) -> int:
    """The random state of step `step` on `rank`: independent of anything that came before."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def train_main(config: StemdlConfig, store_url: str, out_dir: Path, stage_dir: Path | None = None,
               resume: bool = False, progress: bool = False,
               allow_partial: bool = False) -> TrainResult:
    """Train `config` on the store at `store_url`; checkpoints and logs go to `out_dir`.
    `progress` shows a progress bar of the steps on rank 0 (stderr). An incomplete store is
    refused unless `allow_partial` (then the log says which shards were left out)."""
    context = launch()
    try:
        trainer = Trainer(config, context, str(store_url), Path(out_dir), stage_dir,
                          allow_partial=allow_partial)
        return trainer.run(resume, progress=progress)
    finally:
        context.close()


class Trainer:
    """Owns the model, reducer, optimizer, loaders and position of one rank."""

    def __init__(self, config: StemdlConfig, context: LaunchContext, store_url: str,
                 out_dir: Path, stage_dir: Path | None, allow_partial: bool = False) -> None:
        self.config, self.train_cfg, self.context = config, config.train, context
        self.device = context.device
        self.out_dir = out_dir
        shape = config.simulation.sample_shape
        # Before any work (staging, model, loaders): the data must be what the model takes.
        check_store_fits(store_url, shape, f"config {config.name!r}")
        self.log = RunLogger(out_dir, enabled=context.is_main)
        unstitchable = config.simulation.stitching_problem()
        if unstitchable:  # trains fine; predict would refuse the model (SimulationConfig)
            self.log.warning("this model will not be usable by `stemdl predict`: %s",
                             unstitchable)
        self.partition = partition_data(context, store_url, stage_dir, allow_partial=allow_partial)
        cfg, part = self.train_cfg, self.partition

        torch.manual_seed(cfg.seed)
        physical = not config.loader.standardize_targets
        self.model = build_model(config.model, shape, physical=physical).to(self.device)
        self.thickness_by_index: torch.Tensor | None = None
        if physical:
            # Fixed from the training split before anything copies the weights (the EMA);
            # a resumed run reads the same numbers back from its checkpoint.
            scale = training_scale(store_url)
            self.model.set_scale(scale.potential_offset_v_a, scale.potential_scale_v_a,
                                 scale.thickness_offset_a, scale.thickness_scale_a)
            if self.model.has_thickness:
                self.thickness_by_index = torch.from_numpy(thickness_by_index(store_url))
        self.cost = count_flops(self.model, shape.input_shape)
        self.channels_last = use_channels_last(cfg.channels_last, self.device)
        to_memory_format(self.model, self.channels_last)
        self.forward = training_forward(self.model, cfg.compile)
        self.reducer = GroupedAllreduce(self.model, group_bytes=cfg.group_bytes,
                                        num_groups=cfg.num_groups, compression=cfg.compression)
        self.optimizer = build_optimizer(self.model, cfg)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.ema = ExponentialMovingAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        common = {"batch_size": cfg.batch_size, "rank": part.reader,
                  "world_size": part.readers, "seed": cfg.seed, "allow_partial": allow_partial}
        # Ranks read different shards, so one may refuse its data (a missing file) while the
        # others go on: every rank learns of it here, so none waits in the next collective.
        failure: Exception | None = None
        try:
            self.train_loader = make_dataloader(part.store_url, config.loader, split="train",
                                                shuffle=True, drop_last=True, **common)
            self.val_loader = make_dataloader(part.store_url, config.loader, split="validation",
                                              shuffle=False, drop_last=False, **common)
        except (StemdlError, OSError) as error:  # StoreError and its kin, a missing file
            failure = error
        some_failed, _ = all_agree(failure is not None)
        if failure is not None:
            raise failure
        if some_failed:
            raise DataRefusedError(f"rank {context.rank}: another rank refused its data and "
                                   "stopped (its message says why)")
        note = self.train_loader.dataset.partial_note
        if note:
            self.log.info("%s", note)
        # A split without samples is an error, not a NaN metric (counted over all ranks:
        # a rank's shards may hold none of a split while another's do).
        counts = all_sum(torch.tensor([self.train_loader.dataset.num_samples(),
                                       self.val_loader.dataset.num_samples()],
                                      dtype=torch.int64, device=self.device))
        for split, count in zip(("train", "validation"), counts.tolist(), strict=True):
            if count == 0:
                raise EmptySplitError(
                    f"{store_url} has no {split} samples"
                    + (" in the shards that are done" if note else "")
                    + "; training needs both a train and a validation split (see the store's "
                    "`splits` attribute: `stemdl inspect`)")
        # Every rank takes the same number of steps each epoch: the fewest full batches any
        # rank's loader yields in any epoch of the run (its workers each drop a short batch);
        # a rank with more stops its epoch early.
        train_stream = self.train_loader.dataset
        local_steps = min(train_stream.batches_per_epoch(epoch) for epoch in range(cfg.epochs))
        self.steps_per_epoch = all_min(local_steps)
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"some rank's loader yields no full batch of batch_size={cfg.batch_size} in an "
                f"epoch (this one: {train_stream.num_samples()} training samples over "
                f"{max(config.loader.num_workers, 1)} loader worker(s)); use fewer ranks or "
                "loader workers, a smaller batch or more data"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, cfg)
        self.position = Position()
        self.checkpoint_path = out_dir / CHECKPOINT_NAME
        self.last_validation: dict[str, float] = {}
        self.best_path = out_dir / BEST_CHECKPOINT_NAME
        self.best_validation: dict[str, float] = {}
        self.last_loss = float("nan")
        self._window = _Window()
        self._throughput: list[float] = []
        self._bar = tqdm(disable=True)

    # ----------------------------------------------------------------- the run

    def run(self, resume: bool, progress: bool = False) -> TrainResult:
        began = time.perf_counter()
        resumed_from = self._resume() if resume else self._refuse_to_overwrite()
        self.log.info(
            "%s: %s; %d rank(s) (%s, %s, %s); %d steps per epoch, %d steps; data %s "
            "(reader %d of %d)", self.config.name, self.cost.summary(), self.context.world_size,
            self.context.env.launcher, self.device, self.precision.name, self.steps_per_epoch,
            self.total_steps, self.partition.store_url, self.partition.reader,
            self.partition.readers)
        initial = None
        if resumed_from is None and self.train_cfg.validate_at_start:
            initial = self._validate()
        self._bar = tqdm(total=self.total_steps, initial=self.position.step, unit="step",
                         desc=f"training {self.config.model.arrangement}", file=sys.stderr,
                         disable=not (progress and self.context.is_main), dynamic_ncols=True)
        with self._bar:
            while self.position.step < self.total_steps:
                self._train_epoch()
        if self.last_validation.get("step") != self.position.step:
            self._validate()
        self._save()
        self.log.close()
        samples_per_s = float(np.median(self._throughput)) if self._throughput else 0.0
        return TrainResult(
            out_dir=self.out_dir, checkpoint=self.checkpoint_path, steps=self.position.step,
            total_steps=self.total_steps, world_size=self.context.world_size,
            device=str(self.device), precision=self.precision.name,
            resumed_from_step=resumed_from, final_train_loss=self.last_loss,
            initial_validation=initial, validation=self.last_validation,
            samples_per_s=samples_per_s,
            flops_per_s=samples_per_s * self.cost.training_flops, model_cost=self.cost,
            wall_s=time.perf_counter() - began, rank=self.context.rank,
            best_checkpoint=self.best_path if self.best_validation else None,
            best_validation=dict(self.best_validation),
        )

    def _train_epoch(self) -> None:
        epoch = self.position.epoch
        self.train_loader.dataset.set_epoch(epoch)
        batches = iter(self.train_loader)
        for _ in range(self.position.batch_in_epoch):  # resuming mid-epoch
            next(batches)
        self._window = _Window()
        while self.position.epoch == epoch and self.position.step < self.total_steps:
            fetch = time.perf_counter()
            batch = next(batches)
            start = time.perf_counter()
            loss = self._step(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # so the step time is the GPU's time
            done = time.perf_counter()
            window = self._window
            window.loss_sum += loss
            window.steps += 1
            window.samples += batch["cbed"].shape[0]
            window.data_s += start - fetch
            window.step_s += done - start
            window.wait_s += self.reducer.stats.last_wait_s
            self.position.advance(self.steps_per_epoch)
            self._bar.update(1)
            self._after_step()

    def _step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimizer step on one batch; returns this rank's loss."""
        cfg = self.train_cfg
        torch.manual_seed(step_seed(cfg.seed, self.context.rank, self.position.step))
        cbed = batch_to(batch["cbed"].to(self.device, non_blocking=True), self.channels_last)
        target = batch["potential"].to(self.device, non_blocking=True)
        loss_fn = F.mse_loss if cfg.loss == "mse" else F.l1_loss
        model = self.model
        # A physical model's loss is taken in network units ((V·Å − offset) / scale), so the
        # numbers, the learning rate and the loss scale are those of standardized targets.
        with self.precision.autocast():
            if self.thickness_by_index is not None:
                prediction, thickness_a = model.forward_both(cbed)
            else:
                prediction, thickness_a = self.forward(cbed), None
        predicted, true = model.to_network_units(prediction.float()), model.to_network_units(target)
        if model.physical and cfg.map_loss == "shape_amplitude":
            (shape_p, mean_p, log_std_p), (shape_t, mean_t, log_std_t) = (
                shape_amplitude_parts(predicted), shape_amplitude_parts(true))
            loss = loss_fn(shape_p, shape_t) + cfg.amplitude_loss_weight * (
                loss_fn(mean_p, mean_t) + loss_fn(log_std_p, log_std_t))
        else:
            loss = loss_fn(predicted, true)
            if model.physical and cfg.shape_loss_weight > 0:
                loss = loss + cfg.shape_loss_weight * loss_fn(
                    *standardize_by_truth(prediction.float(), target))
        if thickness_a is not None:
            assert self.thickness_by_index is not None
            true_a = self.thickness_by_index[batch["index"].long().cpu()].to(self.device)
            loss = loss + cfg.thickness_loss_weight * loss_fn(
                model.thickness_to_network_units(thickness_a.float()),
                model.thickness_to_network_units(true_a))
        scaler = self.precision.scaler
        scaler.scale(loss).backward()
        self.reducer.synchronize()
        scaler.unscale_(self.optimizer)
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
        if cfg.larc:
            apply_larc(self.optimizer, cfg.larc_trust)
            with LarcWeightDecay(self.optimizer):
                scaler.step(self.optimizer)
        else:
            scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()  # a tensor: summed without a device sync until the log line

    def _after_step(self) -> None:
        step, cfg = self.position.step, self.train_cfg
        last = step == self.total_steps
        if step % cfg.log_every == 0 or last:
            self._log_window()
        if step % cfg.validate_every == 0 and not last:
            self._validate()
        if step % cfg.checkpoint_every == 0 and not last:
            self._save()

    # ----------------------------------------------------------------- reporting

    def _log_window(self) -> None:
        window, world = self._window, self.context.world_size
        if window.steps == 0:
            return
        loss_sum = torch.as_tensor(window.loss_sum, dtype=torch.float64).reshape(1)
        totals = all_sum(torch.cat([loss_sum.to(self.device),
                                    torch.tensor([window.steps], dtype=torch.float64,
                                                 device=self.device)]))
        loss = (totals[0] / totals[1]).item()
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {self.position.step}; "
                                     "lower train.lr or use precision fp32/bf16")
        self.last_loss = loss
        wall = time.perf_counter() - window.started
        samples_per_s = window.samples * world / max(wall, 1e-9)
        self._throughput.append(samples_per_s)
        values = {
            "loss": loss, "lr": self.scheduler.get_last_lr()[0], "epoch": self.position.epoch,
            "samples_per_s": samples_per_s,
            "tflops_per_s": samples_per_s * self.cost.training_flops / 1e12,
            "data_s": window.data_s / window.steps,
            "compute_s": (window.step_s - window.wait_s) / window.steps,
            "allreduce_wait_s": window.wait_s / window.steps,
        }
        self.log.record("train", self.position.step, values)
        self._bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
        self.log.info("step %d/%d epoch %d: loss %.5g, lr %.3g, %.1f samples/s, %.3g TFLOP/s, "
                      "per step: data %.3f s, compute %.3f s, allreduce wait %.3f s",
                      self.position.step, self.total_steps, self.position.epoch, loss,
                      values["lr"], samples_per_s, values["tflops_per_s"], values["data_s"],
                      values["compute_s"], values["allreduce_wait_s"])
        self._window = _Window()

    def _validate(self) -> dict[str, float]:
        average_buffers(self.model)
        with evaluation_weights(self.model, self.ema):
            metrics = evaluate_split(self.model, self.val_loader, self.device, self.precision,
                                     self.thickness_by_index)
        self.log.record("validation", self.position.step, metrics)
        self.log.info("validation at step %d: %s", self.position.step,
                      ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        self.log.flush()
        self.last_validation = {**metrics, "step": self.position.step}
        best = self.best_validation.get(SELECTION_METRIC, -np.inf)
        if metrics[SELECTION_METRIC] > best:  # the same figure on every rank (allreduced)
            self.best_validation = dict(self.last_validation)
            if self.context.is_main:
                save_checkpoint(self._state(), self.best_path)
                self.log.info("best validation %s %.4f at step %d: %s", SELECTION_METRIC,
                              metrics[SELECTION_METRIC], self.position.step, self.best_path)
        return metrics

    # ----------------------------------------------------------------- checkpoints

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.position.step,
            "epoch": self.position.epoch,
            "batch_in_epoch": self.position.batch_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.context.world_size,
            "rng": {"scheme": "torch.manual_seed(SeedSequence([seed, rank, step])) every step",
                    "seed": self.train_cfg.seed},
            "config": self.config.to_dict(),
            "metrics": {k: float(v) for k, v in self.last_validation.items()},
            "train_stats": {"loss": float(self.last_loss),
                            "samples_per_s": [float(x) for x in self._throughput[-100:]]},
        }

    def _save(self) -> None:
        average_buffers(self.model)
        if self.context.is_main:
            save_checkpoint(self._state(), self.checkpoint_path)
            self.log.info("checkpoint at step %d: %s", self.position.step, self.checkpoint_path)

    def _refuse_to_overwrite(self) -> None:
        exists, _ = all_agree(self.checkpoint_path.is_file())
        if exists:
            raise OutputExistsError(f"{self.checkpoint_path} exists: pass --resume to continue "
                                  "that run, or choose another --out")
        return None

    def _resume(self) -> int | None:
        some, every = all_agree(self.checkpoint_path.is_file())
        if some and not every:
            raise OutputNotSharedError(f"{self.checkpoint_path} is visible on some ranks only: "
                                       "--out must be on a file system that every node shares")
        if not some:
            self.log.info("no checkpoint in %s: starting from step 0", self.out_dir)
            return None
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        saved = state["config"]
        for section in ("model", "simulation"):
            if saved.get(section) != self.config.to_dict()[section]:
                raise CheckpointError(f"{self.checkpoint_path} was trained with another `{section}:` "
                                 "section; resume with the config it was made with")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.position = Position(state["step"], state["epoch"], state["batch_in_epoch"])
        if (state.get("world_size"), state.get("steps_per_epoch")) != (
                self.context.world_size, self.steps_per_epoch):
            self.log.info("resuming on a different layout (world size %s → %d): the data order "
                          "from here on differs from the original run",
                          state.get("world_size"), self.context.world_size)
            if self.position.batch_in_epoch >= self.steps_per_epoch:
                self.position.epoch, self.position.batch_in_epoch = self.position.epoch + 1, 0
        self.last_validation = dict(state.get("metrics") or {})
        if self.best_path.is_file():
            self.best_validation = dict(load_checkpoint(self.best_path)["metrics"] or {})
        stats = state.get("train_stats") or {}
        self.last_loss = float(stats.get("loss", float("nan")))
        self._throughput = list(stats.get("samples_per_s", []))
        self.log.info("resumed from %s at step %d (epoch %d, batch %d)", self.checkpoint_path,
                      self.position.step, self.position.epoch, self.position.batch_in_epoch)
        return self.position.step

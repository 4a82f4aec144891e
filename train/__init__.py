"""train/: stored samples in, a trained FC-DenseNet and its metrics out.

In: a (staged) store through datasets/' loader. Out: checkpoints, logs, validation metrics.
Owns the FC-DenseNet family, the decentralized grouped allreduce (`GroupedAllreduce`), the
training loop, and launch per allocation (torchrun, SLURM, LSF, MPI). Imports configs/ and
datasets/ only (the whole-pipeline run that also generates data is `stemdl.end_to_end`, on top).
Importing this package is cheap: torch is imported by the submodules that need it.

Public API:

* `train.loop.train_main(config, store_url, out_dir, stage_dir=None, resume=False)
  -> TrainResult` — one call per rank; `train.evaluate.evaluate_main(checkpoint, store_url,
  split="test") -> dict` — metrics of a checkpoint. A model applied to a
  measured scan is `stemdl.predict` (the layer above).
* `train.grouped_allreduce.GroupedAllreduce(model, process_group=None, group_bytes=8 MiB,
  num_groups=None, compression=None | "fp16" | "bf16" | plug-in)` with `.synchronize()`,
  `.no_sync()`, `.stats`; plug-ins implement `train.compression.GradientCompression`.
* `train.arrangements.build_model(model_config, config.simulation.sample_shape)` /
  `build_model_from_config`;
  `train.flops.count_flops(model, input_shape) -> ModelCost`.
* `train.cluster_env.detect_distributed_env(env) -> DistributedEnv`, `expand_hostlist`.
* `train.local_ranks.run_local_ranks(fn, world_size, backend="gloo")` — N real ranks on this
  machine (`"nccl"`: one GPU each); `train.local_devices` — how many, which backend, and
  where `stemdl run` scores (one rank per visible GPU).

Modules, one concept each: `model` (FC-DenseNet layers), `arrangements` (how a CBED stack
becomes the input; `build_model`), `flops`, `grouped_allreduce` (the reducer),
`allreduce_grouping` (its response cache: fingerprint, groups), `compression`,
`cluster_env` (launcher variables), `local_devices`, `launch` (process group, nodes, staging),
`loop`, `fast_paths` (channels_last, torch.compile),
`optim` (SGD/AdamW, LARC, EMA), `lr_schedule` (learning rate), `precision`, `metrics`,
`validation`, `checkpoint`, `collectives`, `run_log`, `evaluate`, `scoring` (against
baselines), `baselines` (the aligned nearest neighbour and iCoM), `store_fit` (does a store hold what a model takes), `local_ranks`.
"""

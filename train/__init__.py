"""train/: stored samples in, a trained FC-DenseNet and its metrics out.

In: a (staged) store through datasets/' loader. Out: checkpoints, logs, validation metrics.
Owns the FC-DenseNet family, the decentralized grouped allreduce (`GroupedAllreduce`), the
training loop, and launch per allocation (torchrun, SLURM, LSF, MPI). Importing this package
is cheap: torch is imported by the submodules that need it.
"""

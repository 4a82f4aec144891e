"""stemdl: the one command line over simulate/ → datasets/ → train/.

This module wires the packages together and holds no logic of its own: each sub-command parses
its arguments, loads the typed config, and calls one function of one package (or of `run`, the
whole-pipeline run beside it). Heavy imports (abTEM, Dask, torch) happen inside the sub-command
that needs them, so `stemdl --help` is instant. Errors meant for users derive from
`StemdlError` and are printed as one line; anything else is a bug and keeps its traceback.

    stemdl run                                  # everything, on the embedded `small` preset
    stemdl simulate tiny --out data/tiny.zarr   # a Zarr v3 dataset, made by Dask
    stemdl verify data/tiny.zarr                # schema, completion, checksums, NaN/inf
    stemdl inspect data/tiny.zarr --sample 3    # summary table and a picture of sample 3
    stemdl stage data/tiny.zarr --to /tmp/local --node 0 --nodes 2
    stemdl train tiny --data data/tiny.zarr --out runs/tiny
    stemdl evaluate runs/tiny/checkpoint.pt --data data/tiny.zarr
    stemdl predict runs/tiny/checkpoint.pt scan.hspy --out pred/   # a measured scan
    stemdl export data/tiny.zarr --sample 3 --format hspy --out sample3.hspy
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from stemdl.configs import StemdlError, load_config

EXIT_USAGE = 2

_EPILOG = """\
configs:
  CONFIG is a preset name (tiny, small, 200kv, 300kv, paper) or a YAML file. `stemdl config small` prints a
  preset; copy it, edit it, pass the path. Unknown keys and out-of-range values are refused
  with the name of the field.

stores:
  STORE is a local path or an fsspec URL (file://, s3://, gs://, memory://, ...). For s3://,
  the endpoint and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
  AWS_SECRET_ACCESS_KEY (or a profile), or from --storage-options '{"endpoint_url": ...,
  "key": ..., "secret": ...}' of the command; the bucket must exist.

examples:
  stemdl run                                    simulate, verify, train and score `small`
  stemdl run --ranks 1 --out runs/default       the same, training in this one process
  stemdl simulate tiny --out tiny.zarr          make a dataset on a local Dask cluster
  stemdl simulate paper --out s3://bucket/p.zarr --scheduler-file sched.json
  stemdl verify tiny.zarr --repair              find and re-simulate corrupted shards
  torchrun --nproc-per-node 2 -m stemdl.pipeline train tiny --data tiny.zarr --out runs/tiny
  stemdl predict runs/tiny/checkpoint.pt scan.mib --energy-kev 100 --semiangle-mrad 9 \\
      --angular-pixel-mrad 0.8 --scan-step-a 1.5 --out pred/
"""

_PREDICT_EPILOG = """data:
  DATA is a 4D-STEM scan (scan_y, scan_x, ky, kx): a file rosettasciio reads (.hspy, .mib,
  .emd, .dm4, .blo, .mrc, ...), a Dectris ARINA master (NAME_master.h5 with its data files), a
  .npy array, or a stemdl Zarr store (path or URL) with --sample I. An .h5/.hdf5/.emd is read
  by its content: EMD (py4DSTEM, Prismatic, Velox), ARINA master or HyperSpy. The file is read
  lazily, a band of scan rows at a time: a scan larger than memory needs only about one
  window's rows of it in memory. A damaged file is refused saying what is wrong.

calibration (an option wins over the file's metadata; prediction.json says where each came from):
  beam energy, convergence semi-angle, angular pixel size and scan step are read from the file
  where its format records them (HyperSpy axes and Acquisition_instrument.TEM metadata,
  py4DSTEM's R_pixel_size/Q_pixel_size, an ARINA master's beam energy or wavelength and pixel
  size / detector distance); a .mib or .npy records none, so pass them. A missing one is an
  error naming its option.

what happens:
  a scan step within 0.75-1.25 x the trained one is resampled onto it (linear interpolation
  between probe positions); patterns are rebinned (area-weighted, about the direct beam;
  exact for whole ratios) to an angular pixel the model was trained on and cut to its pattern
  size, normalized as in training, cut into overlapping windows of the model's probe grid,
  predicted, and blended into one map of the scanned area (Å). Refused, with the reason: beam
  energy or semi-angle outside the trained range, a scan step beyond 0.75-1.25 x the trained
  one, patterns coarser than any training pattern, a scan smaller than one window (2 %
  tolerance on each).

outputs in DIR:
  potential.zarr (map with units and axes), prediction.png (map beside the mean pattern),
  prediction.json (what was done), potential.hspy / potential.tif with --save.
"""


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    config = load_config(args.config)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from stemdl.datasets.generate import generate

    config = load_config(args.config)
    report = generate(
        config,
        args.store_url,
        scheduler_address=args.scheduler_address,
        scheduler_file=args.scheduler_file,
        n_workers=args.workers,
        cpu_workers=args.cpu_workers,
        progress=not args.no_progress,
    )
    print(report.summary())
    return 0 if report.complete else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from stemdl.datasets.verify import verify_store

    report = verify_store(args.store_url, repair=args.repair)
    print(report.summary())
    # An unfinished store is not a good store: `stemdl simulate` again finishes it.
    return 0 if report.complete else 1


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stemdl.datasets.inspect import plot_sample, render_summary, summarize

    Console().print(render_summary(summarize(args.store_url)))
    if args.sample is not None:
        png = Path(args.png or f"sample-{args.sample}.png")
        plot_sample(args.store_url, args.sample, png)
        print(f"wrote {png}")
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from stemdl.datasets.stage import stage_node

    report = stage_node(args.store_url, args.to, node=args.node, nodes=args.nodes,
                        allow_partial=args.allow_partial)
    print(report.summary())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from stemdl.train.loop import train_main

    config = load_config(args.config)
    result = train_main(
        config,
        args.store_url,
        out_dir=Path(args.out),
        stage_dir=Path(args.stage_dir) if args.stage_dir else None,
        resume=args.resume,
        allow_partial=args.allow_partial,
    )
    if result.rank == 0:  # every rank returns the same global numbers; print them once
        print(result.summary())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stemdl.train.evaluate import evaluate_main

    metrics = evaluate_main(Path(args.checkpoint), args.store_url, split=args.split,
                            allow_partial=args.allow_partial)
    for name, value in metrics.items():
        print(f"{name:>17}: {value}" if isinstance(value, str) else f"{name:>17}: {value:.6g}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from stemdl.predict.outputs import write_outputs
    from stemdl.predict.scan_prediction import predict_main

    energy_ev = args.energy_ev if args.energy_ev is not None else (
        args.energy_kev * 1e3 if args.energy_kev is not None else None)
    options = {"energy_ev": energy_ev, "semiangle_mrad": args.semiangle_mrad,
               "angular_sampling_mrad": args.angular_pixel_mrad,
               "reciprocal_sampling_inv_a": args.angular_pixel_inv_a,
               "scan_step_a": args.scan_step_a}
    result = predict_main(Path(args.checkpoint), args.data, calibration_options=options,
                          sample=args.sample,
                          scan_shape=tuple(args.scan_shape) if args.scan_shape else None,
                          centre=tuple(args.centre) if args.centre else None,
                          stride=tuple(args.stride) if args.stride else None,
                          device=args.device, progress=not args.no_progress)
    written = write_outputs(result, Path(args.out), tuple(args.save or ()))
    shape = "x".join(str(n) for n in result.potential.shape[1:])
    windows = result.record["windows"]["count"]
    print(f"predicted a {shape} px map ({result.pixel_a[0]:.4g} Å/px) from {windows} "
          f"window{'s' if windows != 1 else ''}; "
          f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from stemdl.predict.export import export_sample

    path = export_sample(args.store_url, args.sample, args.format, args.out)
    print(f"wrote {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from stemdl.end_to_end import DEFAULT_DOSES_E_PER_A2, run_all

    config = load_config(args.config)
    outcome = run_all(config, Path(args.out), n_workers=args.workers,
                      ranks=args.ranks,
                      doses=tuple(args.dose) if args.dose else DEFAULT_DOSES_E_PER_A2)
    print(outcome.headline())
    return 0


def _add_storage_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--storage-options", default=None, metavar="JSON",
                     help="fsspec options for a STORE URL, as a JSON object, e.g. for s3:// "
                     '\'{"endpoint_url": "http://host:9000", "key": "...", "secret": "..."}\' '
                     "(default: the AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                     "variables)")


def _add_allow_partial(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--allow-partial", action="store_true",
                     help="use a store whose generation did not finish (only its done shards; "
                     "the run says which are left out); refused by default")


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every sub-command's --help says what it reads, writes and how to use it."""
    parser = argparse.ArgumentParser(
        prog="stemdl",
        description="Simulate CBED of crystals (abTEM), store it as a sharded Zarr v3 dataset "
        "(Dask), and train a distributed FC-DenseNet that inverts CBED into projected potential.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_, description=help_)
        cmd.set_defaults(func=func)
        return cmd

    cmd = add("config", _cmd_config, "print a validated config (preset or file) as YAML")
    cmd.add_argument("config", metavar="CONFIG", help="preset name (tiny, small, 200kv, 300kv, paper) or YAML path")

    cmd = add(
        "simulate",
        _cmd_simulate,
        "simulate a dataset into a Zarr v3 store, one Dask task per shard; re-running resumes",
    )
    cmd.add_argument("config", metavar="CONFIG", help="preset name or YAML path")
    cmd.add_argument("--out", required=True, dest="store_url", metavar="STORE",
                     help="store path or fsspec URL")
    cluster = cmd.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler-address", metavar="ADDR", help="join a running Dask scheduler")
    cluster.add_argument("--scheduler-file", metavar="FILE", help="join via a scheduler file (dask-mpi, dask-jobqueue)")
    cmd.add_argument("--workers", type=int, default=None, metavar="N",
                     help="local cluster size (default: one per core; on a GPU machine that "
                     "many GPU workers, each pinned to one GPU in turn)")
    cmd.add_argument("--cpu-workers", type=int, default=None, metavar="N",
                     help="on a GPU machine, also N CPU workers (default: none)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_options(cmd)

    cmd = add("verify", _cmd_verify, "check schema, completion, checksums, NaN/inf and value ranges")
    cmd.add_argument("store_url", metavar="STORE")
    cmd.add_argument("--repair", action="store_true", help="re-simulate the shards found bad")
    _add_storage_options(cmd)

    cmd = add("inspect", _cmd_inspect, "summarize a store; with --sample, draw one sample to PNG")
    cmd.add_argument("store_url", metavar="STORE")
    cmd.add_argument("--sample", type=int, default=None, metavar="I", help="sample index to draw")
    cmd.add_argument("--png", default=None, metavar="PATH", help="where to write the picture")
    _add_storage_options(cmd)

    cmd = add("stage", _cmd_stage, "copy one node's shards to node-local disk as a verified store")
    cmd.add_argument("store_url", metavar="STORE")
    cmd.add_argument("--to", required=True, metavar="DIR", help="node-local directory")
    cmd.add_argument("--node", type=int, required=True, metavar="K", help="this node, 0-based")
    cmd.add_argument("--nodes", type=int, required=True, metavar="N", help="number of nodes")
    _add_allow_partial(cmd)
    _add_storage_options(cmd)

    cmd = add(
        "train",
        _cmd_train,
        "train the FC-DenseNet; run once per rank (torchrun, srun, jsrun) or alone",
    )
    cmd.add_argument("config", metavar="CONFIG", help="preset name or YAML path")
    cmd.add_argument("--data", required=True, dest="store_url", metavar="STORE",
                     help="store made by `simulate`")
    cmd.add_argument("--stage-dir", default=None, metavar="DIR", help="stage this node's shards here first")
    cmd.add_argument("--out", default="runs/latest", metavar="DIR", help="checkpoints, logs, TensorBoard")
    cmd.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    _add_allow_partial(cmd)
    _add_storage_options(cmd)

    cmd = add("evaluate", _cmd_evaluate, "metrics of a checkpoint on a split (MSE, PSNR, SSIM, ...)")
    cmd.add_argument("checkpoint", metavar="CHECKPOINT")
    cmd.add_argument("--data", required=True, dest="store_url", metavar="STORE")
    cmd.add_argument("--split", default="test", choices=["train", "validation", "test"])
    _add_allow_partial(cmd)
    _add_storage_options(cmd)

    cmd = sub.add_parser(
        "predict", help="apply a trained model to a 4D-STEM scan (microscope file, .npy, store)",
        description="Apply a trained model to a 4D-STEM scan: check its calibration against "
        "what the model was trained on, resample, tile, predict and stitch one projected-"
        "potential map of the scanned area.",
        epilog=_PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.set_defaults(func=_cmd_predict)
    cmd.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt of `stemdl train`")
    cmd.add_argument("data", metavar="DATA", help="scan file, .npy, or stemdl store (see below)")
    cmd.add_argument("--out", required=True, metavar="DIR", help="output directory")
    energy = cmd.add_mutually_exclusive_group()
    energy.add_argument("--energy-kev", type=float, metavar="KEV", help="beam energy (keV)")
    energy.add_argument("--energy-ev", type=float, metavar="EV", help="beam energy (eV)")
    cmd.add_argument("--semiangle-mrad", type=float, metavar="MRAD",
                     help="probe convergence semi-angle (mrad)")
    pixel = cmd.add_mutually_exclusive_group()
    pixel.add_argument("--angular-pixel-mrad", type=float, nargs="+", metavar="MRAD",
                       help="angular size of a detector pixel (mrad/px; one value, or ky kx)")
    pixel.add_argument("--angular-pixel-inv-a", type=float, nargs="+", metavar="INV_A",
                       help="the same in reciprocal units (Å⁻¹/px; one value, or ky kx)")
    cmd.add_argument("--scan-step-a", type=float, nargs="+", metavar="A",
                     help="probe step (Å; one value, or y x)")
    cmd.add_argument("--centre", type=float, nargs=2, metavar=("KY", "KX"),
                     help="direct-beam pixel (default: centre of mass of the bright-field disk)")
    cmd.add_argument("--scan-shape", type=int, nargs=2, metavar=("ROWS", "COLS"),
                     help="scan shape of a stack of frames (.mib without .hdr, 3-D .npy or .mrc)")
    cmd.add_argument("--sample", type=int, default=None, metavar="I",
                     help="with a stemdl store as DATA: the sample to predict")
    cmd.add_argument("--stride", type=int, nargs=2, metavar=("ROWS", "COLS"),
                     help="probes between windows (default: half the model's probe grid)")
    cmd.add_argument("--save", action="append", choices=["hspy", "tiff"],
                     help="also write the map as potential.hspy / potential.tif; repeatable")
    cmd.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_options(cmd)

    cmd = add("export", _cmd_export,
              "write a stored sample as a calibrated 4D-STEM file (scan axes in Å, k in mrad) "
              "that HyperSpy opens; npy writes the axes to PATH.json beside it")
    cmd.add_argument("store_url", metavar="STORE")
    cmd.add_argument("--sample", type=int, required=True, metavar="I", help="sample index")
    cmd.add_argument("--format", required=True, choices=["hspy", "npy", "emd"])
    cmd.add_argument("--out", required=True, metavar="PATH",
                     help="file to write (the format's extension is added if missing)")
    _add_storage_options(cmd)

    cmd = add(
        "run",
        _cmd_run,
        "simulate, verify, train both arrangements and score them against baselines on "
        "held-out compositions, on one machine; writes metrics.json, report.md and run.log",
    )
    cmd.add_argument("config", nargs="?", default="small", metavar="CONFIG", help="default: small")
    cmd.add_argument("--out", default="stemdl-run", metavar="DIR", help="default: ./stemdl-run")
    cmd.add_argument("--workers", type=int, default=None, metavar="N", help="Dask workers")
    cmd.add_argument("--ranks", type=int, default=None, metavar="N",
                     help="train each arrangement on N local torch.distributed processes "
                     "through the grouped allreduce (gloo; NCCL on GPUs, one each); 1 trains in this process "
                     "(default: one per visible GPU, else 2)")
    cmd.add_argument("--dose", type=float, action="append", metavar="E_PER_A2",
                     help="score at this electron dose (e/Å², Poisson noise on the test "
                     "patterns) besides noise-free; repeatable; replaces the default 1e5 and 1e4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: clear one-line errors for bad input, tracebacks only with -v."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Dask narrates every worker start and stop at INFO; the progress bar says what matters.
        # distributed configures its loggers when imported, from this config key.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for noisy in ("distributed", "tornado", "fsspec", "numcodecs", "matplotlib",
                      "botocore", "aiobotocore", "s3fs"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if getattr(args, "storage_options", None) is not None:
            from stemdl.datasets.storage import parse_storage_options, set_storage_options

            set_storage_options(parse_storage_options(args.storage_options))
        return args.func(args)
    except StemdlError as error:
        if args.verbose:
            raise
        message = str(error)
        if "Original Traceback" in message:  # re-raised from a DataLoader worker process:
            message = message.strip().splitlines()[-1]  # its own message is the last line
        print(f"stemdl {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"stemdl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

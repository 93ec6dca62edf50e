"""python -m wbvb.sweep: the whole study, end to end.

config -> presets/teacher fine-tune -> teacher data (reused when inputs match) -> verify ->
Ray Tune grid of (distill type x seed) trials, each streaming shards through Ray Data ->
results_summary.csv + aggregate table. With no arguments it runs ``sweeps/quickstart.yaml``.
"""
from __future__ import annotations

import argparse
import sys

from wbvb.storage import StorageError
from wbvb.config import ConfigError, ExperimentConfig, load_config
from wbvb.store.schema import TeacherDataError
from wbvb.tasks.files import TaskDataError
from wbvb.models.cost import DEFAULT_MFU
from wbvb.sweep.plan import format_plan, sweep_plan, write_plan
from wbvb.sweep.run import run_sweep


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wbvb.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML under sweeps/ (default: sweeps/quickstart.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set training.epochs=3 (repeatable)")
    ap.add_argument("--distill-types", help="comma list, e.g. black_box,hidden_state,attention,combined")
    ap.add_argument("--seeds", help="comma list of ints, e.g. 0,1,2")
    ap.add_argument("--use-deepspeed", action="store_true", help="train each trial through DeepSpeed")
    ap.add_argument("--deepspeed-config", help="DeepSpeed JSON, e.g. sweeps/ds_config_zero3.json")
    ap.add_argument("--address", help="join a running Ray cluster: auto | HOST:PORT | ray://...")
    ap.add_argument("--output", help="results folder (default $WBVB_OUTPUT_PATH or ./results)")
    ap.add_argument("--resume", action="store_true",
                    help="finish the sweep in the run folder (also automatic when its config matches)")
    ap.add_argument("--plan", action="store_true",
                    help="print what the sweep will cost and whether it fits (plan.json too), then exit")
    ap.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                    help=f"model FLOPs utilisation the plan's times assume (default {DEFAULT_MFU:g})")
    ap.add_argument("--calibrate", action="store_true",
                    help="with --plan: measure a few training steps of the student's shape here instead of --mfu")
    ap.add_argument("--force", action="store_true", help="run even when the plan says it does not fit")
    return ap


def config_from_args(args) -> ExperimentConfig:
    overrides = list(args.set)
    if args.distill_types:
        overrides.append(f"sweep.distill_types=[{args.distill_types}]")
    if args.seeds:
        overrides.append(f"sweep.seeds=[{args.seeds}]")
    if args.use_deepspeed:
        overrides.append("training.use_deepspeed=true")
    if args.deepspeed_config:
        overrides.append(f"training.deepspeed_config={args.deepspeed_config}")
    if args.address:
        overrides.append(f"sweep.address={args.address}")
    if args.output:
        overrides.append(f"output.dir={args.output}")
    return load_config(args.config, overrides)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if not 0 < args.mfu <= 1:
            raise ConfigError(f"--mfu {args.mfu:g}: give a fraction in (0, 1], e.g. --mfu 0.3")
        if args.plan:
            return show_plan(cfg, args.mfu, args.calibrate)
        result = run_sweep(cfg, resume=args.resume, force=args.force, mfu=args.mfu)
    except (ConfigError, TeacherDataError, TaskDataError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return INTERRUPTED
    return exit_status(result)


INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


def exit_status(result: dict) -> int:
    """0 only when every trial finished: 1 if any failed, else 130 if some were left unfinished (interrupted)."""
    if result.get("errors"):
        return 1
    return INTERRUPTED if result.get("unfinished", 0) > 0 else 0


def show_plan(cfg, mfu: float, calibrate: bool) -> int:
    """--plan: print the plan and write plan.json; exit status 3 when it does not fit."""
    plan = sweep_plan(cfg, mfu, calibrate_steps=3 if calibrate else 0)
    print(format_plan(plan))
    print(f"plan written to {write_plan(cfg.run_dir, plan)}")
    return 3 if plan["problems"] else 0

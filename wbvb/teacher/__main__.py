"""python -m wbvb.teacher {generate,verify,inspect,stats}

  generate --config sweeps/X.yaml   run only the teacher-data stage (progress bar; reuse/resume)
           [--plan [--mfu 0.3]]     ... or print its plan (store bytes, memory, time) without loading weights
           [--address auto]         ... as a Ray task on a cluster node (teacher_data.cpus/gpus)
  verify DIR [--rows N | --all]     check manifest, shards and sampled rows (DIR: a folder or s3://, gs://, ... URI)
  inspect DIR N                     one example decoded, with the teacher's top-5 answer tokens
  stats DIR                         rows per task, token counts, bytes per signal
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from wbvb.config import ConfigError, load_config, resolve_paths
from wbvb.models import cost
from wbvb.storage import StorageError, location
from wbvb.store.inspect import inspect_row, store_stats
from wbvb.store.schema import TeacherDataError
from wbvb.tasks.files import TaskDataError
from wbvb.store.verify import verify
from wbvb.teacher.cluster import connect, prepare_on_cluster
from wbvb.teacher.plan import format_stage, teacher_plan
from wbvb.teacher.prepare import prepare


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wbvb.teacher", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="fine-tune (if configured) and run the teacher; reuse when inputs match")
    g.add_argument("--config", default=None)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--force", action="store_true", help="regenerate even if a matching store exists")
    g.add_argument("--address", help="run the stage as a Ray task on this cluster: auto | HOST:PORT | ray://...")
    g.add_argument("--plan", action="store_true",
                   help="print the stage's models, store bytes, memory and time (no weights loaded), then exit")
    g.add_argument("--mfu", type=float, default=cost.DEFAULT_MFU, help="utilisation the plan's times assume")
    v = sub.add_parser("verify", help="check a teacher store (a folder holding manifest.json)")
    v.add_argument("dir")
    v.add_argument("--rows", type=int, default=20, help="rows sampled across the store (default 20)")
    v.add_argument("--all", action="store_true", help="check every row")
    i = sub.add_parser("inspect", help="print one stored example decoded")
    i.add_argument("dir")
    i.add_argument("row", type=int, help="store-wide row index (0-based)")
    s = sub.add_parser("stats", help="rows per task, token counts, bytes per signal")
    s.add_argument("dir")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "generate":
            # paths absolute before the config reaches a Ray task (a relative store path is refused there)
            cfg = resolve_paths(load_config(args.config, args.set), cluster=bool(args.address))
            if args.plan:
                cuda = cfg.training.device == "cuda" or (cfg.training.device == "auto" and cfg.teacher_data.gpus > 0)
                peak = cost.peak_flops(cuda, "bf16" if cuda else "fp32", cfg.teacher_data.cpus if args.address
                                       else (os.cpu_count() or 1))
                print(format_stage(teacher_plan(cfg, args.mfu, cuda, peak)[0], args.mfu))
                return 0
            if args.address:
                connect(args.address)
                prep, _ = prepare_on_cluster(cfg, force=args.force)
            else:
                prep = prepare(cfg, force=args.force, progress=True)
            print(json.dumps({"dir": str(prep.data_dir), "rows": prep.manifest["num_rows"],
                              "teacher_accuracy": prep.scores["teacher_accuracy"]}, indent=1))
        elif args.cmd == "verify":
            print(json.dumps(verify(location(args.dir), None if args.all else args.rows), indent=1))
            print("verify: OK")
        elif args.cmd == "inspect":
            print(inspect_row(location(args.dir), args.row))
        else:
            print(json.dumps(store_stats(location(args.dir)), indent=1))
    except (ConfigError, TeacherDataError, TaskDataError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

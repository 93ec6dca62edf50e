"""python -m wbvb.teacher {generate,verify} --config sweeps/X.yaml"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wbvb.config import ConfigError, load_config
from wbvb.teacher.schema import TeacherDataError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wbvb.teacher", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="fine-tune (if configured) and run the teacher; reuse when inputs match")
    g.add_argument("--config", default=None)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--force", action="store_true", help="regenerate even if a matching store exists")
    v = sub.add_parser("verify", help="check a teacher store (a folder holding manifest.json)")
    v.add_argument("dir")
    v.add_argument("--rows", type=int, default=64, help="rows sampled per shard")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "generate":
            from wbvb.teacher import prepare

            prep = prepare(load_config(args.config, args.set), force=args.force)
            print(json.dumps({"dir": str(prep.data_dir), "rows": prep.manifest["num_rows"],
                              "teacher_accuracy": prep.manifest.get("teacher_accuracy")}, indent=1))
        else:
            from wbvb.teacher.verify import verify

            print(json.dumps(verify(Path(args.dir), args.rows), indent=1))
            print("verify: OK")
    except (ConfigError, TeacherDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

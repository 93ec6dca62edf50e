"""A DeepSpeed (ZeRO-3 + CPU offload) sft run, uninterrupted and interrupted mid-epoch then resumed.

Run in its own process by tests/test_trainer_resume.py: DeepSpeed initialises torch.distributed for
the whole process. Prints one JSON line: both runs' comparable metrics and the resume position.
python tests/support/deepspeed_resume_run.py CONFIG_JSON OUT_DIR
"""
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2])]  # the helpers, and this checkout's wbvb

from resume_runs import comparable, interrupt, resume, uninterrupted  # noqa: E402

from wbvb.feed.batches import ExampleSource  # noqa: E402
from wbvb.config import config_from_dict  # noqa: E402
from wbvb.models.load import load_tokenizer, resolve_model_paths  # noqa: E402
from wbvb.tasks import load_all  # noqa: E402
from wbvb.train.trainer import Trainer  # noqa: E402


def main() -> None:
    cfg = config_from_dict(json.loads(sys.argv[1]))
    out = Path(sys.argv[2])
    student = resolve_model_paths(cfg)["student"]
    tok = load_tokenizer(student)
    train, ev = load_all(cfg.tasks, "train"), load_all(cfg.tasks, "eval")

    def make_trainer():
        return Trainer(cfg, "sft", 0, student, tok)

    def make_source(t):
        return ExampleSource(train, tok, cfg.training.max_length, t.micro_batch)

    full, _ = uninterrupted(make_trainer, make_source, ev, out / "full")
    interrupt(make_trainer, make_source, ev, out / "ckpt", stop_at=3)
    second, rest, _ = resume(make_trainer, make_source, ev, out / "ckpt")
    print(json.dumps({"full": comparable(full), "resumed": comparable(rest),
                      "position": [second.start_epoch, second.start_micro]}))


if __name__ == "__main__":
    main()

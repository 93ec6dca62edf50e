"""End to end through the real stack: presets, Parquet shards, Ray Tune + Ray Data on 2 CPUs, TensorBoard."""
import json

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def ray_2cpu():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_six_trials_on_two_cpus_end_to_end(tiny_cfg, ray_2cpu, capsys):
    from wbvb.sweep.run import run_sweep

    result = run_sweep(tiny_cfg)
    assert not result["errors"]
    run = tiny_cfg.run_dir
    summary = pd.read_csv(run / "results_summary.csv")
    names = sorted(summary["trial_name"].unique())
    assert names == sorted(f"{t}-seed0" for t in tiny_cfg.sweep.distill_types)
    for col in ["epoch", "train_loss", "task_loss", "kd_loss", "align_hidden_loss", "align_attn_loss",
                "validation_loss", "val_acc", "tokens_per_s", "validation_accuracy_sentiment",
                "validation_accuracy_multiple_choice", "validation_accuracy_arithmetic"]:
        assert summary[col].notna().all(), col
    by_type = summary.set_index("distill_type")
    assert by_type.loc["sft", "kd_loss"] == 0 and by_type.loc["black_box", "kd_loss"] > 0
    assert by_type.loc["seq_kd", "kd_loss"] == 0 and by_type.loc["seq_kd", "align_hidden_loss"] == 0
    assert (tiny_cfg.teacher_data_dir / json.loads((run / "teacher.json").read_text())["fingerprint"]
            / "seq_kd_answers.parquet").is_file()
    assert by_type.loc["hidden_state", "align_hidden_loss"] > 0 and by_type.loc["attention", "align_attn_loss"] > 0
    assert by_type.loc["combined", "align_hidden_loss"] > 0 and by_type.loc["combined", "align_attn_loss"] > 0
    for name in names:
        assert list((run / "tensorboard" / name).glob("events.out.tfevents.*")), name
        ckpts = list((run / "tune" / name).glob("checkpoint_*"))
        assert ckpts and (ckpts[-1] / "final_model" / "config.json").is_file()
    teacher = json.loads((run / "teacher.json").read_text())
    assert set(teacher["teacher_accuracy"]) == {"sentiment", "multiple_choice", "arithmetic"}
    out = capsys.readouterr().out
    assert "Final validation accuracy" in out and "teacher" in out

    # Running the same sweep again finishes only what is missing: here nothing, so no trial re-runs.
    lines = {n: (run / "tune" / n / "result.json").read_text() for n in names}
    again = run_sweep(tiny_cfg)
    assert not again["errors"] and len(again["summary"]) == len(summary)
    assert lines == {n: (run / "tune" / n / "result.json").read_text() for n in names}
    assert "finishing only what is missing" in capsys.readouterr().out

    # Another config in the same folder is refused, naming what differs and the way out.
    from wbvb.config import ConfigError, config_from_dict

    other = tiny_cfg.to_dict()
    other["loss"]["beta"] = 0.9
    with pytest.raises(ConfigError, match=r"another config \(differs in loss.beta\).*--set sweep.name"):
        run_sweep(config_from_dict(other))


def test_black_box_reads_no_white_box_columns(tiny_cfg, ray_2cpu):
    from wbvb.distill_types import DISTILL
    from wbvb.feed.stream import ShardStream
    from wbvb.teacher.prepare import prepare

    prep = prepare(tiny_cfg)
    bb = ShardStream(prep.data_dir, prep.manifest, DISTILL["black_box"].signals, 8)
    names = set(bb.dataset().schema().names)
    assert {"topk_ids", "topk_logprobs"} <= names and not {"hidden", "hidden_scale", "attention"} & names
    sft = ShardStream(prep.data_dir, prep.manifest, DISTILL["sft"].signals, 8)
    assert not {"topk_ids", "hidden", "attention"} & set(sft.dataset().schema().names)
    batches = list(bb.epoch(0, seed=0))
    assert sum(b["input_ids"].shape[0] for b in batches) == prep.manifest["num_rows"]
    assert "hidden" not in batches[0] and batches[0]["topk_ids"].shape[-1] == 4


def test_deepspeed_zero3_offload_trial_in_a_sweep(tiny_dict, ray_2cpu):
    """--use-deepspeed: a real ZeRO-3 + CPU-offload trial (gloo, CPU accelerator) inside Tune."""
    from pathlib import Path

    from wbvb.config import config_from_dict
    from wbvb.sweep.run import run_sweep

    tiny_dict["sweep"]["distill_types"] = ["black_box"]
    tiny_dict["training"].update({"use_deepspeed": True, "epochs": 2, "checkpoint_every_steps": 4,
                                  "deepspeed_config": str(Path(__file__).parent.parent / "sweeps" / "ds_config_zero3.json")})
    cfg = config_from_dict(tiny_dict)
    result = run_sweep(cfg)
    assert not result["errors"]
    df = result["summary"]
    assert list(df["epoch"]) == [1, 2]  # the mid-epoch checkpoint reports are not epoch rows
    reports = [json.loads(line) for line in (cfg.run_dir / "tune" / "black_box-seed0" / "result.json").open()]
    assert [r.get("epoch", r["epoch_progress"]) for r in reports] == [4 / 9, 8 / 9, 1, 1 + 3 / 9, 1 + 7 / 9, 2]
    assert df["train_loss"].iloc[1] < df["train_loss"].iloc[0]
    assert df["kd_loss"].gt(0).all() and df["val_acc"].notna().all()
    final = sorted((cfg.run_dir / "tune" / "black_box-seed0").glob("checkpoint_*"))[-1] / "final_model"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(final)  # gathered full weights, not ZeRO-3 shards
    assert float(model.get_input_embeddings().weight.detach().abs().sum()) > 0

"""Teacher-stage progress: a line per ~10 % without a terminal, counted in what the work costs."""
import torch

from wbvb.teacher import progress as progress_module
from wbvb.teacher.progress import CountingSource, Progress, part_size


def test_lines_every_tenth_with_rate_and_eta(capsys, monkeypatch):
    clock = iter([0.0, 2.0, 10.0])  # start, after 35 tokens, after 100
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    p = Progress(100, "teacher data", "tokens", bar=True)  # bar asked for, but stderr is not a terminal here
    p.update(5)  # 5 %: below the first tenth, nothing printed
    p.update(30)
    p.update(65)
    p.close()
    lines = capsys.readouterr().out.splitlines()
    # 35 tokens in 2 s: 17.5 tokens/s, 65 left: ETA 65 / 17.5 = 3.7 s; then 100 in 10 s, nothing left
    assert lines == ["teacher data: 35% (35/100 tokens), 17.5 tokens/s, ETA 4 s",
                     "teacher data: 100% (100/100 tokens), 10.0 tokens/s, ETA 0 s"]


def test_a_long_step_crossing_several_tenths_prints_once():
    p = Progress(10, "x", "ex")
    p.update(7)
    assert p.next_line > 0.7 and p.next_line <= 0.8 + 1e-9


class _Source:
    num_rows = 3

    def batches(self, first, end, seed, skip=0):
        for e in range(first, end):
            yield e, {"attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
            yield e, {"attention_mask": torch.tensor([[1, 0, 0, 0]])}


def test_counting_source_reports_real_tokens_not_rows():
    p = Progress(12, "teacher fine-tune", "tokens")
    got = list(CountingSource(_Source(), p).batches(0, 2, 0))
    assert len(got) == 4 and p.done == 2 * (5 + 1)  # padding is not counted


def test_parts_are_whole_batches_of_about_a_tenth():
    assert part_size(1000, 64) == 128 and part_size(50, 64) == 64 and part_size(640, 64) == 64


def test_teacher_finetune_reports_its_real_tokens(tiny_dict, capsys):
    from wbvb.config import config_from_dict
    from wbvb.feed.batches import encode_example
    from wbvb.models.load import load_tokenizer
    from wbvb.models.presets import ensure_preset
    from wbvb.tasks import load_all
    from wbvb.teacher.finetune import finetuned_teacher

    tiny_dict["models"]["teacher_finetune_epochs"] = 2
    for t in tiny_dict["tasks"]:
        t.update({"n_train": 8, "n_eval": 2})
    cfg = config_from_dict(tiny_dict)
    teacher = str(ensure_preset(cfg.models.preset, cfg.cache_dir)["teacher"])
    tok = load_tokenizer(teacher)
    finetuned_teacher(cfg, teacher, tok)
    total = 2 * sum(len(encode_example(ex, tok, cfg.training.max_length)["input_ids"])
                    for ex in load_all(cfg.tasks, "train"))
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("teacher fine-tune:")]
    assert lines and lines[-1].startswith(f"teacher fine-tune: 100% ({total:,}/{total:,} tokens)")

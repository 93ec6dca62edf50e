"""``python -m wbvb.sweep --plan``: what a sweep will cost and whether it fits, before it starts.

The grid and what the run folder already holds, each trial's resources and how many run at once,
memory per trial against the GPU (or RAM), the teacher data, checkpoint bytes against free disk,
and FLOPs and time per stage. Model configs and tokenizers are read, never weights
(``wbvb.models.cost`` holds the memory and FLOPs model, ``wbvb.teacher.plan`` the teacher's part).
The same plan is written as ``plan.json`` into the run folder; a real run writes it first and
refuses to start when it cannot fit (``--force`` runs anyway).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

from wbvb.config import ConfigError, keeps_final_model
from wbvb.distill_types import DISTILL
from wbvb.models import cost
from wbvb.storage import write_json_atomic
from wbvb.store.schema import TeacherDims
from wbvb.sweep.packing import concurrency
from wbvb.sweep.trial import trial_name, trial_resources
from wbvb.teacher.plan import _size, eval_flops, format_teacher, teacher_plan
from wbvb.train.alignment import resolve_layers
from wbvb.train.setup import accumulation_steps, micro_batch_size
from wbvb.train.student import alignment_pairs

PLAN_FILE = "plan.json"
CUTS = {"optimizer": "DeepSpeed with offload_optimizer (--deepspeed-config sweeps/ds_config_zero3.json)",
        "gradients": "DeepSpeed with bf16 and offload_optimizer",
        "weights": "DeepSpeed ZeRO-3 with offload_param, or a smaller student",
        "activations": "training.batch_size / training.whitebox_batch_size or training.max_length",
        "logits": "training.batch_size / training.whitebox_batch_size or training.max_length",
        "captured attention": "training.whitebox_batch_size or training.max_length",
        "teacher attention": "training.whitebox_batch_size or teacher_data.attention_stride",
        "teacher hidden": "training.whitebox_batch_size or teacher_data.hidden_stride",
        "projector outputs": "training.whitebox_batch_size",
        "runtime": "fewer trials per GPU (sweep.gpus_per_trial)"}


class PlanError(ConfigError):
    """A plan that cannot run as configured; the message names the term to cut and by how much."""


_gb = _size


def _device(cfg) -> tuple[bool, str]:
    """(CUDA or not, precision) the trials will train with."""
    tr = cfg.training
    cuda = tr.device == "cuda" or (tr.device == "auto" and cfg.sweep.gpus_per_trial > 0)
    if tr.precision != "auto":
        return cuda, tr.precision
    return cuda, "bf16" if cuda else "fp32"


def gpu_memory_bytes(cfg) -> tuple[float, str]:
    """The GPU memory a trial's share is cut from: ``sweep.gpu_memory_gb``, else the visible device's."""
    if cfg.sweep.gpu_memory_gb > 0:
        return cfg.sweep.gpu_memory_gb * cost.GB, "sweep.gpu_memory_gb"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return float(props.total_memory), f"device 0 ({props.name})"
    return 0.0, "unknown (set sweep.gpu_memory_gb)"


def grid(cfg) -> list[dict]:
    """Trials in Tune's order (distill types vary fastest) and what the run folder holds of each."""
    tune_dir = cfg.run_dir / "tune"
    out = []
    for seed in cfg.sweep.seeds:
        for t in cfg.sweep.distill_types:
            name = trial_name(t, seed)
            out.append({"trial": name, "distill_type": t, "seed": seed, **_trial_state(tune_dir / name, cfg)})
    return out


def _trial_state(folder: Path, cfg) -> dict:
    epochs = []
    result = folder / "result.json"
    if result.is_file():
        for line in result.read_text().splitlines():
            try:
                e = json.loads(line).get("epoch")
            except json.JSONDecodeError:
                continue
            if e is not None:
                epochs.append(e)
    if epochs and max(epochs) >= cfg.training.epochs:
        return {"state": "finished", "epochs_done": max(epochs)}
    ckpts = sorted((p for p in folder.glob("checkpoint_*") if p.is_dir()),
                   key=lambda p: int(re.sub(r"\D", "", p.name) or 0)) if folder.is_dir() else []
    if ckpts:
        return {"state": "resumes", "from": str(ckpts[-1]), "epochs_done": max(epochs, default=0)}
    return {"state": "runs", "epochs_done": 0}


def _cluster_cpus(cfg) -> tuple[float, float, str]:
    """(CPUs, GPUs, where) of the machine or cluster the sweep would run on."""
    if cfg.sweep.address:
        import ray

        from_cluster = ray.is_initialized()
        if not from_cluster:
            return 0.0, 0.0, f"cluster {cfg.sweep.address} (not contacted)"
        res = ray.cluster_resources()
        return res.get("CPU", 0.0), res.get("GPU", 0.0), f"cluster {cfg.sweep.address}"
    cpus = cfg.sweep.num_cpus or os.cpu_count() or 1
    return float(cpus), (1.0 if cfg.sweep.gpu_memory_gb > 0 else _visible_gpus()), "this machine"


def _visible_gpus() -> float:
    import torch

    return float(torch.cuda.device_count()) if torch.cuda.is_available() else 0.0


def resources(cfg) -> dict:
    """Per-type reservations, how many trials run at once, and whether Ray Data's reads can starve."""
    sw = cfg.sweep
    cpus, gpus, where = _cluster_cpus(cfg)
    per_type = {t: trial_resources(cfg, t) for t in sw.distill_types}
    problems = []
    at_once = sw.max_concurrent_trials or 1  # a cluster not contacted: what the config allows
    if cpus > 0:
        try:
            at_once = concurrency(cfg, cpus)
        except ConfigError as exc:
            problems.append(f"reads would starve: {exc}")
        per_trial = max(r["CPU"] for r in per_type.values()) + sw.data_cpus
        if not problems and at_once * per_trial + sw.headroom_cpus > cpus + 1e-9:
            problems.append(f"reads would starve: {at_once} trials x ({per_trial - sw.data_cpus:g} CPUs + "
                            f"sweep.data_cpus {sw.data_cpus:g}) + headroom {sw.headroom_cpus:g} exceed {where}'s "
                            f"{cpus:g} CPUs; lower sweep.max_concurrent_trials")
    gpu_per = max(r["GPU"] for r in per_type.values())
    if gpu_per > 0 and gpus > 0:
        at_once = min(at_once, max(1, math.floor(gpus / gpu_per + 1e-9)))
    return {"where": where, "cpus": cpus, "gpus": gpus, "per_trial": per_type, "data_cpus": sw.data_cpus,
            "headroom_cpus": sw.headroom_cpus, "at_once": at_once, "problems": problems}


def _whitebox(cfg, distill_type: str, teacher: cost.ModelShape, student: cost.ModelShape) -> cost.WhiteBox:
    td = cfg.teacher_data
    dims = TeacherDims(hidden_size=teacher.hidden, hidden_stride=td.hidden_stride,
                       attention_stride=td.attention_stride,
                       hidden_layers=tuple(resolve_layers(td.hidden_layers, teacher.layers, "hidden_layers")),
                       attention_layers=tuple(resolve_layers(td.attention_layers, teacher.layers, "attention_layers")),
                       num_layers=teacher.layers, heads=teacher.heads)
    hp = alignment_pairs("hidden", cfg, distill_type, dims, student.layers)
    ap = alignment_pairs("attention", cfg, distill_type, dims, student.layers)
    sig = DISTILL[distill_type].signals
    return cost.WhiteBox(len(hp), len(ap), teacher.hidden, teacher.heads,
                         len(dims.hidden_layers) if "hidden" in sig else 0,
                         len(dims.attention_layers) if "attention" in sig else 0,
                         td.hidden_stride, td.attention_stride, 4 if td.dtype == "float32" else 2)


def projector_params(cfg, wb: cost.WhiteBox, student: cost.ModelShape) -> int:
    if not wb.hidden_pairs or cfg.loss.hidden_loss == "cka":
        return 0
    return wb.hidden_pairs * (student.hidden * wb.teacher_hidden + wb.teacher_hidden)


def cut_terms(terms: dict, over: float) -> dict:
    """The largest terms, in order, until together they hold ``over`` bytes (the runtime last)."""
    out, held = {}, 0.0
    for k in sorted(terms, key=lambda k: (k == "runtime", -terms[k])):
        if held >= over:
            break
        out[k] = terms[k]
        held += terms[k]
    return out


def memory(cfg, teacher: cost.ModelShape, student: cost.ModelShape, at_once: int) -> dict:
    """Memory per trial of each distill type against its share of the GPU (or of RAM on the CPU)."""
    cuda, precision = _device(cfg)
    autocast = cuda and precision in ("bf16", "fp16")
    ds = cost.DeepSpeedPlan.from_file(cfg.training.deepspeed_config, cuda) if cfg.training.use_deepspeed else None
    total_gpu, gpu_source = gpu_memory_bytes(cfg) if cuda else (0.0, "")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    out, problems = {}, []
    for t in cfg.sweep.distill_types:
        wb = _whitebox(cfg, t, teacher, student)
        b = micro_batch_size(cfg.training, t)
        terms = cost.training_memory(student, b, cfg.training.max_length, autocast, cuda, ds, wb,
                                     projector_params(cfg, wb, student))
        dev_total, host_total = sum(terms["device"].values()), sum(terms["host"].values())
        share = trial_resources(cfg, t)["GPU"]
        if cuda:
            budget, against = min(share, 1.0) * total_gpu, f"{min(share, 1.0):g} x {_gb(total_gpu)} ({gpu_source})"
        else:
            budget, against = ram / max(at_once, 1), f"RAM {_gb(ram)} / {max(at_once, 1)} trials at once"
            dev_total += host_total
        entry = {"micro_batch": b, "max_length": cfg.training.max_length, "precision": precision,
                 "deepspeed": ds.__dict__ if ds else None, **terms, "total": dev_total, "host_total": host_total,
                 "budget": budget, "against": against}
        if budget > 0 and dev_total > budget:
            over = dev_total - budget
            entry["cut"] = {"bytes": over, "terms": cut_terms(terms["device"], over)}
            how = " + ".join(f"{k} ({_gb(v)}: {CUTS[k]})" for k, v in entry["cut"]["terms"].items())
            problems.append(f"{t}: a trial needs {_gb(dev_total)} but has {_gb(budget)} ({against}); "
                            f"cut {_gb(over)}, from {how}")
        elif cuda and budget == 0:
            entry["unchecked"] = "GPU memory unknown: set sweep.gpu_memory_gb"
        out[t] = entry
    return {"per_type": out, "cuda": cuda, "problems": problems}


def checkpoint_bytes(cfg, student: cost.ModelShape, extra_params: int) -> int:
    """One trial checkpoint: weights + AdamW state (fp32: 4+8 bytes per parameter; DeepSpeed with
    bf16: 2 + 12, its master copy included)."""
    p = student.params + extra_params
    if cfg.training.use_deepspeed:
        return 14 * p
    return 12 * p


def _free_bytes(path: Path) -> tuple[int, str]:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free, str(p)


def checkpoints(cfg, student: cost.ModelShape, teacher: cost.ModelShape, rows: int, trial_states: list[dict]) -> dict:
    """Bytes written and kept per trial and per sweep, against free disk where they land.

    The policy of ``sweep/checkpoints.py``: each checkpoint's full state (weights + optimizer) goes to
    ``training.checkpoint_dir`` on local disk, where only the latest is kept while the trial runs
    (deleted when it ends); the run's storage (Tune) gets bf16 weights per checkpoint
    (``training.keep_checkpoints: weights``) or none, one kept, plus the bf16 final model of the trials
    ``training.keep_final_model`` names."""
    tr = cfg.training
    local_dir = cfg.checkpoint_dir
    per_trial = {}
    for t in cfg.sweep.distill_types:
        extra = projector_params(cfg, _whitebox(cfg, t, teacher, student), student)
        one = checkpoint_bytes(cfg, student, extra)
        bf16 = 2 * (student.params + extra)
        tune_one = bf16 if tr.keep_checkpoints == "weights" else 0
        steps = math.ceil(rows / micro_batch_size(tr, t)) // accumulation_steps(tr, t)
        mid = (steps - 1) // tr.checkpoint_every_steps if tr.checkpoint_every_steps else 0
        n = tr.epochs * (1 + mid)
        per_trial[t] = {"checkpoint": one, "written": n, "bytes_written": n * (one + tune_one), "final_model": bf16,
                        "bytes_kept": tune_one, "local_bytes_peak": 2 * one}  # latest + the one being written

    def final(s: dict) -> int:
        return per_trial[s["distill_type"]]["final_model"] * keeps_final_model(tr, s["seed"], cfg.sweep.seeds)

    todo = [s for s in trial_states if s["state"] != "finished"]
    written = sum(per_trial[s["distill_type"]]["bytes_written"] + final(s) for s in todo)
    kept = sum(per_trial[s["distill_type"]]["bytes_kept"] + final(s) for s in trial_states)
    finals = sum(1 for s in trial_states if final(s))
    at_once = max(1, cfg.sweep.max_concurrent_trials or 1)
    local_peak = at_once * max((e["local_bytes_peak"] for e in per_trial.values()), default=0)
    free, at = _free_bytes(cfg.run_dir)
    local_free, local_at = _free_bytes(local_dir)
    problems = []
    if kept > free:
        problems.append(f"checkpoints: the sweep keeps {_gb(kept)} but {at} has {_gb(free)} free; "
                        "free disk, point output.dir at a larger disk, or set training.keep_checkpoints=none "
                        "or training.keep_final_model=first_seed (or none)")
    if local_peak > local_free:
        problems.append(f"checkpoints: {at_once} running trial(s) hold up to {_gb(local_peak)} of resume state in "
                        f"{local_at}, which has {_gb(local_free)} free; point training.checkpoint_dir at a larger disk")
    return {"per_type": per_trial, "keep": tr.keep_checkpoints, "keep_final_model": tr.keep_final_model,
            "final_models": finals, "folder": str(local_dir),
            "sweep_bytes_written": written, "sweep_bytes_kept": kept, "free_bytes": free, "free_at": at,
            "local_bytes_peak": local_peak, "local_free_bytes": local_free, "local_free_at": local_at,
            "problems": problems}


def calibrate(cfg, student: cost.ModelShape, steps: int = 3) -> float:
    """FLOP/s measured here: a few training steps of a randomly initialised student of this shape
    at the sft micro-batch and max length (no checkpoint is read)."""
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    b, s = micro_batch_size(cfg.training, "sft"), cfg.training.max_length
    model = LlamaForCausalLM(LlamaConfig(vocab_size=student.vocab, hidden_size=student.hidden,
                                         intermediate_size=student.intermediate, num_hidden_layers=student.layers,
                                         num_attention_heads=student.heads, num_key_value_heads=student.kv_heads,
                                         tie_word_embeddings=student.tied, max_position_embeddings=max(s, 16)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, student.vocab, (b, s), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return cost.train_flops(student, b * s, s) / (sum(times[1:]) / steps)


def timing(cfg, teacher_section: dict, student: cost.ModelShape, rows: dict, res: dict, trial_states: list[dict],
           mfu: float, measured_flops: float = 0.0) -> dict:
    """FLOPs and time per stage, total GPU-hours, and the wall time with the trials' packing."""
    cuda, precision = _device(cfg)
    tr, s = cfg.training, cfg.training.max_length
    tokens = rows["train_lengths"].tokens
    per_epoch_eval = eval_flops(student, cfg, rows["eval"], rows["eval_lengths"])
    train = cost.train_flops(student, tokens * tr.epochs, s)
    trial_flops = train + per_epoch_eval * tr.epochs
    share = max(r["GPU"] for r in res["per_trial"].values())
    cpus = max(r["CPU"] for r in res["per_trial"].values())
    peak = cost.peak_flops(cuda, precision, cpus)
    rate = measured_flops or peak * mfu
    todo = [x for x in trial_states if x["state"] != "finished"]
    trial_s = trial_flops / rate
    at_once = max(res["at_once"], 1)
    if cuda:  # packed trials share one GPU's compute: a GPU-second is a GPU-second
        gpus_busy = max(min(at_once * share, res["gpus"] or at_once * share), 1e-9)
        gpu_hours = trial_s * len(todo) / 3600
        wall = trial_s * len(todo) / max(gpus_busy, min(share, 1.0))
    else:
        gpu_hours = 0.0
        wall = trial_s * math.ceil(len(todo) / at_once)
    teacher_s = sum(teacher_section["seconds"].values()) if teacher_section["data"]["store_status"] != \
        "exists: reused (nothing to generate)" else 0.0
    return {"mfu": mfu, "measured_flops_per_s": measured_flops or None, "peak_flops_per_s": peak,
            "flops": {**teacher_section["flops"], "student training (per trial)": train,
                      "student eval (per trial)": per_epoch_eval * tr.epochs},
            "trial_seconds": trial_s, "trials_to_run": len(todo), "teacher_seconds": teacher_s,
            "gpu_hours": gpu_hours + (teacher_s / 3600 if cuda else 0.0), "wall_seconds": wall + teacher_s}


def sweep_plan(cfg, mfu: float = cost.DEFAULT_MFU, calibrate_steps: int = 0) -> dict:
    """The whole plan as a JSON-able dict; ``problems`` lists what would not fit."""
    cuda, precision = _device(cfg)
    res = resources(cfg)
    peak = cost.peak_flops(cuda, precision, cfg.teacher_data.cpus if cfg.sweep.address else (os.cpu_count() or 1))
    teacher_section, models, rows = teacher_plan(cfg, mfu, cuda, peak)
    states = grid(cfg)
    mem = memory(cfg, models.teacher, models.student, res["at_once"])
    ckpt = checkpoints(cfg, models.student, models.teacher, len(rows["train"]), states)
    measured = calibrate(cfg, models.student, calibrate_steps) if calibrate_steps else 0.0
    time_ = timing(cfg, teacher_section, models.student, rows, res, states, mfu, measured)
    teacher_problems = []
    if cuda:
        total, source = gpu_memory_bytes(cfg)
        need = sum(teacher_section["memory"].values())
        if total and need > total:
            teacher_problems.append(f"teacher stage: needs {_gb(need)} but the GPU has {_gb(total)} ({source}); "
                                    "cut teacher_data.batch_size, or generate on a larger GPU")
    return {"sweep": cfg.sweep.name, "run_dir": str(cfg.run_dir), "notes": models.notes, "grid": states,
            "resources": res, "memory": mem, "teacher": teacher_section, "checkpoints": ckpt, "time": time_,
            "problems": res["problems"] + mem["problems"] + ckpt["problems"] + teacher_problems}


def _hours(sec: float) -> str:
    return f"{sec / 3600:.2f} h" if sec >= 3600 else f"{sec / 60:.1f} min" if sec >= 60 else f"{sec:.1f} s"


def format_plan(plan: dict) -> str:
    """The plan as the CLI prints it."""
    L = [f"plan: sweep {plan['sweep']} -> {plan['run_dir']}"]
    L += [f"  note: {n}" for n in plan["notes"]]
    g = plan["grid"]
    counts = {s: sum(1 for x in g if x["state"] == s) for s in ("finished", "resumes", "runs")}
    L.append(f"grid: {len(g)} trials in this order ({counts['finished']} finished, {counts['resumes']} resume, "
             f"{counts['runs']} run)")
    for x in g:
        extra = f" from {x['from']}" if x["state"] == "resumes" else ""
        L.append(f"  {x['trial']:<24} {x['state']}{extra}")
    r = plan["resources"]
    L.append(f"resources: {r['where']}, {r['cpus']:g} CPUs, {r['gpus']:g} GPUs; {r['at_once']} trials at once "
             f"(each + sweep.data_cpus {r['data_cpus']:g} for Ray Data, headroom {r['headroom_cpus']:g})")
    for t, res in r["per_trial"].items():
        L.append(f"  {t:<14} " + ", ".join(f"{k} {v:g}" for k, v in res.items()))
    m = plan["memory"]
    L.append(f"memory per trial ({'GPU' if m['cuda'] else 'CPU RAM'}):")
    for t, e in m["per_type"].items():
        terms = ", ".join(f"{k} {_gb(v)}" for k, v in e["device"].items())
        host = (" | host: " + ", ".join(f"{k} {_gb(v)}" for k, v in e["host"].items())) if e["host"] else ""
        verdict = "does NOT fit" if "cut" in e else e.get("unchecked", "fits")
        L.append(f"  {t:<14} micro-batch {e['micro_batch']} x {e['max_length']} {e['precision']}: {_gb(e['total'])} "
                 f"of {_gb(e['budget'])} [{e['against']}] {verdict}")
        L.append(f"    {terms}{host}")
    L += format_teacher(plan["teacher"])
    c = plan["checkpoints"]
    L.append(f"checkpoints in {c['folder']} (keeping {c['keep']} per trial; final models: "
             f"{c['keep_final_model']}, {c['final_models']} of {len(g)} trials):")
    for t, e in c["per_type"].items():
        L.append(f"  {t:<14} {_gb(e['checkpoint'])} each, {e['written']} written ({_gb(e['bytes_written'])}), "
                 f"{_gb(e['bytes_kept'])} kept, + {_gb(e['final_model'])} final model where kept")
    L.append(f"  sweep: {_gb(c['sweep_bytes_written'])} written, {_gb(c['sweep_bytes_kept'])} kept; "
             f"{_gb(c['free_bytes'])} free at {c['free_at']}; resume state on local disk up to "
             f"{_gb(c['local_bytes_peak'])} ({_gb(c['local_free_bytes'])} free at {c['local_free_at']})")
    tm = plan["time"]
    rate = (f"measured {tm['measured_flops_per_s'] / 1e12:.3g} TFLOP/s (--calibrate)" if tm["measured_flops_per_s"]
            else f"MFU {tm['mfu']:g} of {tm['peak_flops_per_s'] / 1e12:.3g} TFLOP/s peak (--mfu)")
    L.append(f"time at {rate}:")
    for k, v in tm["flops"].items():
        L.append(f"  {k:<30} {v:.3g} FLOPs")
    L.append(f"  {tm['trials_to_run']} trials x {_hours(tm['trial_seconds'])}, teacher stage "
             f"{_hours(tm['teacher_seconds'])}: {tm['gpu_hours']:.2f} GPU-hours, wall {_hours(tm['wall_seconds'])}")
    L.append("fits: yes" if not plan["problems"] else "fits: NO")
    L += [f"  - {p}" for p in plan["problems"]]
    return "\n".join(L)


def write_plan(run_dir: Path, plan: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / PLAN_FILE
    write_json_atomic(path, plan)
    return path


def check_fits(plan: dict, force: bool) -> None:
    """Refuse a plan that cannot fit (``--force``: warn and go on)."""
    if not plan["problems"]:
        return
    text = "; ".join(plan["problems"])
    if force:
        print(f"warning: --force: running a plan that does not fit: {text}", file=sys.stderr, flush=True)
        return
    raise PlanError(f"the plan does not fit: {text}. See it with --plan; --force runs anyway")


def record_measured(run_dir: Path, measured: dict) -> None:
    """Add what the run measured beside the plan's estimate in ``plan.json``."""
    path = run_dir / PLAN_FILE
    plan = json.loads(path.read_text()) if path.is_file() else {}
    write_json_atomic(path, plan | {"measured": measured})

"""One training run of a causal LM for one distill type and seed: the loop, checkpoints, logging.

The same loop fine-tunes the quickstart teacher (``sft`` on in-memory examples) and trains
every student trial (any distill type on streamed teacher shards). A run is a plain PyTorch
loop, or a DeepSpeed engine when ``training.use_deepspeed`` is set (one process, no launcher).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch.utils.tensorboard import SummaryWriter

from wbvb.config import ConfigError
from wbvb.feed.batches import BatchSource
from wbvb.feed.prefetch import prefetch
from wbvb.models.load import load_model, pick_device, real_vocab_size
from wbvb.store.schema import TeacherDims
from wbvb.train.evaluate import accuracy_metrics, evaluate
from wbvb.train.losses import scale_imbalance
from wbvb.train.setup import (accumulation_steps, autocast_dtype, deepspeed_config, free_port, micro_batch_size,
                              rng_states, seed_everything, set_rng_states)
from wbvb.train.student import PROJECTORS_FILE, StudentLoss


class NonFiniteLossError(RuntimeError):
    pass


class LossScaleWarning(UserWarning):
    """One weighted loss term dwarfs another at a trial's start (losses.scale_imbalance)."""


@dataclass
class EpochTally:
    """What an epoch has added up so far; saved in a mid-epoch checkpoint so the resumed epoch
    reports the same means as an uninterrupted one."""

    sums: dict = field(default_factory=dict)
    n_ok: int = 0
    tokens: int = 0
    skipped: int = 0
    bad_in_row: int = 0
    train_s: float = 0.0  # training time before this process took over (tokens/s)
    data_wait_s: float = 0.0


class PhaseClock:
    """Seconds spent per phase of the loop (data wait, forward, backward, optimizer, logging), summed
    over the run. Host time: on CUDA, kernels run asynchronously, so a phase's share is approximate."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start)


class LogWindow:
    """Loss parts and gradient norms summed on the device since the last log, read in one host sync."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0  # finite micro-batches
        self.norms: list[torch.Tensor] = []

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v.float() if k in self.sums else v.float()
        self.n += 1

    def step(self, grad_norm: torch.Tensor) -> None:
        self.norms.append(grad_norm)

    def read(self) -> tuple[dict[str, float], int, Optional[float]]:
        """(sums, micro-batches, mean gradient norm or None without a step), and start a new window."""
        keys = list(self.sums)
        flat = [self.sums[k] for k in keys] + ([torch.stack(self.norms).float().mean()] if self.norms else [])
        values = torch.stack([v.to(flat[0].device) for v in flat]).tolist() if flat else []
        out = (dict(zip(keys, values)), self.n, values[-1] if self.norms else None)
        self.__init__()
        return out


RNG_FILE = "rng_state.pt"


def eval_subset(examples: list, per_task: int) -> list:
    """``per_task`` examples of each task (all when 0 or fewer there), the same for every trial and
    epoch (seeded by the task's name alone, so paired comparisons pair on the same examples), in
    their original order."""
    if per_task <= 0:
        return examples
    by_task: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_task.setdefault(ex.task, []).append(i)
    keep = set()
    for task, idx in by_task.items():
        keep.update(idx if len(idx) <= per_task else random.Random(f"eval-subset:{task}").sample(idx, per_task))
    return [ex for i, ex in enumerate(examples) if i in keep]


def read_checkpoint(path: Path, device: torch.device) -> tuple[dict, dict]:
    """The trainer state with its tensors on ``device``, and the RNG states on the CPU.

    ``torch.set_rng_state`` takes CPU ByteTensors only: loaded with the model's ``map_location``
    (a GPU) the saved RNG states would land on the GPU and a resume on CUDA would raise.
    """
    state = torch.load(path / "trainer_state.pt", map_location=device, weights_only=False)
    if not (path / RNG_FILE).is_file():  # written before the RNG states had a file of their own
        return state, torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)["rng"]
    return state, torch.load(path / RNG_FILE, map_location="cpu", weights_only=False)


class Trainer:
    """Trains one model for one distill type; reports one metrics dict per epoch."""

    def __init__(self, cfg, distill_type: str, seed: int, model_path: str, tokenizer,
                 teacher: TeacherDims | None = None, tb_dir: Optional[str] = None, lr: Optional[float] = None,
                 epochs: Optional[int] = None):
        self.cfg, self.tr, self.weights = cfg, cfg.training, cfg.loss
        self.distill_type, self.seed = distill_type, seed
        self.tokenizer = tokenizer
        self.teacher = teacher or TeacherDims()
        self.lr = lr if lr is not None else self.tr.lr
        self.epochs = epochs if epochs is not None else self.tr.epochs
        self.device = pick_device(self.tr.device)
        seed_everything(seed)
        student = load_model(model_path)
        self.vocab = real_vocab_size(tokenizer)
        self.loss = StudentLoss(cfg, distill_type, self.teacher, student.config, self.vocab)
        self.bundle = self.loss.bundle(student).to(self.device)
        self.writer, self.tb_dir = None, tb_dir
        if tb_dir:
            self.writer = SummaryWriter(tb_dir)
        self.engine = None
        self.global_step = 0  # optimizer steps
        self.start_epoch = 0
        self.start_micro = 0  # micro-batches of start_epoch already trained (mid-epoch resume)
        self.micro_per_epoch = 0
        self._resumed_tally: Optional[EpochTally] = None
        self._position: Optional[dict] = None  # where a mid-epoch checkpoint taken now would resume
        self.clock = PhaseClock()
        self._scale_checked = False
        self.micro_batch = micro_batch_size(self.tr, distill_type)
        self.accum = accumulation_steps(self.tr, distill_type)
        self.amp_dtype = None if self.tr.use_deepspeed else autocast_dtype(self.tr.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    # ---- setup ---------------------------------------------------------------------------
    def _setup_optimisation(self, steps_per_epoch: int) -> None:
        total = max(1, steps_per_epoch * self.epochs)
        warmup = int(self.tr.warmup_ratio * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        params = [p for p in self.bundle.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.tr.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if self.tr.use_deepspeed:
            import deepspeed

            for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
                os.environ.setdefault(k, v)
            os.environ.setdefault("MASTER_PORT", str(free_port()))  # one port per trial process
            ds_cfg = deepspeed_config(self.tr.deepspeed_config, self.tr, self.lr, self.distill_type)
            optimizer = None
            if "optimizer" not in ds_cfg:
                optimizer = torch.optim.AdamW(groups, lr=self.lr)
            # The engine builds the scheduler on its base optimizer and steps it in engine.step().
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.bundle, optimizer=optimizer, model_parameters=None if optimizer else groups,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                config=ds_cfg, dist_init_required=True)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=self.lr)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    # ---- one step --------------------------------------------------------------------------
    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(self.engine or self.bundle, self.bundle.projectors, batch, self.device)

    def _forward_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The forward pass under autocast (bf16/fp16 on CUDA); the losses themselves are fp32."""
        if self.amp_dtype is None:
            return self._loss(batch)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return self._loss(batch)

    def _micro_step(self, batch: dict, last_of_group: bool
                    ) -> tuple[Optional[torch.Tensor], dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Backward one micro-batch; step the optimizer at the end of an accumulation group.

        Returns the loss (None when it is not finite: it was not backwarded), its components and the
        gradient norm (None unless the optimizer stepped), all as tensors on the device: the loop reads
        them once per logging interval, so the finite check is this step's only host sync.
        """
        try:
            with self.clock("forward"):
                loss, parts = self._forward_loss(batch)
                parts = {k: v.detach() for k, v in parts.items()}
            if not torch.isfinite(loss):
                return None, parts, None
            if self.engine is not None:  # DeepSpeed scales by 1/accumulation and steps at boundaries
                # our boundaries, not its micro-step counter: groups restart each epoch (a short last
                # group) and the counter is not in its checkpoint (a mid-epoch resume)
                self.engine.set_gradient_accumulation_boundary(last_of_group)
                with self.clock("backward"):
                    self.engine.backward(loss)
                with self.clock("optimizer"):
                    self.engine.step()
                if not last_of_group:
                    return loss.detach(), parts, None
                norm = self.engine.get_global_grad_norm()
                return loss.detach(), parts, torch.as_tensor(float("nan") if norm is None else norm)
            with self.clock("backward"):
                scaled = loss / self.accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if not last_of_group:
                return loss.detach(), parts, None
            with self.clock("optimizer"):
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.bundle.parameters(),
                                                      self.tr.grad_clip if self.tr.grad_clip > 0 else float("inf"))
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
            return loss.detach(), parts, norm.detach()
        except torch.cuda.OutOfMemoryError as exc:
            cap = torch.cuda.get_per_process_memory_fraction(0) if torch.cuda.is_available() else 1.0
            share = f", capped at {cap:.0%} of the GPU's memory (its packing share)" if cap < 1 else ""
            raise RuntimeError(
                f"GPU out of memory in a {self.distill_type} trial at micro-batch size {len(batch['example_ids'])} "
                f"(sequence length {batch['input_ids'].shape[1]}){share}; lower training.batch_size / "
                "training.whitebox_batch_size (the effective batch is kept through accumulation) or pack "
                "fewer trials per GPU (sweep.gpus_per_trial, sweep.resources_by_type)") from exc

    # ---- evaluation ----------------------------------------------------------------------
    def full_weights(self, for_generation: bool = False):
        """Context in which the student holds its full weights (ZeRO-3 partitions them otherwise).
        ``for_generation``: gathered once with ZeRO-3's hooks taken off for the whole evaluation
        (with them on, every forward of every decode step would fetch the weights again)."""
        if self.engine is not None and self.engine.zero_optimization_stage() == 3:
            import deepspeed
            from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

            if for_generation:
                return unwrap_model_for_generation(self.engine)
            return deepspeed.zero.GatheredParameters(list(self.bundle.student.parameters()), modifier_rank=None)
        return contextlib.nullcontext()

    def evaluate(self, examples) -> dict:
        """Scored in the trial's precision (bf16/fp16 autocast on CUDA; log-softmaxes stay fp32 inside)."""
        amp = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with self.full_weights(for_generation=True), amp:
            return evaluate(self.bundle.student, self.tokenizer, examples, self.tr.eval_batch_size,
                            self.tr.max_new_tokens, self.tr.max_length, self.device, self.cfg.models.add_bos)

    # ---- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, path: Path, epoch: Optional[int] = None) -> None:
        """Everything a restarted trial needs: weights, optimizer, scheduler, scaler, RNG states and
        the data position. ``epoch``: the end of that epoch; None: the current mid-epoch position
        (only valid inside an ``on_checkpoint`` callback)."""
        if epoch is not None:
            position = {"epoch": epoch + 1, "micro_batches": 0, "tally": None}
        elif self._position is not None:
            position = self._position
        else:
            raise RuntimeError("save_checkpoint without an epoch is for fit's on_checkpoint callback (mid-epoch)")
        path.mkdir(parents=True, exist_ok=True)
        state = {"position": {**position, "micro_per_epoch": self.micro_per_epoch}, "global_step": self.global_step,
                 "scheduler": self.scheduler.state_dict()}
        torch.save(rng_states(), path / RNG_FILE)
        if self.engine is not None:
            self.engine.save_checkpoint(str(path / "deepspeed"), tag="wbvb")
        else:
            state["model"] = self.bundle.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
            state["scaler"] = self.scaler.state_dict() if self.scaler else None
        torch.save(state, path / "trainer_state.pt")

    def load_checkpoint(self, path: Path) -> None:
        state, rng = read_checkpoint(path, self.device)
        position = state.get("position") or {"epoch": state["epoch"] + 1, "micro_batches": 0, "tally": None}
        if position["micro_batches"] and position.get("micro_per_epoch") != self.micro_per_epoch:
            raise ConfigError(f"{path}: a mid-epoch checkpoint taken at {position.get('micro_per_epoch')} micro-batches "
                              f"per epoch, now {self.micro_per_epoch}; resume with the batch sizes it was taken "
                              "with (training.batch_size / whitebox_batch_size) or start the trial anew")
        if self.engine is not None:
            self.engine.load_checkpoint(str(path / "deepspeed"), tag="wbvb")
        else:
            self.bundle.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_states(rng)
        self.global_step = state["global_step"]
        if self.writer is not None:  # TensorBoard drops what the stopped run logged after the checkpoint
            self.writer.close()
            self.writer = SummaryWriter(self.tb_dir, purge_step=self.global_step + 1)
        self.start_epoch, self.start_micro = position["epoch"], position["micro_batches"]
        self._resumed_tally = EpochTally(**position["tally"]) if position["tally"] else None

    def save_pretrained(self, path: Path) -> None:
        """The student in bf16 ``save_pretrained`` form: half the bytes of fp32, and the precision a GPU
        trial computes in; tied weights (embeddings and LM head) are written once."""
        with self.full_weights():
            student, shared = self.bundle.student, set()
            weights = {}
            for k, v in student.state_dict().items():
                if v.data_ptr() not in shared:
                    shared.add(v.data_ptr())
                    weights[k] = v.to(torch.bfloat16) if v.is_floating_point() else v
            dtype, student.config.dtype = student.config.dtype, torch.bfloat16
            try:
                student.save_pretrained(path, state_dict=weights)
            finally:
                student.config.dtype = dtype
            if self.bundle.projectors is not None:  # trained with the student: kept with it
                torch.save(self.bundle.projectors.state_dict(), path / PROJECTORS_FILE)
        self.tokenizer.save_pretrained(path)

    # ---- the run ---------------------------------------------------------------------------
    def fit(self, source: BatchSource, eval_examples, on_epoch_end: Optional[Callable] = None,
            resume_from: Optional[Path] = None, on_checkpoint: Optional[Callable] = None,
            select_examples=None) -> list[dict]:
        """Train the remaining epochs; ``on_epoch_end(metrics, epoch)`` after each epoch's evaluation
        (``select_examples``, held out of train, are scored too: ``select_acc``, what epochs are chosen by),
        ``on_checkpoint(progress)`` every ``training.checkpoint_every_steps`` optimizer steps inside
        an epoch (call ``save_checkpoint(path)`` there)."""
        self.micro_per_epoch = math.ceil(source.num_rows / self.micro_batch)
        self._setup_optimisation(math.ceil(self.micro_per_epoch / self.accum))
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        history = []
        # One stream for all epochs: the next epoch's batches load while this one ends and evaluates.
        stream = source.batches(self.start_epoch, self.epochs, self.seed, self.start_micro)
        stream = iter(stream) if getattr(source, "runs_ahead", False) else prefetch(stream, depth=2)
        try:
            for epoch in range(self.start_epoch, self.epochs):
                metrics = self._train_epoch(stream, epoch, on_checkpoint)
                last = epoch + 1 == self.epochs  # intermediate epochs: a fixed subset (training.eval_subset)
                ev = self.evaluate(eval_examples if last else eval_subset(eval_examples, self.tr.eval_subset))
                metrics.update({"validation_loss": ev["validation_loss"], "val_acc": ev["val_acc"],
                                **accuracy_metrics(ev)})
                if select_examples:
                    metrics["select_acc"] = self.evaluate(select_examples)["val_acc"]
                metrics = {"epoch": epoch + 1, **metrics, "epoch_progress": float(epoch + 1)}
                if self.writer:
                    for k, v in metrics.items():
                        if k not in ("epoch", "epoch_progress"):
                            self.writer.add_scalar(f"epoch/{k}", v, self.global_step)
                    self.writer.flush()
                history.append(metrics)
                if on_epoch_end is not None:
                    on_epoch_end(metrics, epoch)
            next(stream, None)  # read to its end: the batch-making task ends by itself, not cancelled
        finally:
            if hasattr(stream, "close"):
                stream.close()
        if self.writer:
            if history:
                self._log_hparams(history[-1])
            self.writer.close()
        return history

    def _train_epoch(self, stream: Iterator[tuple[int, dict]], epoch: int,
                     on_checkpoint: Optional[Callable] = None) -> dict:
        """One pass over the epoch's micro-batches (from ``start_micro`` on a mid-epoch resume);
        returns the epoch's mean losses, tokens/s and skipped steps."""
        self.bundle.train()
        n = self.micro_per_epoch
        first = self.start_micro if epoch == self.start_epoch else 0
        tally = (self._resumed_tally if first else None) or EpochTally()
        every = self.tr.checkpoint_every_steps
        window = LogWindow()
        t0 = time.perf_counter()
        for micro in range(first, n):
            wait = time.perf_counter()
            item = next(stream, None)
            wait = time.perf_counter() - wait
            tally.data_wait_s += wait
            self.clock.add("data_wait", wait)
            if item is None or item[0] != epoch:
                raise RuntimeError(f"the batch source gave {micro} micro-batches in epoch {epoch}, expected {n} "
                                   f"({self.micro_batch} rows each)")
            batch = item[1]
            last = (micro + 1) % self.accum == 0 or micro == n - 1  # accumulation groups restart each epoch
            loss, parts, norm = self._micro_step(batch, last)
            if loss is None:
                tally.skipped += 1
                tally.bad_in_row += 1
                if tally.bad_in_row >= self.tr.max_bad_steps:
                    raise NonFiniteLossError(
                        f"{tally.bad_in_row} non-finite losses in a row at optimizer step {self.global_step} of the "
                        f"{self.distill_type} trial (seed {self.seed}), loss components "
                        f"{ {k: float(v) for k, v in parts.items()} }; batch examples: {batch['example_ids'][:8]}")
                if last and self.engine is None:
                    self.optimizer.zero_grad(set_to_none=True)  # drop a group a bad batch touched
            else:
                tally.bad_in_row = 0
                tally.n_ok += 1
                tally.tokens += int(batch["attention_mask"].sum())
                window.add({"train_loss": loss, **parts})
            if last and norm is not None:
                self.global_step += 1
                window.step(norm)
                checkpoint = on_checkpoint is not None and every and self.global_step % every == 0 and micro < n - 1
                first_step = not self._scale_checked  # the first step this process trains: are the terms comparable?
                if checkpoint or first_step or self.global_step % self.tr.log_every_steps == 0:
                    with self.clock("logging"):
                        sums, read = self._log_window(window, tally)
                    if first_step:
                        self._scale_checked = True
                        self._warn_scale(sums, read)
                if checkpoint:
                    t0 += self._mid_epoch_checkpoint(on_checkpoint, epoch, micro + 1, tally, t0)
        with self.clock("logging"):
            self._log_window(window, tally)
        train_s = tally.train_s + time.perf_counter() - t0
        mean = {k: v / max(tally.n_ok, 1) for k, v in tally.sums.items()}
        return {"train_loss": mean.get("train_loss", float("nan")),
                "task_loss": mean.get("task", float("nan")),
                "kd_loss": mean.get("kd", 0.0),
                "align_hidden_loss": mean.get("hidden", 0.0),
                "align_attn_loss": mean.get("attention", 0.0),
                "task_loss_weighted": mean.get("task_weighted", float("nan")),
                "kd_loss_weighted": mean.get("kd_weighted", 0.0),
                "align_hidden_loss_weighted": mean.get("hidden_weighted", 0.0),
                "align_attn_loss_weighted": mean.get("attention_weighted", 0.0),
                "tokens_per_s": tally.tokens / max(train_s, 1e-9),
                "data_wait_s": tally.data_wait_s,  # time the loop waited for batches (not hidden by prefetching)
                "skipped_steps": tally.skipped,
                "steps": self.global_step}

    def _mid_epoch_checkpoint(self, on_checkpoint: Callable, epoch: int, done: int, tally: EpochTally,
                              t0: float) -> float:
        """Hand the position after ``done`` micro-batches to ``on_checkpoint``; returns the seconds it
        took, which tokens/s leaves out."""
        start = time.perf_counter()
        saved = EpochTally(**{**asdict(tally), "train_s": tally.train_s + start - t0})
        self._position = {"epoch": epoch, "micro_batches": done, "tally": asdict(saved)}
        try:
            on_checkpoint({"epoch_progress": epoch + done / self.micro_per_epoch, "steps": self.global_step,
                           "train_loss": saved.sums.get("train_loss", float("nan")) / max(saved.n_ok, 1)})
        finally:
            self._position = None
        return time.perf_counter() - start

    def _warn_scale(self, sums: dict, n: int) -> None:
        weighted = {k.removesuffix("_weighted"): v / n for k, v in sums.items() if k.endswith("_weighted")}
        why = scale_imbalance(weighted) if n else ""
        if why:
            warnings.warn(f"{self.distill_type} trial (seed {self.seed}): {why}", LossScaleWarning, stacklevel=2)

    def _log_window(self, window: "LogWindow", tally: EpochTally) -> tuple[dict, int]:
        """Read the window's device sums (one host sync), add them to the epoch's tally and log their
        means at x = steps done (the epoch's scalars share its last step's x); returns the sums read."""
        sums, n, norm = window.read()
        for k, v in sums.items():
            tally.sums[k] = tally.sums.get(k, 0.0) + v
        if not self.writer or not n:
            return sums, n
        self.writer.add_scalar("train/loss", sums["train_loss"] / n, self.global_step)
        for k, v in sums.items():
            if k != "train_loss":  # kd -> train/kd_loss, kd_weighted -> train/kd_loss_weighted
                name = k.removesuffix("_weighted") + "_loss" + ("_weighted" if k.endswith("_weighted") else "")
                self.writer.add_scalar(f"train/{name}", v / n, self.global_step)
        self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.global_step)
        self.writer.add_scalar("train/grad_norm", norm, self.global_step)
        return sums, n

    def _log_hparams(self, final: dict) -> None:
        """HParams summary: TensorBoard's HParams tab lists every trial with its final accuracies."""
        hp = {"distill_type": self.distill_type, "seed": self.seed, "lr": self.lr, "epochs": self.epochs,
              "batch_size": self.micro_batch, "accumulation": self.accum, "alpha": self.weights.alpha,
              "beta": self.weights.beta, "gamma_hidden": self.weights.gamma_hidden,
              "gamma_attention": self.weights.gamma_attention, "temperature": self.weights.temperature,
              "deepspeed": bool(self.engine)}
        metrics = {f"hparam/{k}": v for k, v in final.items()
                   if k == "val_acc" or k.startswith("validation_accuracy_") or k == "validation_loss"}
        self.writer.add_hparams(hp, metrics, run_name=".")

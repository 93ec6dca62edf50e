"""One training run of a causal LM for one distill type and seed: the loop, checkpoints, logging.

The same loop fine-tunes the quickstart teacher (``sft`` on in-memory examples) and trains
every student trial (any distill type on streamed teacher shards). A run is a plain PyTorch
loop, or a DeepSpeed engine when ``training.use_deepspeed`` is set (one process, no launcher).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
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
from wbvb.train.setup import (accumulation_steps, autocast_dtype, deepspeed_config, free_port, micro_batch_size,
                              rng_states, seed_everything, set_rng_states)
from wbvb.train.student import PROJECTORS_FILE, StudentLoss


class NonFiniteLossError(RuntimeError):
    pass


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

    def _micro_step(self, batch: dict, last_of_group: bool) -> tuple[float, dict[str, float], Optional[float]]:
        """Backward one micro-batch; step the optimizer at the end of an accumulation group.

        Returns the loss, its components and the gradient norm (None unless the optimizer stepped).
        """
        try:
            with self.clock("forward"):
                loss, parts = self._forward_loss(batch)
                values = {k: float(v.detach()) for k, v in parts.items()}
            if not torch.isfinite(loss):
                return float("nan"), values, None
            if self.engine is not None:  # DeepSpeed scales by 1/accumulation and steps at boundaries
                # our boundaries, not its micro-step counter: groups restart each epoch (a short last
                # group) and the counter is not in its checkpoint (a mid-epoch resume)
                self.engine.set_gradient_accumulation_boundary(last_of_group)
                with self.clock("backward"):
                    self.engine.backward(loss)
                with self.clock("optimizer"):
                    self.engine.step()
                if not last_of_group:
                    return float(loss.detach()), values, None
                norm = self.engine.get_global_grad_norm()
                return float(loss.detach()), values, float(norm) if norm is not None else float("nan")
            with self.clock("backward"):
                scaled = loss / self.accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if not last_of_group:
                return float(loss.detach()), values, None
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
            return float(loss.detach()), values, float(norm)
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeError(
                f"GPU out of memory in a {self.distill_type} trial at micro-batch size {len(batch['example_ids'])} "
                f"(sequence length {batch['input_ids'].shape[1]}); lower training.batch_size / "
                "training.whitebox_batch_size (the effective batch is kept through accumulation) or "
                "sweep.gpus_per_trial packing") from exc

    # ---- evaluation ----------------------------------------------------------------------
    def full_weights(self):
        """Context in which the student holds its full weights (ZeRO-3 partitions them otherwise)."""
        if self.engine is not None and self.engine.zero_optimization_stage() == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.bundle.student.parameters()), modifier_rank=None)
        return contextlib.nullcontext()

    def evaluate(self, examples) -> dict:
        with self.full_weights():
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
                 "scheduler": self.scheduler.state_dict(), "rng": rng_states()}
        if self.engine is not None:
            self.engine.save_checkpoint(str(path / "deepspeed"), tag="wbvb")
        else:
            state["model"] = self.bundle.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
            state["scaler"] = self.scaler.state_dict() if self.scaler else None
        torch.save(state, path / "trainer_state.pt")

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "trainer_state.pt", map_location=self.device, weights_only=False)
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
        set_rng_states(state["rng"])
        self.global_step = state["global_step"]
        if self.writer is not None:  # TensorBoard drops what the stopped run logged after the checkpoint
            self.writer.close()
            self.writer = SummaryWriter(self.tb_dir, purge_step=self.global_step + 1)
        self.start_epoch, self.start_micro = position["epoch"], position["micro_batches"]
        self._resumed_tally = EpochTally(**position["tally"]) if position["tally"] else None

    def save_pretrained(self, path: Path) -> None:
        with self.full_weights():
            self.bundle.student.save_pretrained(path)
            if self.bundle.projectors is not None:  # trained with the student: kept with it
                torch.save(self.bundle.projectors.state_dict(), path / PROJECTORS_FILE)
        self.tokenizer.save_pretrained(path)

    # ---- the run ---------------------------------------------------------------------------
    def fit(self, source: BatchSource, eval_examples, on_epoch_end: Optional[Callable] = None,
            resume_from: Optional[Path] = None, on_checkpoint: Optional[Callable] = None) -> list[dict]:
        """Train the remaining epochs; ``on_epoch_end(metrics, epoch)`` after each epoch's evaluation,
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
                ev = self.evaluate(eval_examples)
                metrics.update({"validation_loss": ev["validation_loss"], "val_acc": ev["val_acc"],
                                **accuracy_metrics(ev)})
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
        group: dict[str, float] = {}
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
            if not math.isfinite(loss):
                tally.skipped += 1
                tally.bad_in_row += 1
                if tally.bad_in_row >= self.tr.max_bad_steps:
                    raise NonFiniteLossError(
                        f"{tally.bad_in_row} non-finite losses in a row at optimizer step {self.global_step} of the "
                        f"{self.distill_type} trial (seed {self.seed}), loss components {parts}; "
                        f"batch examples: {batch['example_ids'][:8]}")
                if last and self.engine is None:
                    self.optimizer.zero_grad(set_to_none=True)  # drop a group a bad batch touched
            else:
                tally.bad_in_row = 0
                tally.n_ok += 1
                tally.tokens += int(batch["attention_mask"].sum())
                for k, v in {"train_loss": loss, **parts}.items():
                    tally.sums[k] = tally.sums.get(k, 0.0) + v
                    group[k] = group.get(k, 0.0) + v
                group["n"] = group.get("n", 0) + 1
            if last:
                if norm is not None:
                    self.global_step += 1
                    with self.clock("logging"):
                        self._log_step(group, norm)
                    if on_checkpoint is not None and every and self.global_step % every == 0 and micro < n - 1:
                        t0 += self._mid_epoch_checkpoint(on_checkpoint, epoch, micro + 1, tally, t0)
                group = {}
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

    def _log_step(self, group: dict, grad_norm: float) -> None:
        """One optimizer step's scalars at x = steps done (the epoch's scalars share its last step's x)."""
        if not self.writer or not group.get("n"):
            return
        n = group["n"]
        self.writer.add_scalar("train/loss", group["train_loss"] / n, self.global_step)
        for k, v in group.items():
            if k not in ("n", "train_loss"):  # kd -> train/kd_loss, kd_weighted -> train/kd_loss_weighted
                name = k.removesuffix("_weighted") + "_loss" + ("_weighted" if k.endswith("_weighted") else "")
                self.writer.add_scalar(f"train/{name}", v / n, self.global_step)
        self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.global_step)
        self.writer.add_scalar("train/grad_norm", grad_norm, self.global_step)

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

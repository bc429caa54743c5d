"""One training run, epoch by epoch: the loop shared by `cpsweep train` and Ray Train workers.

`TrainingRun` owns data, model, optimizer and the `CriticalPeriod` for one
process (one DDP rank). Each epoch ends at the period's boundary (`period.step()`:
rotation, the rule, a scheduler's directive when one is attached); from the
switch epoch on the post-period recipe applies.
Per-step work stays on the device: losses and accuracies accumulate in device
tensors and the host syncs once per epoch (one all-reduce under DDP).
The validation split is evaluated when due (`eval_every`) and reported as `val/*`;
the test split, when the data have one, after the last epoch (and every
`data.test_every` epochs) as `test/*`, which no decision reads.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainables.core.config import OptimConfig, TrainConfig
from trainables.core.wire import PRUNED_FRACTION, SAMPLES, SAMPLES_TOTAL, eval_keys
from trainables.data.datasets import Dataset
from trainables.data.sampler import RepeatSampler
from trainables.data.sources import load_training_data
from trainables.data.streaming import StreamData, make_batches
from trainables.method.augment import make_generator
from trainables.method.infobatch import LossTable, all_gather_cat
from trainables.method.mixing import make_mix_rng, mix_batch, mixed_cross_entropy
from trainables.method.period import CriticalPeriod
from trainables.method.recipes import Phase, phase_for_epoch
from trainables.method.rotation import LayerRotation, unwrap_model
from trainables.models.builtin import build_model
from trainables.run.inputs import (
    Augment,
    input_dtype,
    is_token_ids,
    phase_augments,
    squared_error,
)
from trainables.run.optimizers import make_optimizer

__all__ = ["NonFiniteLossError", "TrainingRun", "lr_factor", "select_device"]

log = logging.getLogger(__name__)

_MAX_DEVICE_DATA_BYTES = 2 * 1024**3  # keep the dataset on the GPU when it fits this budget


class NonFiniteLossError(RuntimeError):
    """Training diverged; the message says at which epoch and what to change."""


def select_device(choice: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present (the worker's local GPU), else CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA device is visible; use device=auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _compiled(model: nn.Module, backend: str) -> nn.Module:
    """torch.compile'd `model`. Compiled code stays cached in the process (and inductor's
    kernels on disk), so a reused trial process compiles the next trial's model faster."""
    log.info("torch.compile(backend=%s) %s", backend, type(model).__name__)
    return torch.compile(model, backend=backend)  # type: ignore[return-value]


def _eval_batch_size(train_batch: int, device: torch.device) -> int:
    """Evaluation holds no activations for backward: on a GPU, batches of up to 4,096
    samples (8x the training batch) keep it busy; on the CPU larger batches gain nothing."""
    if device.type == "cuda":
        return max(train_batch, min(4096, 8 * train_batch))
    return max(256, train_batch)


def lr_factor(cfg: OptimConfig, epoch: int, budget: int) -> float:
    """Multiplier of the base learning rate during 1-based `epoch` of `budget`."""
    if cfg.warmup_epochs and epoch <= cfg.warmup_epochs:
        return epoch / cfg.warmup_epochs
    done = epoch - 1  # epochs completed before this one
    if cfg.schedule == "step":  # paper: x0.1 at 50% and 75% of the budget
        return float(cfg.gamma ** sum(done >= m * budget for m in cfg.milestones))
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * done / budget))
    return 1.0


def _check_finite(loss: float, epoch: int, optim: OptimConfig) -> None:
    """NonFiniteLossError naming the optimizer and the fixes when an epoch's loss is NaN/inf."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"train/loss became {loss} in epoch {epoch} "
            f"(optim.name={optim.name}, optim.lr={optim.lr}); "
            "lower optim.lr, add warm-up (optim.warmup_epochs) or disable amp"
        )


class TrainingRun:
    """Data, model, optimizer and critical period of one process; `run_epoch` trains one epoch."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        device: torch.device | None = None,
        rank: int = 0,
        world_size: int = 1,
        dataset: Dataset | StreamData | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        self.distributed = world_size > 1
        self.device = device or select_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.batch_size < world_size:
            raise ValueError(f"batch_size={cfg.batch_size} is smaller than {world_size} workers")
        self._set_up_data(dataset or load_training_data(cfg.data, seed=cfg.seed))
        self._set_up_recipe()
        self._set_up_model()
        self.epoch = 0  # last completed epoch
        self.samples_total = 0

    def _set_up_data(self, data: Dataset | StreamData) -> None:
        """The sampler, batch sources, loss table and normalisation of this process's data."""
        cfg, rank, world_size = self.cfg, self.rank, self.world_size
        self.data = data
        # Float targets: regression with a squared-error loss, no accuracy, no classes to
        # stratify by. Integer inputs other than uint8 pixels: token ids, passed as int64.
        self.regression = data.train_y.is_floating_point()
        self.tokens = is_token_ids(input_dtype(data))
        n_train = int(data.train_y.shape[0])
        strata = torch.zeros(n_train, dtype=torch.int64) if self.regression else data.train_y
        # One sample order for both batch sources (trainables/data/streaming.py).
        self.sampler = RepeatSampler(strata, seed=cfg.seed, rank=rank, world_size=world_size)
        # Loss-aware pruning: the last loss of every sample, from the steps' own forward pass.
        self.loss_table = LossTable(n_train, self.device) if cfg.recipe.prunes else None
        self._data_device = torch.device("cpu")
        if isinstance(self.data, Dataset):
            nbytes = self.data.train_x.numel() * self.data.train_x.element_size()
            if nbytes <= _MAX_DEVICE_DATA_BYTES:
                self._data_device = self.device
        self.batches = make_batches(
            self.data,
            self.sampler,
            device=self.device,
            data_device=self._data_device,
            batch_size=cfg.batch_size // world_size,
            val_batch_size=_eval_batch_size(cfg.batch_size, self.device),
            workers=cfg.data.workers,
            prefetch=cfg.data.prefetch,
            rank=rank,
            world_size=world_size,
        )
        shape = (1, -1) + (1,) * (len(self.data.input_shape) - 1)
        self._mean = torch.tensor(self.data.mean, device=self.device).reshape(shape)
        self._std = torch.tensor(self.data.std, device=self.device).reshape(shape)

    def _set_up_recipe(self) -> None:
        """Each phase's augmentation and mixing, checked against the data before epoch 1."""
        self._augments = phase_augments(
            self.cfg.recipe,
            tuple(self.data.input_shape),
            tokens=self.tokens,
            regression=self.regression,
            say=self.rank == 0,
        )

    def _augment_for(self, phase: Phase) -> Augment | None:
        return self._augments["critical" if phase.name == "critical" else "after"]

    def _set_up_model(self) -> None:
        """The model (NHWC on CUDA, DDP, torch.compile), its critical period, optimizer, AMP."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # identical init on every rank (DDP also broadcasts)
        net = build_model(
            cfg.model, input_shape=self.data.input_shape, num_classes=self.data.num_classes
        ).to(self.device)
        # Image batches on CUDA in NHWC: cuDNN's tensor-core convolutions want it.
        self._channels_last = self.device.type == "cuda" and len(self.data.input_shape) == 3
        if self._channels_last:
            net = net.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        self.model: nn.Module = net
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if cfg.compile:
            self.model = _compiled(self.model, cfg.compile_backend)
        # rotation unwraps DDP and torch.compile: it reads the raw kernels
        self.period = CriticalPeriod(self.model, cfg.criterion, budget=cfg.epochs)
        self.optimizer = make_optimizer(cfg.optim, self.model.parameters())
        self._amp_dtype: torch.dtype | None = None
        self._scaler: torch.amp.GradScaler | None = None
        if cfg.amp and self.device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            self._amp_dtype = torch.bfloat16 if bf16 else torch.float16
            self._scaler = None if bf16 else torch.amp.GradScaler("cuda")

    # -- the critical period ------------------------------------------------------------

    @property
    def rotation(self) -> LayerRotation:
        return self.period.rotation

    @property
    def cp_end_epoch(self) -> int | None:
        return self.period.end_epoch

    @property
    def switch_epoch(self) -> int | None:
        return self.period.switch_epoch

    def end_period(self, end_epoch: int) -> None:
        """Record that the period ended at `end_epoch`; the next epoch uses the post recipe."""
        self.period.end(end_epoch)

    def phase(self, epoch: int) -> Phase:
        return phase_for_epoch(self.cfg.recipe, epoch, self.switch_epoch, self.cfg.epochs)

    # -- one epoch -------------------------------------------------------------------------

    def _prepare(
        self, x: torch.Tensor, phase: Phase | None, g: torch.Generator | None
    ) -> torch.Tensor:
        scale = x.dtype == torch.uint8
        x = x.to(self.device, non_blocking=True)
        x = x.long() if self.tokens else x.float()
        if scale:
            x = x / 255.0
        if phase is not None and g is not None:
            fn = self._augment_for(phase)
            if fn is not None:
                x = fn(x, g, phase.augment_strength)
        if self.tokens:
            return x
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        """Host floats summed over all ranks (one all-reduce)."""
        return self._reduce(
            [torch.tensor(v, device=self.device, dtype=torch.float64) for v in values]
        )

    def _reduce(self, values: list[torch.Tensor]) -> list[float]:
        """Sum device scalars over ranks and bring them to the host in one transfer."""
        t = torch.stack([v.double() for v in values])
        if self.distributed:
            dist.all_reduce(t)
        return t.cpu().tolist()

    def _train(self, epoch: int, phase: Phase) -> dict[str, float]:
        cfg = self.cfg
        lr = cfg.optim.lr * lr_factor(cfg.optim, epoch, cfg.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        plan = None
        if phase.prune is not None and self.loss_table is not None:
            plan = self.loss_table.plan(ratio=phase.prune.ratio, seed=cfg.seed, epoch=epoch)
        self.sampler.set_epoch(epoch, phase, None if plan is None else plan.keep)
        # With a loss table every step records its samples' losses from its own forward
        # pass; a pruned epoch also weights them, each step slicing the weights of this
        # rank's order (gathered once here: kept low-loss samples count 1 / (1 - ratio)).
        order_cpu = self.sampler.indices() if self.loss_table is not None else None
        step_w = None
        if plan is not None and order_cpu is not None:
            step_w = plan.weights[order_cpu].to(self.device, non_blocking=True)
        recorded: list[torch.Tensor] = []  # per-sample losses in the order's sequence
        local_bs = cfg.batch_size // self.world_size
        g = make_generator(self.device, cfg.seed, epoch, self.rank)
        mix_rng = make_mix_rng(cfg.seed, epoch, self.rank)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)  # float: mixed batches score lam / 1-lam
        start = 0  # position of the batch in this rank's order
        for xb, yb in self.batches.train_batches(self.sampler, local_bs):
            n = yb.numel()
            sample_w = None if step_w is None else step_w[start : start + n]
            step_loss, step_correct, per = self._step(
                xb, yb, phase, g, mix_rng, sample_w, record=order_cpu is not None
            )
            if per is not None:  # each sample's loss from this forward pass (no extra pass)
                recorded.append(per)
            start += n
            loss_sum += step_loss
            correct += step_correct
        if self.loss_table is not None and order_cpu is not None and recorded:
            gather = all_gather_cat if self.distributed else None
            self.loss_table.update(order_cpu, torch.cat(recorded), gather)
        count = torch.tensor(len(self.sampler), device=self.device)
        total_loss, total_correct, total = self._reduce([loss_sum, correct, count])
        _check_finite(total_loss, epoch, cfg.optim)
        accuracy = {} if self.regression else {"train/acc": total_correct / total}
        return {
            "train/loss": total_loss / total,
            **accuracy,
            "lr": lr,
            SAMPLES: int(total),
            PRUNED_FRACTION: 0.0 if plan is None else plan.pruned_fraction,
        }

    def _step(
        self,
        xb: torch.Tensor,
        yb: torch.Tensor,
        phase: Phase,
        g: torch.Generator,
        mix_rng: Any,
        sample_w: torch.Tensor | None,
        *,
        record: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimizer step: (loss x samples, correct, per-sample losses when `record`).

        Everything stays on the device: the epoch sums these without a host sync."""
        x = self._prepare(xb, phase, g)
        y = yb.to(self.device, non_blocking=True)
        x, mix = mix_batch(x, y, phase.mixup_alpha, phase.cutmix_alpha, mix_rng, g)
        with torch.autocast(self.device.type, self._amp_dtype, enabled=self._amp_dtype is not None):
            logits = self.model(x)
            per: torch.Tensor | None = None
            if record or sample_w is not None:  # one loss per sample: the step's loss from it
                per = self._per_sample_loss(logits, mix.y, mix)
                loss = per.mean() if sample_w is None else (per * sample_w).mean()
            elif self.regression:
                loss = squared_error(logits, y).mean()
            else:
                loss = mixed_cross_entropy(logits, mix)
        self.optimizer.zero_grad(set_to_none=True)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.regression:
            hit = torch.zeros((), device=self.device)
            return loss.detach().float() * y.shape[0], hit, None if per is None else per.detach()
        pred = logits.detach().argmax(1)
        hit = pred == mix.y
        if mix.lam < 1.0:  # credit the partner's label by its share
            hit = mix.lam * hit + (1.0 - mix.lam) * (pred == mix.y2)
        return loss.detach().float() * y.numel(), hit.sum(), None if per is None else per.detach()

    def _per_sample_loss(self, out: torch.Tensor, y: torch.Tensor, mix: Any) -> torch.Tensor:
        """One loss per sample: squared error (mean over outputs) or cross-entropy."""
        if self.regression:
            return squared_error(out, y).reshape(y.shape[0], -1).mean(1)
        return mixed_cross_entropy(out.float(), mix, reduction="none")

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss and accuracy on a held-out split: `val/*` or `test/*`."""
        loss_key, acc_key = eval_keys(split)
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        bs = _eval_batch_size(self.cfg.batch_size, self.device)
        for xb, yb in self.batches.eval_batches(split, bs):
            x = self._prepare(xb, None, None)
            y = yb.to(self.device)
            with torch.autocast(
                self.device.type, self._amp_dtype, enabled=self._amp_dtype is not None
            ):
                logits = self.model(x)
            if self.regression:
                loss_sum += squared_error(logits, y).reshape(y.shape[0], -1).mean(1).sum()
                continue
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        count = torch.tensor(self.batches.num_eval(split), device=self.device)
        total_loss, total_correct, total = self._reduce([loss_sum, correct, count])
        if self.regression:  # no accuracy: the loss (mean squared error) is the measure
            return {loss_key: total_loss / max(total, 1)}
        return {loss_key: total_loss / max(total, 1), acc_key: total_correct / max(total, 1)}

    def test_due(self, epoch: int) -> bool:
        """Measure the test split after `epoch`: the last one, or every `data.test_every`."""
        if not self.batches.has_split("test"):
            return False
        every = self.cfg.data.test_every
        return epoch == self.cfg.epochs or (every is not None and epoch % every == 0)

    def run_epoch(self) -> dict[str, Any]:
        """Train the next epoch, measure rotation, evaluate when due; returns its metrics."""
        epoch = self.epoch + 1
        phase = self.phase(epoch)
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {"epoch": epoch, "phase": phase.name}
        metrics.update(self._train(epoch, phase))
        t1 = time.perf_counter()
        decision = self.period.step()
        t2 = time.perf_counter()
        if epoch % self.cfg.eval_every == 0 or epoch == self.cfg.epochs:
            metrics.update(self.evaluate("val"))
        t3 = time.perf_counter()
        if self.test_due(epoch):
            metrics.update(self.evaluate("test"))
        t4 = time.perf_counter()
        self.epoch = epoch
        self.samples_total += metrics[SAMPLES]
        metrics.update(decision.metrics())
        metrics.update(
            {
                "recipe/repeats": phase.repeats,
                "recipe/data_fraction": phase.data_fraction,
                "recipe/augment": int(self._augment_for(phase) is not None),
                "recipe/mixup_alpha": phase.mixup_alpha,
                "recipe/cutmix_alpha": phase.cutmix_alpha,
                SAMPLES_TOTAL: self.samples_total,
                "time/train_s": t1 - t0,
                "time/rotation_s": t2 - t1,
                "time/eval_s": t3 - t2,
                "time/test_s": t4 - t3,
                "time/epoch_s": t4 - t0,
            }
        )
        return metrics

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self._scaler.state_dict() if self._scaler else None,
            "period": self.period.state_dict(),
            "epoch": self.epoch,
            "samples_total": self.samples_total,
            "loss_table": self.loss_table.state_dict() if self.loss_table is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "pid": os.getpid(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self._scaler is not None and state.get("scaler"):
            self._scaler.load_state_dict(state["scaler"])
        self.period.load_state_dict(state["period"])
        self.epoch = int(state["epoch"])
        self.samples_total = int(state["samples_total"])
        if self.loss_table is not None and state.get("loss_table") is not None:
            self.loss_table.load_state_dict(state["loss_table"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

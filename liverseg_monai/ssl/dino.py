"""DINO: self-distillation with no labels (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021), for ResNet encoders on H&E tiles.

The parts, each passed in rather than hard-wired (torchvision-detection style composition):

- a **backbone**: :func:`resnet_backbone` (torchvision ``resnet50(weights=None)`` with ``fc`` removed,
  ``resnet18`` for quick tests), ``(B, 3, H, W) -> (B, D)``;
- a **head**: :class:`DINOHead`, MLP -> L2-normalised bottleneck -> weight-normalised last layer with
  ``out_dim`` prototypes; :class:`MultiCropWrapper` runs backbone and head over crops of several sizes;
- a **loss**: :class:`DINOLoss`, cross-entropy between the sharpened, centred teacher distribution on
  the global crops and the student distribution on every other crop; it keeps the EMA centre and
  reports the collapse monitors (teacher entropy, teacher-student KL);
- the **update**: :class:`DINOIteration`, a MONAI ``SupervisedTrainer`` ``iteration_update`` that
  applies the schedules (learning-rate warm-up + cosine, weight-decay cosine, teacher momentum
  cosine), clips gradients, freezes the last head layer in the first epoch(s) and updates the EMA
  teacher (:func:`ema_update`).

Shapes: crops ``[g1, g2, l1..lN]`` each ``(B, 3, S, S)``; student output ``((2 + N) * B, K)``, teacher
output ``(2 * B, K)`` (global crops only), ``K = out_dim``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "DINOHead",
    "DINOIteration",
    "DINOLoss",
    "MultiCropWrapper",
    "cancel_last_layer_gradients",
    "clip_gradients",
    "collapse_metrics",
    "cosine_schedule",
    "ema_update",
    "make_teacher",
    "param_groups",
    "resnet_backbone",
    "unwrap",
]


# --------------------------------------------------------------------------------------- parts
def resnet_backbone(arch: str = "resnet50", in_channels: int = 3) -> nn.Module:
    """A randomly initialised torchvision ResNet with ``fc`` replaced by identity: ``(B, C, H, W) -> (B, D)``.

    ``D`` (``.embed_dim``) is 2048 for ResNet-50/101/152 and 512 for ResNet-18/34. The state dict keeps
    torchvision's key names (``conv1.weight``, ``layer1.0.conv1.weight``, ...), so a saved backbone loads
    into any torchvision-style encoder (:mod:`liverseg_monai.networks.weights`).

    Args:
        arch: a torchvision ResNet constructor name (``resnet18``, ``resnet34``, ``resnet50``, ...).
        in_channels: input channels (3 for RGB H&E).
    """
    import torchvision

    if not arch.startswith(("resnet", "wide_resnet", "resnext")) or not hasattr(torchvision.models, arch):
        raise ValueError(f"unknown ResNet architecture '{arch}'")
    net = getattr(torchvision.models, arch)(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.embed_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


class DINOHead(nn.Module):
    """The DINO projection head: MLP, L2-normalised bottleneck, weight-normalised last layer.

    ``(B, in_dim) -> (B, out_dim)`` logits over ``out_dim`` prototypes.

    Args:
        in_dim: backbone embedding size (2048 for ResNet-50).
        out_dim: number of prototypes ``K`` (65536 in DINO; a few thousand suffice for small data).
        hidden_dim: MLP width (2048).
        bottleneck_dim: bottleneck size before the last layer (256).
        nlayers: MLP layers (3).
        use_bn: batch norm in the MLP (DINO's ResNet-50 setting uses it).
        norm_last_layer: fix the weight-norm gain of the last layer to 1 (DINO's default, for stability).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad = not norm_last_layer

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """Run ``backbone`` once per crop resolution and ``head`` on all embeddings.

    ``forward([g1, g2, l1, ...])`` with crops ``(B, 3, S_i, S_i)`` returns ``(n_crops * B, K)`` in crop
    order. The backbone's keys are ``backbone.*`` (torchvision names after the prefix).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        outputs, start = [], 0
        while start < len(crops):  # consecutive crops of one size go through the backbone together
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            outputs.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        return self.head(torch.cat(outputs))


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or itself)."""
    return module.module if hasattr(module, "module") and isinstance(module.module, nn.Module) else module


def make_teacher(student: nn.Module) -> nn.Module:
    """A copy of ``student`` (unwrapped from DDP) with gradients off: the EMA teacher's starting point."""
    teacher = copy.deepcopy(unwrap(student))
    for p in teacher.parameters():
        p.requires_grad = False
    return teacher


def param_groups(model: nn.Module) -> list[dict]:
    """DINO's optimiser groups: weights with weight decay, biases and norm parameters without.

    The first group is the regularised one; :class:`DINOIteration` sets its weight decay per step.
    Parameters with ``requires_grad=False`` (the fixed weight-norm gain) are left out.
    """
    regularized, not_regularized = [], []
    for name, p in unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        (not_regularized if name.endswith(".bias") or p.ndim == 1 else regularized).append(p)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------- loss
def collapse_metrics(teacher_probs: torch.Tensor, student_log_probs: Sequence[torch.Tensor],
                     n_global: int) -> dict[str, float]:
    """Collapse monitors of DINO (paper, Fig. 7): teacher entropy and KL(teacher || student).

    Args:
        teacher_probs: ``(n_global * B, K)`` centred, sharpened teacher probabilities.
        student_log_probs: per crop ``(B, K)`` student log-probabilities.
        n_global: number of global crops (the teacher's views).

    Returns:
        ``teacher_entropy`` (mean over samples, nats; 0 = one-hot collapse, ``log K`` = uniform
        collapse) and ``teacher_student_kl`` (mean over the loss's (teacher view, student view) pairs).
    """
    with torch.no_grad():
        log_t = torch.log(teacher_probs.clamp_min(1e-12))
        entropy = -(teacher_probs * log_t).sum(-1)
        teachers = teacher_probs.chunk(n_global)
        log_ts = log_t.chunk(n_global)
        kl, n = 0.0, 0
        for iq, (q, log_q) in enumerate(zip(teachers, log_ts)):
            for v, log_s in enumerate(student_log_probs):
                if v == iq:
                    continue
                kl += float((q * (log_q - log_s)).sum(-1).mean())
                n += 1
    return {"teacher_entropy": float(entropy.mean()), "teacher_student_kl": kl / max(n, 1)}


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """DINOv2's teacher targets: ``exp(scores / temperature)`` alternately normalised over prototypes and
    over the (global, all-reduced across processes) batch, so each of the ``K`` prototypes receives
    ``1 / K`` of the batch's mass and each sample's row sums to 1.

    Args:
        scores: ``(B, K)`` teacher logits.
        temperature: teacher temperature.
        iterations: normalisation rounds.
    """
    distributed = dist.is_available() and dist.is_initialized()
    scores = scores.float()
    top = scores.max().clone()  # a shift common to all scores (and ranks) cancels in the normalisation
    if distributed:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp((scores - top) / temperature).t()  # (K, B)
    n_samples = torch.tensor(float(q.shape[1]), device=q.device)
    total = q.sum()
    if distributed:
        dist.all_reduce(n_samples)
        dist.all_reduce(total)
    q = q / total
    k = q.shape[0]
    for _ in range(max(int(iterations), 1)):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(rows)
        q = q / rows / k
        q = q / q.sum(dim=0, keepdim=True) / n_samples
    return (q * n_samples).t()


class DINOLoss(nn.Module):
    """The DINO loss with teacher centring and sharpening.

    ``loss = mean over pairs (t, s), s != t of  H(softmax((T_t - c) / tau_t), softmax(S_s / tau_s))``,
    pairs of a teacher global view ``t`` and every other student view ``s``. After each call the centre
    moves towards the batch mean of the teacher logits: ``c <- m c + (1 - m) mean(T)`` (all-reduced
    across processes).

    Args:
        out_dim: ``K``, the number of prototypes.
        n_global_crops: teacher views (2).
        teacher_temp: teacher temperature after warm-up (0.04 in DINO; up to 0.07).
        warmup_teacher_temp: starting teacher temperature (0.04).
        warmup_teacher_temp_epochs: epochs of linear warm-up of the teacher temperature (0 or 30 in DINO).
        student_temp: student temperature (0.1).
        center_momentum: EMA momentum ``m`` of the centre (0.9).
        centering: ``"ema"`` (DINO: subtract the EMA centre, then sharpen) or ``"sinkhorn"`` (DINOv2's
            Sinkhorn-Knopp normalisation of the sharpened teacher scores over the batch, which spreads
            the batch evenly over the prototypes; the EMA centre is still tracked and saved).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3 in DINOv2).

    Attributes:
        center: ``(1, K)`` buffer (saved in checkpoints with the loss's state dict).
        last_stats: collapse monitors of the last call (:func:`collapse_metrics`) and the teacher
            temperature used.
    """

    def __init__(
        self,
        out_dim: int,
        n_global_crops: int = 2,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "ema",
        sinkhorn_iterations: int = 3,
    ):
        super().__init__()
        if centering not in ("ema", "sinkhorn"):
            raise ValueError(f"centering must be 'ema' or 'sinkhorn', got {centering!r}")
        self.centering = centering
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.n_global_crops = n_global_crops
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_stats: dict[str, float] = {}

    def teacher_temperature(self, epoch: float) -> float:
        """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp`` over the warm-up epochs."""
        if epoch >= self.warmup_teacher_temp_epochs or self.warmup_teacher_temp_epochs <= 1:
            return self.teacher_temp
        frac = epoch / (self.warmup_teacher_temp_epochs - 1)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    def teacher_probs(self, teacher_output: torch.Tensor, epoch: float) -> torch.Tensor:
        """Centred, sharpened teacher distribution (no gradient): ``softmax((T - c) / tau_t)``, or with
        ``centering="sinkhorn"`` the Sinkhorn-Knopp normalisation of ``exp(T / tau_t)``."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_output.detach(), self.teacher_temperature(epoch), self.sinkhorn_iterations)
        return F.softmax((teacher_output.detach() - self.center) / self.teacher_temperature(epoch), dim=-1)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: float = 0) -> torch.Tensor:
        batch = teacher_output.shape[0] // self.n_global_crops
        if batch == 0 or student_output.shape[0] % batch or teacher_output.shape[0] % self.n_global_crops:
            raise ValueError(f"student output {tuple(student_output.shape)} and teacher output "
                             f"{tuple(teacher_output.shape)} do not split into {self.n_global_crops} global crops")
        n_crops = student_output.shape[0] // batch
        student_log = F.log_softmax(student_output / self.student_temp, dim=-1).chunk(n_crops)
        t_probs = self.teacher_probs(teacher_output, epoch)
        total, n_pairs = student_output.new_zeros(()), 0
        for iq, q in enumerate(t_probs.chunk(self.n_global_crops)):
            for v in range(n_crops):
                if v == iq:  # a view is never compared with itself
                    continue
                total = total + (-q * student_log[v]).sum(dim=-1).mean()
                n_pairs += 1
        total = total / n_pairs
        self.last_stats = collapse_metrics(t_probs, [s.detach() for s in student_log], self.n_global_crops)
        self.last_stats["teacher_temp"] = self.teacher_temperature(epoch)
        self.update_center(teacher_output)
        return total

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * mean over the (global) batch of the teacher logits``."""
        batch_sum = teacher_output.detach().float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_output.shape[0]), device=teacher_output.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        batch_center = batch_sum / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


# ------------------------------------------------------------------------------ schedules, EMA
def cosine_schedule(step: float, total_steps: int, base: float, final: float,
                    warmup_steps: int = 0, warmup_start: float = 0.0) -> float:
    """Linear warm-up then half-cosine decay, as in DINO's ``cosine_scheduler``.

    ``warmup_start`` at step 0, ``base`` at ``warmup_steps``, ``final`` at ``total_steps - 1`` (and
    after). Steps are iterations counted from 0 (fractional steps allowed).
    """
    if step < warmup_steps:
        return warmup_start + (base - warmup_start) * step / warmup_steps
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` for every parameter (not buffers).

    Parameters are matched by name (the student may be DDP-wrapped); the teacher's batch-norm
    statistics are its own, as in DINO.
    """
    student_params = dict(unwrap(student).named_parameters())
    for name, t in unwrap(teacher).named_parameters():
        s = student_params[name]
        t.mul_(momentum).add_(s.detach().to(t.dtype), alpha=1.0 - momentum)


def clip_gradients(model: nn.Module, clip: float) -> None:
    """DINO's per-parameter gradient clipping: each gradient's norm is limited to ``clip``."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.detach().norm(2)
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)


def cancel_last_layer_gradients(model: nn.Module) -> None:
    """Drop the gradients of the head's last layer (kept frozen during the first epoch in DINO)."""
    for name, p in unwrap(model).named_parameters():
        if "last_layer" in name:
            p.grad = None


# --------------------------------------------------------------------------------- the update
class DINOIteration:
    """One DINO step, as the ``iteration_update`` of a MONAI ``SupervisedTrainer``.

    The trainer supplies the student (``network``), the optimiser (groups from :func:`param_groups`)
    and the loss (``loss_function``, e.g. :class:`DINOLoss`); this object holds the teacher and the
    schedules. Schedules are functions of ``engine.state.iteration`` / ``epoch_length`` /
    ``max_epochs``, so a resumed run continues them where it stopped.

    Args:
        teacher: the EMA teacher (:func:`make_teacher` of the student), already on the device.
        crops_key: batch key holding the list of crops ``[g1, g2, l1, ...]``.
        n_global_crops: how many leading crops the teacher sees.
        lr: peak learning rate after warm-up (DINO: ``0.0005 * batch_size / 256`` with AdamW).
        min_lr: learning rate at the end of the cosine decay.
        warmup_epochs: epochs of linear learning-rate warm-up from 0.
        weight_decay, weight_decay_end: cosine weight-decay schedule of the first optimiser group.
        momentum_teacher: EMA momentum at the start; it follows a cosine to 1.
        clip_grad: per-parameter gradient norm limit (0: no clipping).
        freeze_last_layer: epochs during which the head's last layer is not updated.

    Returns (per call) ``engine.state.output``, a one-item list of a dict: ``loss``, ``lr``, ``weight_decay``, ``momentum``,
    ``teacher_temp``, ``teacher_entropy``, ``teacher_student_kl``.
    """

    def __init__(
        self,
        teacher: nn.Module,
        crops_key: str = "crops",
        n_global_crops: int = 2,
        lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: float = 10,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        momentum_teacher: float = 0.996,
        clip_grad: float = 3.0,
        freeze_last_layer: int = 1,
    ):
        self.teacher = teacher
        self.crops_key = crops_key
        self.n_global_crops = n_global_crops
        self.lr, self.min_lr, self.warmup_epochs = lr, min_lr, warmup_epochs
        self.weight_decay, self.weight_decay_end = weight_decay, weight_decay_end
        self.momentum_teacher = momentum_teacher
        self.clip_grad = clip_grad
        self.freeze_last_layer = freeze_last_layer

    def schedules(self, step: int, epoch_length: int, max_epochs: int) -> dict[str, float]:
        """Learning rate, weight decay and teacher momentum at iteration ``step`` (from 0)."""
        total = max(epoch_length * max_epochs, 1)
        warmup = int(round(self.warmup_epochs * epoch_length))
        warmup = min(warmup, total - 1)
        return {
            "lr": cosine_schedule(step, total, self.lr, self.min_lr, warmup_steps=warmup),
            "weight_decay": cosine_schedule(step, total, self.weight_decay, self.weight_decay_end),
            "momentum": cosine_schedule(step, total, self.momentum_teacher, 1.0),
        }

    def __call__(self, engine, batchdata: dict) -> list[dict]:
        student, optimizer, loss_fn = engine.network, engine.optimizer, engine.loss_function
        epoch_length = engine.state.epoch_length
        step = engine.state.iteration - 1
        epoch = engine.state.epoch - 1
        sched = self.schedules(step, epoch_length, engine.state.max_epochs)
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = sched["lr"]
            if i == 0:
                group["weight_decay"] = sched["weight_decay"]

        device = engine.state.device
        crops = [c.to(device, non_blocking=getattr(engine, "non_blocking", False)) for c in batchdata[self.crops_key]]
        student.train()
        amp = bool(getattr(engine, "amp", False))
        with torch.autocast(device_type=torch.device(device).type, enabled=amp, **(getattr(engine, "amp_kwargs", None) or {})):
            with torch.no_grad():
                teacher_output = self.teacher(crops[: self.n_global_crops])
            student_output = student(crops)
            loss = loss_fn(student_output.float(), teacher_output.float(), epoch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"DINO loss is {loss.item()} at iteration {engine.state.iteration}; stopping")

        optimizer.zero_grad(set_to_none=True)
        scaler = getattr(engine, "scaler", None) if amp else None
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.clip_grad:
            clip_gradients(student, self.clip_grad)
        if epoch < self.freeze_last_layer:
            cancel_last_layer_gradients(student)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        ema_update(self.teacher, student, sched["momentum"])
        stats = dict(getattr(loss_fn, "last_stats", {}) or {})
        # a one-item list, like MONAI's decollated trainer outputs, so `from_engine([...], first=True)`
        # (StatsHandler, MLflow tracking) reads it
        return [{"loss": loss.detach(), **sched, **stats}]

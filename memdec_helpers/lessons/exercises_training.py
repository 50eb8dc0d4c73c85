"""Exercises on training the Memory Decoder (lesson 03): write the loss β·KL + (1−β)·CE from
sparse targets, and write one training step.

The loss is checked against a dense brute force (value and gradient, at β = 1, 0 and the
lesson's β, on the lesson's batch and on a small batch with padding entries); the step against
a reference step on a deep copy of the same model (the calls it makes, in order, and the
parameters after two steps)."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..core.loss import memdec_loss
from ..runtime.training import lr_factor, make_optimizer
from .exercise_kit import WrongAnswer, exercise, function, near, returned

LOSS_SIGNATURE = "memdec_loss_by_hand(log_probs, target_ids, target_probs, labels, beta)"
MAX_POSITIONS = 64  # positions of the lesson's batch the loss check uses (dense reference)


@exercise("write " + LOSS_SIGNATURE + " -> the loss, a tensor with its gradient: β·KL(p_kNN ‖ "
          "p_Mem) + (1−β)·CE, each averaged over positions, from log-probs [B, T, V] and sparse "
          "targets [B, T, m] (probability 0 on padding)",
          "gather log_probs at target_ids; KL per position = Σ over entries with p > 0 of "
          "p · (log p − gathered) (torch.where(p > 0, ..., 0): padding has p = 0); CE per "
          "position = −log_probs.gather(-1, labels[..., None]); .mean() over positions; stay in "
          "torch (no float(), .item(), .tolist() or numpy: they cut the gradient)")
def memdec_loss_by_hand(answer: Any, logits: Any, target_ids: Any, target_probs: Any,
                        labels: Any, beta: float = 0.5) -> str:
    """Lesson 03: the learner's loss function, against a dense brute force."""
    loss_fn = function(answer, LOSS_SIGNATURE)
    lesson = _loss_inputs(logits, target_ids, target_probs, labels)
    for inputs, where in ((lesson, "the lesson's batch"), (_padded_inputs(lesson[0]),
                                                          "a batch with padding entries (p = 0)")):
        _check_loss_on(loss_fn, inputs, float(beta), where)
    positions = lesson[0].shape[0] * lesson[0].shape[1]
    return (f"your loss equals a dense brute-force β·KL + (1−β)·CE, value and gradient, on "
            f"{positions} positions of the lesson's batch and on a batch with padding entries")


def _loss_inputs(logits: Any, target_ids: Any, target_probs: Any,
                 labels: Any) -> tuple[torch.Tensor, ...]:
    """The lesson's batch as float64 logits [B, T, V] and targets, at most 2 × MAX_POSITIONS
    positions (the dense reference holds [B, T, V])."""
    logits = torch.as_tensor(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits should be [B, T, V], got {tuple(logits.shape)}")
    cut = (slice(0, 2), slice(0, MAX_POSITIONS))
    return (logits.detach()[cut].double().cpu(), torch.as_tensor(target_ids)[cut].long().cpu(),
            torch.as_tensor(target_probs)[cut].double().cpu(), torch.as_tensor(labels)[cut].long().cpu())


def _padded_inputs(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Two sequences of three positions over the lesson's vocabulary, targets with two padding
    entries (probability 0) per row."""
    g = torch.Generator().manual_seed(0)
    vocab = logits.shape[-1]
    z = logits[:2, :3].clone() if logits.shape[1] >= 3 else torch.randn(2, 3, vocab, generator=g,
                                                                          dtype=torch.float64)
    z = z + torch.randn(z.shape, generator=g, dtype=torch.float64)
    ids = torch.stack([torch.randperm(vocab, generator=g)[:4] for _ in range(6)]).view(2, 3, 4)
    p = torch.tensor([0.65, 0.35, 0.0, 0.0], dtype=torch.float64).expand(2, 3, 4).clone()
    labels = torch.randint(0, vocab, (2, 3), generator=g)
    return z, ids, p, labels


def dense_reference(z: torch.Tensor, ids: torch.Tensor, p: torch.Tensor, labels: torch.Tensor,
                    beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, kl, ce) from a dense [B, T, V] target: the brute force the check trusts."""
    log_q = torch.log_softmax(z, dim=-1)
    dense = torch.zeros_like(log_q).scatter_add(-1, ids, p)  # padding adds 0 to some id
    terms = torch.where(dense > 0, dense * (dense.clamp_min(1e-300).log() - log_q),
                        torch.zeros_like(dense))
    kl = terms.sum(-1).mean()
    ce = -log_q.gather(-1, labels[..., None]).mean()
    return beta * kl + (1 - beta) * ce, kl, ce


def _run(loss_fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...],
         beta: float) -> tuple[Any, torch.Tensor]:
    """The learner's loss on the inputs (log-probs of a fresh leaf), and that leaf."""
    z, ids, p, labels = inputs
    leaf = z.clone().requires_grad_()
    out = returned(loss_fn(torch.log_softmax(leaf, dim=-1), ids.clone(), p.clone(), labels.clone(),
                        beta))
    return out, leaf


def _value(out: Any) -> float:
    """The loss as a float; WrongAnswer when it is not one number."""
    if isinstance(out, tuple):
        raise WrongAnswer("return the loss alone (one tensor), not a tuple")
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise WrongAnswer(f"the loss should be one number, got a tensor of shape "
                              f"{tuple(out.shape)}: average over positions (.mean())")
        return float(out.detach())
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return float(out)
    raise WrongAnswer(f"the loss should be a tensor, got {type(out).__name__}")


def _check_loss_on(loss_fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], beta: float,
                   where: str) -> None:
    """Value at β = 1 (the KL alone), β = 0 (the CE alone) and the lesson's β; then the gradient."""
    z, ids, p, labels = inputs
    for b in (1.0, 0.0, beta):
        value = _value(_run(loss_fn, inputs, b)[0])
        right = float(dense_reference(z, ids, p, labels, b)[0])
        if not near(value, right, 1e-4):
            raise WrongAnswer(f"on {where}, at β = {b:g}: "
                              + _loss_mistake(value, right, inputs, b))
    grad_beta = beta if 0.0 < beta < 1.0 else 0.5  # both terms present
    out, leaf = _run(loss_fn, inputs, grad_beta)
    _check_gradient(out, leaf, inputs, grad_beta, where)


def _loss_mistake(value: float, right: float, inputs: tuple[torch.Tensor, ...], beta: float) -> str:
    """Name the mistake behind a wrong loss value."""
    if math.isnan(value):
        return ("nan: padding entries have p = 0, and 0 · log 0 is nan in floats; keep only the "
                "entries with p > 0 (torch.where(p > 0, ..., 0))")
    z, ids, p, labels = inputs
    log_q = torch.log_softmax(z, dim=-1)
    at = log_q.gather(-1, ids)  # [B, T, m]
    used = p > 0
    log_p = torch.where(used, p.clamp_min(1e-300).log(), torch.zeros_like(p))
    zero = torch.zeros_like(p)
    positions = z.shape[0] * z.shape[1]
    ce_terms = -log_q.gather(-1, labels[..., None])[..., 0]
    kl_terms = torch.where(used, p * (log_p - at), zero).sum(-1)
    kl, ce = kl_terms.mean(), ce_terms.mean()
    candidates = {
        "the KL's direction is reversed: KL(p_kNN ‖ p_Mem) = Σ p (log p − log q), with the "
        "target p outside the log ratio (the reverse, Σ q (log q − log p), is mode-seeking)":
            torch.where(used, at.exp() * (at - log_p), zero).sum(-1).mean(),
        "that is the soft cross-entropy −Σ p log q: the KL also adds Σ p log p (the same "
        "gradient, another value)": -torch.where(used, p * at, zero).sum(-1).mean(),
        "use log-probabilities: log q (log_probs, gathered), not q = exp(log q)":
            torch.where(used, p * (log_p - at.exp()), zero).sum(-1).mean(),
        "use log p, not p, in p · (log p − log q)":
            torch.where(used, p * (p - at), zero).sum(-1).mean(),
        "the sign is flipped: KL = Σ p (log p − log q) >= 0": -kl,
        "average over positions, do not sum (the loss must not grow with the batch)":
            kl_terms.sum(),
        "sum over the m entries of a row, then average over positions (not a mean over entries)":
            torch.where(used, p * (log_p - at), zero).mean(-1).mean(),
    }
    if beta == 1.0:
        candidates["β weighs the KL: β·KL + (1−β)·CE (at β = 1 yours gives the cross-entropy)"] = ce
    if beta == 0.0:
        candidates = {
            "β weighs the KL: β·KL + (1−β)·CE (at β = 0 yours gives the KL)": kl,
            "average the cross-entropy over positions, do not sum": ce_terms.sum(),
            "the cross-entropy is MINUS the log-probability of the label": -ce,
            "the cross-entropy is −log q(label), with log q the log-probs (not q)":
                -log_q.exp().gather(-1, labels[..., None]).mean(),
        }
    elif beta != 1.0:
        candidates = {"β weighs the KL: β·KL + (1−β)·CE, not β·CE + (1−β)·KL":
                          beta * ce + (1 - beta) * kl,
                      "average over positions, do not sum": beta * kl_terms.sum() + (1 - beta) * ce_terms.sum(),
                      **candidates}
    for why, candidate in candidates.items():
        if near(value, float(candidate), 1e-4):
            return why
    return (f"expected {right:.6f}, got {value:.6f} (a dense brute force over {positions} "
            f"positions)")


def _check_gradient(out: Any, leaf: torch.Tensor, inputs: tuple[torch.Tensor, ...], beta: float,
                    where: str) -> None:
    """WrongAnswer unless the learner's loss has the brute force's gradient with respect to
    the logits."""
    z, ids, p, labels = inputs
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise WrongAnswer("the value is right but your loss has NO gradient: a Python number "
                          "(float(), .item(), .tolist(), numpy) or .detach() cuts it from the "
                          "model — the float() bug of a naive first version. Stay in torch")
    mine, = torch.autograd.grad(out, leaf, allow_unused=True)
    mine = torch.zeros_like(leaf) if mine is None else mine
    ref_leaf = z.clone().requires_grad_()
    loss, _, ce = dense_reference(ref_leaf, ids, p, labels, beta)
    right, = torch.autograd.grad(loss, ref_leaf, retain_graph=True)
    if _close(mine, right):
        return
    ce_only, = torch.autograd.grad((1 - beta) * ce, ref_leaf)
    if _close(mine, ce_only):
        raise WrongAnswer(f"on {where}: the value is right but the KL term sends no gradient: its "
                          "log-probs were read out as numbers (float(), .item(), .tolist(), "
                          ".detach(), numpy) — the float() bug of a naive first version: the "
                          "model would train on the cross-entropy alone. Keep the gather in torch")
    worst = float((mine - right).abs().max())
    raise WrongAnswer(f"on {where}: the value is right but the gradient with respect to the "
                      f"logits differs from a dense brute force's by up to {worst:.2e}")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Gradients equal up to float32 rounding, relative to the largest entry."""
    return bool((a.double() - b).abs().max() <= 1e-4 * max(float(b.abs().max()), 1e-12))


# --- one training step ---------------------------------------------------------------------

STEP_SIGNATURE = "training_step(model, batch, optimizer, schedule, beta, grad_clip)"
STEP_RTOL = 0.05  # relative size of the difference in parameter change allowed after 2 steps


@exercise("write " + STEP_SIGNATURE + " -> the loss (a number): one optimizer step of the "
          "Memory Decoder on one batch",
          "logits = model(batch['input_ids']).logits; loss = β·KL + (1−β)·CE (plain_memdec_loss "
          "above); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), "
          "grad_clip); optimizer.step(); schedule.step(); optimizer.zero_grad(); return "
          "loss.item()")
def training_step(answer: Any, model: Any, batch: dict, profile: Any) -> str:
    """Lesson 03: two of the learner's steps on a deep copy of `model`, watched (backward,
    step, schedule, gradients left behind), then compared with two reference steps."""
    step_fn = function(answer, STEP_SIGNATURE)
    batch = {name: torch.as_tensor(t)[:1] for name, t in batch.items()}  # one sequence
    beta = float(profile.beta)
    clip = _binding_clip(model, batch, beta, float(profile.grad_clip))
    start = copy.deepcopy(model).float().eval()  # dropout off: both runs see the same model
    ref_model, ref_losses = _steps(_reference_step, start, batch, profile, beta, clip)
    mine_model, losses = _steps(step_fn, start, batch, profile, beta, clip, watch=True)
    got, want = losses[0], ref_losses[0]  # the first step starts from the same weights
    if not isinstance(got, (int, float, torch.Tensor)) or isinstance(got, bool):
        raise WrongAnswer(f"return the step's loss (loss.item()), got {type(got).__name__}")
    if not near(float(got), want, 1e-3):
        raise WrongAnswer(f"the step's loss is {float(got):.5f}, a reference step's {want:.5f}: "
                          "β·KL + (1−β)·CE with β = beta, on the batch given")
    gap = _parameter_gap(start, mine_model, ref_model)
    if gap > STEP_RTOL:
        raise WrongAnswer(f"after two steps your parameters moved differently from a reference "
                          f"step's (relative difference {gap:.2f}): check the loss and the order "
                          "backward, clip, optimizer.step, schedule.step, zero_grad")
    return ("your step makes the same calls in the right order and moves the parameters as a "
            f"reference step does (two steps on a copy of the model; relative difference {gap:.0e})")


def _reference_step(model: Any, batch: dict, optimizer: Any, schedule: Any, beta: float,
                    grad_clip: float) -> float:
    """The step of the package's trainer, for one micro-batch."""
    logits = model(batch["input_ids"]).logits
    loss, _, _ = memdec_loss(logits, batch["target_ids"], batch["target_probs"], batch["labels"], beta)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    return loss.item()


def _binding_clip(model: Any, batch: dict, beta: float, grad_clip: float) -> float:
    """The profile's grad_clip, lowered to half the first step's gradient norm so that clipping
    changes the step (and a missing clip shows)."""
    probe = copy.deepcopy(model).float().eval()
    device = next(probe.parameters()).device
    logits = probe(batch["input_ids"].to(device)).logits
    loss, _, _ = memdec_loss(logits, batch["target_ids"].to(device), batch["target_probs"].to(device),
                             batch["labels"].to(device), beta)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(probe.parameters(), float("inf")))
    return min(grad_clip, 0.5 * norm)


def _steps(step_fn: Callable[..., Any], start: Any, batch: dict, profile: Any, beta: float,
           clip: float, watch: bool = False) -> tuple[Any, list[Any]]:
    """Two steps of `step_fn` on a copy of `start`; with `watch`, WrongAnswer naming the first
    mistake in the calls of each step. Returns (the model, the returned losses)."""
    model = copy.deepcopy(start)
    device = next(model.parameters()).device
    batch = {name: t.to(device) for name, t in batch.items()}
    optimizer = make_optimizer(model, profile.learning_rate, profile.weight_decay)
    schedule = LambdaLR(optimizer, lambda s: lr_factor(s, max(1, profile.warmup_steps),
                                                       max(2, profile.train_steps)))
    events: list[tuple[str, float | None]] = []
    if watch:
        _watch(model, optimizer, schedule, events)
    losses = []
    for s in range(2):
        events.clear()
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(s)
            losses.append(returned(step_fn(model, batch, optimizer, schedule, beta, clip)))
        if watch:
            _diagnose_step(model, events, clip, s)
    return model, losses


def _grad_norm(params: list[torch.Tensor]) -> float | None:
    """The global gradient norm, None when no parameter holds a gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else None


def _watch(model: Any, optimizer: Any, schedule: Any, events: list) -> None:
    """Record backward passes, optimizer steps (with the gradient norm they saw) and schedule
    steps into `events`, in order."""
    params = [p for p in model.parameters() if p.requires_grad]
    params[0].register_post_accumulate_grad_hook(lambda p: events.append(("backward", None)))
    optimizer.register_step_pre_hook(lambda *_: events.append(("step", _grad_norm(params))))
    schedule_step = schedule.step

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        events.append(("schedule", None))
        return schedule_step(*args, **kwargs)
    schedule.step = counted_step


def _diagnose_step(model: Any, events: list, clip: float, step: int) -> None:
    """WrongAnswer naming the first mistake the recorded calls of one step show."""
    names = [name for name, _ in events]
    if "backward" not in names:
        raise WrongAnswer("no loss.backward(): without gradients the optimizer cannot change "
                          "the parameters")
    if "step" not in names:
        raise WrongAnswer("no optimizer.step(): the parameters never change")
    first_step, first_backward = names.index("step"), names.index("backward")
    norm = events[first_step][1]
    if first_step < first_backward:
        raise WrongAnswer("optimizer.step() comes before loss.backward(): it steps with no "
                          "gradient (or the last batch's); backward first, then step")
    if norm is None:
        raise WrongAnswer("the gradients were gone when optimizer.step() ran: zero_grad() "
                          "belongs after the step (or before the forward pass), not between "
                          "backward and step")
    if norm > clip * (1 + 1e-3):
        raise WrongAnswer(f"the gradient norm at optimizer.step() was {norm:.3g} > grad_clip = "
                          f"{clip:.3g}: clip after backward and before the step "
                          "(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))")
    if "schedule" not in names:
        raise WrongAnswer("no schedule.step(): the learning rate would stay at its first value "
                          "instead of warming up and decaying")
    if names.index("schedule") < first_step:
        raise WrongAnswer("schedule.step() comes before optimizer.step(): the first step would "
                          "skip the schedule's first learning rate")
    left = _grad_norm([p for p in model.parameters() if p.requires_grad])
    if left:
        raise WrongAnswer("no optimizer.zero_grad(): this step's gradients stay and would be "
                          "ADDED to the next step's (gradients accumulate in .grad)")
    if names.count("backward") > 1 or names.count("step") > 1:
        raise WrongAnswer(f"step {step + 1} ran backward {names.count('backward')} and "
                          f"optimizer.step {names.count('step')} times: once each per step")


def _parameter_gap(start: Any, mine: Any, reference: Any) -> float:
    """‖Δmine − Δref‖ / ‖Δref‖ over all parameters (Δ: the change from `start`)."""
    diff = ref = 0.0
    with torch.no_grad():
        for p0, p1, p2 in zip(start.parameters(), mine.parameters(), reference.parameters()):
            diff += float(((p1 - p0) - (p2 - p0)).double().pow(2).sum())
            ref += float((p2 - p0).double().pow(2).sum())
    return (diff / ref) ** 0.5 if ref > 0 else float("inf")

"""One training loop for the networks BodyMap trains from random weights (ear segmentation,
macro anatomy, ear locator, photo kind, diagnosis), and what goes with it: the log file
(``TrainingLog``), the one-cycle learning-rate schedule that can follow a time budget
(``Schedule``), a further round from a checkpoint's weights (``resume_weights``), the record of
the run stored in the checkpoint with every setting that made it (``training_record``), and
rendered data sets cached on disk (``cached_dataset``).

    with TrainingLog(out / "ear_train.log", command) as log:
        sched = Schedule(opt, lr, steps, minutes)
        run = fit(model, next_batch, loss_of, opt, sched, steps, log=log, say=say)
        training = training_record(settings, run, dev, log)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

Progress = Callable[[str, float], None]


class TrainingLog:
    """A training log file: ``note(msg)`` writes a time-stamped line and flushes it (a long run
    can be watched); the first line is the command. A context manager (closes the file)."""

    def __init__(self, path: str | Path, command: str):
        self.path = Path(path)
        self._f = open(self.path, "w")
        self.note(f"command: {command}")

    def note(self, msg: str) -> None:
        self._f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "TrainingLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Schedule:
    """One-cycle learning rate (15% linear warm-up from lr/25, cosine down to lr/1000) over
    ``steps`` steps or, when ``minutes`` is given, over whichever of the two ends first: the
    schedule follows max(step / steps, elapsed / budget), so a time-limited run still anneals."""

    def __init__(self, opt, lr: float, steps: int, minutes: float | None = None):
        self.opt, self.peak, self.steps = opt, lr, max(1, steps)
        self.budget = None if minutes is None else 60.0 * minutes
        self.t0 = time.perf_counter()
        self.n = 0
        self._set()

    def fraction(self) -> float:
        """Progress through the schedule, 0..1."""
        f = self.n / self.steps
        if self.budget is not None:
            f = max(f, (time.perf_counter() - self.t0) / self.budget)
        return min(f, 1.0)

    def done(self) -> bool:
        """True once the steps or the time budget are used up."""
        return self.fraction() >= 1.0

    def _set(self) -> None:
        f = self.fraction()
        if f < 0.15:
            self.lr = self.peak / 25 + (self.peak - self.peak / 25) * f / 0.15
        else:
            c = (f - 0.15) / 0.85
            self.lr = self.peak / 1000 + 0.5 * (self.peak - self.peak / 1000) * (1 + np.cos(np.pi * c))
        for g in self.opt.param_groups:
            g["lr"] = self.lr

    def step(self) -> None:
        """After an optimiser step: count it and set the next learning rate."""
        self.n += 1
        self._set()


class TorchOneCycle:
    """torch's OneCycleLR (cosine warm-up over ``pct_start``, down to lr/25e4) behind Schedule's
    interface, for the recipes trained with it (photo kind)."""

    def __init__(self, opt, lr: float, steps: int, pct_start: float = 0.15):
        import torch

        self._s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
        self.steps, self.n = max(1, steps), 0

    @property
    def lr(self) -> float:
        return float(self._s.get_last_lr()[0])

    def fraction(self) -> float:
        return min(self.n / self.steps, 1.0)

    def done(self) -> bool:
        return self.n >= self.steps

    def step(self) -> None:
        self.n += 1
        self._s.step()


class Shuffled:
    """Batches of indices into n items: a random permutation (``rng``) taken ``batch`` at a time,
    a new permutation when fewer than ``batch`` are left; each batch sorted. ``next()`` -> (batch,) int."""

    def __init__(self, n: int, batch: int, rng: np.random.Generator):
        self.n, self.batch, self.rng = n, batch, rng
        self.order, self.pos = rng.permutation(n), 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        idx = np.sort(self.order[self.pos:self.pos + self.batch])
        self.pos += self.batch
        return idx


def resume_weights(model, path, task: str, note: Callable[[str], None]) -> dict | None:
    """Load a checkpoint's weights into model (for a further training round); returns its
    training record (with its held-out metrics and path) or None when path is None."""
    if path is None:
        return None
    from bodymap.models.checkpoint import load_checkpoint

    ck = load_checkpoint(path, task)
    model.load_state_dict(ck["state_dict"])
    note(f"resumed from {path} (trained by: {ck['training'].get('command')})")
    return {"path": str(path), "training": ck["training"], "data_sha256": ck["data"].get("sha256"),
            "metrics": {k: {kk: v.get(kk) for kk in ("mean_ear", "mean_ap", "mean_precision", "mean_sensitivity")
                            if kk in v} for k, v in ck["metrics"].items()}}


def fit(model, next_batch: Callable, loss_of: Callable, opt, sched, steps: int, *, log: TrainingLog,
        say: Progress, log_every: int = 10, span: tuple[float, float] = (0.1, 0.8), grad_clip: float | None = None,
        score: Callable | None = None, after_step: Callable[[int, list, list], None] | None = None) -> dict:
    """The training loop: until ``steps`` optimiser steps are done or ``sched`` says its time
    budget is spent, x, y = next_batch(step) (on the model's device; x a tuple for a model of
    several inputs), loss = loss_of(model(x), y), backward (gradient norm clipped to
    ``grad_clip``), step, schedule step, then ``after_step(step, losses, scores)`` (e.g. an
    evaluation at the end of an epoch; it must leave the model in training mode). Logs the
    mean loss (and mean ``score(output, y)``, e.g. the training accuracy) every ``log_every``
    steps and reports progress in span[0] .. span[0] + span[1]. Returns {"losses": [float],
    "scores": [float], "steps": int, "seconds": float}."""
    import torch

    t0 = time.perf_counter()
    losses, scores = [], []
    model.train()
    for step in range(steps):
        if sched.done():
            log.note(f"time budget reached after {step} steps")
            break
        x, y = next_batch(step)
        out = model(*x) if isinstance(x, tuple) else model(x)
        loss = loss_of(out, y)
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if score is not None:
            scores.append(float(score(out.detach(), y)))
        if step % log_every == 0 or step == steps - 1:
            acc = f" train acc {np.mean(scores[-log_every:]):.3f}" if scores else ""
            log.note(f"step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f}{acc} lr {sched.lr:.2e} "
                     f"{time.perf_counter() - t0:.0f} s")
        say(f"step {step + 1}/{steps} loss {losses[-1]:.3f}", span[0] + span[1] * sched.fraction())
        if after_step is not None:
            after_step(step, losses, scores)
    return {"losses": losses, "scores": scores, "steps": len(losses), "seconds": time.perf_counter() - t0}


def training_record(settings: dict, run: dict, device, log: TrainingLog, *, command: str = "",
                    resumed_from: dict | None = None, **recipe) -> dict:
    """The checkpoint's "training" entry: the command, every setting of the call that made it
    (``settings``, also under "settings" so a run can be repeated from its checkpoint), the
    recipe in words (``recipe``: optimiser, loss, augmentation, ...), where and how long it ran,
    the first and final loss and the log file's name."""
    import torch

    losses = run["losses"] or [float("nan")]
    n = len(losses)
    return {"command": command, **settings, "settings": dict(settings), **recipe,
            "steps": run["steps"], "steps_planned": settings.get("steps"), "device": str(device),
            "threads": torch.get_num_threads(), "seconds": round(run["seconds"], 1),
            "from": "random weights" if resumed_from is None else "resumed", "resumed_from": resumed_from,
            "first_loss": round(float(np.mean(losses[:max(1, min(10, n // 4))])), 4),
            "final_loss": round(float(np.mean(losses[-max(1, min(20, n // 4)):])), 4), "log": log.path.name}


def cached_dataset(cache: str | Path, prefix: str, n_bodies: int, views: int, size: int, seed: int,
                   make: Callable[..., dict], progress: Progress | None = None, compress: bool = False) -> dict:
    """``make(n_bodies, views, size, seed, progress)`` (a dict of arrays plus a JSON-ready
    "description"), stored as cache/<prefix>_<seed>_<bodies>x<views>_<size>.npz and read from
    there when it exists. Written atomically: two trainings may fill the cache at once."""
    cache = Path(cache)
    f = cache / f"{prefix}_{seed}_{n_bodies}x{views}_{size}.npz"
    if f.exists():
        with np.load(f) as z:
            return {k: z[k] for k in z.files if k != "description"} | {"description": json.loads(str(z["description"]))}
    d = make(n_bodies, views, size, seed, progress)
    cache.mkdir(parents=True, exist_ok=True)
    from bodymap.atomic import atomic_write

    arrays = {k: v for k, v in d.items() if k != "description"}
    with atomic_write(f) as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, description=json.dumps(d["description"]), **arrays)
    return d

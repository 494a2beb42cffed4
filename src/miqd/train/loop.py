"""Training one run (model, task, label): paper §6.2, resumable and deterministic.

* AdamW, linear warm-up then cosine decay per step; validation `evals_per_epoch` times per epoch
  (SRCC / PLCC / KRCC / RMSE on the validation split); the best checkpoint by validation SRCC.
* Determinism: the model's initialisation, each epoch's sample order and each sample's
  augmentation draw from streams keyed by the seed and what they are for, and the torch seed is
  reset before every step. The same config gives the same weights and the same metrics log.
* Resume: `work/last.pt` (model, optimizer, schedule, step, history) is written every
  `checkpoint_every` steps and at each validation; a rerun after a kill continues from it and
  ends exactly where an uninterrupted run would. A `last.pt` from different settings or data is
  not resumed (the log says so).
* Several GPUs: started under torchrun (WORLD_SIZE > 1), each process takes its share of every
  batch (DistributedDataParallel); rank 0 validates the gathered predictions and writes files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from miqd import __version__
from miqd.devices import autocast, resolve_device
from miqd.errors import InputError
from miqd.io import write_bytes, write_text
from miqd.correlation import correlations
from miqd.seeding import stream_key
from miqd.train import files
from miqd.train.checkpoints import FORMAT
from miqd.train.data import QualityDataset, samples
from miqd.train.losses import get_loss
from miqd.train.networks import create_quality_model, model_def, parameter_counts, weights_note
from miqd.train.transforms import Preprocess

log = logging.getLogger("miqd.train")

METRIC_COLUMNS = ["step", "epoch", "lr", "train_loss", "val_srcc", "val_plcc", "val_krcc", "val_rmse", "best"]


@dataclass(frozen=True)
class TrainSettings:
    model: str
    task: str
    label: str
    arch: str
    weights: object
    region_arch: str | None
    region_weights: object
    seed: int = 0
    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "mse"
    resize: int = 288
    crop: int = 224
    region_size: int = 288
    hflip: float = 0.5
    vflip: float = 0.5
    evals_per_epoch: int = 2
    samples_per_epoch: int | None = None
    val_samples: int | None = None
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    precision: str = "bf16"
    workers: int = 4
    threads: int = 2

    @classmethod
    def from_config(cls, config: dict, run: dict) -> TrainSettings:
        t = config["train"]
        d = model_def(run["model"])
        m = t["models"].get(run["model"], {})
        if "weights" not in m:
            raise InputError(
                f"invalid config: key train.models.{run['model']}.weights is required: `random` "
                f"(seeded initialisation, for demos and tests) or {{file: <ImageNet checkpoint of "
                f"{m.get('arch', d.arch)}>}}"
            )
        region_arch = region_weights = None
        if d.region:
            enc = t["region_encoder"]
            if "weights" not in enc:
                raise InputError("invalid config: key train.region_encoder.weights is required by "
                                 f"{run['model']}: the frozen encoder's pretrained checkpoint")
            region_arch, region_weights = enc["arch"], enc["weights"]
        keys = ("epochs", "batch_size", "lr", "min_lr", "weight_decay", "warmup_epochs", "loss", "resize",
                "crop", "hflip", "vflip", "evals_per_epoch", "samples_per_epoch", "val_samples",
                "checkpoint_every", "log_every", "device", "precision", "workers", "threads")
        return cls(model=run["model"], task=run["task"], label=run["label"], arch=m.get("arch", d.arch),
                   weights=m["weights"], region_arch=region_arch, region_weights=region_weights,
                   region_size=t["region_encoder"]["size"], seed=config["seed"],
                   **{k: t[k] for k in keys})

    def preprocess(self, train: bool) -> Preprocess:
        region = self.region_size if model_def(self.model).region else None
        return Preprocess(self.resize, self.crop, region, train, self.hflip, self.vflip)

    def fingerprint(self, table: pd.DataFrame) -> str:
        """Settings and data: a last.pt with another fingerprint is not resumed."""
        blob = {k: v for k, v in asdict(self).items() if k not in ("workers", "threads", "log_every", "device")}
        h = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode())
        names = table["path"].map(lambda p: Path(p).name)  # not the folder: data may move
        h.update(pd.util.hash_pandas_object(pd.DataFrame({"name": names, "split": table["split"],
                                                          "label": table[self.label]}), index=False)
                 .to_numpy().tobytes())
        return h.hexdigest()[:16]


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def eval_steps(steps_per_epoch: int, epochs: int, per_epoch: int) -> set[int]:
    """Steps (1-based counts of finished steps) after which to validate: evenly within each epoch."""
    per_epoch = min(per_epoch, steps_per_epoch)
    marks = {round(k * steps_per_epoch / per_epoch) for k in range(1, per_epoch + 1)}
    return {e * steps_per_epoch + m for e in range(epochs) for m in marks}


def epoch_order(seed: int, epoch: int, n: int, take: int):
    import torch

    g = torch.Generator().manual_seed(stream_key(seed, "train-order", epoch) % (2**63))
    return torch.randperm(n, generator=g)[:take].tolist()


class _Batches:
    """The batches of one epoch from step `start` on, as (epoch, row) keys; this rank's share."""

    def __init__(self, rows: list[int], epoch: int, batch: int, start: int, rank: int, world: int):
        self.rows, self.epoch, self.batch, self.start, self.rank, self.world = rows, epoch, batch, start, rank, world

    def __iter__(self):
        for s in range(self.start, len(self.rows) // self.batch):
            chunk = self.rows[s * self.batch:(s + 1) * self.batch]
            yield [(self.epoch, r) for r in chunk[self.rank::self.world]]

    def __len__(self) -> int:
        return max(0, len(self.rows) // self.batch - self.start)


def after_step(step: int) -> None:
    """Called after each optimizer step (tests inject a kill here)."""


class _Processes:
    """torchrun's environment: rank, world size, and the collectives the loop needs."""

    def __init__(self, device: str):
        import torch
        import torch.distributed as tdist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        if self.world > 1:
            if device.startswith("cuda"):
                torch.cuda.set_device(self.local_rank)
                self.device = f"cuda:{self.local_rank}"
            if not tdist.is_initialized():
                tdist.init_process_group("nccl" if device.startswith("cuda") else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        import torch.distributed as tdist

        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        return float(np.mean(self.gather(value)))

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _loader(dataset, batch_sampler, workers: int, pin: bool):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                                       pin_memory=pin, persistent_workers=False)


def predict(model, dataset: QualityDataset, rows: list[int], batch_size: int, workers: int, device: str,
            precision: str, rank: int = 0, world: int = 1) -> np.ndarray:
    """Scores of `rows` (this rank's share when world > 1, in the order of `rows[rank::world]`)."""
    import torch

    mine = rows[rank::world]
    batches = [[(0, r) for r in mine[i:i + batch_size]] for i in range(0, len(mine), batch_size)]
    out = []
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        for batch in _loader(dataset, batches, workers, device.startswith("cuda")):
            region = batch["region"].to(device, non_blocking=True) if "region" in batch else None
            out.append(model(batch["image"].to(device, non_blocking=True), region).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _validate(model, val_set, val_rows, s: TrainSettings, procs: _Processes) -> dict:
    pred = predict(model, val_set, val_rows, s.batch_size, s.workers, procs.device, s.precision,
                   procs.rank, procs.world)
    parts = procs.gather(pred)
    full = np.empty(len(val_rows), np.float32)
    for r, p in enumerate(parts):
        full[r::procs.world] = p
    target = val_set.targets[val_rows]
    if np.ptp(full) == 0 or np.ptp(target) == 0:
        return {"srcc": float("nan"), "plcc": float("nan"), "krcc": float("nan"),
                "rmse": float(np.sqrt(np.mean((full - target) ** 2)))}
    c = correlations(full, target, fit=True)
    return {k: c[k] for k in ("srcc", "plcc", "krcc", "rmse")}


def _model_payload(model, s: TrainSettings, step: int, val: dict) -> dict:
    """What model.pt holds: enough to rebuild and run the model without any other file."""
    return {
        "format": FORMAT,
        "settings": json.dumps(asdict(s), sort_keys=True, default=str),
        "model": s.model, "task": s.task, "label": s.label,
        "backbone_init": weights_note(s.weights),
        "region_init": weights_note(s.region_weights) if s.region_arch else "",
        "step": step, "val": {k: float(v) for k, v in val.items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "miqd_version": __version__,
    }


def _save(path: Path, payload: dict) -> None:
    """torch.save through memory: saved to a file, the archive would be named after the temporary
    file and the same payload would give different bytes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())


def _history_frame(history: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(history, columns=METRIC_COLUMNS)


def write_metrics(history: list[dict], csv_path: str) -> None:
    write_text(csv_path, _history_frame(history).to_csv(index=False, float_format="%.6g"))


def plot_metrics(history: list[dict], png_path: str, title: str) -> None:
    from miqd.plots import plt, save_figure  # noqa: I001 - miqd.plots selects the Agg backend

    df = _history_frame(history)
    fig, ax = plt.subplots(figsize=(7, 4))
    tr = df.dropna(subset=["train_loss"])
    ax.plot(tr["step"], tr["train_loss"], color="#4C72B0", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="#4C72B0")
    ax2 = ax.twinx()
    va = df.dropna(subset=["val_srcc"])
    ax2.plot(va["step"], va["val_srcc"], "o-", color="#DD8452", label="val SRCC")
    ax2.set_ylabel("validation SRCC", color="#DD8452")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, png_path)


def train(config: dict, run_name: str) -> dict:
    """Train one configured run; write model.pt, metrics.csv and metrics.png. Returns the best
    validation metrics."""
    import torch

    run = files.find_run(config, run_name)
    s = TrainSettings.from_config(config, run)
    outdir = config["outdir"]
    device = resolve_device(s.device, "train.device")
    torch.set_num_threads(s.threads)
    procs = _Processes(device)
    try:
        table = samples(config, s.task)
        plan = _Plan.of(table, s, run_name, procs.world)
        model = create_quality_model(s.model, s.weights, s.arch, s.seed, s.crop, s.region_arch, s.region_weights,
                                     s.region_size).to(procs.device)
        if procs.main:
            _log_start(run_name, s, model, procs.device, table, plan)
        runner = _Runner(run_name, s, plan, model, table, procs, files.work_dir(outdir, run_name))
        runner.resume()
        runner.run()
        return runner.finish(files.train_outputs(outdir, run_name)) if procs.main else {}
    finally:
        procs.close()


@dataclass(frozen=True)
class _Plan:
    """Which images train and validate, and the step schedule: fixed by the settings and the data."""

    train_rows: list[int]
    val_all: np.ndarray
    val_rows: list[int]
    per_epoch: int
    steps_per_epoch: int
    total: int
    warmup: int
    evals: set[int]
    fingerprint: str

    @classmethod
    def of(cls, table: pd.DataFrame, s: TrainSettings, run_name: str, world: int) -> _Plan:
        import torch

        train_rows = np.flatnonzero(table["split"].to_numpy() == "train").tolist()
        val_all = np.flatnonzero(table["split"].to_numpy() == "val")
        if not train_rows or not len(val_all):
            raise InputError(f"task {s.task}: the split has {len(train_rows)} training and {len(val_all)} "
                             f"validation images; both are needed")
        if s.val_samples and s.val_samples < len(val_all):
            g = torch.Generator().manual_seed(stream_key(s.seed, "val-subset") % (2**63))
            val_rows = sorted(val_all[torch.randperm(len(val_all), generator=g)[: s.val_samples].numpy()].tolist())
        else:
            val_rows = val_all.tolist()
        per_epoch = min(s.samples_per_epoch or len(train_rows), len(train_rows))
        steps_per_epoch = per_epoch // s.batch_size
        if steps_per_epoch == 0:
            raise InputError(f"train.batch_size {s.batch_size} is larger than the {per_epoch} training images "
                             f"per epoch of {run_name}; lower it")
        if s.batch_size % world:
            raise InputError(f"train.batch_size {s.batch_size} does not divide among {world} GPUs")
        return cls(train_rows, val_all, val_rows, per_epoch, steps_per_epoch, steps_per_epoch * s.epochs,
                   round(s.warmup_epochs * steps_per_epoch), eval_steps(steps_per_epoch, s.epochs, s.evals_per_epoch),
                   s.fingerprint(table))


def _log_start(run_name: str, s: TrainSettings, model, device: str, table: pd.DataFrame, plan: _Plan) -> None:
    counts = parameter_counts(model)
    log.info("%s: %s (%s) on %s, %d trainable + %d frozen parameters; backbone: %s%s", run_name,
             s.model, s.arch, device, counts["trainable"], counts["frozen"], weights_note(s.weights),
             f"; region encoder {s.region_arch}: {weights_note(s.region_weights)}" if s.region_arch else "")
    if s.weights == "random":
        log.warning("%s: the backbone starts from a seeded RANDOM initialisation, not ImageNet weights "
                    "(the paper's); scores are a demonstration of the method, not its results", run_name)
    log.info("%s: %d training images (%d per epoch, %d steps of %d), %d validation images (%d used "
             "while training), %d epochs", run_name, len(plan.train_rows), plan.per_epoch, plan.steps_per_epoch,
             s.batch_size, len(plan.val_all), len(plan.val_rows), s.epochs)
    for part, rows in (("training", plan.train_rows), ("validation", plan.val_all)):
        values = table[s.label].to_numpy()[rows]
        if np.ptp(values) == 0:
            log.warning("%s: every %s label %s is %.4g: there is nothing to rank (SRCC, PLCC and KRCC "
                        "are undefined); check the label stage's models", run_name, part, s.label, values[0])


class _Runner:
    """The optimisation of one run: its state (step, best, history, loss window) is what last.pt
    saves, so a resumed run continues exactly where an uninterrupted one would be."""

    def __init__(self, run_name: str, s: TrainSettings, plan: _Plan, model, table: pd.DataFrame,
                 procs: _Processes, work: Path):
        import torch

        self.run_name, self.s, self.plan, self.model, self.procs = run_name, s, plan, model, procs
        self.last_path, self.best_path, self.work = work / "last.pt", work / "best.pt", work
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        min_ratio = s.min_lr / s.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda st: lr_factor(st, plan.total, plan.warmup, min_ratio))
        self.step, self.best, self.history = 0, {"srcc": -math.inf, "step": 0}, []
        self.window_loss, self.window_n = 0.0, 0  # training loss since the last log line
        self.train_set = QualityDataset(table, s.label, s.preprocess(train=True), s.seed)
        self.val_set = QualityDataset(table, s.label, s.preprocess(train=False), s.seed)
        self.loss_fn = get_loss(s.loss)
        self.net = model
        if procs.world > 1:
            device = procs.device
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
        self._restart_clock()

    def _restart_clock(self) -> None:
        self.t0, self.data_wait, self.timed = time.perf_counter(), 0.0, 0

    def resume(self) -> None:
        import torch

        if not self.last_path.is_file():
            return
        state = torch.load(str(self.last_path), map_location="cpu", weights_only=True)
        if state.get("fingerprint") == self.plan.fingerprint and (state["best"]["step"] == 0
                                                                   or self.best_path.is_file()):
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.best, self.history = state["step"], state["best"], json.loads(state["history"])
            self.window_loss, self.window_n = state["window"]
            if self.procs.main:
                log.info("%s: resuming from %s at step %d/%d", self.run_name, self.last_path, self.step,
                         self.plan.total)
        elif self.procs.main:
            log.warning("%s: %s is from other settings or data; starting afresh", self.run_name, self.last_path)

    def save_last(self) -> None:
        if self.procs.main:
            _save(self.last_path, {"fingerprint": self.plan.fingerprint, "step": self.step, "best": self.best,
                                   "history": json.dumps(self.history),
                                   "window": [self.window_loss, self.window_n], "model": self.model.state_dict(),
                                   "optimizer": self.optimizer.state_dict(),
                                   "scheduler": self.scheduler.state_dict()})

    def run(self) -> None:
        s, plan, device = self.s, self.plan, self.procs.device
        self.model.train()
        self._restart_clock()
        while self.step < plan.total:
            epoch, in_epoch = divmod(self.step, plan.steps_per_epoch)
            rows = [plan.train_rows[i] for i in epoch_order(s.seed, epoch, len(plan.train_rows), plan.per_epoch)]
            batches = _Batches(rows, epoch, s.batch_size, in_epoch, self.procs.rank, self.procs.world)
            t_fetch = time.perf_counter()
            for batch in _loader(self.train_set, batches, s.workers, device.startswith("cuda")):
                self.data_wait += time.perf_counter() - t_fetch
                self._optimise(batch)
                if self.step % s.log_every == 0 or self.step in plan.evals or self.step == plan.total:
                    self._log_window()
                if self.step in plan.evals:
                    self._validate()
                elif s.checkpoint_every and self.step % s.checkpoint_every == 0:
                    self.save_last()
                if self.step >= plan.total:
                    break
                t_fetch = time.perf_counter()

    def _optimise(self, batch: dict) -> None:
        import torch

        device = self.procs.device
        torch.manual_seed(stream_key(self.s.seed, "train-step", self.step) % (2**63))
        image = batch["image"].to(device, non_blocking=True)
        region = batch["region"].to(device, non_blocking=True) if "region" in batch else None
        target = batch["target"].to(device, non_blocking=True)
        with autocast(device, self.s.precision):
            pred = self.net(image, region)
        loss = self.loss_fn(pred.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.window_loss += float(loss.detach())
        self.window_n += 1
        self.timed += 1
        after_step(self.step)

    def _log_window(self) -> None:
        step, plan, lr = self.step, self.plan, self.optimizer.param_groups[0]["lr"]
        mean_loss = self.procs.mean(self.window_loss / self.window_n)
        self.history.append({"step": step, "epoch": round(step / plan.steps_per_epoch, 4), "lr": lr,
                             "train_loss": mean_loss})
        if self.procs.main:
            dt = time.perf_counter() - self.t0
            log.info("%s: step %d/%d epoch %.2f loss %.5f lr %.2e | %.1f img/s, %.0f%% waiting for data",
                     self.run_name, step, plan.total, step / plan.steps_per_epoch, mean_loss, lr,
                     self.timed * self.s.batch_size / dt, 100 * self.data_wait / dt)
        self.window_loss, self.window_n = 0.0, 0
        self._restart_clock()

    def _validate(self) -> None:
        step, main = self.step, self.procs.main
        val = _validate(self.net if self.procs.world == 1 else self.model, self.val_set, self.plan.val_rows,
                        self.s, self.procs)
        # best by SRCC; while SRCC is undefined (constant labels or scores) the latest counts
        undefined = math.isnan(val["srcc"])
        if (undefined and self.best["srcc"] == -math.inf) or (not undefined and val["srcc"] > self.best["srcc"]):
            self.best = {"srcc": -math.inf if undefined else val["srcc"], "step": step}
            if main:
                _save(self.best_path, _model_payload(self.model, self.s, step, val))
        record = {**{f"val_{k}": v for k, v in val.items()}, "best": int(self.best["step"] == step)}
        if self.history and self.history[-1]["step"] == step:
            self.history[-1].update(record)  # the step's training loss and its validation: one row
        else:
            self.history.append({"step": step, "epoch": round(step / self.plan.steps_per_epoch, 4), **record})
        if main:
            log.info("%s: validation at step %d: SRCC %.4f PLCC %.4f KRCC %.4f RMSE %.4f%s", self.run_name,
                     step, val["srcc"], val["plcc"], val["krcc"], val["rmse"],
                     " (best so far)" if self.best["step"] == step else "")
        self.save_last()
        self._restart_clock()

    def finish(self, outputs: dict) -> dict:
        """The best checkpoint becomes model.pt, with the metrics log and plot; nothing is left to resume."""
        import torch

        s = self.s
        payload = torch.load(str(self.best_path), map_location="cpu", weights_only=True)
        _save(Path(outputs["model"]), payload)
        write_metrics(self.history, outputs["metrics"])
        plot_metrics(self.history, outputs["plot"], f"{self.run_name} ({s.model}, {s.task}, {s.label})")
        for path in (self.last_path, self.best_path):
            path.unlink(missing_ok=True)
        if self.work.is_dir() and not any(self.work.iterdir()):
            self.work.rmdir()
        log.info("%s: best validation SRCC %.4f at step %d -> %s", self.run_name, payload["val"]["srcc"],
                 payload["step"], outputs["model"])
        return payload["val"] | {"step": payload["step"]}


if __name__ == "__main__":  # one torchrun process: python -m miqd.train.loop CONFIG_JSON RUN
    import sys

    from miqd import config as cfgmod

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    train(cfgmod.load(sys.argv[1], whole_workflow=False), sys.argv[2])

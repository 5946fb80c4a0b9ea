"""The one training loop. Every recipe runs through :func:`train`; only this file knows about Accelerate.

Read it top to bottom: build, (resume), then per iteration ``d_steps`` discriminator steps and one
generator step, EMA, and the periodic log / sample / checkpoint / evaluation, then export.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torchvision.utils import save_image
from tqdm.auto import tqdm

from ganxfer import checkpoint
from ganxfer.augment import DiffAugment
from ganxfer.data import BatchPlan, load_data, to_float
from ganxfer.ema import recalibrated, update_ema
from ganxfer.errors import GanxferError
from ganxfer.losses import d_loss, g_loss, r1_penalty
from ganxfer.metrics import COLLAPSE_GRID, spread, thumbnails
from ganxfer.nets import build_discriminator, build_generator, export_model
from ganxfer.recipe import Recipe, flat

log = logging.getLogger(__name__)


class RunError(GanxferError):
    """A run-folder problem, phrased as one line for the user."""


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check the run folder against the flags; return the checkpoint to resume from, if any."""
    found = checkpoint.checkpoints(run_dir)
    if resume:
        if not found:
            raise RunError(f"--resume: no checkpoint in {run_dir}/checkpoints; drop --resume to start fresh")
        return found[-1]
    if found and not overwrite:
        raise RunError(f"{run_dir} already holds checkpoints; pass --resume to continue it, "
                       "--overwrite to start over, or --run-dir for a new folder")
    for old in found:
        shutil.rmtree(old)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a fresh start: rows of an earlier attempt are stale
    return None


def crossed(before: int, after: int, every_kimg: float) -> bool:
    """Did the image counter pass a multiple of ``every_kimg`` thousand images?"""
    if every_kimg <= 0:
        return False
    every = max(1, round(every_kimg * 1000))
    return after // every > before // every


def optimizer_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """Trainable parameters, with the model's own groups (e.g. a backbone at a lower lr) when it has them."""
    if hasattr(model, "optimizer_groups"):
        return model.optimizer_groups(lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def snapshot_marks(before_s: float, after_s: float, every: float, at: list[float]) -> list[float]:
    """The snapshot times, in minutes (multiples of ``every``, and ``at``), that training time just passed."""
    marks = [m for m in at if before_s < m * 60 <= after_s]
    if every > 0:
        marks += [k * every for k in range(int(before_s // (every * 60)) + 1, int(after_s // (every * 60)) + 1)]
    return sorted(set(marks))


def save_grid(generator: torch.nn.Module, z: torch.Tensor, path: Path) -> torch.Tensor:
    """Write the fixed-z grid of ``generator`` (in eval mode, BatchNorm recalibrated); return its images."""
    with torch.no_grad():
        images = torch.cat([generator(zb).float().cpu() for zb in z.split(64)])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True,
               value_range=(-1, 1), padding=1)
    return images


def train(recipe: Recipe, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train ``recipe`` into ``run_dir`` and return the exported generator folder."""
    run_dir = Path(run_dir)
    tr = recipe.train
    acc = Accelerator(mixed_precision=tr.mixed_precision, log_with=tr.log_with or None,
                      project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tb")))
    resume_from = prepare_run_dir(run_dir, resume, overwrite) if acc.is_main_process else None
    resume_from = checkpoint.checkpoints(run_dir)[-1] if resume and not acc.is_main_process else resume_from
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    if tr.batch_size % acc.num_processes:
        raise RunError(f"train.batch_size={tr.batch_size} must divide by the {acc.num_processes} processes")
    local_batch = tr.batch_size // acc.num_processes
    set_seed(recipe.seed)

    # --- build -------------------------------------------------------------------------------------
    data = load_data(recipe.data)
    plan = BatchPlan(len(data), recipe.seed)
    G = build_generator(recipe)
    if recipe.generator.init:
        from ganxfer.transfer import warm_start_generator

        G = warm_start_generator(G, recipe, run_dir if acc.is_main_process else None)
    D = build_discriminator(recipe)
    if recipe.discriminator.init:
        from ganxfer.transfer import warm_start_discriminator

        D = warm_start_discriminator(D, recipe, run_dir if acc.is_main_process else None)
    ema = copy.deepcopy(G).eval().requires_grad_(False).to(acc.device) if tr.ema > 0 else None
    betas = tuple(recipe.optim.betas)
    opt_g = torch.optim.Adam(optimizer_groups(G, recipe.optim.g_lr * recipe.optim.g_lr_mult), betas=betas)
    opt_d = torch.optim.Adam(optimizer_groups(D, recipe.optim.d_lr), betas=betas)
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    augment = DiffAugment(recipe.augment.policy)
    gen = torch.Generator(device=acc.device).manual_seed(recipe.seed * 7919 + 1 + acc.process_index)
    fixed_z = torch.randn(tr.num_samples, recipe.generator.latent_dim,
                          generator=torch.Generator().manual_seed(recipe.seed)).to(acc.device)
    evaluator = None
    if recipe.eval.every_kimg > 0:
        from ganxfer.metrics import TrainingEvaluator

        evaluator = TrainingEvaluator(recipe, acc.device)

    counters = {"images_seen": 0, "step": 0, "wall_s": 0.0, "best": None}
    if resume_from is not None:
        recipe_hparams = [[(g["lr"], g["betas"]) for g in o.param_groups] for o in (opt_g, opt_d)]
        counters = checkpoint.load_checkpoint(acc, resume_from, ema, gen)
        for o, hp in zip((opt_g, opt_d), recipe_hparams, strict=True):  # the recipe's lr and betas win on resume
            for group, (lr, betas) in zip(o.param_groups, hp, strict=True):
                group["lr"], group["betas"] = lr, betas
        if acc.is_main_process:
            log.info("resumed from %s at %.3f kimg", resume_from, counters["images_seen"] / 1000)
            _truncate_metrics(run_dir / "metrics.jsonl", counters["images_seen"])
    total = round(tr.kimg * 1000)
    budget_s = tr.minutes * 60 if tr.minutes is not None else math.inf
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat(recipe).items()}
    acc.init_trackers(recipe.name, config=hparams)

    # --- loop --------------------------------------------------------------------------------------
    G_raw, D_raw = acc.unwrap_model(G), acc.unwrap_model(D)

    def sampled() -> torch.nn.Module:
        """What grids, evaluations and exports see: the EMA (or G) with its own BatchNorm statistics."""
        return recalibrated(ema or G_raw, tr.bn_batches, tr.batch_size, seed=recipe.seed)

    rank_slice = slice(acc.process_index * local_batch, (acc.process_index + 1) * local_batch)
    per_iter = tr.batch_size * tr.d_steps  # the budget is met in whole iterations
    bar = tqdm(total=math.ceil(total / per_iter) * per_iter / 1000, initial=counters["images_seen"] / 1000,
               unit="kimg", dynamic_ncols=True, disable=not acc.is_main_process,
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} kimg [{elapsed}<{remaining}{postfix}]")
    window = {"loss_d": 0.0, "loss_g": 0.0, "r1": 0.0, "n": 0}
    t_log, seen_log, t_start, wall0 = time.time(), counters["images_seen"], time.time(), counters["wall_s"]
    # the fixed-z grid's spread against as many real images: near 0 when every sample is the same face
    real_spread = spread(thumbnails(to_float(data.batch(torch.arange(min(len(data), tr.num_samples)))))) \
        if acc.is_main_process else 1.0  # grids are drawn by the main process only

    def grid(generator: torch.nn.Module, at: int) -> None:
        images = save_grid(generator, fixed_z, run_dir / "samples" / f"{at:09d}.png")
        log_images(acc, images, at)
        value = spread(thumbnails(images)) / max(real_spread, 1e-12)
        _log(acc, run_dir, {"kimg": at / 1000, "step": counters["step"], "grid_diversity": round(value, 4)})
        if value < COLLAPSE_GRID and at > 0:  # at kimg 0 a fresh generator draws one image by design
            log.warning("kimg %.1f: the sample grid is %.2fx as varied as real images; the generator may be "
                        "collapsing", at / 1000, value)

    if counters["images_seen"] == 0 and acc.is_main_process:  # something to look at within a minute
        grid(sampled(), 0)
    G.train()
    D.train()
    while counters["images_seen"] < total and counters["wall_s"] < budget_s:
        before, wall_before = counters["images_seen"], counters["wall_s"]
        for d_step in range(tr.d_steps):
            idx = plan.indices(counters["images_seen"], tr.batch_size)[rank_slice]
            real = to_float(data.batch(idx).to(acc.device, non_blocking=True))
            if recipe.data.hflip:
                flip = torch.rand(len(real), generator=gen, device=acc.device) < 0.5
                real = torch.where(flip[:, None, None, None], real.flip(3), real)
            z = torch.randn(len(real), recipe.generator.latent_dim, generator=gen, device=acc.device)
            r1_now = recipe.loss.r1_gamma > 0 and counters["step"] % recipe.loss.r1_every == 0
            real.requires_grad_(r1_now)
            with acc.autocast():
                # the last D step's fakes keep their graph: the G step reuses them (one G forward saved)
                with torch.set_grad_enabled(d_step == tr.d_steps - 1):
                    fake = G(z)
                real_logits = D(augment(real, gen))
                loss = d_loss(recipe.loss.kind, real_logits, D(augment(fake.detach(), gen)))
                if r1_now:
                    r1 = r1_penalty(real, real_logits)
                    loss = loss + r1 * (recipe.loss.r1_gamma / 2 * recipe.loss.r1_every)
                    window["r1"] += r1.item()
            opt_d.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt_d.step()
            window["loss_d"] += loss.item() / tr.d_steps
            counters["images_seen"] += tr.batch_size

        with acc.autocast():
            loss = g_loss(recipe.loss.kind, D(augment(fake, gen)))
        opt_g.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt_g.step()
        if ema is not None:
            update_ema(ema, G_raw, counters["step"], tr.ema)
        window["loss_g"] += loss.item()
        if not math.isfinite(window["loss_d"] + window["loss_g"]):  # stop before a NaN reaches a checkpoint
            raise RunError(f"training diverged at {counters['images_seen'] / 1000:.3f} kimg (loss_d "
                           f"{window['loss_d']:.4g}, loss_g {window['loss_g']:.4g}); the checkpoints are intact: "
                           "lower optim.g_lr / optim.d_lr and continue with --resume")
        window["n"] += 1
        counters["step"] += 1
        now = counters["images_seen"]
        counters["wall_s"] = wall0 + time.time() - t_start
        bar.update(min(now / 1000, bar.total) - bar.n)

        last = now >= total or counters["wall_s"] >= budget_s
        if crossed(before, now, tr.log_every_kimg) or last:
            dt = time.time() - t_log
            means = torch.tensor([window["loss_d"], window["loss_g"], window["r1"]], device=acc.device)
            loss_d, loss_g, r1_sum = (acc.reduce(means, reduction="mean") / window["n"]).tolist()
            row = {"kimg": now / 1000, "step": counters["step"], "loss_d": loss_d, "loss_g": loss_g,
                   "images_per_s": (now - seen_log) / max(dt, 1e-9), "wall_s": round(counters["wall_s"], 3)}
            if last:
                row["hardware"] = hardware(acc)
            if recipe.loss.r1_gamma > 0:
                row["r1"] = r1_sum * window["n"] / max(1, math.ceil(window["n"] / recipe.loss.r1_every))
            _log(acc, run_dir, row)
            bar.set_postfix(d=f"{row['loss_d']:.3f}", g=f"{row['loss_g']:.3f}", ips=f"{row['images_per_s']:.0f}")
            window = {"loss_d": 0.0, "loss_g": 0.0, "r1": 0.0, "n": 0}
            t_log, seen_log = time.time(), now
        t_pause = time.time()  # sampling, evaluation and checkpoints stay out of images_per_s
        snapshots = snapshot_marks(wall_before, counters["wall_s"], tr.snapshot_every_minutes,
                                   tr.snapshot_at_minutes) if acc.is_main_process else []
        show = (crossed(before, now, tr.sample_every_kimg) or before < 1000 <= now or last) and acc.is_main_process
        evaluate = evaluator is not None and (crossed(before, now, recipe.eval.every_kimg) or last)
        G_sampled = sampled() if show or evaluate or snapshots else None
        if show:
            grid(G_sampled, now)
        for minutes in snapshots:
            name = f"min-{minutes:g}"
            export_model(G_sampled, run_dir / "snapshots" / name, "generator")
            _log(acc, run_dir, {"kimg": now / 1000, "step": counters["step"], "snapshot": f"snapshots/{name}",
                                "wall_s": round(counters["wall_s"], 3)})
        if evaluate:
            scores = evaluator(G_sampled, acc)
            if acc.is_main_process:
                _log(acc, run_dir, {"kimg": now / 1000, "step": counters["step"], **scores})
                value = scores.get(recipe.eval.best_metric)
                if value is not None and (counters["best"] is None or value < counters["best"]):
                    counters["best"] = value
                    export_model(G_sampled, run_dir / "generator-best", "generator")
        if crossed(before, now, tr.checkpoint_every_kimg) or last:
            checkpoint.save_checkpoint(acc, run_dir, counters, ema, gen, tr.keep_checkpoints)
        paused = time.time() - t_pause
        t_log, t_start = t_log + paused, t_start + paused  # wall_s is training time
    bar.close()

    # --- export ------------------------------------------------------------------------------------
    if acc.is_main_process:
        G_sampled = sampled()
        if not (run_dir / "samples" / f"{counters['images_seen']:09d}.png").is_file():
            grid(G_sampled, counters["images_seen"])
        export_model(G_sampled, run_dir / "generator", "generator")
        export_model(D_raw, run_dir / "discriminator", "discriminator")
    acc.wait_for_everyone()
    acc.end_training()
    return run_dir / "generator"


def hardware(acc: Accelerator) -> str:
    """What the run trained on, for the model card: e.g. '2x NVIDIA H100 80GB HBM3' or 'CPU (2 cores)'."""
    if acc.device.type == "cuda":
        return f"{acc.num_processes}x {torch.cuda.get_device_name(acc.device)}"
    return f"{acc.num_processes}x CPU ({os.cpu_count()} cores)"


def log_images(acc: Accelerator, images: torch.Tensor, step: int) -> None:
    """The sample grid to every tracker that takes images (TensorBoard as a tensor, the others as PIL)."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    if not acc.trackers:
        return
    sheet = make_grid(images, nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True, value_range=(-1, 1))
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": sheet[None]}, step=step)
        elif hasattr(tracker, "log_images"):
            tracker.log_images({"samples": [to_pil_image(sheet)]}, step=step)


def _log(acc: Accelerator, run_dir: Path, row: dict) -> None:
    if acc.is_main_process:
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    scalars = {k: v for k, v in row.items() if k not in ("kimg", "step") and isinstance(v, (int, float))}
    acc.log(scalars, step=round(row["kimg"] * 1000))


def _truncate_metrics(path: Path, images_seen: int) -> None:
    """Drop log rows written after the checkpoint we resume from, so a resumed log has no duplicates."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["kimg"] * 1000 <= images_seen + 1e-6]
        path.write_text("".join(r + "\n" for r in rows))

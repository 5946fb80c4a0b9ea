"""The one training loop: every recipe runs through :func:`train`, which drives Accelerate.

The checkpoint and bookkeeping helpers see the Accelerator only through what this loop passes them.

Read it top to bottom: preflight, lock the run folder, build, (resume), then per iteration ``d_steps``
discriminator steps and one generator step, whose losses :class:`ganxfer.objective.Objective` computes (the loop
names no loss term), EMA, and once per tick a finiteness check, the log / sample / snapshot / evaluation /
checkpoint, then export. Signals, storage faults and divergence end it with one line.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from ganxfer import checkpoint
from ganxfer.augment import DiffAugment, Part
from ganxfer.bookkeeping import EXIT_CODES, Cadence, Clock, Meter, Progress, Signals, Stop, announce, crossed
from ganxfer.checkpoint import Counters
from ganxfer.data import Feed, fetch_data, load_training_data, to_float
from ganxfer.ema import recalibrated, update_ema
from ganxfer.errors import GanxferError
from ganxfer.images import make_sheet, write_grid
from ganxfer.lock import RunLock
from ganxfer.metrics import COLLAPSE_GRID, spread, thumbnails
from ganxfer.nets import build_discriminator, build_generator, export_model
from ganxfer.nets.base import spectral_norm_held, spectral_norms
from ganxfer.objective import Judge, Objective, Reals, batch_error
from ganxfer.parallel import accelerator, local_batchnorm, main_process_first, resolve_precision, sync_batchnorm
from ganxfer.recipe import Recipe, flat
from ganxfer.selection import select

log = logging.getLogger(__name__)
CHECK_EVERY = 8  # steps between the (one-sync) checks for non-finite losses, signals and time-based cadences
LOG_S, GRID_S, CHECKPOINT_S = 20, 180, 600  # training seconds between log rows, grids and checkpoints by default


class RunError(GanxferError):
    """A run-folder problem, phrased as one line for the user."""


class Diverged(GanxferError):
    """A NaN or infinite loss or weight: the run stops before anything is written from it."""


class Interrupted(GanxferError):
    """SIGINT or SIGTERM ended the run; the message says which checkpoint holds it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = EXIT_CODES[signum]


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> list[Path]:
    """Check the run folder against the flags (main process, lock held), clear what an interrupted write left,
    and return the checkpoints that a fresh start replaces: :func:`start_over` deletes them once the build
    (data, networks, warm starts) has succeeded, so a bad input never costs an earlier run."""
    left = checkpoint.clean_leftovers(run_dir)
    if left:
        announce(None, "removed the leftovers of an interrupted checkpoint write or prune: %s", ", ".join(left))
    if resume:
        if not checkpoint.candidates(run_dir):
            raise RunError(f"--resume: no checkpoint in {run_dir}/checkpoints; drop --resume to start fresh")
        return []
    found = [p for p in checkpoint.candidates(run_dir) if checkpoint.number(p) is not None]
    if found and not overwrite:
        raise RunError(f"{run_dir} already holds checkpoints; pass --resume to continue it, "
                       "--overwrite to start over, or --run-dir for a new folder")
    return found


EXPORTS = ("generator", "generator-best", "discriminator", "snapshots", "samples")  # what a run writes as it goes


def start_over(run_dir: Path, replaced: list[Path], recipe: Recipe) -> None:
    """A fresh start, once every check has passed: delete the replaced checkpoints, the rows an earlier attempt
    logged and its exports, so that no earlier generator stands beside the new recipe, and keep only this run's
    part of the warm-start report (the build has just written it) and of the selection preview."""
    for old in replaced:
        shutil.rmtree(old)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    for name in EXPORTS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
    report = run_dir / "transfer.json"
    if report.is_file():
        ours = {role for role in ("generator", "discriminator") if getattr(recipe, role).init}
        kept = {k: v for k, v in json.loads(report.read_text()).items() if k in ours}
        if kept:
            report.write_text(json.dumps(kept, indent=2))
        else:
            report.unlink()
    if recipe.data.select >= 1:
        (run_dir / "dropped.png").unlink(missing_ok=True)


def newest(run_dir: Path) -> str:
    """What is on disk to continue from, said truthfully."""
    found = checkpoint.checkpoints(run_dir)
    if not found:
        return "no checkpoint was written, so there is nothing to resume: start again without --resume"
    return f"the newest checkpoint is checkpoints/{found[-1].name}: continue with --resume"


@contextmanager
def faults(run_dir: Path):
    """Signals outside the loop's step boundary, and storage faults in the run folder, end the run with one line."""
    try:
        yield
    except Stop as e:
        raise Interrupted(f"stopped by {signal.Signals(e.signum).name}; {newest(run_dir)}", e.signum) from None
    except OSError as e:
        path = Path(os.path.abspath(e.filename)) if e.filename else None
        ours = Path(os.path.abspath(run_dir))
        message = checkpoint.fault(e, path.parent if path else run_dir)
        if message is None or not (path is None or path in ours.parents or ours in (path, *path.parents)):
            raise  # not a write into the run folder (e.g. unreadable data): not ours to rephrase
        raise RunError(message) from None


def optimizer_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """Trainable parameters, with the model's own groups (e.g. a backbone at a lower lr) when it has them."""
    if hasattr(model, "optimizer_groups"):
        return model.optimizer_groups(lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def same_layout(opt: torch.optim.Optimizer) -> None:
    """Give each state tensor shaped like its parameter the parameter's memory layout (a checkpoint holds them
    NCHW): a fused Adam reads a parameter and its state as flat memory, so a channels-last parameter with NCHW
    state would be updated wrongly, without an error."""
    for p, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def fused_adam(groups: list[dict], betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam over ``groups``, fused (one kernel over all tensors) where torch has it for their device and dtype, as
    for float tensors on CPUs and CUDA GPUs; else torch's default (foreach on GPUs). Under fp16 a fused Adam also
    unscales and skips inside that kernel, so the GradScaler's check costs no host sync."""
    try:
        opt = torch.optim.Adam(groups, betas=betas, fused=True)
    except RuntimeError:  # `fused=True` requires floating point tensors of a supported device
        opt = torch.optim.Adam(groups, betas=betas)
    opt.register_load_state_dict_post_hook(same_layout)
    return opt


def adam(recipe: Recipe, G: torch.nn.Module, D: torch.nn.Module) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """G's and D's optimizers, at the recipe's learning rates and betas."""
    betas = tuple(recipe.optim.betas)
    return (fused_adam(optimizer_groups(G, recipe.optim.g_lr), betas),
            fused_adam(optimizer_groups(D, recipe.optim.d_lr), betas))


def diverged(what: str, counters: Counters, run_dir: Path) -> Diverged:
    return Diverged(f"training diverged by {counters.images_seen / 1000:.3f} kimg ({what}) and nothing was "
                    f"written from it; {newest(run_dir)}, after lowering optim.g_lr / optim.d_lr")


def check_weights(nets: dict[str, torch.nn.Module | None], counters: Counters, run_dir: Path) -> None:
    """Before anything is written from the weights (every process checks its own copy)."""
    bad = checkpoint.nonfinite(nets)
    if bad:
        raise diverged(f"{' and '.join(bad)} hold NaN or infinite weights", counters, run_dir)


def snapshot_marks(before_s: float, after_s: float, every: float, at: list[float]) -> list[float]:
    """The snapshot times, in minutes (multiples of ``every``, and ``at``), that training time just passed."""
    marks = [m for m in at if before_s < m * 60 <= after_s]
    if every > 0:
        marks += [k * every for k in range(int(before_s // (every * 60)) + 1, int(after_s // (every * 60)) + 1)]
    return sorted(set(marks))


@contextmanager
def frozen(model: torch.nn.Module):
    """``model``'s trainable parameters stop asking for gradients inside the block (StyleGAN2-ADA's toggle): the
    G step's backward then runs through D to the images only, skipping D's weight gradients, which it drops."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def save_grid(generator: torch.nn.Module, z: torch.Tensor, path: Path) -> torch.Tensor:
    """Write the fixed-z grid of ``generator`` (in eval mode, BatchNorm recalibrated); return its images."""
    with torch.no_grad():
        images = torch.cat([generator(zb).float().cpu() for zb in z.split(64)])
    write_grid(images, path)
    return images


SMALL_BN_BATCH = 16  # per-process images under which BatchNorm without train.sync_bn is warned about


def preflight(recipe: Recipe, acc: Accelerator) -> int:
    """Refuse what cannot run on these processes before anything is read or written; the per-process batch."""
    tr = recipe.train
    if tr.mixed_precision == "fp16" and acc.device.type == "cpu":
        raise RunError("train.mixed_precision=fp16 needs a GPU, and this run is on the CPU; use bf16 or no")
    if tr.batch_size % acc.num_processes:
        raise RunError(f"train.batch_size={tr.batch_size} must divide by the {acc.num_processes} processes")
    local_batch = tr.batch_size // acc.num_processes
    problem = batch_error(recipe, local_batch, acc.num_processes)
    if problem:
        raise RunError(problem)
    if acc.num_processes > 1 and local_batch < SMALL_BN_BATCH and not tr.sync_bn and acc.is_main_process:
        log.warning("each of the %d processes normalises BatchNorm over its own %d images of train.batch_size=%d, "
                    "which trains differently from one process (noisier statistics); raise train.batch_size to "
                    "%d or more, or set train.sync_bn=true", acc.num_processes, local_batch, tr.batch_size,
                    SMALL_BN_BATCH * acc.num_processes)
    if acc.device.type == "cuda":  # fixed shapes: let cuDNN pick its fastest kernels; TF32 where fp32 is asked
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return local_batch


def build_networks(recipe: Recipe, report: Path | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """G and D as the recipe builds them, warm-started where it says (``report``: where the transfer is reported)."""
    G = build_generator(recipe)
    if recipe.generator.init:
        from ganxfer.transfer import warm_start_generator

        G = warm_start_generator(G, recipe, report)
    D = build_discriminator(recipe)
    if recipe.discriminator.init:
        from ganxfer.transfer import warm_start_discriminator

        D = warm_start_discriminator(D, recipe, report)
    return G, D


def resume_run(acc: Accelerator, run_dir: Path, recipe: Recipe, nets: dict, optimizers: dict, rng: torch.Generator,
               budget: int) -> Counters:
    """Load the newest checkpoint that loads; the recipe's learning rates and betas win over the checkpoint's.
    ``budget``: the images the run will have trained at its end, which the checkpoint must not be past."""
    recipe_hparams = [[(g["lr"], g["betas"]) for g in o.param_groups] for o in optimizers.values()]
    state = checkpoint.load_checkpoint(acc, run_dir, nets, optimizers, rng)
    counters = state.counters
    for o, hp in zip(optimizers.values(), recipe_hparams, strict=True):
        for group, (lr, betas) in zip(o.param_groups, hp, strict=True):
            group["lr"], group["betas"] = lr, betas
    if counters.images_seen > budget:
        kimg = counters.images_seen / 1000
        raise RunError(f"--resume: train.kimg={recipe.train.kimg:g} is below the {kimg:g} kimg that "
                       f"checkpoints/{state.folder.name} has already trained; pass --set train.kimg={kimg:g} or more")
    announce(acc, "resumed from %s at %.3f kimg", state.folder, counters.images_seen / 1000)
    if acc.is_main_process:
        _truncate_metrics(run_dir / "metrics.jsonl", counters.images_seen)
    return counters


def train(recipe: Recipe, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train ``recipe`` into ``run_dir`` and return the exported generator folder."""
    run_dir = Path(run_dir)
    tr = recipe.train
    acc = accelerator(mixed_precision=resolve_precision(tr.mixed_precision),  # every launched process
                      log_with=tr.log_with or None,
                      project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tb")))
    local_batch = preflight(recipe, acc)
    with faults(run_dir), Signals() as signals, RunLock(run_dir, enabled=acc.is_main_process):
        replaced = prepare_run_dir(run_dir, resume, overwrite) if acc.is_main_process else []
        acc.wait_for_everyone()
        set_seed(recipe.seed)

        # --- build ---------------------------------------------------------------------------------
        with main_process_first(acc):  # one process per cache fetches a hub: dataset or MNIST; the others find it
            if acc.is_local_main_process:
                fetch_data(recipe.data)
        data = load_training_data(recipe.data, recipe.discriminator.conditional)
        with main_process_first(acc):  # data.select's embeddings: computed and cached once, then read from the cache
            data, dropped = select(data, recipe.data)
        if len(dropped) and acc.is_main_process:
            write_grid(to_float(dropped), run_dir / "dropped.png")
        G, D = build_networks(recipe, run_dir if acc.is_main_process else None)
        if tr.channels_last:  # G's and D's weights, and so their activations and G's images (and the EMA's)
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        G.classes = list(data.classes) if recipe.discriminator.conditional else []  # sample --class reads them
        objective = Objective(recipe)  # the D and G losses, with every term the recipe switches on
        evaluator = None
        if recipe.eval.every_kimg > 0:  # its extractor and reference data are checked before anything is deleted
            from ganxfer.metrics import TrainingEvaluator

            evaluator = TrainingEvaluator(recipe, acc.device)
        if acc.is_main_process and not resume:
            start_over(run_dir, replaced, recipe)
        ema = copy.deepcopy(G).eval().requires_grad_(False).to(acc.device) if tr.ema > 0 else None
        if tr.sync_bn and acc.num_processes > 1:  # BatchNorm over the global batch (the EMA copy stays plain)
            G, D = sync_batchnorm(G), sync_batchnorm(D)
        G, D, opt_g, opt_d = acc.prepare(G, D, *adam(recipe, G, D))
        G_raw, D_raw = acc.unwrap_model(G), acc.unwrap_model(D)
        diffaugment = DiffAugment(recipe.augment.policy)
        layout = torch.channels_last if tr.channels_last else torch.contiguous_format
        # the loop's randomness (flips, latents, augmentation), saved in checkpoints: one generator, alike on every
        # process, drawing for the global batch; each process takes its rows, so N processes draw what one would
        rng = torch.Generator(device=acc.device).manual_seed(recipe.seed * 7919 + 1)
        rank_slice = slice(acc.process_index * local_batch, (acc.process_index + 1) * local_batch)
        feed = Feed(data.to(acc.device), recipe.seed, tr.batch_size, rank_slice)  # this process's batches, on device
        part = Part(rng, rank_slice, tr.batch_size)  # this process's rows of the global batch's random draws
        # D sees DiffAugment's view in its fastest memory layout; a frozen projected D's features of the fakes are
        # computed once, in the last D step, and judged again in the G step
        reuse = tr.reuse_features and getattr(D_raw, "fixed_features", False)
        judge = Judge(D, lambda x: diffaugment(x, part).contiguous(memory_format=layout),
                      D_raw.features if reuse else None)
        fixed_z = torch.randn(tr.num_samples, recipe.generator.latent_dim,
                              generator=torch.Generator().manual_seed(recipe.seed)).to(acc.device)
        nets, optimizers = {"G": G_raw, "D": D_raw, "ema": ema}, {"opt_g": opt_g, "opt_d": opt_d}
        d_norms = spectral_norms(D_raw)  # D's spectral-normalised weights, which each step holds

        total = round(tr.kimg * 1000)
        per_iter = tr.batch_size * tr.d_steps  # the budget is met in whole iterations
        budget = math.ceil(total / per_iter) * per_iter
        counters = resume_run(acc, run_dir, recipe, nets, optimizers, rng, budget) if resume else Counters()
        if acc.is_main_process:  # only now: a resume that cannot continue leaves the run's recipe as it was
            (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
        budget_s = tr.minutes * 60 if tr.minutes is not None else math.inf
        hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat(recipe).items()}
        acc.init_trackers(recipe.name, config=hparams)

        # --- loop ----------------------------------------------------------------------------------

        def sampled() -> torch.nn.Module:
            """What grids, evaluations and exports see: the EMA (or G) with its own BatchNorm statistics."""
            return recalibrated(ema or local_batchnorm(G_raw), tr.bn_batches, tr.batch_size, seed=recipe.seed)

        def grid(generator: torch.nn.Module, at: int) -> None:
            images = save_grid(generator, fixed_z, run_dir / "samples" / f"{at:09d}.png")
            log_images(acc, images, at)
            value = spread(thumbnails(images)) / max(real_spread, 1e-12)
            _log(acc, run_dir, {"kimg": at / 1000, "step": counters.step, "grid_diversity": round(value, 4)})
            if value < COLLAPSE_GRID and at > 0:  # at kimg 0 a fresh generator draws one image by design
                log.warning("kimg %.1f: the sample grid is %.2fx as varied as real images; the generator may be "
                            "collapsing", at / 1000, value)

        announce(acc, "%d process(es) on %s: global batch %d = %d x %d per process, mixed precision %s",
                 acc.num_processes, hardware(acc), tr.batch_size, acc.num_processes, local_batch, acc.mixed_precision)
        meter = Meter(*objective.names)  # sums on the device; one sync per log row
        clock = Clock(counters.wall_s)  # training time: sampling, evaluation and checkpoints are paused()
        t_log, seen_log, checked_s = clock(), counters.images_seen, counters.wall_s
        cadence = {"log": Cadence(tr.log_every_kimg, LOG_S), "grid": Cadence(tr.sample_every_kimg, GRID_S),
                   "checkpoint": Cadence(tr.checkpoint_every_kimg, CHECKPOINT_S)}
        eval_every = max(1, round(recipe.eval.every_kimg * 1000)) if recipe.eval.every_kimg > 0 else 0
        with clock.paused():
            # the fixed-z grid's spread against as many real images: near 0 when every sample is the same face
            real_spread = spread(thumbnails(to_float(data.batch(torch.arange(min(len(data), tr.num_samples)))))) \
                if acc.is_main_process else 1.0  # grids are drawn by the main process only
            if counters.images_seen == 0 and acc.is_main_process:  # something to look at within a minute
                grid(sampled(), 0)
        G.train()
        D.train()
        signals.deferred = True  # from here a signal stops the run at the end of a step, with a checkpoint
        with Progress(budget, tr.minutes, counters.images_seen, counters.wall_s, acc.is_main_process) as bar:
            done = counters.images_seen >= total or counters.wall_s >= budget_s  # a resumed run at its budget
            while not done:
                before, wall_before = counters.images_seen, counters.wall_s
                for d_step in range(tr.d_steps):
                    images, labels = feed(counters.images_seen)
                    real = to_float(images)
                    if recipe.data.hflip:
                        flip = torch.rand(tr.batch_size, generator=rng, device=acc.device)[rank_slice] < 0.5
                        real = torch.where(flip[:, None, None, None], real.flip(3), real)
                    z = torch.randn(tr.batch_size, recipe.generator.latent_dim, generator=rng,
                                    device=acc.device)[rank_slice]
                    reals = Reals(real, labels if objective.labelled else None)
                    last_d = d_step == tr.d_steps - 1
                    with acc.autocast():
                        with torch.set_grad_enabled(last_d):  # the last D step's fakes keep their graph for G's step
                            fakes = objective.generate(G, z)
                        with spectral_norm_held(D_raw, advance=True, found=d_norms):  # one iteration per D step
                            loss, terms = objective.d_loss(judge, reals, fakes, counters.d_step, keep=last_d)
                    opt_d.zero_grad(set_to_none=True)
                    acc.backward(loss)
                    opt_d.step()
                    meter.update({"loss_d": loss, **terms})
                    counters.images_seen += tr.batch_size
                    counters.d_step += 1

                with acc.no_sync(D), frozen(D):  # D's weights get no gradient in the G step, and no all-reduce
                    with acc.autocast(), spectral_norm_held(D_raw, found=d_norms):  # nor does its estimate move
                        loss, terms = objective.g_loss(judge, fakes, counters.images_seen / 1e3)
                    opt_g.zero_grad(set_to_none=True)
                    acc.backward(loss)
                opt_g.step()
                if ema is not None:
                    update_ema(ema, G_raw, counters.step, tr.ema)
                meter.update({"loss_g": loss, **terms})
                counters.step += 1
                now = counters.images_seen
                counters.wall_s = clock()
                bar.update(now, counters.wall_s)

                # --- once per tick: log, grid, snapshots, evaluation, checkpoint ---------------------------
                last = now >= total
                stop = signals.received is not None and acc.num_processes == 1
                timed = dict.fromkeys(cadence, False)  # time-based events, as the main process's clock says
                if counters.step % CHECK_EVERY == 0 or last:  # one sync every few steps, not one per step
                    due = [c.by_time(checked_s, counters.wall_s) for c in cadence.values()] + \
                        [counters.wall_s >= budget_s] if acc.is_main_process else [False] * (len(cadence) + 1)
                    finite, stop_any, due = meter.health(acc, signals.received is not None, due)
                    stop = stop or stop_any  # processes agree on when to stop, log, draw and save
                    timed, last = dict(zip(cadence, due, strict=False)), last or due[-1]
                    checked_s = counters.wall_s
                    if not finite:
                        raise diverged("a NaN or infinite loss", counters, run_dir)
                if cadence["log"].by_images(before, now) or timed["log"] or last:
                    means = meter.means(acc)
                    if not all(math.isfinite(v) for v in means.values()):
                        raise diverged(", ".join(f"{k} {v:.4g}" for k, v in means.items()), counters, run_dir)
                    row = {"kimg": now / 1000, "step": counters.step, "batch_per_process": local_batch, **means,
                           "images_per_s": (now - seen_log) / max(clock() - t_log, 1e-9), "wall_s": round(clock(), 3)}
                    if last:
                        row["hardware"], row["mixed_precision"] = hardware(acc), acc.mixed_precision
                    _log(acc, run_dir, row)
                    bar.show(row, now, counters.wall_s)
                    t_log, seen_log = clock(), now
                with clock.paused():  # sampling, evaluation and checkpoints stay out of wall_s and images_per_s
                    snapshots = snapshot_marks(wall_before, counters.wall_s, tr.snapshot_every_minutes,
                                               tr.snapshot_at_minutes) if acc.is_main_process else []
                    show = (cadence["grid"].by_images(before, now) or timed["grid"] or before < 1000 <= now
                            or last) and acc.is_main_process
                    evaluate = evaluator is not None and (crossed(before, now, eval_every) or last)
                    save = cadence["checkpoint"].by_images(before, now) or timed["checkpoint"] or last or stop
                    if show or evaluate or snapshots or save:
                        check_weights(nets, counters, run_dir)
                    G_sampled = sampled() if show or evaluate or snapshots else None
                    if show:
                        grid(G_sampled, now)
                    for minutes in snapshots:
                        name = f"min-{minutes:g}"
                        export_model(G_sampled, run_dir / "snapshots" / name, "generator")
                        _log(acc, run_dir, {"kimg": now / 1000, "step": counters.step, "snapshot": f"snapshots/{name}",
                                            "wall_s": round(counters.wall_s, 3)})
                    if evaluate:
                        scores = evaluator(G_sampled, acc)
                        if acc.is_main_process:
                            _log(acc, run_dir, {"kimg": now / 1000, "step": counters.step, **scores})
                            value = scores.get(recipe.eval.best_metric)
                            if value is not None and (counters.best is None or value < counters.best):
                                counters.best = value
                                export_model(G_sampled, run_dir / "generator-best", "generator")
                    if save:
                        saved = checkpoint.save_checkpoint(acc, run_dir, counters, nets, optimizers, rng,
                                                           tr.keep_checkpoints)
                done = last
                if stop and not last:
                    if acc.is_main_process:  # so `ganxfer sample RUN` draws from an interrupted run too
                        export_model(G_sampled if G_sampled is not None else sampled(), run_dir / "generator",
                                     "generator")
                    signum = signals.received or signal.SIGTERM  # another process got it
                    raise Interrupted(f"stopped by {signal.Signals(signum).name} at {now / 1000:.3f} kimg; saved "
                                      f"checkpoints/{saved.name}: continue with --resume (generator/ holds the "
                                      "EMA generator so far)", signum)
            signals.deferred = False

        # --- export --------------------------------------------------------------------------------
        check_weights(nets, counters, run_dir)
        if acc.is_main_process:
            G_sampled = sampled()
            if not (run_dir / "samples" / f"{counters.images_seen:09d}.png").is_file():
                grid(G_sampled, counters.images_seen)
            export_model(G_sampled, run_dir / "generator", "generator")
            export_model(D_raw, run_dir / "discriminator", "discriminator")
        acc.wait_for_everyone()
        acc.end_training()
    return run_dir / "generator"


def hardware(acc: Accelerator) -> str:
    """What the run trained on, for the model card: e.g. '2x NVIDIA H100 80GB HBM3' or 'CPU (2 cores)'."""
    if acc.device.type == "cuda":
        return f"{acc.num_processes}x {torch.cuda.get_device_name(acc.device)}"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{acc.num_processes}x CPU ({usable} cores)"  # the cores this process may use (taskset, cgroups)


def log_images(acc: Accelerator, images: torch.Tensor, step: int) -> None:
    """The sample grid to every tracker that takes images (TensorBoard as a tensor, the others as PIL)."""
    from torchvision.transforms.functional import to_pil_image

    if not acc.trackers:
        return
    sheet = make_sheet(images, padding=2)
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": sheet[None]}, step=step)
        elif hasattr(tracker, "log_images"):
            tracker.log_images({"samples": [to_pil_image(sheet)]}, step=step)


def _log(acc: Accelerator, run_dir: Path, row: dict) -> None:
    """One metrics.jsonl row (main process), stating how many processes trained, and its scalars to trackers."""
    row = {**row, "num_processes": acc.num_processes}
    if acc.is_main_process:
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    constants = ("kimg", "step", "num_processes", "batch_per_process")
    scalars = {k: v for k, v in row.items() if k not in constants and isinstance(v, (int, float))}
    acc.log(scalars, step=round(row["kimg"] * 1000))


def _truncate_metrics(path: Path, images_seen: int) -> None:
    """Keep the log rows up to the checkpoint we resume from (so a resumed log has no duplicates), and drop
    damaged lines (a crash mid-write leaves half a line), saying how many."""
    if not path.is_file():
        return
    rows, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            kimg = float(json.loads(line)["kimg"])
        except (ValueError, KeyError, TypeError, RecursionError):  # a damaged or absurdly nested line
            damaged += bool(line.strip())
            continue
        if kimg * 1000 <= images_seen + 1e-6:
            rows.append(line)
    if damaged:
        log.warning("%s: dropped %d damaged line(s)", path, damaged)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(r + "\n" for r in rows))
    os.replace(tmp, path)

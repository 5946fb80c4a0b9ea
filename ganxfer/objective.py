"""The GAN objective: the discriminator's and the generator's loss with all their terms, one object built once
from the recipe (as EDM's ``training/loss.py`` and StyleGAN2-ADA's ``StyleGAN2Loss`` are).

The loop draws the batch, asks :class:`Objective` for the D step's and the G step's loss, steps the optimizers and
logs the terms each call reports; it names no term. A term is one small class below, listed in ``D_TERMS`` or
``G_TERMS``, with its recipe keys in :class:`ganxfer.schema.LossConfig`: ``build`` returns it when the recipe
switches it on, ``weight`` scales it, ``__call__`` computes it from what the step saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ganxfer import losses
from ganxfer.nets.base import Judgement
from ganxfer.schema import Recipe


class Reals(NamedTuple):
    """One batch of real images, and their labels where a conditional D or a class head reads them."""

    images: torch.Tensor
    labels: torch.Tensor | None


class Fakes(NamedTuple):
    """What G drew for the latents ``z``: the images, the class a conditional D judges each as (argmax of
    ``z[:, :K]``), and the output layer's values before the tanh when a term reads them."""

    images: torch.Tensor
    z: torch.Tensor
    labels: torch.Tensor | None
    pre_tanh: torch.Tensor | None


@dataclass
class Seen:
    """One step's batch and how D judged it (``real`` in the D step only); what every term reads."""

    fakes: Fakes
    fake: Judgement
    reals: Reals | None = None
    real: Judgement | None = None


class Judge:
    """D as both steps call it: on augmented images (``augment``: DiffAugment, D's memory layout).

    With ``features`` (a frozen projected D's backbone), the D step's last view of the fakes and their features
    serve the G step too, so the backbone runs once on them; otherwise the G step augments the fakes afresh.
    """

    def __init__(self, D: nn.Module, augment: Callable[[torch.Tensor], torch.Tensor],
                 features: Callable[[torch.Tensor], list[torch.Tensor]] | None = None):
        self.D, self.augment, self.features = D, augment, features
        self.kept: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def reals(self, reals: Reals) -> Judgement:
        return self.D(self.augment(reals.images), labels=reals.labels)

    def fakes_for_d(self, fakes: Fakes, keep: bool) -> Judgement:
        """The D step's judgement of the fakes (no gradient to G); ``keep``: the view the G step reuses."""
        if self.features is not None and keep:
            shown = self.augment(fakes.images)
            feats = self.features(shown)
            self.kept = shown, feats
            return self.D(shown.detach(), feats=[f.detach() for f in feats], labels=fakes.labels)
        return self.D(self.augment(fakes.images.detach()), labels=fakes.labels)

    def fakes_for_g(self, fakes: Fakes) -> Judgement:
        if self.kept is not None:
            (shown, feats), self.kept = self.kept, None
            return self.D(shown, feats=feats, labels=fakes.labels)
        return self.D(self.augment(fakes.images), labels=fakes.labels)


class Term:
    """A weighted loss term; ``name`` is its column in metrics.jsonl (None: not logged)."""

    name: ClassVar[str | None]
    pre_tanh: ClassVar[bool] = False  # reads Fakes.pre_tanh

    def __init__(self, weight: float):
        self.weight = weight

    @classmethod
    def build(cls, recipe: Recipe) -> Term | None:
        """The term as ``recipe`` sets it up, or None when it is off."""
        raise NotImplementedError

    def __call__(self, seen: Seen) -> torch.Tensor:
        raise NotImplementedError


# --- D terms ----------------------------------------------------------------------------------------------

class LabelRead(Term):
    """loss.classifier, D's side (AC-GAN): the class head learns the real labels, from real images only, so that
    G cannot teach it its own hybrids."""

    name = None  # G's side is logged as "classifier"

    @classmethod
    def build(cls, recipe):
        return cls(recipe.loss.classifier) if recipe.loss.classifier > 0 else None

    def __call__(self, seen):
        return F.cross_entropy(seen.real.classes.float(), seen.reals.labels)


# --- G terms ----------------------------------------------------------------------------------------------

class ModeSeeking(Term):
    """loss.mode_seeking: MSGAN's term, which grows as distinct latents draw alike images."""

    name = "mode_seeking"

    @classmethod
    def build(cls, recipe):
        return cls(recipe.loss.mode_seeking) if recipe.loss.mode_seeking > 0 else None

    def __call__(self, seen):
        return losses.mode_seeking(seen.fakes.images, seen.fakes.z)


class Saturation(Term):
    """loss.saturation: pixels beyond the tanh's reach (pre-tanh values past +-3) get D's gradient back."""

    name = "saturation"
    pre_tanh = True

    @classmethod
    def build(cls, recipe):
        return cls(recipe.loss.saturation) if recipe.loss.saturation > 0 else None

    def __call__(self, seen):
        return losses.saturation(seen.fakes.pre_tanh)


class FineDetail(Term):
    """loss.fine_detail: detail finer than the data has (below loss.fine_detail_size), which a small D misses."""

    name = "fine_detail"

    def __init__(self, weight: float, size: int):
        super().__init__(weight)
        self.size = size

    @classmethod
    def build(cls, recipe):
        lo = recipe.loss
        return cls(lo.fine_detail, lo.fine_detail_size) if lo.fine_detail > 0 else None

    def __call__(self, seen):
        return losses.fine_detail(seen.fakes.images, self.size)


class LabelDraw(Term):
    """loss.classifier, G's side (CatGAN's generator term): each fake read by the class head as some one class,
    confidently, with the classes used evenly."""

    name = "classifier"

    @classmethod
    def build(cls, recipe):
        return cls(recipe.loss.classifier) if recipe.loss.classifier > 0 else None

    def __call__(self, seen):
        return losses.cluster_loss(seen.fake.classes)


D_TERMS: tuple[type[Term], ...] = (LabelRead,)  # added to the D loss in this order, then R1
G_TERMS: tuple[type[Term], ...] = (ModeSeeking, Saturation, FineDetail, LabelDraw)


def batch_error(recipe: Recipe, local_batch: int, processes: int) -> str | None:
    """Why the objective cannot train on ``local_batch`` images per process, or None."""
    if recipe.loss.mode_seeking > 0 and local_batch < 2:
        return (f"loss.mode_seeking compares pairs of images in each process's batch, and train.batch_size="
                f"{recipe.train.batch_size} over {processes} process(es) leaves {local_batch} to each; raise "
                f"train.batch_size to {2 * processes} or more, or set loss.mode_seeking=0")
    return None


class Objective:
    """The D loss (loss.kind, its terms, lazy R1) and the G loss (loss.kind on the Top-k fakes, its terms)."""

    def __init__(self, recipe: Recipe):
        lo = recipe.loss
        self.kind = lo.kind
        self.d_terms = [t for t in (cls.build(recipe) for cls in D_TERMS) if t is not None]
        self.g_terms = [t for t in (cls.build(recipe) for cls in G_TERMS) if t is not None]
        self.r1_gamma, self.r1_every = lo.r1_gamma, lo.r1_every
        self.top_k, self.top_k_kimg = lo.top_k, lo.top_k_kimg
        self.conditional = recipe.discriminator.conditional
        self.labelled = bool(self.conditional)  # the reals' labels: a conditional D and AC-GAN's head read them
        self.pre_tanh = any(t.pre_tanh for t in self.g_terms)
        logged = [t.name for t in self.d_terms + self.g_terms if t.name]
        self.terms: tuple[str, ...] = (*(["r1"] if self.r1_gamma > 0 else []), *logged)  # what the losses report

    @property
    def names(self) -> tuple[str, ...]:
        """Everything the two steps report: their losses, then the terms."""
        return ("loss_d", "loss_g", *self.terms)

    def generate(self, G: nn.Module, z: torch.Tensor) -> Fakes:
        """G's images for ``z`` (with the values before the tanh when a term reads them)."""
        images, pre_tanh = G(z, with_pre_tanh=True) if self.pre_tanh else (G(z), None)
        labels = z[:, :self.conditional].argmax(1) if self.conditional else None
        return Fakes(images, z, labels, pre_tanh)

    def d_loss(self, judge: Judge, reals: Reals, fakes: Fakes, d_step: int, keep: bool
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D step ``d_step`` (counted over the run, for lazy R1): its loss and the terms it reports.
        ``keep``: the G step will reuse this step's view of the fakes."""
        r1_now = self.r1_gamma > 0 and d_step % self.r1_every == 0
        reals.images.requires_grad_(r1_now)
        real = judge.reals(reals)
        seen = Seen(fakes, judge.fakes_for_d(fakes, keep), reals, real)
        loss = losses.d_loss(self.kind, seen.real.logits, seen.fake.logits)
        loss, terms = self._add(loss, self.d_terms, seen)
        if r1_now:
            r1 = losses.r1_penalty(reals.images, seen.real.logits)
            loss = loss + r1 * (self.r1_gamma / 2 * self.r1_every)
            terms["r1"] = r1
        return loss, terms

    def g_loss(self, judge: Judge, fakes: Fakes, kimg: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The G step after ``kimg`` thousand images: its loss and the terms it reports."""
        seen = Seen(fakes, judge.fakes_for_g(fakes))
        logits = seen.fake.logits
        if self.top_k < 1:  # Top-k training: only the fakes D finds most real teach G
            n = len(fakes.images)
            share = losses.top_k_fraction(kimg, self.top_k, self.top_k_kimg)
            logits = losses.top_k(logits, n, max(1, round(share * n)))
        return self._add(losses.g_loss(self.kind, logits), self.g_terms, seen)

    @staticmethod
    def _add(loss: torch.Tensor, terms: list[Term], seen: Seen) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        report = {}
        for term in terms:
            value = term(seen)
            loss = loss + term.weight * value
            if term.name:
                report[term.name] = value
        return loss, report

import copy
import json
import math

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from ganxfer.augment import DiffAugment
from ganxfer.cli import main
from ganxfer.data import to_float
from ganxfer.loop import frozen, optimizer_groups
from ganxfer.losses import d_loss, g_loss, r1_penalty
from ganxfer.nets import backbones, build_discriminator, export_model, load_model, read_config
from ganxfer.nets.dcgan import DCGANGenerator
from ganxfer.nets.projected import MinibatchStd, ProjectedDiscriminator, RandomProjection, head
from ganxfer.recipe import load_recipe

LITE0 = "tf_efficientnet_lite0.in1k"
TEST_MODELS = ["test_efficientnet", "test_resnet", "test_convnext", "test_vit"]



pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def faces(anime_dir) -> torch.Tensor:
    """16 real anime faces in [-1, 1]."""
    files = [anime_dir / f"{i:05d}.jpg" for i in range(16)]
    return to_float(torch.stack([pil_to_tensor(Image.open(f).convert("RGB")) for f in files]))


def lite0_weights() -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(backbones.cached_weights(LITE0)))


def train_steps(D: ProjectedDiscriminator, faces: torch.Tensor, steps: int = 2, lr: float = 1e-3) -> DCGANGenerator:
    """The loop's D and G steps (hinge, DiffAugment, Adam over ``optimizer_groups``) on real faces.
    Checks on the way that every generator parameter receives a gradient through D."""
    torch.manual_seed(0)
    G = DCGANGenerator(resolution=64, ngf=8, latent_dim=16)
    opt_d = torch.optim.Adam(optimizer_groups(D, lr), betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr, betas=(0.5, 0.999))
    aug, gen = DiffAugment("color,translation,cutout"), torch.Generator().manual_seed(0)
    G.train()
    D.train()
    for step in range(steps):
        real = faces[(step * 8) % len(faces):][:8]
        fake = G(torch.randn(8, 16))
        loss = d_loss("hinge", D(aug(real, gen)).logits, D(aug(fake.detach(), gen)).logits)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        g_loss("hinge", D(aug(fake, gen)).logits).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
        opt_g.step()
    return G


def split_by_stage(D: ProjectedDiscriminator, state: dict[str, torch.Tensor], first: int):
    stages = backbones.Stages(D.backbone)
    early = {k: v for k, v in state.items() if stages.of_param(k) < first}
    return early, {k: v for k, v in state.items() if k not in early}


# --- shapes and modes on timm's tiny test models ------------------------------------------------------


@pytest.mark.parametrize("mode", ["frozen", "finetune", "partial"])
@pytest.mark.parametrize("name", TEST_MODELS)
def test_shapes_and_modes(name, mode):
    D = ProjectedDiscriminator(name, resolution=32, mode=mode, trainable_from=1, head_channels=8,
                               backbone_lr_mult=0.1)
    logits, classes = D(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert classes is None and isinstance(logits, list) and len(logits) == len(D.out_indices)
    assert all(t.shape[:2] == (2, 1) and t.shape[-1] <= 8 for t in logits)
    stages = backbones.Stages(D.backbone)
    for _ in range(2):  # after construction, and again after an eval()/train() round trip
        for n, p in D.backbone.named_parameters():
            trains = mode == "finetune" or (mode == "partial" and stages.of_param(n) >= 1)
            assert p.requires_grad == trains, n
            if "." in n:  # a submodule's own parameter: frozen parts stay in eval mode (BN stats never move)
                assert D.backbone.get_submodule(n.rpartition(".")[0]).training == trains, n
        D.eval().train()
    assert all(m.training for m in D.heads.modules())
    groups = D.optimizer_groups(1e-3)
    backbone_ids = {id(p) for p in D.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups[0]["params"]}.isdisjoint(backbone_ids) and groups[0]["lr"] == 1e-3
    if mode == "frozen":
        assert len(groups) == 1
    else:
        assert {id(p) for p in groups[1]["params"]} == backbone_ids and groups[1]["lr"] == pytest.approx(1e-4)


def test_normalisation_resize_and_grayscale():
    D = ProjectedDiscriminator("test_efficientnet", resolution=32, input_size=48, head_channels=8).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, std = backbones.mean_std(D.backbone)  # ImageNet's, from timm's pretrained_cfg
    expected = torch.nn.functional.interpolate(((x + 1) / 2 - mean) / std, size=(48, 48), mode="bilinear")
    want = backbones.features(D.backbone, expected, D.out_indices)
    got = D.features(x)
    assert [f.shape[-1] for f in got] == [24, 12, 6, 3, 2]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want, strict=True))
    gray = torch.rand(2, 1, 32, 32) * 2 - 1
    D1 = ProjectedDiscriminator("test_efficientnet", resolution=32, channels=1, input_size=48, head_channels=8)
    D1.load_state_dict(D.state_dict())
    D1.eval()
    assert all(torch.equal(a, b) for a, b in zip(D1(gray).logits, D(gray.repeat(1, 3, 1, 1)).logits, strict=True))


def test_projection_is_fixed_saved_and_exported(tmp_path):
    D = ProjectedDiscriminator("test_resnet", resolution=32, mode="finetune", projection=True, head_channels=8)
    proj = dict(D.projection.named_parameters())
    assert proj and not any(p.requires_grad for p in proj.values())
    assert {"projection.ccm.0.weight", "projection.csm.0.weight"} <= set(D.state_dict())
    in_groups = {id(p) for g in D.optimizer_groups(1e-3) for p in g["params"]}
    assert not in_groups & {id(p) for p in proj.values()}
    assert [m.out_channels for m in D.projection.ccm] == [8, 16, 32, 64, 128]
    export_model(D, tmp_path / "d", "discriminator")
    config = read_config(tmp_path / "d")
    assert config["ganxfer"]["kind"] == "projected" and config["out_indices"] == [0, 1, 2, 3, 4]
    assert "pretrained" not in config and "pretrained_file" not in config
    again = load_model(tmp_path / "d")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(again(x).logits, D.eval()(x).logits, strict=True))


def test_csm_is_projected_gans_feature_fusion():
    """CCM then CSM exactly as PG's FeatureFusionBlocks: add the fused coarser level, upsample 2x, 1x1 conv."""
    proj = RandomProjection([24, 40, 112, 320], 64)
    feats = [torch.randn(2, c, s, s) for c, s in zip([24, 40, 112, 320], [16, 8, 4, 2], strict=True)]
    out = proj(feats)
    assert proj.widths == [64, 64, 128, 256]
    assert [tuple(o.shape[1:]) for o in out] == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]

    def up(x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    ccm = [conv(f) for conv, f in zip(proj.ccm, feats, strict=True)]
    out3 = proj.csm[3](up(ccm[3]))
    out2 = proj.csm[2](up(out3 + ccm[2]))
    out1 = proj.csm[1](up(out2 + ccm[1]))
    out0 = proj.csm[0](up(out1 + ccm[0]))
    for got, want in zip(out, [out0, out1, out2, out3], strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["pg", "separable"])
def test_heads_have_projected_gans_depth(kind):
    """At 224 px with CSM (maps of 112 to 14), every head ends in 4x4 logits, the finest after four down
    blocks of 64, 128, 256 and 512 channels; at 64 px the same heads are shallower."""
    for cin, side, widths in [(64, 112, [64, 128, 256, 512]), (64, 56, [128, 256, 512]), (128, 28, [256, 512]),
                              (256, 14, [512])]:
        h = head(cin, 64, side, kind)
        bns = [m for m in h.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert [m.num_features for m in bns] == widths
        assert h(torch.randn(2, cin, side, side)).shape == (2, 1, 4, 4)
        depthwise = [m for m in h.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
        assert len(depthwise) == (len(widths) if kind == "separable" else 0)
    assert head(64, 64, 32, kind)(torch.randn(2, 64, 32, 32)).shape == (2, 1, 5, 5)
    assert head(256, 64, 4, kind)(torch.randn(2, 256, 4, 4)).shape == (2, 1, 1, 1)


def test_minibatch_std_sees_a_collapsed_batch():
    m = MinibatchStd(4)
    x = torch.randn(8, 3, 2, 2)
    y = m(x)
    assert y.shape == (8, 4, 2, 2) and torch.equal(y[:, :3], x)
    groups = x.reshape(4, 2, 3, 2, 2)  # StyleGAN's grouping: image i joins group i % (8 // 4)
    want = groups.var(0, unbiased=False).add(1e-8).sqrt().mean((1, 2, 3))
    torch.testing.assert_close(y[:, 3, 0, 0], want.repeat(4))
    same = x[:1].expand(8, -1, -1, -1)
    assert m(same)[:, 3].abs().max() < 1e-3  # a collapsed batch shows no spread


def test_pixel_discriminator_is_one_more_head(tmp_path):
    D = ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, pixel_ndf=8, mbstd=2)
    logits = D(torch.rand(4, 3, 32, 32) * 2 - 1).logits
    assert len(logits) == len(D.out_indices) + 1 and logits[-1].shape == (4, 1, 1, 1)
    assert any(n.startswith("pixel.") for n, _ in D.named_parameters())
    heads = {id(p) for p in D.optimizer_groups(1e-3)[0]["params"]}
    assert {id(p) for p in D.pixel.parameters()} <= heads  # trained with the heads
    export_model(D, tmp_path / "d", "discriminator")
    again = load_model(tmp_path / "d")
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(again(x).logits, D.eval()(x).logits, strict=True))
    heavy = ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, pixel_ndf=8, mbstd=2,
                                   pixel_weight=4.0)
    heavy.load_state_dict(D.state_dict())
    out, base = heavy.eval()(x).logits, D(x).logits
    assert torch.equal(out[-1], base[-1] * 4)
    assert all(torch.equal(a, b) for a, b in zip(out[:-1], base[:-1], strict=True))
    assert load_model(export_model(heavy, tmp_path / "h", "discriminator"))(x).logits[-1].equal(out[-1])


@pytest.mark.parametrize("kind", ["light", "pg"])
def test_conditional_heads_add_a_class_term_to_every_logit_map(kind, tmp_path):
    """discriminator.conditional on a projected D: each head's last conv has a per-class twin and the pixel D its
    class term, so every logit map depends on the label, and the class weights get gradient."""
    D = ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, heads=kind, pixel_ndf=8, mbstd=2,
                               conditional=10)
    x, y = torch.rand(4, 3, 32, 32) * 2 - 1, torch.tensor([1, 4, 4, 9])
    logits = D(x, labels=y).logits
    plain = ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, heads=kind, pixel_ndf=8,
                                   mbstd=2)
    assert [t.shape for t in logits] == [t.shape for t in plain(x).logits]
    other = D(x, labels=(y + 3) % 10).logits
    assert all((a - b).abs().amax(dim=(1, 2, 3)).min() > 0 for a, b in zip(logits, other, strict=True))
    sum(t.mean() for t in logits).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.projects.parameters())
    assert D.pixel.project.weight.grad.abs().sum() > 0
    again = load_model(export_model(D, tmp_path / "d", "discriminator"))
    assert all(torch.equal(a, b) for a, b in zip(again(x, labels=y).logits, D.eval()(x, labels=y).logits, strict=True))


def test_features_of_a_frozen_backbone_outlive_a_d_update():
    """What ``train.reuse_features`` relies on: with a frozen backbone, features computed before D's update give
    the updated D the same logits and the same gradient to the images as running the backbone again."""
    torch.manual_seed(0)
    D = ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, projection=True, pixel_ndf=8,
                               mbstd=2)
    assert D.fixed_features
    fake = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_(True)
    feats = D.features(fake)
    opt = torch.optim.Adam(optimizer_groups(D, 1e-2))
    d_loss("hinge", D(torch.rand(4, 3, 32, 32) * 2 - 1).logits,
           D(fake.detach(), feats=[f.detach() for f in feats]).logits).backward()
    opt.step()
    assert fake.grad is None  # the D step sent nothing back to the images
    D.eval()  # no spectral-norm power iteration between the two calls
    (reused,) = torch.autograd.grad(g_loss("hinge", D(fake, feats=feats).logits), fake)
    again = fake.detach().clone().requires_grad_(True)
    (fresh,) = torch.autograd.grad(g_loss("hinge", D(again).logits), again)
    assert fresh.abs().sum() > 0 and torch.allclose(reused, fresh, rtol=1e-5, atol=1e-7)
    for mode in ("finetune", "partial"):  # a trained backbone moves the features: nothing to reuse
        assert not ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, mode=mode,
                                          trainable_from=1).fixed_features


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit"])
def test_frozen_backbone_runs_in_the_autocast_dtype_as_a_copy(name, monkeypatch):
    """Under bf16 autocast a frozen backbone runs as a copy whose conv and linear weights are bf16 already: the
    features and the gradient to the images that autocast gives by casting the backbone's weights on every pass,
    from a copy taken once, and again after the weights change. The backbone's own weights (the state dict,
    checkpoints, exports) and its fp32 features stay as they are."""
    torch.manual_seed(0)
    D = ProjectedDiscriminator(name, resolution=32, head_channels=8, projection=True)
    x = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_(True)
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)

    def run(d: ProjectedDiscriminator) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = d.features(x)
        (grad,) = torch.autograd.grad(sum(f.float().square().mean() for f in feats), x)
        return [f.detach() for f in feats], grad

    fp32 = run(D)
    with bf16:
        cast = run(D)
        low = D.low_precision[1]
        assert run(D) and D.low_precision[1] is low  # taken once
    layers = [m for m in low.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(p.dtype == torch.bfloat16 for m in layers for p in m.parameters())
    assert all(v.dtype == torch.float32 for v in D.state_dict().values() if v.is_floating_point())
    plain = copy.deepcopy(D)
    monkeypatch.setattr(plain, "_backbone_for", lambda _: plain.backbone)  # autocast casts on every pass
    with bf16:
        assert all(torch.equal(a, b) for a, b in zip([*cast[0], cast[1]], [*run(plain)[0], run(plain)[1]],
                                                        strict=True))
    assert all(torch.equal(a, b) for a, b in zip([*fp32[0], fp32[1]], [*run(D)[0], run(D)[1]], strict=True))
    other = ProjectedDiscriminator(name, resolution=32, head_channels=8, projection=True)
    D.load_state_dict(other.state_dict())  # a resume: the copy follows the loaded weights
    monkeypatch.setattr(other, "_backbone_for", lambda _: other.backbone)
    with bf16:
        assert all(torch.equal(a, b) for a, b in zip(run(D)[0], run(other)[0], strict=True))
        assert D.low_precision[1] is not low
        trained = ProjectedDiscriminator(name, resolution=32, head_channels=8, mode="finetune")
        with frozen(trained):  # a trained backbone in the G step: its weights move between steps, no copy
            trained.features(x)
        assert trained.low_precision is None


def test_r1_through_the_backbone():
    D = ProjectedDiscriminator("test_convnext", resolution=32, head_channels=8)
    real = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    r1 = r1_penalty(real, D(real).logits)
    r1.backward()
    assert r1.item() > 0  # the double backward reaches every head weight through the frozen backbone
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in D.heads.named_parameters() if "weight" in n)


# --- the real lite0 weights ---------------------------------------------------------------------------


def test_frozen_lite0_stays_bit_identical_and_passes_gradient_to_g(lite0_cache, faces):
    D = ProjectedDiscriminator(LITE0, pretrained=True, mode="frozen", projection=True)
    ref = lite0_weights()
    heads = {k: v.clone() for k, v in D.heads.state_dict().items()}
    train_steps(D, faces)
    state = D.backbone.state_dict()
    assert len(state) == 288 and all(torch.equal(v, ref[k]) for k, v in state.items())  # BN stats included
    assert any(not torch.equal(v, heads[k]) for k, v in D.heads.state_dict().items())


def test_finetune_lite0_changes_the_backbone(lite0_cache, faces):
    D = ProjectedDiscriminator(LITE0, pretrained=True, mode="finetune", backbone_lr_mult=0.5)
    ref = lite0_weights()
    train_steps(D, faces)
    state = D.backbone.state_dict()
    params = dict(D.backbone.named_parameters())
    assert all(not torch.equal(state[k], ref[k]) for k in params)
    assert not torch.equal(state["bn1.running_mean"], ref["bn1.running_mean"])


def test_partial_lite0_changes_only_the_chosen_stages(lite0_cache, faces):
    D = ProjectedDiscriminator(LITE0, pretrained=True, mode="partial", trainable_from=3)
    ref = lite0_weights()
    train_steps(D, faces)
    early, late = split_by_stage(D, D.backbone.state_dict(), 3)
    assert {k.split(".")[0] for k in early} == {"conv_stem", "bn1", "blocks"} and "blocks.3.0.bn1.weight" in late
    assert all(torch.equal(v, ref[k]) for k, v in early.items())  # stages 0-2: params and BN stats
    params = dict(D.backbone.named_parameters())
    assert all(not torch.equal(v, ref[k]) for k, v in late.items() if k in params)
    assert all(not torch.equal(v, ref[k]) for k, v in late.items() if k.endswith("running_var"))


# --- through the CLI ----------------------------------------------------------------------------------


def test_anime_projected_end_to_end(lite0_cache, anime_dir, tmp_path, monkeypatch):
    """`ganxfer train recipes/anime_projected.yaml`, two steps of 32 real faces: the exported discriminator holds
    the untouched pretrained backbone under `backbone.` + timm's names, and reloads without any Hub weights."""
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "recipes/anime_projected.yaml", "--run-dir", str(run),
                                    "--set", "data.limit=256", "--set", "train.kimg=0.064",
                                    "--set", "train.batch_size=32", "--set", "train.num_samples=16",
                                    "--set", "generator.ngf=16"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_d" in r]
    assert rows[-1]["kimg"] == 0.064 and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in rows)
    exported = safetensors.torch.load_file(str(run / "discriminator" / "model.safetensors"))
    ref = lite0_weights()
    body = {k.removeprefix("backbone."): v for k, v in exported.items() if k.startswith("backbone.")}
    assert len(body) == 288 and all(torch.equal(v, ref[k]) for k, v in body.items())
    config = read_config(run / "discriminator")
    assert config["backbone"] == LITE0 and config["mode"] == "frozen" and "pretrained" not in config
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # no weights anywhere now
    D = load_model(run / "discriminator")
    assert all(torch.equal(v, exported[k]) for k, v in D.state_dict().items())


def test_spectral_pixel_discriminator_judges_each_image_on_its_own(tmp_path):
    """discriminator.pixel_norm reaches the pixel D: with spectral it has no BatchNorm, so in training mode an image's
    logit does not depend on the rest of its batch, where the BatchNorm one's does."""
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    for norm, batch_free in (("spectral", True), ("batch", False)):
        D = ProjectedDiscriminator("test_efficientnet", resolution=32, head_channels=8, pixel_ndf=8,
                                   pixel_norm=norm).train()
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D.pixel.modules()) is not batch_free
        state = {k: v.clone() for k, v in D.pixel.state_dict().items()}
        with torch.no_grad():
            alone = D.pixel(x[:1]).logits
            D.pixel.load_state_dict(state)  # the same power-iteration vectors (spectral) for the second call
            batch = D.pixel(torch.cat([x[:1], -x[1:]])).logits[:1]
        assert torch.allclose(alone, batch, atol=1e-6) is batch_free
    export_model(D.eval(), tmp_path / "d", "discriminator")
    assert read_config(tmp_path / "d")["pixel_norm"] == "batch"
    recipe = load_recipe("recipes/anime_from_mnist.yaml", ["discriminator.pixel_norm=spectral",
                                                            "discriminator.pretrained=false"])
    assert build_discriminator(recipe).pixel.head.parametrizations.weight is not None


def test_build_from_recipe_uses_the_recipe_keys(lite0_cache):
    recipe = load_recipe("recipes/anime_projected.yaml", ["discriminator.mode=partial",
                                                          "discriminator.trainable_from=2",
                                                          "discriminator.out_indices=[2, 3]",
                                                          "discriminator.head_channels=16",
                                                          "data.channels=1", "data.resolution=32"])
    D = build_discriminator(recipe)
    assert isinstance(D, ProjectedDiscriminator) and D.mode == "partial" and D.out_indices == [2, 3]
    assert D.projection is not None and [m.out_channels for m in D.projection.ccm] == [16, 32]
    assert [t.shape for t in D(torch.zeros(2, 1, 32, 32)).logits] == [(2, 1, 8, 8), (2, 1, 4, 4)]  # CSM: 8x8, 4x4 maps
    assert torch.equal(D.backbone.conv_stem.weight, lite0_weights()["conv_stem.weight"])


def test_missing_weights_stop_the_run_before_training(no_hub, anime_dir, tmp_path):
    """An empty Hub cache and no Hub: exit 2 and one line naming the model and the fixes, before any step."""
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "recipes/anime_projected.yaml", "--run-dir", str(run),
                                    "--set", "data.limit=8"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output
    assert f"backbone '{LITE0}'" in errors[0] and "discriminator.pretrained_file" in errors[0]
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()


def test_headline_discriminator_judges_channels_last_images_alike(lite0_cache, faces):
    """``train.channels_last`` changes only the memory layout of D's input: the headline's D (lite0, CSM, light
    heads with mbstd, pixel D) gives the same logits and the same gradient to the images, in fp32 (eval mode, so
    that spectral norm's power iteration does not move between the two calls)."""
    torch.manual_seed(0)
    D = build_discriminator(load_recipe("recipes/anime_from_mnist.yaml")).eval()
    outputs = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = faces.clone().contiguous(memory_format=layout).requires_grad_(True)
        logits = D(x).logits
        (grad,) = torch.autograd.grad(g_loss("hinge", logits), x)
        outputs.append((torch.cat([t.flatten() for t in logits]), grad))
    (a, ga), (b, gb) = outputs
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    # the gradient by relative norm: on real faces a few of lite0's ReLU6 inputs sit on a kink, so rounding at
    # 1e-6 flips their slope in one layout (2e-4 to 1.5e-3 of the norm, all in one or two images); a wrong layout
    # would be off by the whole norm
    assert ga.norm() > 0 and (ga - gb).norm() / ga.norm() < 1e-2, (ga - gb).norm() / ga.norm()

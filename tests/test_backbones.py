import pytest
import safetensors.torch
import timm
import torch
from click.testing import CliRunner

from ganxfer.cli import main
from ganxfer.errors import WeightsError
from ganxfer.nets import backbones
from ganxfer.nets.backbones import BackboneError

LITE0 = "tf_efficientnet_lite0.in1k"



pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.parametrize("name", list(backbones.KNOWN))
def test_every_known_backbone_builds_offline_with_its_documented_levels(name):
    """pretrained=False shapes at 64 px on CPU: channels and reductions are what `ganxfer backbones` lists."""
    model, indices = backbones.create(name)
    info = backbones.describe(name)
    assert indices == list(backbones.KNOWN[name].out_indices) == info["out_indices"]
    with torch.no_grad():
        feats = backbones.features(model.eval(), torch.randn(1, 3, 64, 64), indices)
    assert [f.shape[1] for f in feats] == info["channels"]
    assert [f.shape[-1] for f in feats] == [64 // r for r in info["reductions"]]
    assert info["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_convnext", "test_vit"])
def test_keys_are_timms_own(name):
    """The pruned backbone's keys are a subset of the full timm model's, tensor shapes equal."""
    model, _ = backbones.create(name)
    full = timm.create_model(name).state_dict()
    mine = model.state_dict()
    assert mine and all(k in full and full[k].shape == v.shape for k, v in mine.items())


def test_normalisation_comes_from_timms_pretrained_cfg():
    for name in ["test_resnet", "test_efficientnet"]:  # (0.5, 0.5, 0.5) and ImageNet's mean/std
        cfg = timm.models.get_pretrained_cfg(name)
        mean, std = backbones.mean_std(backbones.create(name)[0])
        assert mean.flatten().tolist() == pytest.approx(cfg.mean) and std.flatten().tolist() == pytest.approx(cfg.std)
    assert cfg.mean != (0.5, 0.5, 0.5)


def test_native_size_only_for_fixed_size_models():
    assert backbones.native_size(backbones.create("test_resnet")[0]) is None
    assert backbones.native_size(backbones.create("test_vit")[0]) is None  # dynamic_img_size
    fixed = timm.create_model("test_vit", features_only=True, feature_cls="getter", dynamic_img_size=False).model
    assert backbones.native_size(fixed) == 160


@pytest.mark.parametrize("name, expect", [
    ("test_resnet", {"conv1.weight": 0, "bn1.bias": 0, "layer1.0.conv1.weight": 1, "layer4.0.bn1.weight": 4}),
    ("test_efficientnet", {"conv_stem.weight": 0, "blocks.0.0.conv.weight": 0, "blocks.1.0.conv_exp.weight": 1,
                           "blocks.4.0.bn1.bias": 4}),
    ("test_convnext", {"stem.0.weight": 0, "stages.0.blocks.0.gamma": 0, "stages.3.blocks.0.gamma": 3}),
    ("test_vit", {"cls_token": 0, "patch_embed.proj.weight": 0, "blocks.0.attn.qkv.weight": 0,
                  "blocks.3.mlp.fc1.weight": 3}),
])
def test_stages_follow_feature_levels(name, expect):
    model, _ = backbones.create(name)
    stages = backbones.Stages(model)
    assert {k: stages.of_param(k) for k in expect} == expect
    order = [stages.of_param(k) for k, _ in model.named_parameters()]
    assert order == sorted(order)  # stages are contiguous runs in module order


def test_freeze_modes():
    model, _ = backbones.create("test_resnet")
    assert backbones.freeze(model, "frozen") == [""] and not any(p.requires_grad for p in model.parameters())
    assert backbones.freeze(model, "finetune") == [] and all(p.requires_grad for p in model.parameters())
    evals = backbones.freeze(model, "partial", 2)
    assert set(evals) == {"conv1", "bn1", "act1", "maxpool", "layer1"}
    stages = backbones.Stages(model)
    assert all(p.requires_grad == (stages.of_param(n) >= 2) for n, p in model.named_parameters())
    with pytest.raises(BackboneError, match=r"trainable_from=5 is out of range: this backbone has 5 stages"):
        backbones.freeze(model, "partial", 5)
    with pytest.raises(BackboneError, match="mode 'melted'"):
        backbones.freeze(model, "melted")


def test_bad_names_and_indices_are_one_line():
    with pytest.raises(BackboneError, match="'resnet_9000' is not a timm model; see 'ganxfer backbones'"):
        backbones.create("resnet_9000")
    with pytest.raises(BackboneError, match=r"out_indices \[1, 7\] do not fit backbone 'test_efficientnet'"):
        backbones.create("test_efficientnet", out_indices=[1, 7])
    with pytest.raises(BackboneError, match="Invalid pretrained tag"):
        backbones.weights_repo("resnet18.no_such_tag")


def test_cached_weights_reads_the_hub_cache(lite0_cache):
    path = backbones.cached_weights(LITE0)
    assert path is not None and path.name == "model.safetensors" and lite0_cache in path.parents
    assert backbones.cached_weights("tf_efficientnet_lite0") == path  # default tag
    assert backbones.cached_weights("resnet18") is None


def test_missing_weights_fail_in_one_line(no_hub):
    assert backbones.cached_weights(LITE0) is None
    with pytest.raises(WeightsError) as err:
        backbones.create(LITE0, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and f"backbone '{LITE0}'" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download timm/tf_efficientnet_lite0.in1k" in msg and "discriminator.pretrained_file" in msg
    with pytest.raises(WeightsError, match="timm has no pretrained weights for backbone 'efficientnet_b0_gn'"):
        backbones.create("efficientnet_b0_gn", pretrained=True)


def test_pretrained_file_loads_without_the_hub(lite0_cache, no_hub, tmp_path):
    source = next(lite0_cache.glob("snapshots/*/model.safetensors"))
    local = tmp_path / "lite0.safetensors"
    local.write_bytes(source.read_bytes())
    model, _ = backbones.create(LITE0, pretrained_file=str(local))
    ref = safetensors.torch.load_file(str(local))
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    with pytest.raises(WeightsError, match=r"\.safetensors does not hold test_efficientnet weights"):
        backbones.create("test_efficientnet", pretrained_file=str(local))
    with pytest.raises(WeightsError, match="nope.safetensors is not a .safetensors file"):
        backbones.create(LITE0, pretrained_file=str(tmp_path / "nope.safetensors"))


def test_cli_lists_the_known_backbones(lite0_cache):
    res = CliRunner().invoke(main, ["backbones"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 1 + len(backbones.KNOWN)
    lite0 = next(line for line in lines if line.startswith("tf_efficientnet_lite0 "))
    assert "24,40,112,320" in lite0 and "4,8,16,32" in lite0 and "3.0M" in lite0 and "yes (timm/" in lite0
    assert "no (timm/resnet18" in next(line for line in lines if line.startswith("resnet18 "))
    vit = next(line for line in lines if line.startswith("vit_tiny_patch16_224 "))
    assert "192,192,192,192" in vit and "16,16,16,16" in vit and "no (timm/vit_tiny" in vit

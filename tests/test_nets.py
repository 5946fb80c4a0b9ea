import copy

import pytest
import torch

from ganxfer.losses import r1_penalty
from ganxfer.nets import build_from_config, export_model, load_model
from ganxfer.nets.base import spectral_norm_held, spectral_norms
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(resolution, channels):
    g = DCGANGenerator(resolution=resolution, channels=channels, ngf=8, latent_dim=16)
    d = DCGANDiscriminator(resolution=resolution, channels=channels, ndf=8)
    x = g(torch.randn(2, 16))
    assert x.shape == (2, channels, resolution, resolution)
    assert x.abs().max() <= 1
    assert d(x).logits.shape == (2,) and d(x).classes is None


def test_discriminator_input_size_judges_the_area_averaged_image():
    d64 = DCGANDiscriminator(resolution=64, channels=1, ndf=8, input_size=32).eval()
    d32 = DCGANDiscriminator(resolution=32, channels=1, ndf=8).eval()
    d32.load_state_dict(d64.state_dict())  # the same network: three blocks for 32 px, not four
    x = torch.randn(3, 1, 64, 64, requires_grad=True)
    out = d64(x).logits
    assert len(d64.blocks) == 3
    assert torch.allclose(out, d32(torch.nn.functional.avg_pool2d(x, 2)).logits, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # R1 differentiates through the resize
    grad.square().sum().backward()
    assert all(p.grad is not None for p in d64.parameters())


def test_pre_tanh_output_is_what_the_image_is_the_tanh_of():
    g = DCGANGenerator(resolution=32, channels=3, ngf=8, latent_dim=16)
    z = torch.randn(4, 16)
    image, pre = g(z, with_pre_tanh=True)
    assert torch.equal(image, torch.tanh(pre)) and torch.equal(image, g(z))


def test_standard_widths_match_the_tutorial():
    g, d = DCGANGenerator(), DCGANDiscriminator()
    assert [b[0].out_channels for b in g.blocks] == [512, 256, 128, 64]
    assert sum(p.numel() for p in g.parameters()) == 3_576_704  # the PyTorch DCGAN tutorial's G
    assert sum(p.numel() for p in d.parameters()) == 2_765_568  # and its D


def test_dcgan_init_statistics():
    g = DCGANGenerator()
    w = g.blocks[1][0].weight
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3


def test_bad_resolution():
    with pytest.raises(ValueError, match="resolution 48 is not supported"):
        DCGANGenerator(resolution=48)


def test_export_rebuilds_the_exact_network(tmp_path):
    g = DCGANGenerator(resolution=32, channels=1, ngf=8, latent_dim=12)
    export_model(g, tmp_path / "g", "generator")
    again = load_model(tmp_path / "g")
    z = torch.randn(4, 12)
    assert torch.equal(g.eval()(z), again(z))
    assert type(build_from_config({"resolution": 32, "ganxfer": {"kind": "dcgan", "role": "discriminator"}})) \
        is DCGANDiscriminator


def test_class_head_reads_the_last_block_and_survives_export(tmp_path):
    d = DCGANDiscriminator(resolution=32, channels=1, ndf=8, classes=10).eval()
    x = torch.randn(3, 1, 32, 32)
    logits, classes = d(x)
    assert logits.shape == (3,) and classes.shape == (3, 10)
    plain = DCGANDiscriminator(resolution=32, channels=1, ndf=8).eval()
    plain.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith("classify.")})
    assert torch.equal(logits, plain(x).logits)  # the head adds an output, not a change to the logit
    export_model(d, tmp_path / "d", "discriminator")
    again = load_model(tmp_path / "d")
    assert torch.equal(again(x).classes, classes)


def test_conditional_discriminator_adds_the_labelled_class_term(tmp_path):
    """discriminator.conditional: the logit is the unconditional one plus a class-y term read from the same
    features (a projection D): so the label changes it, it has its own weights, and it survives export."""
    d = DCGANDiscriminator(resolution=32, channels=1, ndf=8, input_size=32, conditional=10).eval()
    x, y = torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 2, 7, 8, 9])
    logits = d(x, labels=y).logits
    assert logits.shape == (6,)
    other = d(x, labels=(y + 1) % 10).logits
    assert (logits - other).abs().min() > 0  # every image's logit depends on its label
    with torch.no_grad():
        d.project.weight.zero_()
    plain = DCGANDiscriminator(resolution=32, channels=1, ndf=8, input_size=32).eval()
    plain.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith("project.")})
    assert torch.equal(d(x, labels=y).logits, plain(x).logits)  # with the class weights at zero, the unconditional D
    with pytest.raises(ValueError, match="class-conditional: pass each image's labels"):
        d(x)
    d = DCGANDiscriminator(resolution=32, channels=1, ndf=8, conditional=10).eval()
    again = load_model(export_model(d, tmp_path / "d", "discriminator"))
    assert torch.equal(again(x, labels=y).logits, d(x, labels=y).logits)


def test_grow_blocks_start_as_nearest_upsampling():
    g = DCGANGenerator(resolution=64, ngf=8, grow=1)
    x = torch.rand(1, 8, 5, 5)
    up = g.blocks[-1][0](x)
    assert torch.equal(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_sample_is_seeded_and_in_eval_mode():
    g = DCGANGenerator(resolution=32, ngf=8)
    g.train()
    a, b = g.sample(3, seed=1), g.sample(3, seed=1)
    assert torch.equal(a, b) and g.training
    assert not torch.equal(a, g.sample(3, seed=2))


def test_sample_seed_device_dtype_and_empty():
    g = DCGANGenerator(resolution=32, channels=3, ngf=8, latent_dim=16)
    torch.manual_seed(0)
    a, b = g.sample(2), g.sample(2)
    assert not torch.equal(a, b)  # seed=None: fresh noise each call, from torch's global generator
    torch.manual_seed(0)
    assert torch.equal(g.sample(2), a)
    assert g.sample(0).shape == (0, 3, 32, 32)
    d = g.double().sample(2, seed=1)
    assert d.dtype == torch.float64
    torch.testing.assert_close(d.float(), g.float().sample(2, seed=1), atol=1e-5, rtol=1e-4)
    out = g.sample(2, seed=1, device="meta")
    assert out.device.type == "meta" and next(g.parameters()).device.type == "meta"
    with pytest.raises(ValueError, match="n=-1"):
        g.sample(-1)


@pytest.mark.parametrize("norm", ["spectral", "none"])
def test_unbatched_discriminator_judges_each_image_on_its_own(tmp_path, norm):
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    batch, unbatched = (DCGANDiscriminator(32, 1, 8, norm=n).train() for n in ("batch", norm))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in unbatched.modules())
    assert (norm == "spectral") == any(torch.nn.utils.parametrize.is_parametrized(m) for m in unbatched.modules())

    def whole_and_alone(d: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The first two logits within the batch and on their own, from equal copies (a train-mode forward
        moves BatchNorm's running statistics and the power iteration's vectors)."""
        return copy.deepcopy(d)(x).logits[:2], copy.deepcopy(d)(x[:2]).logits

    assert not torch.allclose(*whole_and_alone(batch), atol=1e-4)  # BatchNorm: relative to the batch
    assert torch.allclose(*whole_and_alone(unbatched), atol=1e-5)
    unbatched.eval()
    export_model(unbatched, tmp_path / "d", "discriminator")
    again = load_model(tmp_path / "d", "discriminator").eval()
    assert torch.equal(again(x).logits, unbatched(x).logits)
    with pytest.raises(ValueError, match="use one of batch, spectral, none"):
        DCGANDiscriminator(norm="layer")


def estimates(d: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Spectral norm's u and v of every normalised weight, copied."""
    return {k: v.clone() for k, v in d.state_dict().items() if k.endswith(("._u", "._v"))}


def test_spectral_norm_held_advances_the_estimate_once_per_d_step():
    """A D step's forwards (reals with R1's double backward, fakes) divide by one estimate, advanced by one power
    iteration on entering, as one train-mode forward would advance it; the G step's forward leaves it where it is;
    afterwards each normalisation is in the mode it was in. Unheld, each train-mode forward iterates again."""
    torch.manual_seed(0)
    D = DCGANDiscriminator(32, 3, 8, norm="spectral").train()
    assert len(spectral_norms(D)) == 4 and estimates(D)
    once, unheld = copy.deepcopy(D), copy.deepcopy(D)
    real, fake = torch.randn(4, 3, 32, 32, requires_grad=True), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        once(fake)  # one power iteration per weight
    with spectral_norm_held(D, advance=True):
        logits = D(real).logits
        (D(fake).logits.mean() - logits.mean() + r1_penalty(real, logits)).backward()
        assert torch.equal(D(fake).logits, once.eval()(fake).logits)  # the advanced estimate, not iterated again
    after_d = estimates(D)
    assert all(torch.equal(v, estimates(once)[k]) for k, v in after_d.items())
    with spectral_norm_held(D):  # the G step
        D(fake).logits.mean().backward()
    assert all(torch.equal(v, after_d[k]) for k, v in estimates(D).items())
    assert all(p.training for m, name in spectral_norms(D) for p in m.parametrizations[name])
    unheld(real), unheld(fake)
    assert not all(torch.equal(v, after_d[k]) for k, v in estimates(unheld).items())

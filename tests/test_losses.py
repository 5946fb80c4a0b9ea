import pytest
import torch

from ganxfer.losses import d_loss, g_loss, mode_seeking, r1_penalty


def test_bce_matches_torch():
    real, fake = torch.randn(16), torch.randn(16)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(16)) + bce(fake, torch.zeros(16))
    assert torch.allclose(d_loss("bce", real, fake), expected, atol=1e-6)
    assert torch.allclose(g_loss("bce", fake), bce(fake, torch.ones(16)), atol=1e-6)


def test_hinge_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert d_loss("hinge", real, fake).item() == (0 + 0.5) / 2 + (0 + 1) / 2
    assert g_loss("hinge", fake).item() == 1.0


def test_multiscale_logits_sum_per_scale_means():
    a, b = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 2, 2)
    assert torch.allclose(g_loss("hinge", [a, b]), -(a.mean() + b.mean()))


def test_r1_is_squared_gradient_norm():
    x = torch.randn(3, 2, requires_grad=True)
    w = torch.tensor([1.0, 2.0])
    logits = (x * w).sum(1)  # gradient w.r.t. each row is w, so |grad|^2 = 5
    assert torch.allclose(r1_penalty(x, logits), torch.tensor(5.0))


def test_r1_is_normalised_like_the_loss():
    """A multi-scale D's R1 is that of its per-image score (map means summed), whatever the map sizes."""
    x = torch.randn(3, 2, requires_grad=True)
    a, b = (x * torch.tensor([1.0, 2.0])).sum(1), (x * torch.tensor([0.0, 1.0])).sum(1)  # scores; |grad|^2 = 1+9
    maps = [a.view(3, 1, 1, 1).expand(3, 1, 5, 5), b.view(3, 1, 1, 1).expand(3, 1, 2, 2)]
    assert torch.allclose(r1_penalty(x, maps), torch.tensor(10.0))
    assert torch.allclose(r1_penalty(x, [a]), r1_penalty(x, a))


def test_mode_seeking_is_inverse_image_distance_per_latent_distance():
    z = torch.randn(8, 100)
    fake = torch.rand(8, 3, 16, 16) * 2 - 1
    expected = 1 / ((fake[:4] - fake[4:]).abs().mean() / (z[:4] - z[4:]).abs().mean())
    assert torch.allclose(mode_seeking(fake, z), expected, rtol=1e-4)
    collapsed = fake[:1].expand(8, -1, -1, -1)  # every latent draws the same image
    assert mode_seeking(collapsed, z) > 1e4 * mode_seeking(fake, z)
    with pytest.raises(ValueError, match="at least 2 images"):
        mode_seeking(fake[:1], z[:1])


def test_mode_seeking_gradient_pushes_samples_apart():
    z = torch.randn(16, 8)
    fake = (torch.randn(16, 3, 8, 8) * 0.01).requires_grad_()  # a nearly collapsed batch
    opt = torch.optim.SGD([fake], lr=1e-3)
    before = (fake[:8] - fake[8:]).abs().mean().item()
    for _ in range(5):
        opt.zero_grad()
        mode_seeking(fake, z).backward()
        opt.step()
    assert (fake[:8] - fake[8:]).abs().mean().item() > 2 * before

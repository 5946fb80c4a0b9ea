import pytest
import torch
import torch.nn.functional as F

from ganxfer import losses
from ganxfer.losses import (
    cluster_loss,
    d_loss,
    fine_detail,
    g_loss,
    mode_seeking,
    r1_penalty,
    top_k,
    top_k_fraction,
)


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


def test_saturation_is_zero_inside_the_tanh_range_and_squared_beyond():
    pre = torch.tensor([0.0, 2.9, -3.0, 4.0, -5.0])
    assert losses.saturation(pre).item() == pytest.approx((0 + 0 + 0 + 1 + 4) / 5)
    assert losses.saturation(torch.randn(2, 3, 8, 8).clamp(-3, 3)).item() == 0


def test_saturation_revives_a_pixel_stuck_beyond_the_tanh():
    """A pixel far below the tanh's range gets no gradient from a loss that wants it brighter; with the
    penalty it comes back into range and then brightens."""
    results = {}
    for weight in (0.0, 1.0):
        pre = torch.tensor([-10.0], requires_grad=True)
        opt = torch.optim.SGD([pre], lr=1.0)
        for _ in range(200):
            opt.zero_grad()  # below: a G loss that wants a brighter pixel, plus the penalty
            (-torch.tanh(pre).mean() + weight * losses.saturation(pre)).backward()
            opt.step()
        results[weight] = pre.item()
    assert results[0.0] == pytest.approx(-10.0, abs=1e-3)  # stuck: tanh'(-10) is about 8e-9
    assert results[1.0] > 2  # back in range, then brightened to the range's edge


def test_top_k_keeps_the_fakes_d_scores_as_most_real():
    """Every map keeps the same images, ranked by the per-image score (map means summed)."""
    maps = torch.tensor([0.0, 3.0, 1.0, 2.0]).view(4, 1, 1, 1).expand(4, 1, 3, 3)
    single = torch.tensor([0.0, 0.0, 5.0, 0.0])  # scores [0, 3, 6, 2]: images 2, then 1
    kept = top_k([maps, single], 4, 2)
    assert kept[0].shape == (2, 1, 3, 3) and torch.equal(kept[0][:, 0, 0, 0], torch.tensor([1.0, 3.0]))
    assert torch.equal(kept[1], torch.tensor([5.0, 0.0]))
    assert top_k(single, 4, 4) is single


def test_top_k_g_loss_has_no_gradient_from_the_dropped_fakes():
    fake = torch.randn(8, 3, requires_grad=True)
    logits = fake.sum(1)
    g_loss("bce", top_k(logits, 8, 3)).backward()
    order = logits.detach().argsort(descending=True)
    assert fake.grad[order[:3]].abs().min() > 0
    assert fake.grad[order[3:]].abs().max() == 0


def test_top_k_fraction_falls_linearly_then_holds():
    assert [top_k_fraction(k, 0.5, 10) for k in (0, 5, 10, 40)] == [1.0, 0.75, 0.5, 0.5]
    assert top_k_fraction(0, 0.5, 0) == 0.5


def test_the_class_code_is_uniform_under_the_normal_prior():
    """c = argmax of z's first K entries (discriminator.conditional): K equally likely classes, so sampling needs no
    change."""
    z = torch.randn(100_000, 100, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(z[:, :10].argmax(1), minlength=10) / len(z)
    assert (share - 0.1).abs().max() < 0.005


def test_cluster_loss_rewards_confident_balanced_classes():
    k = 10
    confident_balanced = 30 * torch.eye(k).repeat(4, 1)  # 40 images, each sure of its class, all classes used
    confident_one_class = 30 * torch.eye(k)[[0] * 40]
    unsure = torch.zeros(40, k)
    assert torch.allclose(cluster_loss(confident_balanced), -torch.tensor(k).float().log(), atol=1e-5)
    assert cluster_loss(confident_one_class).abs() < 1e-5  # confident, but one cluster: no information
    assert cluster_loss(unsure).abs() < 1e-5  # balanced, but unsure
    logits = torch.randn(40, k, requires_grad=True)
    cluster_loss(logits).backward()  # a step against the gradient sharpens every image's top class
    sharper = (logits - 0.5 * logits.grad).softmax(1).max(1).values
    assert (sharper > logits.softmax(1).max(1).values).float().mean() > 0.9


def test_fine_detail_sees_only_what_a_small_d_cannot():
    """The penalty is the energy of a 64 px image's detail finer than 32 px: a 2 px checkerboard is all detail,
    a constant or smooth image has none or almost none, and descending it removes the checkerboard laid over a
    smooth image while the smooth image stays."""
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 2.0 - 1
    checker = checker.expand(2, 1, 64, 64)
    assert fine_detail(checker, 32).item() == pytest.approx(1.0)
    assert fine_detail(torch.full((2, 1, 64, 64), 0.3), 32).item() == pytest.approx(0.0, abs=1e-12)
    smooth = F.interpolate(torch.rand(2, 1, 8, 8) * 2 - 1, size=(64, 64), mode="bilinear", align_corners=False)
    assert fine_detail(smooth, 32).item() < 1e-3
    x = (smooth + 0.5 * checker).requires_grad_(True)
    opt = torch.optim.SGD([x], lr=2000.0)
    for _ in range(50):
        opt.zero_grad()
        fine_detail(x, 32).backward()
        opt.step()
    assert fine_detail(x, 32).item() < 1e-3 < fine_detail(smooth + 0.5 * checker, 32).item()
    left = x.detach() - smooth  # what is left of the checkerboard (0.5 of it at the start), and the rest moved
    assert (left * checker).mean().abs() < 0.01 and left.abs().mean() < 0.05

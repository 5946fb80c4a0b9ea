import pytest
import torch
import torch.nn.functional as F

from ganxfer.augment import POLICIES, DiffAugment, brightness, cutout, translation, translation_reflect

FULL = "color,translation,cutout"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ["", "color", "translation", "translation_reflect", "cutout", FULL])
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (2, 1, 12, 20)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shapes_dtype_and_layout_are_kept(policy, shape, layout):
    """The result is dense in the input's memory format (a channels-last D's images stay channels-last), with the
    values an NCHW input gets."""
    x = (torch.rand(shape) * 2 - 1).contiguous(memory_format=layout)
    y = DiffAugment(policy)(x, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous(memory_format=layout)
    assert torch.allclose(y, DiffAugment(policy)(x.contiguous(), gen()), atol=1e-6)


def test_empty_policy_is_identity():
    x = torch.randn(2, 3, 8, 8)
    aug = DiffAugment(" , ")
    assert aug.ops == [] and torch.equal(aug(x, gen()), x)
    assert len(DiffAugment(FULL).ops) == 5  # color is three ops


def test_unknown_policy_names_the_choices():
    choices = "color, translation, translation_reflect, cutout"
    with pytest.raises(ValueError, match=f"unknown 'colour'; use a comma list of {choices}"):
        DiffAugment("colour,cutout")


def test_deterministic_given_a_generator():
    x = torch.randn(8, 3, 16, 16)
    aug = DiffAugment(FULL)
    assert torch.equal(aug(x, gen(3)), aug(x, gen(3)))
    assert not torch.equal(aug(x, gen(3)), aug(x, gen(4)))
    g = gen(3)  # the loop's real and fake batches draw from one generator: they get fresh, independent draws
    assert not torch.equal(aug(x, g), aug(x, g))


def test_differentiable_gradcheck():
    """Every op is differentiable w.r.t. the images (that is how G learns through an augmented D)."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    for policy in [*POLICIES, FULL]:
        aug = DiffAugment(policy)
        fn = lambda t, a=aug: a(t, gen(1))  # noqa: E731  (a fixed draw on every call)
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, fast_mode=True), policy


def test_gradient_reaches_every_image():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    DiffAugment(FULL)(x, gen()).square().sum().backward()
    assert x.grad is not None and (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_brightness_adds_one_offset_per_image():
    x = torch.rand(16, 3, 8, 8)
    delta = brightness(x, gen()) - x
    per_image = delta.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    assert per_image.abs().max() <= 0.5


def test_translation_is_a_pure_shift_with_zero_fill():
    """Content inside a zero border wider than the largest shift (1/8 of 16 = 2 px) is moved, never lost."""
    x = torch.zeros(32, 3, 16, 16)
    x[:, :, 4:12, 4:12] = torch.rand(32, 3, 8, 8) + 0.1
    y = translation(x, gen())
    assert torch.allclose(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    for img_x, img_y in zip(x, y, strict=True):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(torch.roll(img_x, (dy, dx), (1, 2)), img_y)]
        assert len(shifts) == 1
    assert len({tuple(map(int, (y[i] > 0).nonzero()[0])) for i in range(32)}) > 1  # shifts vary per image
    assert torch.equal(translation(x, gen(), ratio=0.0), x)


def test_translation_reflect_fills_the_border_with_the_mirrored_image():
    """Every output is one window of the reflect-padded image (shifts up to 2 px at 16 px); no pixel is zero."""
    x = torch.rand(32, 3, 16, 16) + 0.1
    y = translation_reflect(x, gen())
    padded = F.pad(x, [2, 2, 2, 2], mode="reflect")
    found = []
    for img_p, img_y in zip(padded, y, strict=True):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(img_p[:, 2 + dy:18 + dy, 2 + dx:18 + dx], img_y)]
        assert len(shifts) == 1
        found.append(shifts[0])
    assert (y > 0).all() and len(set(found)) > 5
    assert torch.equal(translation(x, gen(), ratio=0.0, fill="reflect"), x)
    assert (translation(x, gen()) == 0).any()  # the default fill is zeros


def test_cutout_zeroes_one_square_of_at_most_a_quarter():
    x = torch.ones(64, 3, 16, 16)
    y = cutout(x, gen())
    zero = (y == 0).all(1)  # the same pixels in every channel
    assert torch.equal((y == 0), zero[:, None].expand_as(y))
    frac = zero.flatten(1).float().mean(1)
    assert (frac > 0).all() and (frac <= 0.25).all() and (frac == 0.25).any()
    assert torch.equal(y[~zero[:, None].expand_as(y)], x[~zero[:, None].expand_as(y)])


@pytest.mark.parametrize("policy", [FULL, "color,translation_reflect,cutout"])
def test_parts_of_a_batch_draw_what_the_whole_batch_draws(policy):
    """Two processes, each augmenting its half with a Part of the same generator state, produce exactly the
    whole batch's augmentation (what one process draws), for every op."""
    from ganxfer.augment import Part

    x = torch.rand(8, 3, 16, 16) * 2 - 1
    whole = DiffAugment(policy)(x, gen())
    halves = [DiffAugment(policy)(x[rows], Part(gen(), rows, 8)) for rows in (slice(0, 4), slice(4, 8))]
    assert torch.equal(torch.cat(halves), whole)

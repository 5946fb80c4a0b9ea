"""The sampled generator: EMA weights with BatchNorm statistics recomputed for them."""

import torch
from torch import nn

from ganxfer.ema import batchnorms, recalibrated, update_ema
from ganxfer.nets.dcgan import DCGANGenerator
from ganxfer.sources import load_generator


def test_statistics_are_the_exact_average_of_the_copy_batches():
    g = DCGANGenerator(resolution=32, channels=3, ngf=8, latent_dim=16).train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    r = recalibrated(g, batches=2, batch_size=5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the training RNG is untouched
    assert g.training and all(torch.equal(before[k], v) for k, v in g.state_dict().items())  # so is g
    assert not r.training and r is not g
    z = torch.randn(10, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h = [g.blocks[0][0](zb.view(5, 16, 1, 1)) for zb in z.split(5)]  # the first BatchNorm's input
    bn = batchnorms(r)[0]
    expect_mean = torch.stack([x.mean((0, 2, 3)) for x in h]).mean(0)
    expect_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in h]).mean(0)
    torch.testing.assert_close(bn.running_mean, expect_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, expect_var, atol=1e-6, rtol=1e-5)
    assert bn.momentum == 0.1  # the copy keeps the default for later training


def test_recalibrated_eval_output_matches_train_mode_on_the_bundled_generator():
    """Eval-mode samples of the recalibrated copy are what the weights draw in train mode over big batches."""
    g = load_generator("dcgan-mnist-64")  # exported recalibrated: give it statistics of no weights, as an EMA has
    for bn in batchnorms(g):
        bn.reset_running_stats()
    z = torch.randn(256, g.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        train_out = g.train()(z)
        stale = (g.eval()(z) - train_out).abs().mean().item()
        fresh = (recalibrated(g, batches=8, batch_size=256, seed=1)(z) - train_out).abs().mean().item()
    assert fresh < stale / 3 and fresh < 0.01, (fresh, stale)


def test_posthoc_rebuild_matches_the_loops_ema():
    """benchmarks/posthoc_ema.py rebuilds the EMA the loop keeps: driven by update_ema over G linear between
    dumps, the rebuilt average equals the real one (so its other schedules are rebuilt the same way)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import posthoc_ema

    torch.manual_seed(0)
    G, ema = nn.Linear(4, 3), nn.Linear(4, 3)
    start = {k: v.clone() for k, v in G.state_dict().items()}
    ema.load_state_dict(start)
    ends = [(30, {k: torch.randn_like(v) for k, v in start.items()}),
            (75, {k: torch.randn_like(v) for k, v in start.items()})]
    prev_step, prev = 0, start
    for step, end in ends:  # the live weights walk linearly from one dump to the next
        for t in range(prev_step + 1, step + 1):
            w = (t - prev_step) / (step - prev_step)
            G.load_state_dict({k: (1 - w) * prev[k] + w * end[k] for k in start})
            update_ema(ema, G, t - 1, 0.9)
        prev_step, prev = step, end
    beta = posthoc_ema.schedules(0.9, [])["recipe"]
    rebuilt = posthoc_ema.rebuild(beta, start, ends, list(start))
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(rebuilt[k], v, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rebuilt["weight"], ends[-1][1]["weight"], atol=1e-2)  # an average, not the end

"""Limits of detection: measured on the host's own noisy undoped spectrum, they keep noise from
being read as a dopant and vanish on a noiseless spectrum."""

import numpy as np
import torch

from defectnet.calibration import noisy_undoped, open_set_scores
from defectnet.data.datamodule import PDoSDataModule, open_set_mask
from defectnet.detection import detection_limits, tail_limit
from tests.conftest import DEMO_CACHE


class _NoiseSensitive(torch.nn.Module):
    """Answers each offered candidate with how far the doped spectrum rises above the pristine
    anywhere, times a per-candidate gain: a model that over-reads noise, more for some
    candidates than for others."""

    def __init__(self):
        super().__init__()
        self.gain = torch.linspace(0.2, 2.0, 56)

    def forward(self, x, mask, references=None):
        signal = (x[:, 1] - x[:, 0]).clamp_min(0).amax(-1, keepdim=True)
        return signal * self.gain * mask, None


def test_limits_follow_the_noise_and_each_candidates_response():
    dm = PDoSDataModule(str(DEMO_CACHE))
    dm.setup()
    ds = dm.dataset
    pristine, composition = ds.pristine[:3], ds.composition[:3]
    mask = open_set_mask(composition)
    nets = [_NoiseSensitive()]
    args = (nets, pristine, composition, mask, None, 0.0)
    assert not detection_limits(*args, 0.0, ds.grid.step).any()  # no noise, no limit
    low = detection_limits(*args, 0.01, ds.grid.step, draws=32)
    high = detection_limits(*args, 0.03, ds.grid.step, draws=32)
    offered = mask.numpy() > 0
    assert (low[~offered] == 0).all() and (low[offered] > 0).all()
    assert np.median(high[offered] / low[offered]) > 2  # scores ∝ noise: limits too
    gain = nets[0].gain.numpy()
    for b in range(3):  # the largest noise reading × each candidate's own gain
        per_gain = high[b][offered[b]] / gain[offered[b]]
        assert np.allclose(per_gain, per_gain[0], rtol=1e-5)


def test_a_noisy_undoped_crystal_stays_below_its_limits():
    dm = PDoSDataModule(str(DEMO_CACHE))
    dm.setup()
    ds = dm.dataset
    rows = [int(torch.nonzero(ds.parent_index == k)[0]) for k in range(len(ds.parents))]
    nets = [_NoiseSensitive()]
    batch = noisy_undoped(dm, rows, 0.03, torch.Generator().manual_seed(1))
    score, mask = open_set_scores(nets, batch, 0.0)
    assert ((score > 1e-3) & (mask > 0)).any(1).all()  # a fixed threshold names noise
    limits = detection_limits(
        nets,
        ds.pristine[rows],
        batch.composition,
        torch.as_tensor(mask),
        None,
        0.0,
        0.03,
        ds.grid.step,
        draws=64,
        seed=3,
    )
    called = (score > np.maximum(1e-3, limits)) & (mask > 0)
    assert called.any(1).mean() <= 0.25  # each draw beats 64 others' maximum rarely


def test_the_tail_is_extrapolated_past_the_largest_draw():
    rng = np.random.default_rng(0)
    noise = rng.exponential(1.0, size=(512, 200))  # P(score > x) = exp(-x)
    limits = tail_limit(noise, 1e-4)
    assert abs(np.median(limits) / np.log(1e4) - 1) < 0.1  # the true quantile, 9.2
    assert (limits >= noise.max(0)).all()  # never below what was seen
    sparse = np.zeros((512, 3))
    sparse[:5, 1] = [0.4, 0.3, 0.2, 0.2, 0.1]  # a candidate that noise moves 5 times in 512
    assert np.array_equal(tail_limit(sparse, 1e-4)[[0, 2]], [0, 0])
    assert tail_limit(sparse, 1e-4)[1] > 0.4
    assert tail_limit(sparse, 0.5)[1] == 0.4  # a likelier false alarm than seen: the largest

import torch

from defectnet.metrics import masked_mse
from defectnet.model.defectnet import DefectNet


def _batch(b=6):
    torch.manual_seed(0)
    mask = torch.zeros(b, 56)
    mask[:, [4, 5, 13, 31]] = 1
    return torch.rand(b, 3, 100), mask


def test_shapes_attention_and_hard_mask():
    net = DefectNet(d_model=32, n_heads=4, conv_channels=[16, 32], kernel_sizes=[5, 3]).eval()
    x, mask = _batch()
    conc, attention = net(x, mask)
    assert conc.shape == (6, 56) and attention.shape == (6, 100)
    assert torch.allclose(attention.sum(-1), torch.ones(6), atol=1e-5)
    assert (conc[mask == 0] == 0).all() and (conc[mask == 1] > 0).all()


def test_difference_channel_is_the_amplified_change_and_feeds_the_encoder():
    net = DefectNet(d_model=32, n_heads=4, conv_channels=[16, 32], difference_gain=20.0).eval()
    x, mask = _batch()
    channels = net.channels(x)
    assert channels.shape == (6, 4, 100)
    assert torch.allclose(channels[:, 3], 20.0 * (channels[:, 1] - channels[:, 0]))
    undoped = x.clone()
    undoped[:, 1] = undoped[:, 0]
    assert (net.channels(undoped)[:, 3] == 0).all()
    assert net(x, mask)[0].shape == (6, 56)
    assert DefectNet(d_model=32, n_heads=4).channels(x).shape == (6, 3, 100)  # off by default


def test_no_gradient_flows_from_outside_the_candidates():
    net = DefectNet(d_model=32, n_heads=4, conv_channels=[16, 32], kernel_sizes=[5, 3])
    x, mask = _batch()
    conc, _ = net(x, mask)
    conc.retain_grad()
    target = torch.rand(6, 56)  # garbage outside the mask must not matter
    masked_mse(conc, target, mask).backward()
    assert (conc.grad[mask == 0] == 0).all() and conc.grad[mask == 1].abs().sum() > 0
    clean = target * mask
    assert masked_mse(conc, target, mask) == masked_mse(conc, clean, mask)


def test_mlp_baseline_has_the_same_interface_and_hard_mask():
    from defectnet.model.mlp import MLPBaseline

    net = MLPBaseline(hidden=[32]).eval()
    x, mask = _batch()
    conc, attention = net(x, mask)
    assert conc.shape == (6, 56) and attention.shape == (6, 100)
    assert (conc[mask == 0] == 0).all() and (conc[mask == 1] > 0).all()
    assert not any(p.requires_grad is False for p in net.parameters())
    assert list(net.encoder.parameters())  # what model.freeze_encoder freezes


def test_losses_count_candidates_only_and_absolute_error_prefers_the_median():
    import pytest

    from defectnet.errors import UserError
    from defectnet.metrics import masked_mae
    from defectnet.model.lit_module import DefectNetModule

    target = torch.tensor([[0.0, 0.1, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    pred = torch.tensor([[0.02, 0.1, 0.9]])
    assert masked_mae(pred, target, mask).item() == pytest.approx(0.01)
    # a distractor absent in 3 of 4 look-alike samples: the mean answer is 0.025, the median 0
    truth = torch.tensor([[0.0], [0.0], [0.0], [0.1]])
    ones = torch.ones_like(truth)
    answers = torch.linspace(0, 0.1, 101)
    best = lambda loss: answers[  # noqa: E731
        torch.stack([loss(torch.full_like(truth, a), truth, ones) for a in answers]).argmin()
    ]
    assert best(masked_mse).item() == pytest.approx(0.025) and best(masked_mae).item() == 0.0
    with pytest.raises(UserError, match="model.loss"):
        DefectNetModule(DefectNet(), optimizer=torch.optim.AdamW, loss="huber")

import numpy as np
import torch

from defectnet.data.datamodule import Batch, SpectrumAugmentation, split_indices


def test_ood_split_holds_out_whole_parents_and_is_deterministic():
    parents = [f"p{i}" for i in range(10)]
    parent_index = np.repeat(np.arange(10), 12)
    s = split_indices(
        parent_index, parents, seed=3, ood_fraction=0.2, val_fraction=0.1, test_id_fraction=0.1
    )
    ood = set(parent_index[s.test_ood])
    assert len(ood) == 2 and {parents[i] for i in ood} == set(s.ood_parents)
    for split in (s.train, s.val, s.test_id):
        assert not ood & set(parent_index[split])
    assert set(parent_index[s.test_id]) <= set(parent_index[s.train])  # ID: parents seen
    everything = np.concatenate([s.train, s.val, s.test_id, s.test_ood])
    assert sorted(everything) == list(range(120))
    again = split_indices(parent_index, parents, 3, 0.2, 0.1, 0.1)
    assert (again.test_ood == s.test_ood).all() and (again.train == s.train).all()


def test_val_by_parent_holds_out_whole_known_parents():
    parents = [f"p{i}" for i in range(10)]
    parent_index = np.repeat(np.arange(10), 12)
    s = split_indices(parent_index, parents, 3, 0.2, 0.25, 0.1, val_by_parent=True)
    val, ood = set(parent_index[s.val]), set(parent_index[s.test_ood])
    assert len(val) == 2 and not val & ood  # ceil(0.25 × 8 known parents)
    assert not val & set(parent_index[s.train]) and not val & set(parent_index[s.test_id])
    assert set(parent_index[s.test_id]) <= set(parent_index[s.train])
    everything = np.concatenate([s.train, s.val, s.test_id, s.test_ood])
    assert sorted(everything) == list(range(120))
    plain = split_indices(parent_index, parents, 3, 0.2, 0.25, 0.1)
    assert (plain.test_ood == s.test_ood).all()  # test-OOD does not depend on how val is drawn


def test_a_prototype_family_can_be_held_out_whole():
    import pytest

    from defectnet.errors import UserError

    parents = ["spinel-MgAl2O4", "diamond-Si", "spinel-ZnGa2O4", "zincblende-GaAs"]
    parent_index = np.repeat(np.arange(4), 10)
    s = split_indices(parent_index, parents, 0, 0.25, 0.1, 0.1, ood_prototypes=["spinel"])
    assert s.ood_parents == ["spinel-MgAl2O4", "spinel-ZnGa2O4"]
    assert set(parent_index[s.train]) == {1, 3}
    with pytest.raises(UserError, match=r"data.ood_prototypes: \['wurtzite'\] has no parent"):
        split_indices(parent_index, parents, 0, 0.25, 0.1, 0.1, ood_prototypes=["wurtzite"])


def test_augmentation_adds_only_absent_non_host_distractors_and_keeps_area():
    torch.manual_seed(0)
    spectra = torch.rand(16, 2, 100)
    spectra /= spectra.sum(-1, keepdim=True) * 2.0
    composition = torch.zeros(16, 100)
    composition[:, 13] = 1.0  # host: Si
    mask = torch.zeros(16, 56)
    mask[:, 31] = 1
    targets = mask * 0.1
    n, parent = torch.ones(16), torch.zeros(16)
    aug = SpectrumAugmentation(
        extra_distractors=3, noise_level=0.03, max_extra_fwhm=4.0, energy_step=2.0
    )
    out = aug(Batch(spectra, composition, mask, targets, n, parent))
    m2, t2 = out.candidates, out.targets
    added = m2 - mask
    assert (added >= 0).all() and added.sum() > 0
    assert (added[:, 13] == 0).all()  # never the host element
    assert (added[:, [1, 9, 17, 35, 53]] == 0).all()  # never a noble gas
    assert (t2[added == 1] == 0).all()
    assert torch.allclose(out.spectra.sum(-1) * 2.0, torch.ones(16, 2), atol=1e-4)
    assert torch.equal(out.composition, composition) and torch.equal(out.targets, targets)


def test_undoped_samples_carry_their_pristine_twice_with_independent_noise_and_no_targets():
    torch.manual_seed(1)
    energies = torch.linspace(0, 198, 100)
    pristine = torch.exp(-0.5 * ((energies - 60.0) / 6.0) ** 2)
    doped = torch.exp(-0.5 * ((energies - 50.0) / 6.0) ** 2)
    spectra = torch.stack([pristine, doped])[None].repeat(512, 1, 1)
    spectra /= spectra.sum(-1, keepdim=True) * 2.0
    composition, mask = torch.zeros(512, 100), torch.zeros(512, 56)
    mask[:, 31] = 1
    targets = mask * 0.1
    batch = Batch(spectra, composition, mask, targets, torch.ones(512), torch.zeros(512))
    out = SpectrumAugmentation(undoped=0.25, noise_level=0.03, energy_step=2.0)(batch)
    undoped = out.targets.sum(-1) == 0
    assert 0.15 < undoped.float().mean() < 0.35
    assert (out.n_dopants[undoped] == 0).all() and (out.n_dopants[~undoped] == 1).all()
    assert torch.equal(out.candidates, mask)  # the dopant is offered and now absent
    mean = (out.spectra * energies).sum(-1) / out.spectra.sum(-1)
    assert (mean[undoped, 1] - 60).abs().max() < 1 and (mean[~undoped, 1] - 50).abs().max() < 1
    noise = out.spectra - spectra
    assert not torch.allclose(out.spectra[undoped, 0], out.spectra[undoped, 1])  # two draws
    # the level is drawn per sample in [0, 0.03]: σ at the peak at most 3 % of the peak
    peak = spectra[0, 0].max()
    at_peak = noise[~undoped, 0, 30]
    assert at_peak.std() < 0.03 * peak and at_peak.std() > 0.005 * peak
    assert torch.allclose(out.spectra.sum(-1) * 2.0, torch.ones(512, 2), atol=1e-4)


def test_energy_stretch_moves_both_spectra_together_and_keeps_area():
    torch.manual_seed(0)
    energies = torch.linspace(0, 198, 100)
    peak = torch.exp(-0.5 * ((energies - 60.0) / 4.0) ** 2)
    spectra = torch.stack([peak, 0.5 * peak + 0.5 * peak.roll(10)])[None].repeat(256, 1, 1)
    spectra /= spectra.sum(-1, keepdim=True) * 2.0
    composition, mask = torch.zeros(256, 100), torch.zeros(256, 56)
    batch = Batch(spectra, composition, mask, mask, torch.ones(256), torch.zeros(256))
    out = SpectrumAugmentation(max_energy_stretch=0.25, energy_step=2.0)(batch).spectra
    mean = (out * energies).sum(-1) / out.sum(-1)  # mean energy of each channel
    factor = mean[:, 0] / 60.0
    assert factor.min() > 1 / 1.25 - 0.02 and factor.max() < 1.25 + 0.02
    assert factor.max() - factor.min() > 0.3  # drawn per sample, over most of the range
    before = (spectra * energies).sum(-1) / spectra.sum(-1)
    assert torch.allclose(mean[:, 1] / before[:, 1], factor, atol=0.02)  # same f for both
    assert torch.allclose(out.sum(-1) * 2.0, torch.ones(256, 2), atol=1e-4)
    still = SpectrumAugmentation(max_energy_stretch=0.0, energy_step=2.0)(batch).spectra
    assert torch.equal(still, spectra)


def test_a_data_set_off_the_100_point_grid_is_refused_where_it_is_read(tmp_path):
    import pytest

    from defectnet.data.cache import PDoSDataset, save_cache
    from defectnet.data.datamodule import PDoSDataModule
    from defectnet.errors import UserError
    from defectnet.spectra import EnergyGrid

    n = 4
    ds = PDoSDataset(
        pristine=torch.rand(n, 50),
        doped=torch.rand(n, 50),
        composition=torch.rand(n, 100),
        mask=torch.ones(n, 56),
        targets=torch.zeros(n, 56),
        parent_index=torch.zeros(n, dtype=torch.int64),
        parents=["p0"],
        grid=EnergyGrid(0, 200, 50),
    )
    save_cache(ds, tmp_path / "coarse.safetensors")
    with pytest.raises(UserError, match=r"on 50 energy points.*spectra.n_points=100"):
        PDoSDataModule(str(tmp_path / "coarse.safetensors")).setup("fit")


def test_model_error_perturbs_only_the_doped_spectrum_in_proportion_to_its_difference():
    torch.manual_seed(0)
    energies = torch.linspace(0, 198, 100)
    pristine = torch.exp(-0.5 * ((energies - 60.0) / 8.0) ** 2)
    doped = torch.exp(-0.5 * ((energies - 56.0) / 8.0) ** 2)
    spectra = torch.stack([pristine, doped])[None].repeat(256, 1, 1)
    spectra[:64, 1] = spectra[:64, 0]  # undoped rows: nothing to perturb
    spectra /= spectra.sum(-1, keepdim=True) * 2.0
    composition, mask = torch.zeros(256, 100), torch.zeros(256, 56)
    batch = Batch(spectra, composition, mask, mask, torch.ones(256), torch.zeros(256))
    out = SpectrumAugmentation(model_error=0.5, energy_step=2.0)(batch).spectra
    assert torch.equal(out[:, 0], spectra[:, 0]) and torch.equal(out[:64], spectra[:64])
    change = (out[64:, 1] - spectra[64:, 1]).norm(dim=-1)
    signal = (spectra[64:, 1] - spectra[64:, 0]).norm(dim=-1)
    ratio = change / signal
    assert ratio.max() <= 0.5 * 1.05 and ratio.max() > 0.4 and ratio.min() < 0.1
    assert torch.allclose(out.sum(-1) * 2.0, torch.ones(256, 2), atol=1e-4)
    assert (out >= 0).all()

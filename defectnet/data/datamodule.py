"""LightningDataModule over one cached data set, held in memory.

Splits: test-OOD holds out whole parents (by parent id, never by record); the remaining samples
are split at random into train / val / test-ID, so test-ID shares parents with training. With
``val_by_parent`` val holds out whole parents too, so early stopping, checkpoint choice and
sweeps aim at unseen hosts, the aim of pretraining, rather than at more samples of known ones.
Augmentation is applied on the device, batch-wise, to training batches only. With
``references`` (a ``stage=references`` folder) every sample also carries its host's
single-dopant difference spectra, which the reference-informed network reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from defectnet.data.cache import PDoSDataset, load_cache, network_input
from defectnet.data.references import host_references
from defectnet.elements import DOPANTS, N_COMPOSITION, N_DOPANTS, NOBLE_GASES
from defectnet.errors import UserError
from defectnet.spectra import FWHM_TO_SIGMA

TEST_SPLITS = ("test_id", "test_ood")
PROPOSABLE_MASK = torch.tensor([s not in NOBLE_GASES for s in DOPANTS], dtype=torch.bool)


class Batch(NamedTuple):
    """What the DataModule serves, a batch or a whole split: the contract between the cache and
    everything that trains, evaluates or predicts."""

    spectra: torch.Tensor  # [B, 2, P] pristine and doped PDoS on the data set's grid
    composition: torch.Tensor  # [B, 100] host composition over Z = 1…100
    candidates: torch.Tensor  # [B, 56] offered dopants (0/1)
    targets: torch.Tensor  # [B, 56] concentrations (0 for absent candidates)
    n_dopants: torch.Tensor  # [B] dopants present
    parent: torch.Tensor  # [B] index into the data set's parents
    # [B, 2 × 56, L] the host's unit-concentration single-dopant difference spectra, dilute and
    # high-concentration (data.references; data.references.reference_matrix)
    references: torch.Tensor | None = None

    def inputs(self) -> torch.Tensor:
        """[B, 3, P]: the network's three channels (``data.cache.network_input``)."""
        return network_input(self.spectra[:, 0], self.spectra[:, 1], self.composition)


def open_set_mask(composition: torch.Tensor) -> torch.Tensor:
    """[B, 56] candidates of the open-set mode: every non-noble-gas vocabulary element that is
    not an element of the host (``composition`` [B, 100])."""
    host = composition[:, :N_DOPANTS] > 0
    return (PROPOSABLE_MASK.to(composition.device)[None] & ~host).to(composition.dtype)


def counting_noise(
    spectra: torch.Tensor, level: float, step: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Spectra [..., L] with noise as counting gives it: σ = ``level`` × sqrt(peak × value) at
    each point (``level`` × peak at the peak), clipped at 0 and brought back to unit area.
    ``level`` may be a tensor that broadcasts against ``spectra`` (a level per spectrum)."""
    spec = spectra.clamp_min(0)
    peak = spec.amax(-1, keepdim=True)
    sigma = level * torch.sqrt(peak * spec)
    draw = torch.randn(spec.shape, generator=generator, dtype=spec.dtype).to(spec.device)
    noisy = (spec + sigma * draw).clamp_min(0)
    return noisy / (noisy.sum(-1, keepdim=True) * step).clamp_min(1e-12)


def collate(samples) -> Batch:
    return Batch(*torch.utils.data.default_collate(samples))


class SampleTensors(TensorDataset):
    """The cached tensors in ``Batch`` order; with host references [P, 2 × 56, L] each sample also
    gets its parent's, looked up on access rather than copied per sample."""

    def __init__(self, *tensors: torch.Tensor, references: torch.Tensor | None = None):
        super().__init__(*tensors)
        self.references = references

    def __getitem__(self, index):
        items = super().__getitem__(index)
        if self.references is None:
            return items
        return (*items, self.references[items[Batch._fields.index("parent")]])


@dataclass
class Splits:
    """Sample indices per split and the held-out parents."""

    train: np.ndarray
    val: np.ndarray
    test_id: np.ndarray
    test_ood: np.ndarray
    ood_parents: list[str]


def split_indices(
    parent_index: np.ndarray,
    parents: list[str],
    seed: int,
    ood_fraction: float,
    val_fraction: float,
    test_id_fraction: float,
    ood_parents: list[str] | None = None,
    ood_prototypes: list[str] | None = None,
    val_by_parent: bool = False,
) -> Splits:
    """Deterministic splits; ``ood_parents`` (ids) overrides the random choice of held-out
    parents, and ``ood_prototypes`` holds out whole prototype families instead (a parent id of
    the built-in source starts with its prototype: ``spinel-MgAl2O4``)."""
    rng = np.random.default_rng(seed)
    n_parents = len(parents)
    if ood_parents and ood_prototypes:
        raise UserError("data.ood_parents and data.ood_prototypes: set one of them, not both.")
    if ood_prototypes:
        family = [p.split("-", 1)[0] for p in parents]
        unknown = sorted(set(ood_prototypes) - set(family))
        if unknown:
            raise UserError(
                f"data.ood_prototypes: {unknown} has no parent in the data set (its prototypes: "
                f"{sorted(set(family))})."
            )
        held = [i for i, f in enumerate(family) if f in ood_prototypes]
    elif ood_parents:
        unknown = sorted(set(ood_parents) - set(parents))
        if unknown:
            raise UserError(f"data.ood_parents: {unknown} are not in the data set's parents.")
        held = sorted(parents.index(p) for p in ood_parents)
    else:
        n_ood = math.ceil(ood_fraction * n_parents) if n_parents > 1 and ood_fraction > 0 else 0
        held = sorted(rng.permutation(n_parents)[:n_ood].tolist())
    is_ood = np.isin(parent_index, held)
    if val_by_parent:
        known = np.setdiff1d(np.unique(parent_index), held)
        n_val_parents = math.ceil(val_fraction * len(known)) if val_fraction > 0 else 0
        if n_val_parents >= len(known):
            raise UserError(
                f"data.val_by_parent: {len(known)} parents outside test-OOD cannot spare "
                f"{n_val_parents} for val; lower data.val_fraction or set val_by_parent=false."
            )
        val_held = rng.permutation(known)[:n_val_parents]
        is_val = np.isin(parent_index, val_held)
        val = np.flatnonzero(is_val)
        rest = rng.permutation(np.flatnonzero(~is_ood & ~is_val))
        n_val, n_test = 0, int(round(test_id_fraction * len(rest)))
    else:
        rest = rng.permutation(np.flatnonzero(~is_ood))
        n_val = int(round(val_fraction * len(rest)))
        n_test = int(round(test_id_fraction * len(rest)))
        val = rest[:n_val]
    return Splits(
        train=np.sort(rest[n_val + n_test :]),
        val=np.sort(val),
        test_id=np.sort(rest[n_val : n_val + n_test]),
        test_ood=np.flatnonzero(is_ood),
        ood_parents=[parents[i] for i in held],
    )


class SpectrumAugmentation:
    """Training-time perturbations of a batch (its spectra and candidates).

    * ``extra_distractors``: up to this many extra candidates per sample that are absent
      (target 0) and not host elements, so the model learns to send distractors to zero;
    * ``undoped``: the fraction of samples whose doped spectrum is replaced by their pristine one
      and every target by 0: with noise on both, the difference is noise alone, and the model
      learns that noise names no dopant;
    * ``noise_level``: counting noise (``counting_noise``) on the pristine and the doped
      spectrum, independent draws, at a level drawn per sample in [0, ``noise_level``]: the
      noise a measurement has (the open-set calibration adds the same kind);
    * ``max_extra_fwhm``: extra Gaussian smoothing with an FWHM drawn in [0, max] meV;
    * ``open_set``: the fraction of samples whose candidates become every proposable element
      that is not in the host (``open_set_mask``), which teaches prediction without a guess;
    * ``max_energy_stretch``: both spectra of a sample rescaled in energy, E → f·E with f drawn
      log-uniformly in [1/(1+s), 1+s]: an unseen host's phonons sit higher or lower than any
      training host's, while the concentrations that shaped them do not change;
    * ``model_error``: the doped spectrum's difference from the pristine one perturbed by a
      smooth random curve of zero area (white noise smoothed over ``model_error_fwhm`` meV,
      times the mean of the two spectra) whose norm is drawn in [0, ``model_error``] × the
      difference's norm: the error simulated spectra carry against a real crystal's (on the
      realism cells the superposed twin misses about a third of `full`'s difference), from
      which no dopant should be read.
    """

    def __init__(
        self,
        extra_distractors: int = 0,
        undoped: float = 0.0,
        noise_level: float = 0.0,
        max_extra_fwhm: float = 0.0,
        open_set: float = 0.0,
        max_energy_stretch: float = 0.0,
        model_error: float = 0.0,
        model_error_fwhm: float = 8.0,
        energy_step: float = 2.0,
        energy_min: float = 0.0,
    ):
        self.extra_distractors = extra_distractors
        self.undoped = undoped
        self.noise_level = noise_level
        self.max_extra_fwhm = max_extra_fwhm
        self.open_set = open_set
        self.max_energy_stretch = max_energy_stretch
        self.model_error = model_error
        self.model_error_fwhm = model_error_fwhm
        self.energy_step = energy_step
        self.energy_min = energy_min

    def __call__(self, batch: Batch) -> Batch:
        if self.undoped > 0:
            batch = self._undope(batch)
        spectra, mask = batch.spectra.clone(), batch.candidates
        n_spectra = spectra.shape[1]
        if batch.references is not None:  # stretched and smoothed with the sample's spectra
            spectra = torch.cat([spectra, batch.references], dim=1)
        if self.extra_distractors > 0:
            mask = self._add_distractors(batch.composition, mask)
        if self.open_set > 0:
            rows = torch.rand(mask.shape[0], 1, device=mask.device) < self.open_set
            mask = torch.where(rows, open_set_mask(batch.composition), mask)
        if self.max_energy_stretch > 0:
            spectra = self._stretch(spectra, n_spectra)
        if self.max_extra_fwhm > 0:
            spectra = self._smooth(spectra)
        spectra, references = spectra[:, :n_spectra], spectra[:, n_spectra:]
        if self.model_error > 0:
            spectra = self._perturb_difference(spectra)
        if self.noise_level > 0:
            level = torch.rand(spectra.shape[0], 1, 1, device=spectra.device) * self.noise_level
            spectra = counting_noise(spectra, level, self.energy_step)
        if batch.references is not None:
            batch = batch._replace(references=references)
        return batch._replace(spectra=spectra, candidates=mask)

    def _undope(self, batch: Batch) -> Batch:
        rows = torch.rand(batch.targets.shape[0], device=batch.targets.device) < self.undoped
        spectra = batch.spectra.clone()
        spectra[rows, 1] = spectra[rows, 0]
        return batch._replace(
            spectra=spectra,
            targets=batch.targets.masked_fill(rows[:, None], 0.0),
            n_dopants=batch.n_dopants.masked_fill(rows, 0),
        )

    def _add_distractors(self, composition, mask):
        allowed = (open_set_mask(composition) > 0) & (mask == 0)
        scores = torch.rand_like(mask).masked_fill(~allowed, -1.0)
        k = torch.randint(0, self.extra_distractors + 1, (mask.shape[0], 1), device=mask.device)
        rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
        extra = (rank < k) & allowed
        return torch.where(extra, torch.ones_like(mask), mask)

    def _stretch(self, spectra, n_normalized: int):
        """E → f·E; the first ``n_normalized`` channels (PDoS) keep unit area, the rest
        (difference spectra, of near-zero area) take the change of variable's 1/f."""
        b, _, n = spectra.shape
        bound = math.log1p(self.max_energy_stretch)
        factor = torch.exp((2 * torch.rand(b, 1, device=spectra.device) - 1) * bound)
        energies = self.energy_min + self.energy_step * torch.arange(
            n, device=spectra.device, dtype=spectra.dtype
        )
        # the value at E is the original's at E / f: linear interpolation between grid points
        source = (energies / factor - self.energy_min) / self.energy_step
        lo = source.floor().long()
        w = (source - lo).unsqueeze(1)
        inside = ((lo >= 0) & (lo < n - 1)).unsqueeze(1)
        lo = lo.clamp(0, n - 2).unsqueeze(1).expand(-1, spectra.shape[1], -1)
        left, right = spectra.gather(2, lo), spectra.gather(2, lo + 1)
        out = torch.where(inside, (1 - w) * left + w * right, torch.zeros_like(left))
        area = out[:, :n_normalized].sum(-1, keepdim=True) * self.energy_step
        pdos = out[:, :n_normalized] / area.clamp_min(1e-12)
        return torch.cat([pdos, out[:, n_normalized:] / factor[:, :, None]], dim=1)

    def _perturb_difference(self, spectra):
        """Channel 1 (doped) plus a smooth zero-area curve scaled to the sample's difference
        from channel 0 (pristine); kept non-negative at its own area."""
        pristine, doped = spectra[:, 0], spectra[:, 1]
        b, n = doped.shape
        sigma = self.model_error_fwhm * FWHM_TO_SIGMA / self.energy_step
        pos = torch.arange(n, device=spectra.device, dtype=spectra.dtype)
        kernel = torch.exp(-0.5 * ((pos[:, None] - pos[None, :]) / sigma) ** 2)
        # shaped by the spectra themselves: the error lives in the host's bands, not beyond them
        envelope = (pristine + doped) / 2
        curve = (torch.randn(b, n, device=spectra.device, dtype=spectra.dtype) @ kernel) * envelope
        curve = curve - envelope * curve.sum(-1, keepdim=True) / envelope.sum(-1, keepdim=True)
        size = torch.rand(b, 1, device=spectra.device) * self.model_error
        size = size * (doped - pristine).norm(dim=-1, keepdim=True)
        perturbed = (doped + curve * size / curve.norm(dim=-1, keepdim=True)).clamp_min(0)
        area = doped.sum(-1, keepdim=True) / perturbed.sum(-1, keepdim=True).clamp_min(1e-12)
        return torch.stack([pristine, perturbed * area], dim=1)

    def _smooth(self, spectra):
        b, c, n = spectra.shape
        fwhm = torch.rand(b, 1, 1, device=spectra.device) * self.max_extra_fwhm
        sigma = (fwhm * FWHM_TO_SIGMA / self.energy_step).clamp_min(1e-3)
        pos = torch.arange(n, device=spectra.device, dtype=spectra.dtype)
        kernel = torch.exp(-0.5 * ((pos[None, :, None] - pos[None, None, :]) / sigma) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)  # each input bin keeps its weight
        return torch.einsum("bcn,bnm->bcm", spectra, kernel)


class PDoSDataModule(L.LightningDataModule):
    """Serves ``Batch``es of the cached data set's train / val / test-ID / test-OOD splits."""

    def __init__(
        self,
        path: str,
        batch_size: int = 64,
        seed: int = 0,
        ood_fraction: float = 0.2,
        val_fraction: float = 0.1,
        test_id_fraction: float = 0.1,
        ood_parents: list[str] | None = None,
        ood_prototypes: list[str] | None = None,
        val_by_parent: bool = False,
        num_workers: int = 0,
        augmentation: SpectrumAugmentation | None = None,
        references: str | None = None,
        made_by: str | None = None,
    ):
        super().__init__()
        self.path = path
        self.made_by = made_by
        self.batch_size = batch_size
        self.seed = seed
        self.fractions = (ood_fraction, val_fraction, test_id_fraction)
        self.ood_parents = list(ood_parents) if ood_parents else None
        self.ood_prototypes = list(ood_prototypes) if ood_prototypes else None
        self.val_by_parent = val_by_parent
        self.num_workers = num_workers
        self.augmentation = augmentation
        self.references_dir = references
        self.references: torch.Tensor | None = None  # [P, 2 × 56, L] with data.references
        self.dataset: PDoSDataset | None = None
        self.splits: Splits | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        cache = Path(self.path)
        if self.made_by and not cache.is_file() and (cache.parent / "records").is_dir():
            from defectnet.data.presets import cache_from_records

            cache_from_records(cache, self.made_by)
        self.dataset = load_cache(self.path)
        if self.dataset.grid.n_points != N_COMPOSITION:
            raise UserError(
                f"{self.path}: spectra on {self.dataset.grid.n_points} energy points; DefectNet "
                f"reads three channels of {N_COMPOSITION} (pristine, doped, composition over "
                f"Z = 1…{N_COMPOSITION}): generate the data set with spectra.n_points="
                f"{N_COMPOSITION}."
            )
        if self.augmentation is not None:
            self.augmentation.energy_step = self.dataset.grid.step
            self.augmentation.energy_min = self.dataset.grid.e_min
        ood, val, test_id = self.fractions
        self.splits = split_indices(
            self.dataset.parent_index.numpy(),
            self.dataset.parents,
            self.seed,
            ood,
            val,
            test_id,
            self.ood_parents,
            self.ood_prototypes,
            self.val_by_parent,
        )
        ds = self.dataset
        if self.references_dir:
            self.references = host_references(self.references_dir, ds.parents, ds.grid.n_points)
        self._tensors = SampleTensors(
            torch.stack([ds.pristine, ds.doped], dim=1),
            ds.composition,
            ds.mask,
            ds.targets,
            (ds.targets > 0).sum(dim=1),
            ds.parent_index,
            references=self.references,
        )

    def _loader(self, idx: np.ndarray, shuffle: bool) -> DataLoader:
        subset = torch.utils.data.Subset(self._tensors, idx.tolist())
        return DataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=False,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        if len(self.splits.train) == 0:
            raise UserError(
                f"{self.path}: the training split is empty; the data set is too "
                "small for the split fractions in data.*_fraction."
            )
        return self._loader(self.splits.train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.splits.val, shuffle=False)

    def test_dataloader(self):
        return [
            self._loader(self.splits.test_id, shuffle=False),
            self._loader(self.splits.test_ood, shuffle=False),
        ]

    def split_tensors(self, split: str) -> Batch:
        """One split, whole, as a ``Batch``."""
        return Batch(*self._tensors[torch.as_tensor(getattr(self.splits, split))])

    def train_mean(self) -> torch.Tensor:
        """Per-dopant mean concentration over training samples where it is a candidate."""
        idx = torch.as_tensor(self.splits.train)
        m, t = self.dataset.mask[idx], self.dataset.targets[idx]
        return (t * m).sum(0) / m.sum(0).clamp_min(1)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augmentation is not None and self.trainer is not None and self.trainer.training:
            batch = self.augmentation(batch)
        return batch

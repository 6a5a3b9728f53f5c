"""Data generation: parents → candidates → doped supercells → relaxation → phonon spectra.

The plan is a pure function of the config: sample ``i`` belongs to parent ``i // spp`` and draws
its randomness from ``(seed, i)``, so any shard reproduces exactly its part of the data set and a
rerun skips what its shard file already holds. Parent work (relaxation, stability check,
pristine spectrum) is stored once per parent and shared by all shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field, replace
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from ase import Atoms
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from defectnet.atomic import write_json_atomic
from defectnet.datagen.calculators import ForceField
from defectnet.datagen.parents import Parent
from defectnet.datagen.recommender import recommend
from defectnet.datagen.records import Provenance, Record, RecordShard, read_json, read_shards
from defectnet.datagen.relax import relax
from defectnet.datagen.supercell import choose_supercell, substitute
from defectnet.elements import N_COMPOSITION, composition_vector, dopant_index
from defectnet.errors import UserError
from defectnet.spectra import EnergyGrid, modes_spectrum, weight_outside

log = logging.getLogger(__name__)

# Keys that only say how or where to run (and what the folder is called), not what the data
# set is.
RUNTIME_KEYS = (
    "name",
    "shard",
    "num_shards",
    "shard_by",
    "stage",
    "out_dir",
    "cache",
    "progress",
    "cost",
)


# Settings added after data sets were made with their implied value: at that value they stay
# out of the hash, so those data sets still resume.
IMPLIED = {
    ("spectra", "weighting"): "total",
    ("sampling", "site_counts"): "log_uniform",
    ("sampling", "undoped_fraction"): 0.0,
}
TOP_IMPLIED = {
    "balance_prototypes": False,
    "sample_stability": {"imaginary_tolerance_mev": 3.0, "max_imaginary_fraction": None},
}


def settings_hash(cfg: DictConfig) -> str:
    """Hash of everything that defines the data set (not how it is run)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data = {k: v for k, v in data.items() if k not in RUNTIME_KEYS and k != "hydra"}
    for (section, key), value in IMPLIED.items():
        if data.get(section, {}).get(key, value) == value:
            data.get(section, {}).pop(key, None)
    for key, value in TOP_IMPLIED.items():
        if data.get(key, value) == value:
            data.pop(key, None)
    for forcefield in (data.get("calculator", {}), data.get("parents", {}).get("forcefield", {})):
        forcefield.pop("device", None)  # where a potential runs does not change the data
        forcefield.pop("batch_size", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def grid_from_config(cfg: DictConfig) -> EnergyGrid:
    s = cfg.spectra
    return EnergyGrid(float(s.e_min), float(s.e_max), int(s.n_points))


def atoms_to_dict(atoms: Atoms, decimals: int | None = None) -> dict:
    """A structure as plain lists; ``decimals`` rounds cell and positions (Å) to keep records
    compact (1e-5 Å is far below any displacement that changes a spectrum)."""
    cell, positions = atoms.cell[:], atoms.positions
    if decimals is not None:
        cell, positions = np.round(cell, decimals), np.round(positions, decimals)
    return {
        "numbers": atoms.numbers.tolist(),
        "cell": cell.tolist(),
        "positions": positions.tolist(),
    }


def compact(values) -> list[float]:
    """Six significant digits: a spectrum's record stays a third of full ``repr`` length, far
    below the float16 step the cache may store it in."""
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def atoms_from_dict(d: dict) -> Atoms:
    return Atoms(numbers=d["numbers"], cell=d["cell"], positions=d["positions"], pbc=True)


@dataclass
class Context:
    """What every sample of a run shares."""

    cfg: DictConfig
    forcefield: ForceField
    phonons: object
    grid: EnergyGrid
    out_dir: Path
    settings_hash: str
    _hosts: dict = field(default_factory=dict)
    _references: dict = field(default_factory=dict)
    _pristine: dict = field(default_factory=dict)

    def provenance(self, parent: Parent, seed_key) -> Provenance:
        return Provenance(
            parent_id=parent.id,
            formula=parent.formula,
            calculator=self.forcefield.describe(),
            phonons=self.phonons.settings(),
            settings_hash=self.settings_hash,
            seed=list(seed_key),
            defectnet=package_version("defectnet"),
        )

    def host_setup(self, parent: Parent, parent_state: dict):
        """Relaxed host, its dopant candidates and its supercell: once per parent and run."""
        if parent.id not in self._hosts:
            cfg = self.cfg
            host = atoms_from_dict(parent_state["structure"])
            user = OmegaConf.to_container(cfg.candidates) if cfg.candidates is not None else None
            candidates = recommend(host, per_type=cfg.recommender.per_type, candidates=user)
            matrix, supercell = choose_supercell(
                host, cfg.supercell.min_atoms, cfg.supercell.max_atoms, where=parent.id
            )
            supercell.info["supercell_matrix"] = np.asarray(matrix).tolist()
            self._hosts[parent.id] = (host, candidates, supercell)
        return self._hosts[parent.id]

    def host_reference(self, parent: Parent, host: Atoms, candidates, supercell: Atoms):
        """What the phonon method needs from the pristine supercell (embedded: its force
        constants; superposed: the parent's defect library, kept in ``library/<id>``),
        computed once per parent and run."""
        if parent.id not in self._references:
            self._references[parent.id] = self.phonons.host_reference(
                supercell,
                self.forcefield,
                host=host,
                candidates=candidates,
                store=self.out_dir / "library" / f"{parent.id}.safetensors",
                relax=lambda atoms: self.relax(atoms, self.cfg.relax).atoms,
                settings={
                    "calculator": self.forcefield.describe(),
                    "relax": OmegaConf.to_container(self.cfg.relax, resolve=True),
                },
            )
        return self._references[parent.id]

    def pristine_spectrum(self, parent: Parent, parent_state: dict, supercell: Atoms, reference):
        """The spectrum a sample's doped one is read against. With a defect library it is the
        library's own pristine supercell through the same route as every sample (so an undoped
        sample's two spectra are equal); otherwise the parent's, from its pristine supercell."""
        if self.phonons.relaxes_samples:
            return parent_state["pristine"]
        if parent.id not in self._pristine:
            modes = self.phonons.doped_modes(supercell, reference, self.forcefield)
            self._pristine[parent.id] = compact(self.spectrum(modes))
        return self._pristine[parent.id]

    def relax(self, atoms: Atoms, settings: DictConfig):
        """Relax with this run's force field and one relaxation section of the config."""
        return relax(
            atoms,
            self.forcefield.calculator(),
            fmax=settings.fmax,
            steps=settings.steps,
            relax_cell=settings.relax_cell,
            optimizer=settings.optimizer,
        )

    def relaxed_doped(self, doped: Atoms, reference) -> tuple[Atoms, dict]:
        """The doped cell relaxed with the force field, or, when the phonon method builds
        samples from a defect library, with the library's relaxation around each dopant."""
        if self.phonons.relaxes_samples:
            relaxed = self.relax(doped, self.cfg.relax)
            return relaxed.atoms, relaxed.summary()
        return reference.relaxed_estimate(doped), {"steps": 0, "from": "defect library"}

    def structure_record(self, structure: Atoms, supercell: Atoms, sites: dict) -> dict:
        """The doped cell as a record keeps it: positions when the sample was relaxed; when it
        was assembled from the defect library, the substituted sites of the host supercell
        (``sample_structure`` rebuilds the cell from them), which is 30× smaller."""
        if self.phonons.relaxes_samples:
            return atoms_to_dict(structure, decimals=5)
        return {"supercell_matrix": supercell.info["supercell_matrix"], "sites": sites}

    def spectra_settings(self) -> dict:
        """How the record's spectra were made: grid, resolution, weighting (consolidate checks
        them against the run's config)."""
        return {
            "grid": self.grid.as_dict(),
            "fwhm_mev": float(self.cfg.spectra.fwhm_mev),
            "weighting": self.weighting,
        }

    def spectrum(self, modes) -> np.ndarray:
        return modes_spectrum(modes, self.grid, float(self.cfg.spectra.fwhm_mev), self.weighting)

    @property
    def weighting(self) -> str:
        return self.cfg.spectra.get("weighting", "total")


def prepare_parent(ctx: Context, parent: Parent) -> dict:
    """Relax the parent (cell + positions), check it is stable, compute its pristine spectrum.

    Stored as ``parents/<id>.json``; a stored result is reused, never recomputed.
    """
    path = ctx.out_dir / "parents" / f"{parent.id}.json"
    if path.exists():
        return read_json(path)
    pc = ctx.cfg.parent_relax
    t0 = time.perf_counter()
    result = {
        "id": parent.id,
        "formula": parent.formula,
        "prototype": parent.prototype,
        "settings_hash": ctx.settings_hash,
    }
    try:
        relaxed = ctx.relax(parent.atoms, pc)
        result["relax"] = relaxed.summary()
        result["structure"] = atoms_to_dict(relaxed.atoms)
        if abs(relaxed.volume_change) > pc.max_volume_change:
            raise UnstableParent(
                f"volume changed by {relaxed.volume_change:+.1%} on relaxation "
                f"(limit ±{pc.max_volume_change:.0%})"
            )
        ps = ctx.cfg.pristine_supercell
        matrix, _ = choose_supercell(relaxed.atoms, ps.min_atoms, ps.max_atoms, where=parent.id)
        modes = ctx.phonons.modes(relaxed.atoms, matrix, ctx.forcefield)
        frac = modes.imaginary_fraction(pc.imaginary_tolerance_mev)
        result["phonons"] = {
            "n_displacements": modes.n_displacements,
            "min_energy_mev": modes.min_energy,
            "imaginary_fraction": frac,
            "supercell_matrix": matrix.tolist(),
        }
        if frac > pc.max_imaginary_fraction:
            raise UnstableParent(
                f"{frac:.1%} of modes imaginary beyond "
                f"{pc.imaginary_tolerance_mev} meV (down to "
                f"{modes.min_energy:.2f} meV; limit {pc.max_imaginary_fraction:.1%})"
            )
        result["pristine"] = ctx.spectrum(modes).tolist()
        result["status"] = "ok"
    except UnstableParent as exc:
        result.update(status="discarded", reason=str(exc))
    except Exception as exc:  # recorded, never silently dropped
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(path, result)
    return result


class UnstableParent(RuntimeError):
    """A parent that relaxes too far or has imaginary modes: discarded, with the reason."""


class UnstableSample(RuntimeError):
    """A sample with more imaginary modes than ``sample_stability`` allows: recorded as failed."""


def check_stability(modes, settings: DictConfig | None) -> float:
    """The fraction of imaginary modes; raises ``UnstableSample`` above the configured limit."""
    tolerance = float(settings.imaginary_tolerance_mev) if settings else 3.0
    fraction = modes.imaginary_fraction(tolerance)
    limit = settings.get("max_imaginary_fraction") if settings else None
    if limit is not None and fraction > limit:
        raise UnstableSample(
            f"{fraction:.1%} of modes imaginary beyond -{tolerance:g} meV (down to "
            f"{modes.min_energy:.1f} meV; sample_stability.max_imaginary_fraction {limit:.1%})"
        )
    return fraction


def make_sample(ctx: Context, parent: Parent, parent_state: dict, index: int) -> dict:
    """One doped supercell → a record with both spectra, candidates and concentrations."""
    cfg = ctx.cfg
    timing = {}
    t0 = time.perf_counter()
    host, candidates, supercell = ctx.host_setup(parent, parent_state)
    rng = np.random.default_rng([int(cfg.seed), index])
    sub = substitute(supercell, candidates, rng, **OmegaConf.to_container(cfg.sampling))
    timing["setup_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    reference = ctx.host_reference(parent, host, candidates, supercell)
    timing["host_phonons_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    structure, relax_summary = ctx.relaxed_doped(sub.atoms, reference)
    timing["relax_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    modes = ctx.phonons.doped_modes(structure, reference, ctx.forcefield)
    timing["phonons_s"] = time.perf_counter() - t3
    imaginary = check_stability(modes, cfg.get("sample_stability"))
    timing["total_s"] = time.perf_counter() - t0
    return {
        "n_atoms": len(sub.atoms),
        "doped_formula": structure.get_chemical_formula(),
        "counts": sub.counts,
        "concentrations": sub.concentrations,
        "candidates": [c.as_dict() for c in sub.candidates],
        "distractors": sub.distractors,
        "pristine": compact(ctx.pristine_spectrum(parent, parent_state, supercell, reference)),
        "doped": compact(ctx.spectrum(modes)),
        "spectra": ctx.spectra_settings(),
        "structure": ctx.structure_record(structure, supercell, sub.sites),
        "composition": compact(composition_vector(host.get_chemical_symbols())),
        "relax": relax_summary,
        "phonons": {
            "n_displacements": modes.n_displacements,
            "host_displacements": getattr(reference, "n_displacements", 0),
            "library_calls": getattr(reference, "library_calls", 0),
            "min_energy_mev": modes.min_energy,
            "imaginary_fraction": imaginary,
            "weight_above_grid": weight_outside(modes.energies_mev, ctx.grid, modes.weights),
        },
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }


def sample_structure(record: Record, parent_state: dict) -> Atoms:
    """A record's doped cell: its stored positions, or the parent's relaxed cell repeated by the
    record's supercell matrix with the record's sites substituted (unrelaxed: the defect
    library's relaxation is not stored per sample)."""
    from ase.build import make_supercell

    structure = record.structure
    if "positions" in structure:
        return atoms_from_dict(structure)
    host = atoms_from_dict(parent_state["structure"])
    cell = make_supercell(host, structure["supercell_matrix"], order="cell-major")
    symbols = cell.get_chemical_symbols()
    for dopant, sites in structure["sites"].items():
        for i in sites:
            symbols[i] = dopant
    cell.set_chemical_symbols(symbols)
    return cell


def expected_cost(cfg: DictConfig, existing: list[Record], n_todo: int) -> str:
    """What the samples left to do will cost, printed before starting: from the mean time of
    the samples this data set already holds, else from the config's measured estimate."""
    times = [r.timing["total_s"] / 60 for r in existing if r.status == "ok"]
    if times:
        minutes, source = float(np.mean(times)), f"mean of {len(times)} samples done here"
    elif cfg.get("cost") and cfg.cost.get("minutes_per_sample"):
        minutes, source = float(cfg.cost.minutes_per_sample), cfg.cost.measured_on
    else:
        return (
            f"{n_todo} samples to do (no cost estimate: none done yet, no cost.minutes_per_sample)"
        )
    hours = n_todo * minutes / 60
    return (
        f"{n_todo} samples to do, ≈ {minutes:.1f} min each ({source}): ≈ {hours:,.1f} h "
        "for this process"
    )


def plan(cfg: DictConfig, parents: list[Parent]) -> list[tuple[int, Parent]]:
    """Every (sample index, parent) of the data set, in order."""
    spp = int(cfg.samples_per_parent)
    return [(p_i * spp + j, p) for p_i, p in enumerate(parents) for j in range(spp)]


def selected_parents(cfg: DictConfig) -> list[Parent]:
    """The data set's parents, in order: ``include`` first, then the seeded draw."""
    return instantiate(cfg.parents).select(
        cfg.num_parents,
        int(cfg.seed),
        list(cfg.include),
        balance_prototypes=bool(cfg.get("balance_prototypes", False)),
    )


def shard_of(cfg: DictConfig, index: int) -> int:
    """The shard that makes sample ``index``: samples dealt round-robin (``shard_by=sample``,
    every shard touches every parent), or whole parents dealt round-robin (``shard_by=parent``:
    a parent's defect library is built by one shard only, and a shard is finished parent by
    parent)."""
    by = cfg.get("shard_by", "sample")
    if by not in ("sample", "parent"):
        raise UserError(f"shard_by='{by}': choose sample or parent.")
    key = index // int(cfg.samples_per_parent) if by == "parent" else index
    return key % int(cfg.num_shards)


def shard_path(out_dir: Path, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / "records" / f"shard-{shard:04d}-of-{num_shards:04d}.jsonl"


def check_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"out_dir: cannot write to '{out_dir}' ({exc.strerror}); choose a writable folder "
            "with out_dir=/path/to/folder."
        ) from exc


def _check_shard(cfg: DictConfig) -> tuple[int, int]:
    shard, num_shards = int(cfg.shard), int(cfg.num_shards)
    if not 0 <= shard < num_shards:
        raise UserError(f"shard={shard} must lie in [0, num_shards={num_shards}).")
    return shard, num_shards


def _context(cfg: DictConfig, out_dir: Path, h: str) -> Context:
    ctx = Context(
        cfg,
        instantiate(cfg.calculator),
        instantiate(cfg.phonons),
        grid_from_config(cfg),
        out_dir,
        h,
    )
    ctx.phonons.projections = ctx.weighting == "neutron"
    return ctx


def _shard_parents(cfg: DictConfig, shard: int, num_shards: int) -> list[Parent]:
    """The data set's parents that belong to this shard: parent ``j`` to shard ``j % n``."""
    return [p for j, p in enumerate(selected_parents(cfg)) if j % num_shards == shard]


def prepare_parents(cfg: DictConfig) -> dict:
    """Prepare this shard's share of the parents (parent ``j`` goes to shard ``j % n``).

    Samples of one parent are spread over every shard, so when parent work is costly (a
    melt-quench, a large pristine cell) running this stage first keeps two shards from
    preparing the same parent at once.
    """
    shard, num_shards = _check_shard(cfg)
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    mine = _shard_parents(cfg, shard, num_shards)
    ctx = _context(cfg, out_dir, settings_hash(cfg))
    stats: dict = {}
    bar = tqdm(mine, desc=f"parents {shard}/{num_shards}", disable=not cfg.get("progress", True))
    for parent in bar:
        status = prepare_parent(ctx, parent)["status"]
        stats[status] = stats.get(status, 0) + 1
    return stats


def single_dopant_cell(supercell: Atoms, dopant: str, replaces: str) -> Atoms:
    """The supercell with its first ``replaces`` site taken by ``dopant``."""
    symbols = supercell.get_chemical_symbols()
    site = symbols.index(replaces)
    cell = supercell.copy()
    symbols[site] = dopant
    cell.set_chemical_symbols(symbols)
    return cell


def make_references(cfg: DictConfig) -> dict:
    """Single-dopant spectra: for every ok parent of this shard and every candidate of its host,
    one site of the doped supercell substituted, relaxed and simulated like a sample.

    Stored per parent in ``references/<id>.json`` (rewritten atomically after each dopant, so a
    rerun resumes); the NNLS baseline unmixes difference spectra with them.
    """
    shard, num_shards = _check_shard(cfg)
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    h = settings_hash(cfg)
    mine = _shard_parents(cfg, shard, num_shards)
    ctx = _context(cfg, out_dir, h)
    stats = {"parents": 0, "dopants": 0, "failed": 0}
    for parent in tqdm(mine, desc="references", disable=not cfg.get("progress", True)):
        state = prepare_parent(ctx, parent)
        if state["status"] != "ok":
            continue
        path = out_dir / "references" / f"{parent.id}.json"
        ref = read_json(path) if path.exists() else None
        if ref is not None and ref["settings_hash"] != h:
            raise UserError(
                f"{path}: made with settings {ref['settings_hash']}, the current config gives {h}; "
                "restore that config, or delete the references folder to recompute it."
            )
        host, candidates, supercell = ctx.host_setup(parent, state)
        reference = ctx.host_reference(parent, host, candidates, supercell)
        ref = ref or {
            "parent_id": parent.id,
            "settings_hash": h,
            "pristine": ctx.pristine_spectrum(parent, state, supercell, reference),
            "dopants": {},
            "failed": {},
        }
        for cand in candidates:
            if cand.dopant in ref["dopants"] or cand.dopant in ref["failed"]:
                continue
            try:
                cell = single_dopant_cell(supercell, cand.dopant, cand.replaces)
                structure, _ = ctx.relaxed_doped(cell, reference)
                modes = ctx.phonons.doped_modes(structure, reference, ctx.forcefield)
                ref["dopants"][cand.dopant] = {
                    "replaces": cand.replaces,
                    "concentration": 1 / len(cell),
                    "spectrum": ctx.spectrum(modes).tolist(),
                }
                stats["dopants"] += 1
            except Exception as exc:  # recorded with its reason, then the run goes on
                ref["failed"][cand.dopant] = f"{type(exc).__name__}: {exc}"
                stats["failed"] += 1
            write_json_atomic(path, ref)
        stats["parents"] += 1
    return stats


def run_shard(cfg: DictConfig) -> dict:
    """Generate this shard's samples; returns counts of what was done, skipped and failed."""
    shard, num_shards = _check_shard(cfg)
    if grid_from_config(cfg).n_points != N_COMPOSITION:  # a bad grid is refused before any work
        raise UserError(
            f"spectra.n_points={cfg.spectra.n_points}: DefectNet reads three channels of "
            f"{N_COMPOSITION} points (pristine, doped, composition over Z = 1…{N_COMPOSITION}); "
            f"set spectra.n_points={N_COMPOSITION}."
        )
    if cfg.candidates is not None:
        for dopant in cfg.candidates:
            dopant_index(dopant, where="candidates")
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    h = settings_hash(cfg)
    records = RecordShard(shard_path(out_dir, shard, num_shards))
    existing = read_shards(out_dir / "records")  # every shard file: resharding skips them too
    other = {r.provenance.settings_hash for r in existing} - {h}
    if other:
        raise UserError(
            f"{out_dir / 'records'}: records were made with settings {sorted(other)}, the "
            f"current config gives {h}; restore that config to resume, or choose a new out_dir."
        )
    done = {r.sample_id for r in existing}
    mine = [(i, p) for i, p in plan(cfg, selected_parents(cfg)) if shard_of(cfg, i) == shard]
    todo = [(i, p) for i, p in mine if f"{p.id}/{i}" not in done]
    stats = {"planned": len(mine), "skipped": len(mine) - len(todo), "ok": 0, "failed": 0}
    if not todo:
        log.info("shard %d/%d: all %d samples already done", shard, num_shards, len(mine))
        if records.path.exists():
            records.compress()
        return stats
    log.info("shard %d/%d: %s", shard, num_shards, expected_cost(cfg, existing, len(todo)))
    ctx = _context(cfg, out_dir, h)
    bar = tqdm(
        todo,
        desc=f"shard {shard}/{num_shards}",
        unit="sample",
        disable=not cfg.get("progress", True),
    )
    for index, parent in bar:
        record = Record(
            sample_id=f"{parent.id}/{index}",
            index=index,
            provenance=ctx.provenance(parent, [int(cfg.seed), index]),
        )
        try:
            state = prepare_parent(ctx, parent)
            if state["status"] != "ok":
                raise RuntimeError(f"parent {state['status']}: {state['reason']}")
            record = record.with_sample(make_sample(ctx, parent, state, index))
            stats["ok"] += 1
        except Exception as exc:  # recorded with its reason, then the run goes on
            record = replace(record, status="failed", reason=f"{type(exc).__name__}: {exc}")
            log.debug("sample %s failed:\n%s", record.sample_id, traceback.format_exc())
            stats["failed"] += 1
        records.append(record)
        bar.set_postfix(ok=stats["ok"], failed=stats["failed"])
    records.compress()  # finished: every planned sample of this shard has its record
    return stats

"""Benchmark: ``full`` against ``embedded`` and ``superposed`` phonons on relaxed doped cells.

For each cell and each cutoff it prints the force calls, the wall time and how well the
smoothed PDoS on the model's grid agrees with ``full`` (cosine similarity, L1 distance of the
unit-area spectra, shift of the tallest peak). The pristine force constants that ``embedded``
needs are computed once per parent and reported on their own line (shared by every doped cell
of that parent). It then compares relaxing every atom, only the atoms near the dopants, or none,
with the spectra from ``embedded`` at its configured cutoff. Last, it draws doped cells the way
generation does (``sampling`` of ``conf/generate.yaml``) and counts, without any force call, the
atoms near a dopant: the calls a typical sample costs with ``embedded`` against ``full``.

The ``superposed`` section builds each host's defect library once, then for every total dopant
fraction draws a multi-dopant cell and compares the library's spectrum, and that of the
pristine force constants with the dopant masses only, with ``full`` on the same cell relaxed by
the force field. The ``sample_cost`` section times one sample of the configured superposed
method at the pretraining cell size (``full`` projected from timed force calls). Prints
figures, asserts nothing.

The ``difference`` section needs no force call: it reads committed data sets that hold the same
cells made two ways (``generate=research/phonon_check``: ``full`` and superposed, with and without
pair patches) and scores what the networks read, the difference spectrum (doped − pristine), of
each method against ``full``'s: cosine and norm ratio by band of total dopant fraction, into
``docs/benchmarks/phonon_difference.md`` with ``difference.docs=true``.
"""

from __future__ import annotations

import time

import hydra
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from defectnet.cli import CONF_DIR
from defectnet.datagen.phonons import (
    EmbeddedForceConstants,
    FiniteDisplacement,
    Modes,
    cell_mesh_modes,
)
from defectnet.datagen.recommender import recommend
from defectnet.datagen.relax import relax
from defectnet.datagen.supercell import choose_supercell, substitute
from defectnet.spectra import EnergyGrid, spectrum_from_modes
from defectnet.spectra import agreement as compare

GRID = EnergyGrid()


def doped_cell(pristine: Atoms, dopants: dict[str, str]) -> Atoms:
    """Each dopant on a site of its host element, as far as possible from the ones before."""
    doped = pristine.copy()
    placed: list[int] = []
    for dopant, host in dopants.items():
        sites = np.flatnonzero(np.array(doped.get_chemical_symbols()) == host)
        if placed:
            gaps = np.min([doped.get_distances(p, sites, mic=True) for p in placed], axis=0)
            site = int(sites[np.argmax(gaps)])
        else:
            site = int(sites[0])
        doped[site].symbol = dopant
        placed.append(site)
    return doped


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Cosine, L1 and shift of the tallest peak of spectrum ``a`` against ``b``."""
    c = compare(a, b, GRID)
    return c["cosine"], c["l1"], c["peak_shift_mev"]


def sampled_calls(prim, pristine, method, host, draws: int, seed: int) -> np.ndarray:
    """Force calls of ``embedded`` for doped cells drawn as generation draws them (P1 cells:
    ± three Cartesian steps per displaced atom)."""
    sampling = OmegaConf.load(f"{CONF_DIR}/generate.yaml").sampling
    candidates = recommend(prim)
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(draws):
        sub = substitute(pristine, candidates, rng, **OmegaConf.to_container(sampling))
        calls.append(6 * int(method.near_dopants(sub.atoms, host).sum()))
    return np.array(calls)


def random_doped(pristine: Atoms, dopants: dict[str, str], fraction: float, rng) -> Atoms:
    """``fraction`` of the cell's atoms (at least one) substituted, each by a dopant drawn
    from ``dopants`` on a random site of the element it replaces."""
    doped = pristine.copy()
    symbols = doped.get_chemical_symbols()
    names = list(dopants)
    for _ in range(max(1, round(fraction * len(doped)))):
        dopant = names[rng.integers(len(names))]
        free = [i for i, s in enumerate(symbols) if s == dopants[dopant]]
        symbols[free[rng.integers(len(free))]] = dopant
    doped.set_chemical_symbols(symbols)
    return doped


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def summed_modes(method, library, doped: Atoms) -> Modes:
    """A doped cell's modes from the plain sum of its single patches (no pair patch)."""
    fc = library.doped_force_constants(doped, method.sum_rule, method.patch_extent, pairs=False)
    return cell_mesh_modes(fc, doped, method.mesh)


def host_library(cfg: DictConfig, ff, method, host_cfg, atoms, tag: str = ""):
    """A built-in host relaxed, its supercell of ``atoms`` (min, max), and ``method``'s defect
    library for the host's dopants, kept in ``superposed_bench.store`` (0 s when stored):
    (supercell, library, seconds, the library's file)."""
    from pathlib import Path

    from defectnet.datagen.parents.builtin import BuiltinParents
    from defectnet.datagen.recommender import Candidate

    parent = next(p for p in BuiltinParents().parents() if p.id == host_cfg.parent)
    prim = relax(parent.atoms, ff.calculator(), 0.002, 300, True).atoms
    _, pristine = choose_supercell(prim, *atoms)
    candidates = [Candidate(d, h, "n", "bench", 1.0) for d, h in host_cfg.dopants.items()]
    store = Path(cfg.superposed_bench.store) / f"{host_cfg.parent}-{len(pristine)}{tag}.safetensors"
    library, seconds = timed(
        method.host_reference,
        pristine,
        ff,
        host=prim,
        candidates=candidates,
        store=store,
        relax=lambda a, fc: relax(
            a, ff.calculator(), cfg.relax.fmax, cfg.relax.steps, force_constants=fc
        ),
    )
    return pristine, library, seconds, store


def bench_superposed(cfg: DictConfig, ff, full: FiniteDisplacement) -> None:
    from pathlib import Path

    from defectnet.atomic import atomic_path
    from defectnet.datagen.phonons import SuperposedForceConstants

    bench = cfg.superposed_bench
    method: SuperposedForceConstants = instantiate(
        cfg.superposed, pair_reach=cfg.superposed_bench.pair_reach
    )
    rng = np.random.default_rng(cfg.seed)

    def spectrum(modes: Modes) -> np.ndarray:
        return spectrum_from_modes(modes.energies_mev, GRID, cfg.spectra.fwhm_mev, modes.weights)

    def relaxed(atoms: Atoms) -> Atoms:
        return relax(atoms, ff.calculator(), cfg.relax.fmax, cfg.relax.steps).atoms

    def full_reference(atoms: Atoms, path: Path) -> tuple[np.ndarray, float]:
        """``full``'s spectrum of a cell and its wall time; kept beside the library (keyed by
        the cell's species, so a different draw is recomputed) since it costs minutes."""
        if path.is_file():
            kept = np.load(path)
            if np.array_equal(kept["numbers"], atoms.numbers):
                return kept["spectrum"], float(kept["seconds"])
        modes, seconds = timed(full.doped_modes, relaxed(atoms), None, ff)
        ref = spectrum(modes)
        with atomic_path(path) as tmp:
            np.savez(tmp, numbers=atoms.numbers, spectrum=ref, seconds=seconds)
        return ref, seconds

    print(
        f"\nsuperposed (cutoff {method.cutoff:g} Å, dilute cells of {method.patch_atoms} atoms) "
        f"against full ({full.displacement} Å, one-sided: {not full.plusminus}) on the same "
        "cells; sup: the plain sum of single patches; pair: with pair patches for dopants "
        f"within {method.pair_reach:g}× the nearest-neighbour distance (calls: force calls of "
        "the pair patches this cell added to the library); masses only: pristine force "
        "constants, dopant masses"
    )
    print(
        f"{'host':22s} {'atoms':>5s} {'dopants':>7s} {'frac':>6s} {'full s':>7s} "
        f"{'sup s':>6s} {'cos sup':>8s} {'L1 sup':>7s} {'Δpk sup':>8s} "
        f"{'cos pair':>8s} {'L1 pair':>7s} {'calls':>6s} "
        f"{'cos mass':>8s} {'L1 mass':>7s} {'Δpk mass':>8s}",
        flush=True,
    )
    rows = []
    for host_cfg in bench.hosts:
        pristine, library, t_lib, store = host_library(cfg, ff, method, host_cfg, bench.atoms)
        dopants = dict(host_cfg.dopants)
        print(
            f"{host_cfg.parent:22s} library: {len(library.patches)} patches, "
            f"{library.library_calls} force calls, {t_lib:.0f} s (0 s when stored)",
            flush=True,
        )
        for fraction in bench.fractions:
            doped = random_doped(pristine, dopants, fraction, rng)
            ref, t_full = full_reference(doped, store.with_suffix(f".full-{fraction:g}.npz"))
            plain_modes, t_sup = timed(summed_modes, method, library, doped)
            plain = spectrum(plain_modes)
            calls = library.library_calls
            paired = spectrum(method.doped_modes(doped, library, ff))  # new pair patches made
            mass = spectrum(cell_mesh_modes(library.force_constants, doped, method.mesh))
            s, p, m = agreement(plain, ref), agreement(paired, ref), agreement(mass, ref)
            n_dop = int((doped.numbers != pristine.numbers).sum())
            rows.append((fraction, *s, *p, *m))
            print(
                f"{host_cfg.parent:22s} {len(doped):>5d} {n_dop:>7d} {n_dop / len(doped):>6.1%} "
                f"{t_full:>7.0f} {t_sup:>6.1f} {s[0]:>8.4f} {s[1]:>7.3f} {s[2]:>+8.2f} "
                f"{p[0]:>8.4f} {p[1]:>7.3f} {library.library_calls - calls:>6d} "
                f"{m[0]:>8.4f} {m[1]:>7.3f} {m[2]:>+8.2f}",
                flush=True,
            )
    table = np.array(rows).reshape(-1, 10)
    for lo, hi, label in ((0, 0.125, "≤ 12 %"), (0.125, 1, "25 %")):
        sel = (table[:, 0] > lo) & (table[:, 0] <= hi)
        if not sel.any():
            continue
        med = np.median(table[sel], axis=0)
        print(
            f"median {label:7s} superposed cosine {med[1]:.4f} L1 {med[2]:.3f} | with pair "
            f"patches cosine {med[4]:.4f} L1 {med[5]:.3f} | masses only cosine {med[7]:.4f} "
            f"L1 {med[8]:.3f}   ({sel.sum()} cells)"
        )


def bench_sample_cost(cfg: DictConfig, ff, full: FiniteDisplacement) -> None:
    """Per-sample wall time at the pretraining cell size (``superposed_bench.large_atoms``) of
    the configured superposed method, on the q-mesh and at Γ, against ``full`` projected from
    timed force calls; the first host of ``superposed_bench.hosts``, 5 % of dopants."""
    from defectnet.datagen.phonons import SuperposedForceConstants

    bench = cfg.superposed_bench
    method: SuperposedForceConstants = instantiate(cfg.superposed, pair_reach=bench.pair_reach)
    rng = np.random.default_rng(cfg.seed)
    host_cfg = bench.hosts[0]
    tag = f"-cutoff{method.cutoff:g}-{method.patch_extent}"
    large, library, t_lib, _ = host_library(cfg, ff, method, host_cfg, bench.large_atoms, tag)
    dopants = dict(host_cfg.dopants)
    print(
        f"library of {host_cfg.parent} at {len(large)} atoms (cutoff {method.cutoff:g} Å, "
        f"dilute cells of {list(method.patch_atoms)} atoms, patch_extent {method.patch_extent}): "
        f"{len(library.patches)} patches, {library.library_calls} force calls, {t_lib:.0f} s "
        "(0 s when stored)",
        flush=True,
    )
    doped = random_doped(large, dopants, 0.05, rng)
    method.doped_modes(doped, library, ff)  # any pair patch it lacks goes into the library
    _, t_sup = timed(method.doped_modes, doped, library, ff)
    method.samples_at_gamma = True
    _, t_gamma = timed(method.doped_modes, doped, library, ff)
    probes = [doped.copy() for _ in range(4)]
    for k, probe in enumerate(probes):  # new positions each: a calculator caches its last cell
        probe.rattle(1e-3, seed=k)
    ff.forces(probes[:1])  # warm-up
    t_call = float(np.median([timed(ff.forces, [probe])[1] for probe in probes[1:]]))
    n_calls = 3 * len(doped) * (2 if full.plusminus else 1) + (not full.plusminus)
    t_full = (n_calls + 100) * t_call  # + ~100 relaxation steps
    print(
        f"per sample at {len(doped)} atoms ({host_cfg.parent}, 5 %): superposed "
        f"{t_sup:.2f} s on the q-mesh, {t_gamma:.2f} s at Γ (samples_at_gamma); full "
        f"≈ {t_full:,.0f} s projected ({n_calls} displaced cells + ~100 relaxation steps × "
        f"{t_call:.2f} s per call): {t_full / t_sup:,.0f}× / {t_full / t_gamma:,.0f}× less",
        flush=True,
    )


def bench_difference(bench: DictConfig) -> None:
    from pathlib import Path

    from defectnet import difference
    from defectnet.atomic import write_text_atomic
    from defectnet.data.cache import load_cache

    truth = load_cache(Path(bench.truth))
    truth_ids = truth.meta["sample_ids"]
    sets = {method: load_cache(Path(path)) for method, path in bench.methods.items()}
    # `full`'s difference against the pristine spectrum of the sample's own cell, which the
    # superposed sets hold (the library's pristine force constants are `full`'s)
    pristine = sets[bench.truth_pristine_from]
    same_cell = {i: pristine.pristine[n] for n, i in enumerate(pristine.meta["sample_ids"])}
    rows = {}
    for n, sample in enumerate(truth_ids):
        if sample not in same_cell:
            continue
        rows[sample] = {
            "total": float(truth.targets[n].sum()),
            "host": truth.parents[int(truth.parent_index[n])],
            "truth": (truth.doped[n] - same_cell[sample]).numpy(),
        }
    for method, ds in sets.items():
        for n, sample in enumerate(ds.meta["sample_ids"]):
            if sample in rows:
                rows[sample][method] = difference.agreement(
                    (ds.doped[n] - ds.pristine[n]).numpy(), rows[sample]["truth"]
                )
    methods = list(bench.methods)
    hosts = sorted({r["host"] for r in rows.values()})
    tables = []
    for host in hosts:  # each host with the methods that hold every one of its cells
        cells = [r for r in rows.values() if r["host"] == host]
        held = [m for m in methods if all(m in r for r in cells)]
        tables.append(f"**{host}**\n\n" + difference.markdown(difference.band_table(cells, held)))
    per_host = "\n\n".join(tables)
    rows = {k: r for k, r in rows.items() if all(m in r for m in methods)}  # cells every set holds
    overall = difference.markdown(difference.band_table(rows.values(), methods))
    print(f"\ndifference spectra against full on {len(rows)} cells held by every method\n")
    print(overall)
    print(per_host)
    if bench.docs:
        text = (
            f"# Difference spectra of the data engine against `full`\n\n"
            f"`python scripts/bench_phonons.py sections=[difference] difference.docs=true` "
            f"(no force call; {bench.measured_on}). The cells of "
            "`generate=research/phonon_check` (64–100 atoms, 1–6 dopants, relaxed, default "
            "potential), each made with `full` finite displacements and from the host's defect "
            "library; the difference spectrum (doped − pristine, what the networks read) of each "
            "method against `full`'s on the same cell (overall: the cells every set holds; per "
            "host: the methods that hold all its cells): cosine and "
            "norm ratio (1: as much signal as `full`), median and quartiles, by band of the "
            "cell's total dopant fraction. "
            "Every difference is taken against the pristine spectrum of the sample's own cell "
            "(the superposed sets hold it; their library's pristine force constants are "
            "`full`'s), since the `full` records read the parent's own phonon supercell, which "
            "differs from the sample cell's by as much as a dilute dopant's signal (L1 0.004–"
            "0.14 by host, docs/phonons.md).\n\n"
            f"{overall}\n\n## Per host\n\n{per_host}\n"
        )
        write_text_atomic(Path(bench.docs_path), text)
        print(f"\nwritten {bench.docs_path}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/phonons")
def main(cfg: DictConfig) -> None:
    ff = instantiate(cfg.calculator)
    full: FiniteDisplacement = instantiate(cfg.full)
    if "difference" in cfg.sections:
        bench_difference(cfg.difference)
    if "superposed" in cfg.sections:
        bench_superposed(cfg, ff, full)
    if "sample_cost" in cfg.sections:
        bench_sample_cost(cfg, ff, full)
    if "embedded" not in cfg.sections:
        return
    embedded: EmbeddedForceConstants = instantiate(cfg.embedded)
    default_cutoff = embedded.cutoff
    cutoffs = sorted({*map(float, cfg.cutoffs), default_cutoff})

    def spectrum(modes: Modes) -> np.ndarray:
        return spectrum_from_modes(modes.energies_mev, GRID, cfg.spectra.fwhm_mev, modes.weights)

    print(
        f"{ff.describe()['version']}; displacement {full.displacement} Å (full) and "
        f"{embedded.displacement} Å (embedded); default cutoff {default_cutoff} Å"
    )
    head = (
        f"{'cell':16s} {'method':15s} {'calls':>6s} {'wall s':>7s} {'calls ×':>7s} "
        f"{'time ×':>6s} {'cosine':>7s} {'L1':>6s} {'peak Δ meV':>10s} {'min meV':>8s}"
    )
    for cell in cfg.cells:
        prim = bulk(cell.formula, cell.prototype, a=cell.a)
        prim = relax(prim, ff.calculator(), fmax=0.002, steps=200, relax_cell=True).atoms
        _, pristine = choose_supercell(prim, *cell.atoms)
        doped = doped_cell(pristine, dict(cell.dopants))
        relaxed, t_relax = timed(relax, doped, ff.calculator(), cfg.relax.fmax, cfg.relax.steps)
        print(
            f"\n{cell.name}: {len(doped)} atoms, {doped.get_chemical_formula()}; relaxed in "
            f"{relaxed.steps} steps, {t_relax:.0f} s"
        )
        print(head, flush=True)
        ref_modes, t_full = timed(full.doped_modes, relaxed.atoms, None, ff)
        ref = spectrum(ref_modes)
        n_full = ref_modes.n_displacements
        print(
            f"{cell.name:16s} {'full':15s} {n_full:>6d} {t_full:>7.1f} {'':>7s} {'':>6s} "
            f"{'':>7s} {'':>6s} {'':>10s} {ref_modes.min_energy:>8.2f}",
            flush=True,
        )
        host, t_host = timed(embedded.host_reference, pristine, ff)
        print(
            f"{cell.name:16s} {'host FC/parent':15s} {host.n_displacements:>6d} "
            f"{t_host:>7.1f}   (once per parent, shared by its doped cells)",
            flush=True,
        )
        for cutoff in cutoffs:
            embedded.cutoff = cutoff
            modes, t_emb = timed(embedded.doped_modes, relaxed.atoms, host, ff)
            cosine, l1, shift = agreement(spectrum(modes), ref)
            label = f"embedded {cutoff:g} Å" + (" *" if cutoff == default_cutoff else "")
            print(
                f"{cell.name:16s} {label:15s} {modes.n_displacements:>6d} {t_emb:>7.1f} "
                f"{n_full / max(modes.n_displacements, 1):>7.1f} {t_full / t_emb:>6.1f} "
                f"{cosine:>7.4f} {l1:>6.3f} {shift:>+10.2f} {modes.min_energy:>8.2f}",
                flush=True,
            )
        embedded.cutoff = default_cutoff
        base = spectrum(embedded.doped_modes(relaxed.atoms, host, ff))
        print(
            f"  relaxation (spectra from embedded {default_cutoff:g} Å, against relaxing "
            "every atom):"
        )
        for region in cfg.relax_regions:
            if region == "all":
                steps, seconds, spec = relaxed.steps, t_relax, base
            else:
                start = doped.copy()
                if region == "near":
                    start.set_constraint(FixAtoms(mask=~embedded.near_dopants(doped, host)))
                    result, seconds = timed(
                        relax, start, ff.calculator(), cfg.relax.fmax, cfg.relax.steps
                    )
                    steps, start = result.steps, result.atoms
                    start.set_constraint()
                else:
                    steps, seconds = 0, 0.0
                spec = spectrum(embedded.doped_modes(start, host, ff))
            cosine, l1, shift = agreement(spec, base)
            print(
                f"  {region:5s} {steps:>4d} steps {seconds:>6.1f} s  cosine {cosine:.4f}  "
                f"L1 {l1:.3f}  peak Δ {shift:+.2f} meV",
                flush=True,
            )


if __name__ == "__main__":
    main()

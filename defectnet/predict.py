"""From a spectrum (measured or simulated) to dopants and concentrations, with an interval.

``defectnet-predict`` takes the doped and the pristine spectrum, each either a text file of
measured intensities or a structure file that is simulated here (relaxation and phonons with
the configured potential), the host formula and, optionally, the dopant candidates. Without
candidates the open-set mode offers every non-noble-gas vocabulary element that is not in the
host. One checkpoint gives a point estimate; several (a deep ensemble) give an interval from
their spread. A reference-informed model also reads the host's single-dopant references
(``references=``, the host found by its formula). A table is printed and a JSON file and a PNG
report are written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from defectnet.atomic import write_json_atomic
from defectnet.data.cache import network_input
from defectnet.detection import detection_limits
from defectnet.elements import DOPANTS, PROPOSABLE, candidate_vector, formula_composition
from defectnet.ensemble import ensemble_predict, load_ensemble
from defectnet.errors import UserError
from defectnet.model.checkpoint import CheckpointError
from defectnet.spectra import EnergyGrid

log = logging.getLogger(__name__)


def simulate_spectrum(path: Path, cfg: DictConfig, grid: EnergyGrid) -> np.ndarray:
    """Relax a structure file (``simulate.relax``: at zero pressure by default) and compute its
    phonon spectrum on ``grid``."""
    from hydra.utils import instantiate

    from defectnet.datagen.simulate import Simulator
    from defectnet.io import read_structure
    from defectnet.spectra import modes_spectrum

    sim = cfg.simulate
    phonons = instantiate(cfg.phonons)
    phonons.projections = sim.weighting == "neutron"
    simulator = Simulator(
        instantiate(cfg.calculator), phonons, sim.relax, (sim.min_atoms, sim.max_atoms)
    )
    relaxed = simulator.relax(read_structure(path)).atoms
    _, modes = simulator.modes(relaxed, where=str(path))
    log.info(
        "%s: %d atoms, %d displaced cells, lowest mode %.2f meV",
        path,
        len(relaxed),
        modes.n_displacements,
        modes.min_energy,
    )
    return modes_spectrum(modes, grid, float(sim.fwhm_mev), sim.weighting)


def spectrum_recipe(cfg: DictConfig, grid: EnergyGrid):
    """What the model's training spectra were: its grid and the resolution of its recipe."""
    from defectnet.spectrum_checks import Recipe

    return Recipe(grid, float(cfg.simulate.fwhm_mev))


def input_spectrum(
    path: str, cfg: DictConfig, grid: EnergyGrid, crystal: bool
) -> tuple[np.ndarray, dict]:
    """A spectrum file (checked against the model's recipe, read, cleaned, put on the grid) or a
    structure file (simulated), and what the checks found and did."""
    from defectnet.io import SpectrumFileError, input_kind, prepare, read_spectrum
    from defectnet.spectrum_checks import Report, check_file, check_range, match_resolution

    p = Path(path).expanduser()
    if input_kind(p) == "structure":
        return simulate_spectrum(p, cfg, grid), {"simulated": True}
    recipe = spectrum_recipe(cfg, grid)
    energies, intensity = read_spectrum(p, cfg.unit)
    report = Report(p)
    top = check_file(p, energies, intensity, cfg.unit, recipe)
    check_range(report, energies, intensity, recipe)
    try:
        spectrum = prepare(
            energies,
            intensity,
            grid,
            elastic_cutoff_mev=float(cfg.elastic_cutoff_mev),
            background=cfg.background,
        )
    except ValueError as exc:  # an all-zero or all-negative spectrum, a cut that removes all
        raise SpectrumFileError(f"{p}: {exc}") from None
    spectrum = match_resolution(report, spectrum, cfg.get("resolution"), recipe, crystal)
    checks = {
        "band_top_mev": top,
        "range_end_mev": float(energies[-1]),
        "done": report.notes,
        "report": report,
    }
    return spectrum, checks


def check_pair(cfg: DictConfig, grid: EnergyGrid, spectra: dict, checks: dict[str, dict]) -> None:
    """The doped file must span the host's band as its pristine one shows it, and be about as
    sharp (else a WARNING)."""
    from defectnet.io import SpectrumFileError
    from defectnet.spectrum_checks import compare_sharpness

    doped, pristine = checks["doped"], checks["pristine"]
    if "report" in doped and cfg.get("resolution") is None:
        recipe = spectrum_recipe(cfg, grid)
        compare_sharpness(doped["report"], spectra["doped"], spectra["pristine"], recipe)
    if "range_end_mev" in doped and "band_top_mev" in pristine:
        if doped["range_end_mev"] < pristine["band_top_mev"] - float(cfg.simulate.fwhm_mev):
            raise SpectrumFileError(
                f"{cfg.doped}: ends at {doped['range_end_mev']:.1f} meV, short of the host's "
                f"band, which reaches {pristine['band_top_mev']:.1f} meV in {cfg.pristine}; give "
                "the doped spectrum over the same range."
            )


def candidate_list(host: str, candidates) -> tuple[list[str], bool]:
    """The given candidates (a list, or one bare symbol), or (open set) every proposable
    element not in the host; an element of the host is no substitutional dopant."""
    from ase.formula import Formula

    host_elements = set(Formula(host).count())
    if candidates:
        names = [str(candidates)] if isinstance(candidates, str) else [str(c) for c in candidates]
        candidate_vector(names, where="candidates")  # names a bad element
        clash = [n for n in names if n in host_elements]
        if clash:
            raise UserError(
                f"candidates: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} in the "
                f"host {host}; a substitutional dopant is another element: leave it out."
            )
        return names, False
    return [e for e in PROPOSABLE if e not in host_elements], True


# where the card's guided threshold was chosen (presence_rule)
THRESHOLD_SOURCES = ("full_cells", "val")


def check_settings(cfg: DictConfig) -> None:
    """Settings refused before any file is read or model loaded."""
    level = float(cfg.interval)
    if not 0 < level < 1:
        raise UserError(
            f"interval={cfg.interval}: a central interval's probability lies in (0, 1), "
            "e.g. interval=0.9."
        )
    if cfg.get("resolution") is not None and not float(cfg.resolution) > 0:
        raise UserError(f"resolution={cfg.resolution}: the FWHM in meV, above 0.")
    try:
        noise = float(cfg.noise_level)
    except (TypeError, ValueError):
        noise = -1.0
    if not 0 <= noise < 1:
        raise UserError(
            f"noise_level={cfg.noise_level}: the spectrum's counting noise at its peak as a "
            "fraction of the peak, in [0, 1): e.g. noise_level=0.03 for a measurement, "
            "noise_level=0 for a simulated spectrum."
        )
    if cfg.get("threshold_from", "full_cells") not in THRESHOLD_SOURCES:
        raise UserError(
            f"threshold_from={cfg.threshold_from}: choose {' or '.join(THRESHOLD_SOURCES)}."
        )
    formula_composition(str(cfg.host))  # names a malformed host formula


def wants_references(cfg: DictConfig) -> bool:
    """Whether the user asked for references (``references=none`` asks for none)."""
    value = cfg.get("references")
    return value is not None and str(value).lower() not in ("none", "null", "")


def model_to_use(cfg: DictConfig):
    """``ckpt_path``, or without one the shipped model: the reference-informed ensemble, which
    reads the host's references (it reads unseen hosts far better); with ``references=none``,
    the spectrum-only one."""
    if cfg.get("ckpt_path") is not None:
        return cfg.ckpt_path
    from defectnet.model.pretrained import MEMBER_GLOB, REFERENCE_MODEL, pretrained_dir

    folder = pretrained_dir() / REFERENCE_MODEL
    if any(folder.glob(MEMBER_GLOB)) and wants_references(cfg):
        return str(folder)
    log.info("references=none: the spectrum-only shipped model answers")
    return None


def host_signatures(networks, cfg: DictConfig, grid: EnergyGrid, names: list[str]):
    """The host's single-dopant references [1, LEVELS × 56, L] and its parent id, for a model
    that reads them (``ReferenceDefectNet``; a warning where it reads a level the host's
    references lack; ``reference_stand_ins`` fills a level from another wherever a dopant has
    that one); (None, None) for a spectrum-only model."""
    if not any(getattr(net, "reads_references", False) for net in networks):
        return None, None
    from defectnet.data.references import (
        LEVELS,
        ReferenceError,
        holds_level,
        reference_matrix,
        reference_stand_ins,
        references_for_host,
    )

    if not wants_references(cfg):
        raise ReferenceError(
            "references=none: this model reads the host's single-dopant references; pass "
            "references=<folder or JSON> (defectnet-generate generate=references)."
        )

    ref = references_for_host(cfg.references, str(cfg.host))
    stand_ins = reference_stand_ins(cfg.get("reference_stand_ins"))
    matrix = reference_matrix(ref, grid.n_points, "references", stand_ins)
    read = {level for net in networks for level in getattr(net, "levels", ())}
    for level, other in stand_ins.items():
        if level in read and holds_level(ref, other):
            log.info(
                "references: %s's %s cells read in place of its %s ones, where a dopant has one "
                "(reference_stand_ins)",
                ref["parent_id"],
                other,
                level,
            )
    missing = [n for n in names if not matrix[DOPANTS.index(n)].any()]
    if missing:
        log.info(
            "no single-dopant reference for %s in %s: the model reads the spectrum alone there",
            ", ".join(missing),
            ref["parent_id"],
        )
    blocks = matrix.unflatten(0, (len(LEVELS), -1))
    for level in sorted(read - {"dilute"}, key=LEVELS.index):
        lacking = [
            n
            for n in names
            if n not in missing and not blocks[LEVELS.index(level), DOPANTS.index(n)].any()
        ]
        if lacking:
            log.warning(
                "references: %s has no %s reference for %s, which the model reads; it reads "
                "less there (add them: defectnet-generate generate=references "
                "parents.folder=<its structure> stage=references reference_cells.%s_fraction=…)",
                ref["parent_id"],
                level,
                ", ".join(lacking),
                level,
            )
    return matrix[None], ref["parent_id"]


def adopt_recipe(cfg: DictConfig, paths: list[Path], card: dict) -> dict | None:
    """The spectrum recipe of the model's training data (its checkpoint's, else its card's):
    structure files are simulated with it, spectrum files checked against it, and a declared
    weighting the model was not trained on is refused. Without one (older checkpoints) the
    prediction config's ``simulate`` section stands in, and the log says so."""
    from omegaconf import open_dict

    from defectnet.model.checkpoint import read_recipe

    recipe = read_recipe(paths[0]) or card.get("recipe")
    if recipe is None:
        log.info("%s records no spectrum recipe: simulate.* of the config is used", paths[0])
        return None
    declared = cfg.get("weighting")
    if declared is not None and declared != recipe.get("weighting"):
        raise UserError(
            f"weighting={declared}: the model was trained on {recipe.get('weighting')}-weighted "
            f"spectra; give spectra weighted so (weighting={recipe.get('weighting')}), or a "
            "model trained on yours (defectnet-generate spectra.weighting=...)."
        )
    with open_dict(cfg):
        for key in ("fwhm_mev", "weighting"):
            if recipe.get(key) is not None:
                cfg.simulate[key] = recipe[key]
    log.info(
        "the model's training spectra: %s, %s phonons, %s meV FWHM, %s weighting",
        (recipe.get("calculator") or {}).get("version"),
        (recipe.get("phonons") or {}).get("method"),
        recipe.get("fwhm_mev"),
        recipe.get("weighting"),
    )
    return recipe


def model_card(paths: list[Path]) -> dict:
    """The card beside the members (a shipped model's; {} for other checkpoints)."""
    card = paths[0].parent / "card.json"
    return json.loads(card.read_text()) if card.is_file() else {}


def interval_widening(cfg: DictConfig, card: dict) -> tuple[float, float]:
    """``interval_scale`` and ``interval_floor``, each when null the one the shipped model's
    card records (measured on its validation split by defectnet-evaluate), else 1 and 0."""
    scale, floor = cfg.get("interval_scale"), cfg.get("interval_floor")
    return (
        float(card.get("interval_scale", 1.0) if scale is None else scale),
        float(card.get("interval_floor", 0.0) if floor is None else floor),
    )


def card_threshold(rule: dict, open_set: bool, source: str = "full_cells") -> float:
    """A card's presence threshold: the open set's, or with given candidates the one chosen on
    `full` cells where the card records it and ``source`` asks for it, else val's."""
    if open_set:
        return float(rule["open_set_threshold"])
    if source == "full_cells" and "full_cells_threshold" in rule:
        return float(rule["full_cells_threshold"])
    return float(rule["threshold"])


def presence_rule(cfg: DictConfig, card: dict, thresholds, open_set: bool) -> tuple[float, float]:
    """(spread weight, threshold) that call presence: the card's ensemble rule (chosen by
    defectnet-evaluate: with given candidates on `full` cells of training hosts where the card
    records it and ``threshold_from=full_cells``, else on val), else the members' own
    thresholds on their mean; ``threshold=`` overrides the threshold."""
    rule = card.get("presence")
    if rule:
        weight = float(rule["spread_weight"])
        threshold = card_threshold(rule, open_set, cfg.get("threshold_from", "full_cells"))
    else:
        weight, threshold = 0.0, thresholds.open_set if open_set else thresholds.guided
    if cfg.get("threshold") is not None:
        threshold = float(cfg.threshold)
    return weight, threshold


def predict(cfg: DictConfig) -> dict:
    """Run the command: load, predict, print the table, write JSON and the PNG report."""
    from defectnet.plots import prediction_report

    check_settings(cfg)
    networks, grid, thresholds, paths = load_ensemble(model_to_use(cfg))
    composition = formula_composition(str(cfg.host))
    names, open_set = candidate_list(str(cfg.host), cfg.get("candidates"))
    card = model_card(paths)
    recipe = adopt_recipe(cfg, paths, card)
    spread_weight, threshold = presence_rule(cfg, card, thresholds, open_set)
    pristine, pristine_checks = input_spectrum(cfg.pristine, cfg, grid, crystal=True)
    doped, doped_checks = input_spectrum(cfg.doped, cfg, grid, crystal=False)
    checks = {"pristine": pristine_checks, "doped": doped_checks}
    check_pair(cfg, grid, {"doped": doped, "pristine": pristine}, checks)
    for c in checks.values():
        c.pop("report", None)
    if composition.shape[0] != grid.n_points:
        raise CheckpointError(
            f"ckpt_path: the model's grid has {grid.n_points} points but the composition "
            f"channel has {composition.shape[0]}; DefectNet's input needs a 100-point grid."
        )
    x = network_input(pristine, doped, composition)
    mask = torch.tensor(candidate_vector(names))[None]
    references, reference_host = host_signatures(networks, cfg, grid, names)
    result = ensemble_predict(networks, x, mask, references)
    low, high = result.interval(float(cfg.interval), *interval_widening(cfg, card))
    score = result.presence(spread_weight)
    limits = detection_limits(
        networks,
        x[:, 0],
        x[:, 2],
        mask,
        references,
        spread_weight,
        float(cfg.noise_level),
        grid.step,
        int(cfg.presence.detection_draws),
        float(cfg.presence.false_alarm),
    )
    rows = []
    for name in names:
        i = DOPANTS.index(name)
        rows.append(
            {
                "dopant": name,
                "concentration": float(result.mean[0, i]),
                "low": float(low[0, i]) if len(networks) > 1 else None,
                "high": float(high[0, i]) if len(networks) > 1 else None,
                "presence_score": float(score[0, i]),
                "detection_limit": float(limits[0, i]),
                "present": bool(score[0, i] > max(threshold, limits[0, i])),
            }
        )
    rows.sort(key=lambda r: -r["concentration"])
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = prediction_report(
        grid.energies,
        pristine,
        doped,
        result.attention[0],
        rows[: int(cfg.top)],
        out_dir / "prediction.png",
        title=f"{cfg.host}: {Path(cfg.doped).name}",
        interval=float(cfg.interval),
        threshold=threshold,
        threshold_label=f"present: {presence_text(spread_weight, threshold)}",
    )
    summary = {
        "host": str(cfg.host),
        "doped": str(cfg.doped),
        "pristine": str(cfg.pristine),
        "open_set": open_set,
        "checkpoints": [str(p) for p in paths],
        "model": describe_model(paths, card),
        "recipe": recipe,
        "output_dir": str(out_dir),
        "references": reference_host,
        "interval": float(cfg.interval),
        "threshold": threshold,
        "spread_weight": spread_weight,
        "noise_level": float(cfg.noise_level),
        "dopants": rows,
        "input_checks": checks,
        "report": str(report),
    }
    write_json_atomic(out_dir / "prediction.json", summary, indent=2)
    print(format_table(summary))
    return summary


def describe_model(paths: list[Path], card: dict) -> str:
    """Which model answered, and the figures its card gives."""
    kind = {
        "ReferenceDefectNet": "reference-informed",
        "DefectNet": "spectrum-only",
    }.get(card.get("network", {}).get("_target_", "").rsplit(".", 1)[-1], "")
    where = paths[0].parent
    text = f"{kind + ' ' if kind else ''}ensemble of {len(paths)} ({where})"
    realism = card.get("realism", {})
    if realism.get("full"):
        text += (
            f"; on full spectra of {realism['cells']} cells of unseen real crystals RMSE "
            f"{realism['full']['rmse']:.4f}, R² {realism['full']['r2']:.2f} "
            f"({realism['benchmark'].split(' ')[0]})"
        )
    return text


def presence_text(spread_weight: float, threshold: float) -> str:
    if spread_weight:
        return f"mean − {spread_weight:g} × member spread above {threshold:.3g}"
    return f"above {threshold:.3g}"


def format_table(summary: dict) -> str:
    level = int(round(100 * summary["interval"]))
    lines = [
        f"model: {summary['model']}",
        f"host {summary['host']}; {len(summary['checkpoints'])} checkpoint(s); "
        f"{'open set' if summary['open_set'] else 'given candidates'}; "
        f"present: {presence_text(summary['spread_weight'], summary['threshold'])}",
        f"and above each candidate's limit of detection at {summary['noise_level']:.0%} noise",
        f"{'dopant':<7} {'concentration':>13} {f'{level} % interval':>20} {'limit':>7}  present",
    ]
    for r in summary["dopants"]:
        if summary["open_set"] and not r["present"]:
            continue
        interval = f"{r['low']:.4f} – {r['high']:.4f}" if r["low"] is not None else "—"
        lines.append(
            f"{r['dopant']:<7} {r['concentration']:>13.4f} {interval:>20} "
            f"{r['detection_limit']:>7.4f}  {'yes' if r['present'] else 'no'}"
        )
    if summary["open_set"] and not any(r["present"] for r in summary["dopants"]):
        lines.append("(no element above the threshold and its limit of detection)")
    for name, checks in summary.get("input_checks", {}).items():
        done = (
            "simulated from its structure"
            if checks.get("simulated")
            else (
                "checked against the model's recipe: "
                + ("; ".join(checks["done"]) if checks["done"] else "passed as it is")
            )
        )
        lines.append(f"{name}: {done}")
    lines.append(f"report: {summary['report']} (and prediction.json beside it)")
    return "\n".join(lines)

"""Every config composes: each experiment, generate preset, calculator, phonon method and the
other groups, and every top-level config (benchmarks, evaluation, prediction, comparison)."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from defectnet.cli import CONF_DIR

from .conftest import compose_config

CONF = Path(CONF_DIR)


def names(group: str) -> list[str]:
    """Every option of a config group, those in subfolders as ``folder/name``."""
    return sorted(
        str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml")
    )


@pytest.mark.parametrize("experiment", names("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config("train", [f"experiment={experiment}", "init_from=pretrained.ckpt"])
    OmegaConf.to_container(cfg.data, resolve=True)
    assert cfg.model._target_ and cfg.trainer._target_


@pytest.mark.parametrize(
    "group", ["data", "model", "trainer", "logger", "callbacks", "debug", "hparams_search"]
)
def test_every_training_group_entry_composes(group):
    for entry in names(group):
        cfg = compose_config("train", [f"{group}={entry}"])
        assert OmegaConf.select(cfg, group) is not None or group in ("debug", "hparams_search")


@pytest.mark.parametrize("preset", names("generate"))
def test_every_generate_preset_composes(preset):
    from defectnet.datagen.settings import grid_from_config, settings_hash

    cfg = compose_config("generate", [f"generate={preset}"])
    assert len(settings_hash(cfg)) == 16 and grid_from_config(cfg).n_points == 100
    assert cfg.calculator._target_ and cfg.phonons._target_
    # a cache fixed to named parents is the shipped set's alone, not inherited by its successors
    assert (cfg.cache_parents is not None) == (preset in ("pretrain", "pretrain_v3"))


def stored_settings_hash(cfg) -> str:
    """The settings hash in the first record of the preset's first committed shard."""
    import gzip
    import json

    shard = sorted((Path(__file__).parents[1] / cfg.out_dir / "records").glob("*.jsonl*"))[0]
    with (gzip.open if shard.suffix == ".gz" else open)(shard, "rt") as fh:
        stored = json.loads(fh.readline())["provenance"]
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    return stored["settings_hash"]


@pytest.mark.parametrize(
    "preset",
    [
        "pretrain",
        "research/phonon_check",
        "research/phonon_check_superposed",
        "mgb2",
        "sige_demo",
    ],
)
def test_presets_with_committed_records_still_resume_them(preset):
    """A setting added to the config must keep the hash of the data sets already made (give it
    an implied value in ``settings.IMPLIED``), or their shards can no longer resume; data sets
    made before components were hashed by name carry the legacy hash, which stays accepted."""
    from defectnet.datagen.settings import accepted_hashes, legacy_settings_hash

    cfg = compose_config("generate", [f"generate={preset}"])
    stored = stored_settings_hash(cfg)
    assert stored == legacy_settings_hash(cfg)
    assert stored in accepted_hashes(cfg)


@pytest.mark.parametrize(
    "preset",
    [
        "pretrain_v2",
        "realism_central",
        "research/realism_superposed_far8",
    ],
)
def test_data_sets_made_with_hashing_by_name_still_resume(preset):
    """The same for the data sets made since components are hashed by name: their records carry
    the config's own hash."""
    from defectnet.datagen.settings import settings_hash

    cfg = compose_config("generate", [f"generate={preset}"])
    assert stored_settings_hash(cfg) == settings_hash(cfg)


def test_the_realism_hosts_v3_references_resume_as_they_were_made():
    """``realism_references_v3`` accepts the central steps its first hosts were made with."""
    import json

    from defectnet.datagen.settings import accepted_hashes

    cfg = compose_config("generate", ["generate=realism_references_v3"])
    folder = Path(__file__).parents[1] / cfg.out_dir / "references"
    stored = {json.loads(p.read_text())["settings_hash"] for p in folder.glob("*.json")}
    assert stored and stored <= set(accepted_hashes(cfg))


def test_a_set_that_goes_on_with_cheaper_steps_keeps_what_it_made():
    """pretrain_v3 went on with corrected one-sided steps after its first shards were made
    with central ones: those records are accepted (``also_accepts``), under their own hash."""
    from defectnet.datagen.settings import accepted_hashes, settings_hash

    cfg = compose_config("generate", ["generate=pretrain_v3"])
    stored = stored_settings_hash(cfg)
    assert cfg.phonons.plusminus == "corrected" and stored != settings_hash(cfg)
    assert stored in accepted_hashes(cfg)
    assert stored not in accepted_hashes(
        compose_config("generate", ["generate=pretrain_v3", "also_accepts=[]"])
    )


@pytest.mark.parametrize("group", ["calculator", "phonons", "parents"])
def test_components_are_hashed_by_their_config_name(group):
    """Each config file of a component group names one class, and the hash knows the class by
    that file's name: a class that moves keeps every data set's hash."""
    from defectnet.datagen.settings import registered_names, settings_hash

    files = names(group)
    registered = registered_names(group)
    assert sorted(registered.values()) == sorted(f"{group}/{f}" for f in files)
    cfg = compose_config("generate", ["generate=research/phonon_check"])
    moved = cfg.copy()
    target = cfg[group]._target_
    registered_elsewhere = {**registered, "somewhere.else.Moved": registered[target]}
    from unittest import mock

    with mock.patch("defectnet.datagen.settings.registered_names", lambda g: registered_elsewhere):
        moved[group]._target_ = "somewhere.else.Moved"
        assert settings_hash(moved) == settings_hash(cfg)


@pytest.mark.parametrize("calculator", names("calculator"))
def test_every_calculator_composes(calculator):
    """One module per potential, named like its config file."""
    cfg = compose_config("generate", [f"calculator={calculator}"])
    module = cfg.calculator._target_.rsplit(".", 1)[0]
    assert module == f"defectnet.datagen.calculators.{calculator}"


@pytest.mark.parametrize("phonons", names("phonons"))
def test_every_phonon_method_composes_and_builds(phonons):
    cfg = compose_config("generate", [f"phonons={phonons}"])
    method = instantiate(cfg.phonons)
    assert method.settings()["method"] == method.name


@pytest.mark.parametrize("parents", names("parents"))
def test_every_parent_source_composes(parents):
    cfg = compose_config("generate", [f"parents={parents}"])
    assert cfg.parents._target_


@pytest.mark.parametrize(
    "name",
    [p.stem for p in sorted(CONF.glob("*.yaml")) if p.stem not in ("train", "generate")]
    + [f"bench/{b}" for b in names("bench")],
)
def test_every_top_level_and_benchmark_config_resolves(name):
    """Each command's and benchmark's config composes and every value resolves (no broken
    interpolation) before a script reads it; values the user must give stay ``???``."""
    cfg = compose_config(name, [])
    with open_dict(cfg):
        cfg.pop("hydra", None)
        if "paths" in cfg:
            cfg.paths.output_dir = "run"  # Hydra's own run folder, set when a command runs
    values = OmegaConf.to_container(cfg, resolve=True)
    assert values and all(key != "bench" for key in values)  # benchmark keys at the top


def test_the_wheel_ships_every_config_the_shipped_data_sets_and_the_pretrained_model():
    """pyproject.toml maps conf/ and data/ into the package; its package-data patterns must
    cover every config file and every committed data set's cache."""
    import tomllib
    from fnmatch import fnmatch

    from defectnet.cli import ROOT_DIR

    tool = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {
        ".".join(p.parent.relative_to(ROOT_DIR).parts)
        for p in (ROOT_DIR / "defectnet").rglob("__init__.py")
    }
    listed = set(tool["packages"]) - set(tool["package-dir"])
    assert listed == packages, "pyproject.toml [tool.setuptools] packages must list every package"
    assert tool["package-dir"] == {"defectnet.conf": "conf", "defectnet.datasets": "data"}
    for package, folder in tool["package-dir"].items():
        assert package in tool["packages"]
        patterns = tool["package-data"][package]
        wanted = (
            sorted((ROOT_DIR / folder).rglob("*.yaml"))
            if folder == "conf"
            else sorted((ROOT_DIR / folder).glob("*/dataset.safetensors"))
        )
        assert wanted
        for path in wanted:
            relative = path.relative_to(ROOT_DIR / folder).as_posix()
            depth = relative.count("/")
            assert any(fnmatch(relative, p) and p.count("/") == depth for p in patterns), relative
    # the pretraining set ships as its records; its cache is made from them at first use
    records = sorted((ROOT_DIR / "data" / "pretrain" / "records").glob("*.jsonl.gz"))
    patterns = tool["package-data"]["defectnet.datasets"]
    assert records and all(
        any(fnmatch(p.relative_to(ROOT_DIR / "data").as_posix(), q) for q in patterns)
        for p in records
    )
    shipped = sorted(p for p in (ROOT_DIR / "defectnet" / "pretrained").rglob("*") if p.is_file())
    assert shipped, "the pretrained model ships in defectnet/pretrained"
    for path in shipped:  # the shipped model's members and card
        relative = path.relative_to(ROOT_DIR / "defectnet").as_posix()
        assert any(fnmatch(relative, p) for p in tool["package-data"]["defectnet"]), relative


def test_the_references_cost_line_says_how_this_run_shares_its_force_calls():
    """The preset's minutes were measured with force calls on every core; a run that overrides
    force_workers is told so beside the figure."""
    from defectnet.datagen.references import expected_cost

    cfg = compose_config("generate", ["generate=references", "force_workers=1"])
    text = expected_cost(cfg, 3)
    assert "measured: " in text and "this run: force_workers=1 on" in text
    assert text.endswith(f"≈ {3 * float(cfg.cost.minutes_per_host):.0f} min")
    # alloy cells added to hosts with references cost those cells, not a host's library
    text = expected_cost(cfg, 1, alloy_cells=8)
    each = float(cfg.cost.minutes_per_alloy_cell)
    assert "; 8 alloy cells of hosts with references, ≈" in text
    assert text.endswith(f"≈ {float(cfg.cost.minutes_per_host) + 8 * each:.0f} min")
    assert expected_cost(cfg, 0, alloy_cells=8).startswith("8 alloy cells")

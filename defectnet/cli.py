"""Console entry points. Hydra reads the configuration from ``defectnet.conf``: the checkout's
``conf/`` (editable install) or its copy inside an installed wheel."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from defectnet.errors import UserError
from defectnet.model.pretrained import pretrained_dir

ROOT_DIR = Path(__file__).resolve().parent.parent  # the checkout, when running from one
CONF_DIR = str(resources.files("defectnet.conf"))
log = logging.getLogger("defectnet")


def root_dir() -> str:
    """``paths.root_dir``, where outputs go: DEFECTNET_ROOT, else the checkout the package runs
    from (wherever the command is started), else — an installed wheel — the working folder."""
    if "DEFECTNET_ROOT" in os.environ:
        return os.environ["DEFECTNET_ROOT"]
    if (ROOT_DIR / "pyproject.toml").is_file():
        return str(ROOT_DIR)
    return os.getcwd()


def data_dir() -> str:
    """``paths.data_dir``: DEFECTNET_DATA, else the shipped data sets (the checkout's ``data/``
    or their copy inside an installed wheel)."""
    return os.environ.get("DEFECTNET_DATA", str(resources.files("defectnet.datasets")))


OmegaConf.register_new_resolver("defectnet_root", root_dir, replace=True)
OmegaConf.register_new_resolver("defectnet_data", data_dir, replace=True)
OmegaConf.register_new_resolver("defectnet_pretrained", lambda: str(pretrained_dir()), replace=True)
# ${sibling:<file>,<name>}: <name> in the folder of <file> (a data set's references/ folder)
OmegaConf.register_new_resolver(
    "sibling", lambda path, name: str(Path(path).parent / name), replace=True
)


# A user's mistake: a bad file or config value (UserError), a file or folder that is missing or
# not writable, a mandatory setting left out (???).
USER_ERRORS = (UserError, FileNotFoundError, PermissionError, MissingMandatoryValue)


def tracebacks_wanted() -> bool:
    """``HYDRA_FULL_ERROR=1`` as the user set it (``console`` sets it for Hydra's own use)."""
    return os.environ.get("DEFECTNET_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


def user_error_exit(command: str, message: str) -> None:
    print(f"defectnet-{command}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2) from None


def console(command: str):
    """A console command around a Hydra main: an override Hydra cannot apply (unknown key or
    option, a list where the preset has a mapping, bad syntax) is one line and exit code 2 like
    every other user mistake, instead of Hydra's own report."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    def wrap(main):
        @functools.wraps(main)
        def run():
            wanted = tracebacks_wanted()
            os.environ["DEFECTNET_FULL_ERROR"] = "1" if wanted else "0"
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors; they are told here
            try:
                return main()
            except (ConfigCompositionException, OverrideParseException) as exc:
                if wanted:
                    raise
                what = str(exc).split("Config search path")[0].strip()
                if getattr(exc, "override", None):  # a parse error names no override itself
                    what = f"override '{exc.override}': {what}"
                cause = " ".join(str(exc.__cause__ or "").split())
                if "Cannot merge DictConfig with ListConfig" in cause:
                    key = cause.split("full_key: ")[-1].split()[0]
                    cause = (
                        f"the preset gives {key} as a mapping; pass a mapping ({key}="
                        f"{{A: B}}), or drop the preset's value first: '~{key}' '+{key}=[...]'"
                    )
                user_error_exit(
                    command,
                    f"{what}{f' ({cause})' if cause else ''}; defectnet-{command} --cfg job "
                    "prints the config.",
                )

        return run

    return wrap


def reports_user_errors(command: str):
    """Run a console command so that a user's mistake is one line on stderr and exit code 2,
    with no traceback (``HYDRA_FULL_ERROR=1`` shows it), and Ctrl-C one line and exit code 130;
    any other exception is a bug and keeps its traceback."""

    def wrap(task):
        @functools.wraps(task)
        def run(cfg: DictConfig):
            try:
                return task(cfg)
            except USER_ERRORS as exc:
                if tracebacks_wanted():
                    raise
                if isinstance(exc, MissingMandatoryValue):
                    key = exc.full_key
                    user_error_exit(
                        command,
                        f"{key}: a required setting is missing; pass {key}=... on the "
                        "command line.",
                    )
                user_error_exit(command, str(exc))
            except KeyboardInterrupt:  # Ctrl-C: a stop the user asked for, not an error
                if tracebacks_wanted():
                    raise
                print(f"defectnet-{command}: stopped (Ctrl-C)", file=sys.stderr)
                raise SystemExit(130) from None

        return run

    return wrap


def calculator_config(name: str) -> DictConfig:
    """The calculator config group entry ``conf/calculator/<name>.yaml``."""
    path = Path(CONF_DIR) / "calculator" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise UserError(f"calculators: no calculator '{name}'; choose among {known}.")
    return OmegaConf.load(path)


def _list_parents(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate

    for p in instantiate(cfg.parents).parents():
        print(p.id)
    return {}


def _parents(cfg: DictConfig) -> dict:
    from defectnet.datagen.hosts import prepare_parents

    return {"parents": prepare_parents(cfg)}


def _generate(cfg: DictConfig) -> dict:
    from defectnet.datagen.samples import run_shard

    out = {"generate": run_shard(cfg)}
    if cfg.num_shards > 1:
        log.info("once every shard is done, merge them with stage=consolidate")
    return out


def _references(cfg: DictConfig) -> dict:
    from defectnet.datagen.references import make_references

    return {"references": make_references(cfg)}


def _consolidate(cfg: DictConfig) -> dict:
    from defectnet.data.cache import consolidate, load_cache, save_cache
    from defectnet.datagen.settings import made_like

    ds, report = consolidate(Path(cfg.out_dir) / "records", made_like(cfg))
    cache = Path(cfg.cache)
    if cache.is_file() and not cfg.get("force", False):
        held = len(load_cache(cache))
        if len(ds) < held:
            raise UserError(
                f"cache={cache}: holds {held} samples, the records {len(ds)}; the cache is left "
                "as it is. Restore the missing records, or pass force=true to replace it."
            )
    save_cache(ds, cache)
    log.info(
        "cache %s: %d samples from %d parents (%d left out: more imaginary modes than "
        "cache_stability.max_imaginary_fraction)",
        cfg.cache,
        report["ok"],
        len(ds.parents),
        report["left_out_unstable"],
    )
    return {"consolidate": report}


def _all(cfg: DictConfig) -> dict:
    """Samples, then — with a single shard, which then holds every sample — the cache."""
    out = _generate(cfg)
    return out | (_consolidate(cfg) if cfg.num_shards == 1 else {})


# stage → what it runs; each returns counts of what it did (logged, and returned to callers)
GENERATION_STAGES = {
    "list_parents": _list_parents,
    "parents": _parents,
    "generate": _generate,
    "references": _references,
    "shard": lambda cfg: _generate(cfg) | _references(cfg),
    "consolidate": _consolidate,
    "all": _all,
}


def check_generation(cfg: DictConfig) -> None:
    """Settings refused before any work (and before ``out_dir`` is made): shards, the phonon
    method's settings, candidates, the force workers, the pristine spectrum."""
    from defectnet.datagen.force_pool import force_workers
    from defectnet.datagen.shards import check_pristine_spectrum, check_shard
    from defectnet.elements import dopant_index
    from defectnet.errors import instantiate_checked

    check_shard(cfg)
    instantiate_checked(cfg.phonons)
    force_workers(cfg.get("force_workers", 1))
    check_pristine_spectrum(cfg)
    if cfg.get("candidates") is not None:
        given = cfg.candidates
        for dopant in [given] if isinstance(given, str) else list(given):
            dopant_index(str(dopant), where="candidates")


def run_generation(cfg: DictConfig) -> dict:
    """Run ``cfg.stage`` of the generation (see ``GENERATION_STAGES``)."""
    if cfg.stage not in GENERATION_STAGES:
        raise UserError(f"stage='{cfg.stage}': choose one of {', '.join(GENERATION_STAGES)}.")
    check_generation(cfg)
    out = GENERATION_STAGES[cfg.stage](cfg)
    for stage, counts in out.items():
        log.info("%s (shard %s/%s): %s", stage, cfg.shard, cfg.num_shards, json.dumps(counts))
    return out


@console("generate")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
@reports_user_errors("generate")
def generate(cfg: DictConfig) -> None:
    run_generation(cfg)


@console("train")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@reports_user_errors("train")
def train(cfg: DictConfig) -> float | None:
    """Returns the value of ``optimized_metric`` for Hydra sweepers."""
    from defectnet.training import train as run_training

    metrics = run_training(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


@console("evaluate")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@reports_user_errors("evaluate")
def evaluate(cfg: DictConfig) -> None:
    from defectnet.evaluation import evaluate as run_evaluation

    metrics = run_evaluation(cfg)
    print(json.dumps(metrics, indent=2))


@console("predict")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
@reports_user_errors("predict")
def predict(cfg: DictConfig) -> None:
    from defectnet.predict import predict as run_prediction

    run_prediction(cfg)

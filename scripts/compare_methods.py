"""DefectNet vs MLP vs NNLS vs training mean, from nothing to the table, in one command:

    python scripts/compare_methods.py [train_experiment=demo eval_data=demo_hosts8 seeds=[0,1,2]]

Trains the DefectNet ensemble as a Hydra multirun and the MLP baseline (each skipped when its
checkpoints exist in ``work_dir``), then runs the evaluation (``defectnet-evaluate``) on them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from defectnet.cli import CONF_DIR, ROOT_DIR


def train_once(folder: Path, args: list[str], expected: int) -> None:
    """Run train.py with ``args`` unless ``folder`` already holds ``expected`` best checkpoints."""
    if len(list(folder.rglob("best*.ckpt"))) >= expected:
        print(f"reusing the checkpoints in {folder}")
        return
    cmd = [sys.executable, str(ROOT_DIR / "train.py"), *args]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT_DIR)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="compare")
def main(cfg: DictConfig) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from defectnet.evaluation import evaluate

    work = Path(cfg.work_dir)
    common = [f"experiment={cfg.train_experiment}", *cfg.train_overrides]
    seeds = ",".join(str(s) for s in cfg.seeds)
    ensemble, mlp = work / "ensemble", work / "mlp"
    train_once(
        ensemble, ["-m", *common, f"seed={seeds}", f"hydra.sweep.dir={ensemble}"], len(cfg.seeds)
    )
    train_once(mlp, [*common, "model=mlp", f"hydra.run.dir={mlp}"], 1)
    overrides = [
        f"data={cfg.eval_data}",
        f"ckpt_path={ensemble}",
        f"mlp_ckpt={mlp}",
        f"interval={cfg.interval}",
    ]
    if cfg.references:
        overrides.append(f"references={cfg.references}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        eval_cfg = compose(config_name="eval", overrides=overrides)
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(work / "eval")
    evaluate(eval_cfg)
    print((work / "eval" / "comparison.md").read_text())
    print(f"metrics, figures: {work / 'eval'}")


if __name__ == "__main__":
    main()

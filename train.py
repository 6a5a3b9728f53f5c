"""Training entry point: `python train.py experiment=demo` (Hydra overrides welcome)."""

from defectnet.cli import train

if __name__ == "__main__":
    train()

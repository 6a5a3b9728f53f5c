"""Evaluate a checkpoint on test-ID and test-OOD: `python scripts/evaluate.py ckpt_path=...`."""

from defectnet.cli import evaluate

if __name__ == "__main__":
    evaluate()

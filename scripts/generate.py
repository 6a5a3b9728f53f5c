"""Data generation entry point (same as the `defectnet-generate` console script)."""

from defectnet.cli import generate

if __name__ == "__main__":
    generate()

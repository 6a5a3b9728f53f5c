"""The package's layers import downward only, with no import cycle, and every module imports
on its own in a fresh interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "defectnet"

# bottom → top; a module may import its own layer and the ones below it
LAYERS = [
    {
        "errors",
        "atomic",
        "elements",
        "spectra",
        "metrics",
        "io",
        "potentials",
        "difference",
        "spectrum_checks",
    },
    {"datagen"},
    {"data"},
    {"model"},
    {"ensemble", "plots", "runtime"},
    {"report", "calibration", "detection"},
    {"training", "evaluation", "predict"},
    {"cli"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not placed in a layer of tests/test_architecture.py")


def imports(path: Path) -> set[str]:
    """Every defectnet module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("defectnet"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("defectnet")}
    return found


def test_layers_import_downward_only_and_nothing_imports_in_a_cycle():
    mods = modules()
    graph = {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}
    upward = [
        f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
        for m, targets in graph.items()
        if m != "defectnet"
        for i in targets
        if i != "defectnet" and layer(i) > layer(m)
    ]
    assert not upward, upward
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for i in graph[m]:
            if state.get(i) == 1:
                raise AssertionError(f"import cycle: {' → '.join([*stack, m, i])}")
            if i not in state:
                visit(i, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module imported first, with no other DefectNet module loaded (one fresh
    interpreter; DefectNet's modules are dropped between imports, third-party ones are kept,
    which changes nothing about the order our own modules load in)."""
    code = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'defectnet']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append((name, traceback.format_exc()[-300:]))\n"
        "print(failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *modules()], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout

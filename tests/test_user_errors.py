"""A user's mistake reaches each console command as one line on stderr and exit code 2, with
no traceback and nothing written; a bug keeps its traceback."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from defectnet.cli import reports_user_errors
from defectnet.errors import UserError


def _command(name: str) -> list[str]:
    path = shutil.which(f"defectnet-{name}")
    return [path] if path else [sys.executable, "-c", f"from defectnet.cli import {name}; {name}()"]


def _refused(name: str, *overrides: str, cwd, expect: str) -> str:
    result = subprocess.run(
        [*_command(name), *overrides, "hydra.run.dir=hydra-run"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"defectnet-{name}")]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"defectnet-{name}: error: "), result.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
    @reports_user_errors("demo")
    def mistaken(cfg):
        raise UserError("data.path: 'x.safetensors'\nis missing; generate it first.")

    with pytest.raises(SystemExit) as stop:
        mistaken({})
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        err == "defectnet-demo: error: data.path: 'x.safetensors' is missing; generate it first.\n"
    )

    @reports_user_errors("demo")
    def buggy(cfg):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        buggy({})


def test_ctrl_c_is_one_line_and_exit_code_130(capsys, monkeypatch):
    monkeypatch.delenv("DEFECTNET_FULL_ERROR", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @reports_user_errors("demo")
    def interrupted(cfg):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        interrupted({})
    assert stop.value.code == 130
    assert capsys.readouterr().err == "defectnet-demo: stopped (Ctrl-C)\n"


SPECTRUM_FILES = {
    "empty.txt": "",
    "page.txt": "<html><body>404 Not Found</body></html>\n",
    "one-column.txt": "\n".join(str(e) for e in range(0, 100, 2)),
    "nan.txt": "\n".join(f"{e} nan" for e in range(0, 100, 2)),
    "unsorted.txt": "\n".join(f"{e} 1.0" for e in [10, 5, 20, 15, 40, 30, 80, 60]),
    "negative-energy.txt": "\n".join(f"{e} 1.0" for e in range(-100, -10, 2)),
    "all-zero.txt": "\n".join(f"{e} 0.0" for e in range(0, 150, 2)),
    "negative.txt": "\n".join(f"{e} -1.0" for e in range(0, 150, 2)),
}


@pytest.mark.slow
def test_malformed_inputs_to_each_command(pretrained, tmp_path):
    good = tmp_path / "good.txt"
    energies = np.arange(0, 150, 1.0)
    peaks = ((40, 1.5, 1.0), (25, 1.5, 0.6), (12, 2.0, 0.3))  # a crystal-like, sharp band
    good.write_text(
        "\n".join(
            f"{e} {sum(h * np.exp(-(((e - c) / w) ** 2)) for c, w, h in peaks)}" for e in energies
        )
    )
    (tmp_path / "random.txt").write_bytes(np.random.default_rng(0).bytes(512))
    predict = [f"ckpt_path={pretrained}", "host=GaAs", "candidates=[Zn,Se]", f"pristine={good}"]
    for name, text in SPECTRUM_FILES.items():
        (tmp_path / name).write_text(text)
    for name in [*SPECTRUM_FILES, "random.txt"]:
        line = _refused("predict", *predict, f"doped={tmp_path / name}", cwd=tmp_path, expect="")
        assert name in line, line  # every message names the file
    assert not list(tmp_path.glob("hydra-run/prediction.*"))  # nothing written
    broken_cif = tmp_path / "broken.cif"
    broken_cif.write_text("data_x\n_cell_length_a 5.6\nloop_\n_atom_site_label\n")
    _refused(
        "predict",
        *predict[:3],
        f"pristine={broken_cif}",
        f"doped={broken_cif}",
        cwd=tmp_path,
        expect="broken.cif",
    )
    _refused(
        "predict",
        *predict[1:],
        f"doped={good}",
        f"ckpt_path={tmp_path / 'none.ckpt'}",
        cwd=tmp_path,
        expect="none.ckpt",
    )
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    _refused(
        "predict",
        *predict[1:],
        f"doped={good}",
        f"ckpt_path={junk}",
        cwd=tmp_path,
        expect="junk.ckpt",
    )
    _refused(
        "predict",
        *predict[:3],
        f"pristine={good}",
        f"doped={good}",
        "candidates=[Xx]",
        cwd=tmp_path,
        expect="'Xx'",
    )
    _refused("predict", cwd=tmp_path, expect="host")  # mandatory settings left out
    cache = tmp_path / "cut.safetensors"
    cache.write_bytes(b"\x00" * 64)
    _refused("train", f"data.path={cache}", "logger=none", cwd=tmp_path, expect="cut.safetensors")
    _refused("evaluate", f"ckpt_path={tmp_path / 'none.ckpt'}", cwd=tmp_path, expect="none.ckpt")
    _refused(
        "generate",
        "shard=3",
        "num_shards=2",
        f"out_dir={tmp_path / 'gen'}",
        cwd=tmp_path,
        expect="shard=3",
    )
    _refused(
        "generate", "candidates=[Xx]", f"out_dir={tmp_path / 'gen'}", cwd=tmp_path, expect="'Xx'"
    )
    # overrides Hydra cannot apply: a list over the preset's mapping, an unknown key, bad syntax
    for override, expect in (
        ("candidates=[Xx]", "'~candidates' '+candidates=[...]'"),
        ("phonons.cutof=6", "phonons.cutof"),
        ("candidates=[Al", "candidates=[Al"),
    ):
        _refused("generate", "generate=mgb2", override, cwd=tmp_path, expect=expect)
    _refused(
        "generate", "spectra.e_max=-5", f"out_dir={tmp_path / 'gen'}", cwd=tmp_path, expect="e_max"
    )
    _refused(
        "generate",
        "spectra.n_points=50",
        f"out_dir={tmp_path / 'gen'}",
        cwd=tmp_path,
        expect="spectra.n_points=50",
    )

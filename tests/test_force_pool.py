"""force_workers: a batch of displaced cells shared with worker processes gives the forces one
process gives, and a bad setting is refused in one line."""

import numpy as np
import pytest
from ase.build import bulk

from defectnet.datagen.force_pool import ForcePool, force_workers
from defectnet.errors import UserError

MATGL = {"_target_": "defectnet.datagen.calculators.matgl.MatGLForceField"}


def test_a_shared_batch_gives_the_forces_of_one_process(matgl):
    rng = np.random.default_rng(0)
    cells = []
    for _ in range(12):
        cell = bulk("Si", "diamond", a=5.43, cubic=True)
        cell.positions += rng.normal(0, 0.03, cell.positions.shape)
        cells.append(cell)
    pool = ForcePool(matgl, MATGL, processes=2, min_batch=4)
    try:
        shared = pool.forces(cells)
        assert pool._pool is not None  # the batch went through the worker pool
        assert len(shared) == len(cells)
        for got, want in zip(shared, matgl.forces(cells)):
            np.testing.assert_allclose(got, want, atol=1e-6)
        pool.forces(cells[:3])  # below min_batch: this process alone, same pool kept
    finally:
        pool.close()


def test_where_a_worker_cannot_start_the_batch_is_computed_here_with_a_warning(matgl, caplog):
    cells = [bulk("Si", "diamond", a=5.43 + 0.01 * i, cubic=True) for i in range(8)]
    pool = ForcePool(matgl, {"_target_": "no.such.Potential"}, processes=2, min_batch=4)
    try:
        got = pool.forces(cells)
    finally:
        pool.close()
    assert "force_workers: a worker process stopped" in caplog.text and pool.processes == 1
    for a, b in zip(got, matgl.forces(cells)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("value", [0, -2, "many", True, 1.5])
def test_force_workers_takes_a_count_or_auto(value):
    assert force_workers(3) == 3 and force_workers("auto") >= 1
    with pytest.raises(UserError, match=f"force_workers={value!r}: give a number of processes"):
        force_workers(value)


KILLED_PARENT = """
import numpy as np, signal, sys, time
from ase.build import bulk
from defectnet.datagen.calculators.matgl import MatGLForceField
from defectnet.datagen.force_pool import ForcePool
if __name__ == "__main__":
    # Ctrl-C as a terminal's foreground command has it: a test run started in the background
    # of a script ignores SIGINT, and every process it starts inherits that
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    cells = [bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2) for _ in range(1200)]
    for cell in cells:
        cell.positions += rng.normal(0, 0.02, cell.positions.shape)
    pool = ForcePool(MatGLForceField(), {MATGL!r}, processes=2)
    pool.forces(cells[:8])
    pool._pool.submit(int).result()  # the worker is up (its initializer done)
    print(*pool._pool._processes, flush=True)
    pool.forces(cells)
"""


def test_workers_end_when_their_parent_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT.replace("{MATGL!r}", repr(MATGL)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(1)
        alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    assert not alive, "worker processes outlived their killed parent"


def test_ctrl_c_stops_the_workers_at_once(tmp_path):
    """Ctrl-C (SIGINT to the process group) in the middle of a shared batch: the command stops
    without waiting for the chunks the workers hold (it took 87 s before), workers gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT.replace("{MATGL!r}", repr(MATGL)))
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    time.sleep(2)  # into the batch of 1200 cells
    os.killpg(parent.pid, signal.SIGINT)
    try:
        parent.wait(timeout=30)  # the whole batch takes minutes
    except subprocess.TimeoutExpired:
        os.killpg(parent.pid, signal.SIGKILL)
        raise AssertionError("the interrupted command waited for its workers' chunks") from None
    time.sleep(1)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]

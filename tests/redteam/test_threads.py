"""A red-team worker's threads."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("threadpoolctl")


def test_a_worker_runs_numpy_blas_on_one_thread():
    """Workers inherit OMP_NUM_THREADS = the cores; their scikit-learn fits must not spin BLAS threads beside the
    other workers (a probe ran 3x slower in a pool of two)."""
    code = (
        "import numpy, threadpoolctl\n"
        "from trainlock.red_team.runner import one_blas_thread\n"
        "one_blas_thread()\n"
        "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1]"


def test_libraries_a_worker_loads_later_start_with_one_thread():
    """scipy's OpenBLAS and scikit-learn's OpenMP, first imported inside a worker by a probe, after its limit was
    set, started with one thread per core and slowed the probes 3x."""
    code = (
        "import threadpoolctl, torch\n"
        "from trainlock.red_team.runner import one_blas_thread\n"
        "one_blas_thread()\n"
        "import sklearn.linear_model, scipy.linalg\n"
        "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1]"


def _pid_and_threads(x):
    import torch

    return os.getpid(), torch.get_num_threads(), x * 2


def _fails():
    raise RuntimeError("side job failed")


def test_beside_runs_in_another_process_and_reraises():
    from trainlock.red_team.runner import beside

    with beside(_pid_and_threads, 21) as fut:
        here = os.getpid()
    pid, threads, value = fut.result()
    assert value == 42 and threads == 1 and pid != here
    with pytest.raises(RuntimeError, match="side job failed"), beside(_fails):
        pass


def test_the_probes_imports_happen_before_the_fork():
    """A pool of probes imports scikit-learn once, in the parent, not once per worker and per pool."""
    code = (
        "import sys\n"
        "from trainlock.red_team.runner import _import_for_workers\n"
        "from trainlock.red_team.spec import AttackSpec\n"
        "_import_for_workers([AttackSpec.of('adam', 1e-3)])\n"
        "assert 'sklearn' not in sys.modules\n"
        "_import_for_workers([AttackSpec.of('adam', 1e-3), AttackSpec.of('adam', 1e-3, train='probe')])\n"
        "assert 'sklearn.linear_model' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

"""Data parallelism on several devices and processes, each in a fresh process.

JAX fixes its device count when it starts, so the checks on four simulated CPU devices
(``tests/helpers/multidevice_checks.py``) and the data-parallel example run in child processes
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``, and the rest of the suite keeps
one device. Every child has a time limit, so a stuck collective fails the test instead of
hanging it.
"""
import os
import re
import subprocess
import sys

import pytest
from helpers.cases import GLOO_RELIABLE

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
FOUR_DEVICES = '--xla_force_host_platform_device_count=4'


def _run(args, timeout):
    env = dict(os.environ, XLA_FLAGS=FOUR_DEVICES)
    try:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(args)} did not finish in {timeout} s:\n{err.stdout}")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return done.stdout


def test_the_multidevice_checks_pass_on_four_devices(request):
    # The checks that this run selects (`-m every_stack` on the other stacks: what differs
    # there, tests/conftest.py).
    marks = request.config.getoption('markexpr')
    out = _run(['-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rs',
                *(['-m', marks] if marks else []),
                os.path.join('tests', 'helpers', 'multidevice_checks.py')], timeout=1200)
    assert re.search(r'\d+ passed', out) and 'failed' not in out


def _max_difference(out):
    return float(re.search(r'largest relative difference of the losses: (\S+)', out).group(1))




# Two processes of two devices each where their collectives are reliable (the example's
# one-process path is what multidevice_checks.py's training checks run); elsewhere, one process
# of four devices, as JAX 0.4's gloo collectives abort now and then in two processes.
@pytest.mark.parametrize('processes', [2] if GLOO_RELIABLE else [1],
                         ids=['2-processes-x-2-devices' if GLOO_RELIABLE else '4-devices'])
def test_data_parallel_example_gives_the_loss_of_one_device(processes):
    pytest.importorskip('aeon')
    out = _run([os.path.join('examples', 'data_parallel.py'), '--quick', '--backend', 'event',
                '--processes', str(processes), '--timeout', '600'], timeout=900)
    assert '2 series per device and batch' in out
    assert _max_difference(out) < 1e-5

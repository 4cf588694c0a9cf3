"""pytest's settings for the suite: the kernel cache it builds in, hypothesis profiles, a fresh
BrainPy state per test, and which tests run on every stack. What tests share otherwise is in
``helpers/cases.py``."""
import atexit
import os
import pathlib
import shutil
import stat
import tempfile


def _kernel_cache() -> str:
    """Where the suite keeps the C++ kernels it builds: its own folder, not the user's cache
    (``~/.cache/bp_conv_ext``), which the tests neither fill nor depend on.

    A fixed folder of this user's in the system's temporary folder: the processes of one run
    (pytest-xdist's workers, the tests' subprocesses) and later runs, of every stack, share one
    build per JAX version (the cache's key), which costs seconds to make. The cache itself makes
    sharing safe (a library is built under a temporary name, renamed into place under a lock
    and loaded only if it matches its stamp). Used only if it is a folder of this user's that no
    one else may write in; otherwise a new temporary folder for this process, removed at exit.
    """
    if hasattr(os, 'getuid'):
        folder = pathlib.Path(tempfile.gettempdir()) / f'bp_conv_ext-test-cache-{os.getuid()}'
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(folder)
            if (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
                    and not info.st_mode & 0o022):
                return str(folder)
        except OSError:
            pass
    folder = tempfile.mkdtemp(prefix='bp_conv_ext-test-cache-')
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# Before anything imports the package. A cache named by the caller is kept (the fallback run
# of the Makefile gives an empty one).
if not os.environ.get('BP_CONV_EXT_CACHE'):
    os.environ['BP_CONV_EXT_CACHE'] = _kernel_cache()

import brainpy as bp  # noqa: E402
import brainpy.math as bm  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property-based tests: a quick profile for CI, a long one for nightly-style runs.
settings.register_profile('ci', max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile('nightly', max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))


#: BrainPy's time step as a test starts: a test that sets another (``bp.share.save(dt=...)``
#: changes ``bm.get_dt()`` for the whole process) does not hand it on.
DEFAULT_DT = bm.get_dt()


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the fused spiking step (``bp_conv_ext.ops.fused.conv_lif``) ran."""
    from bp_conv_ext.ops import fused
    count = []
    original = fused.conv_lif

    def spy(*args, **kwargs):
        count.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, 'conv_lif', spy)
    return count


@pytest.fixture(autouse=True)
def _fresh_brainpy_state():
    """Each test starts from the default mode and time step, a fixed seed and free names."""
    bm.set_mode(bm.NonBatchingMode())
    bp.share.save(dt=DEFAULT_DT)
    bm.random.seed(0)
    yield
    bm.clear_name_cache()


#: What runs on every supported stack. ``make test`` runs the whole suite on the default stack
#: and ``-m every_stack`` on the others: what differs between the stacks, each with the reason.
#: Keys are test files, or ``file::test`` for single tests.
EVERY_STACK = {
    'test_backends.py': "the event kernels are built against each stack's JAX (C++; numba on 2.8)",
    'test_cxx_kernels.py': "the C++ kernels are built against each stack's JAX (XLA FFI)",
    # (Its option grid runs on the default stack: the kernel's arithmetic is the same C++.)
    'test_spiking_cpu.py::test_the_kernel_computes_the_surrogates_whose_derivative_is_the_'
    'published_one': "each BrainPy's surrogates",
    'test_spiking_cpu.py::test_operands_that_are_not_finite_give_the_ieee_results':
        "the spiking layer's C++ kernel, forward and backward, against each stack's JAX (XLA FFI)",
    'test_spiking_cpu.py::test_problems_the_kernel_does_not_compute_exactly_run_as_the_jax_'
    'implementation': "what each stack's JAX hands to the spiking layer's 'jax' kernels",
    'test_gpu_kernels.py': "the Pallas kernels lower through each JAX's Triton backend",
    'test_gradients.py': "gradients through each stack's kernels and JAX",
    'test_fused.py': "the fused kernel in each JAX's Pallas (interpreted; lowered via Triton)",
    'test_fused_multistep.py': "the fused spiking step against each BrainPy's bp.dyn.Lif",
    'test_float64.py': "each BrainPy's float64 routes (JAX's flag alone suffices on 2.6 only)",
    'test_bad_input.py::test_event_path_and_auto_give_the_dense_answer_with_nan_and_inf':
        "NaN and inf through each stack's event kernels",
    'test_sharding.py': "the kernels' sharding rules use each JAX's custom_partitioning",
    # (test_sharding.py runs them in a child process, selecting as its own run selects.)
    'multidevice_checks.py': "the kernels' sharding rules on four devices with each JAX",
    'test_robustness.py::test_a_deep_network_of_event_convolutions_in_one_program':
        "many event kernels in one program on each stack's runtime",
    'test_robustness.py::test_independent_event_convolutions_in_one_program':
        "many event kernels in one program on each stack's runtime",
    'test_brainpy_integration.py': "the BrainPy glue: DSRunner, BPTT, checkpoints",
    'test_modes_and_transforms.py': "BrainPy's modes and transforms",
    'test_multistep.py': "multi_step in BrainPy's modes and runners",
    # (The delay kernels' math, its backends and gradients run on the default stack.)
    **{f'test_delays.py::{name}': "the delay layers' BrainPy glue" for name in (
        'test_step_by_step_equals_folded_and_the_reference',
        'test_multi_step_continues_from_the_buffer_and_leaves_it_as_steps_do',
        'test_reset_state_clears_the_past', 'test_dsrunner_step_by_step_equals_layer_by_layer',
        'test_layer_by_layer_and_bptt_train_a_delay_network',
        'test_layer_by_layer_trainer_gradients_equal_step_by_step_ones',
        'test_state_twin_equals_the_classic_layer',
        'test_state_twin_gradients_of_both_forms_and_in_layer_by_layer',
        'test_rounding_survives_a_checkpoint')},
    **dict.fromkeys(('test_conv.py', 'test_sequential.py'),     # tests/layers/state/
                    "brainpy.state is brainpy_state's on 2.8, brainpy's own from 2.9"),
    # (The other examples' BrainPy glue is test_delays.py's and test_nir.py's.)
    'test_examples.py::test_gunpoint_quick': "the demo's quick run on each BrainPy",
    'test_examples.py::test_spike_raster_quick': "the raster example on each BrainPy",
    'test_torch_interop.py': "PyTorch (a CPU build) is installed on the Python 3.11 stacks",
    'test_nir_peers.py': "SpikingJelly (on PyTorch) is installed on the BrainPy 2.8 stack",
    'test_parity.py::test_matches_brainpy_conv1d': "brainpy.dnn.Conv1d of each BrainPy",
    'test_parity.py::test_matches_torch_conv1d': "PyTorch: the Python 3.11 stacks",
    'test_padding_modes.py::test_matches_torch_padding_modes': "PyTorch: the Python 3.11 stacks",
    'test_properties.py::test_matches_torch': "PyTorch: the Python 3.11 stacks",
    # Lowering for accelerators with each JAX; of the export grid, the rows of the paths with
    # this package's own lowering rules (the dense backends are XLA's operations).
    'test_platforms.py': "lowering for GPUs and TPUs with each JAX",
}


#: Parameters that the other stacks leave to the default stack, within the tests they run: the
#: accelerators' event kernels forced on the CPU (pure JAX, Pallas interpreted: the same code
#: on every stack; test_gpu_kernels.py checks their lowering with each JAX) and the dense
#: algorithms by name (XLA's operations; `dense` and `auto` still run), and the delays'
#: rounded interpolation (arithmetic; the Gaussian one still runs).
_DEFAULT_STACK_ONLY = {'runtime': ('jax', 'triton'), 'backend': ('xla', 'xla2d', 'im2col'),
                       'interpolation': ('round',)}


#: Tests of the files above that the default stack runs alone: a fresh build of the C++ kernels
#: (on the other stacks the suite's first event-path test builds them against that JAX, and the
#: kernel tests fail if it cannot).
_DEFAULT_STACK_ONLY_TESTS = {'test_the_kernels_are_built_once_and_then_loaded_from_the_cache'}

def _every_stack(item):
    name, test = os.path.basename(str(item.fspath)), getattr(item, 'originalname', None)
    if name not in EVERY_STACK and f'{name}::{test}' not in EVERY_STACK:
        return False
    params = dict(getattr(getattr(item, 'callspec', None), 'params', {}))
    if 'run' in params:                       # pairwise grids: ((backend, runtime), id)
        (params['backend'], params['runtime']), _ = params['run']
    if test == 'test_program_exports':
        return params['backend'] in ('event', 'auto')
    if test == 'test_check_grads_float64':      # (unbatched is a reshape of batched)
        return params['batched']
    if test in _DEFAULT_STACK_ONLY_TESTS:
        return False
    if name == 'multidevice_checks.py' and params.get('backend') == 'dense':
        return False        # XLA's own partitioning of XLA's operations: no rule of ours
    return not any(params.get(key) in values for key, values in _DEFAULT_STACK_ONLY.items())


def _stale_every_stack_keys():
    """The keys of :data:`EVERY_STACK` that name no test file, or no test of their file: a file
    renamed or a test removed would otherwise leave the other stacks without it, silently."""
    tests = os.path.dirname(os.path.abspath(__file__))
    files = {name: os.path.join(folder, name) for folder, _, names in os.walk(tests)
             for name in names if name.endswith('.py')}
    stale = []
    for key in EVERY_STACK:
        name, _, test = key.partition('::')
        if name not in files:
            stale.append(key)
        elif test:
            with open(files[name]) as f:
                if f'def {test}(' not in f.read():
                    stale.append(key)
    return stale


@pytest.hookimpl(tryfirst=True)     # before `-m` selects by the markers
def pytest_collection_modifyitems(config, items):
    stale = _stale_every_stack_keys()
    if stale:
        raise pytest.UsageError(f'tests/conftest.py: EVERY_STACK names no such test: {stale}')
    for item in items:
        if _every_stack(item):
            item.add_marker('every_stack')

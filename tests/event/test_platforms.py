"""Every path on every platform: programs lowered for GPUs and TPUs with ``jax.export``.

No accelerator is needed: ``jax.export`` lowers for a platform this machine does not have.
The matrix covers the pure function, the layer in all three modes, ``multi_step``,
``LayerByLayer`` and one trainer step, and the brainpy.state layer under brainstate's
transforms, in a network and in a braintools optimizer step; every backend; ``bool`` and float
input; forward, gradients, ``vmap`` and a ``lax.scan`` with its gradient.
"""
import dataclasses
import functools
import re

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.cases import CPU_KERNELS, pairwise

from bp_conv_ext import (
    Conv1d,
    LayerByLayer,
    LayerByLayerTrainer,
    conv1d,
    event_density_threshold,
    event_kernel,
    event_kernels,
    use_event_kernels,
    which_backend,
)
from bp_conv_ext.core.args import BACKENDS
from bp_conv_ext.event import registry

export = pytest.importorskip('jax.export')

try:     # the brainpy.state stack (BrainPy 2.8); BrainPy 2.6 has no brainstate
    import brainpy.state
    import brainstate
    import braintools
    import brainunit as u
except ImportError:
    brainstate = None

#: Platform sets each program is exported for; the last is one multi-platform export.
PLATFORMS = [('cuda',), ('rocm',), ('tpu',), ('cpu', 'cuda')]
PLATFORM_IDS = ['+'.join(p) for p in PLATFORMS]
DTYPES = ['bool', 'float']
MODES = {'nonbatching': bm.NonBatchingMode, 'batching': bm.BatchingMode,
         'training': bm.TrainingMode}
BATCH, LENGTH, CIN, COUT, K, STEPS = 16, 200, 16, 16, 3, 4   # over the auto density-check size


def _input(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    spikes = rng.random(shape) < 0.02
    return jnp.asarray(spikes if dtype == 'bool' else spikes * rng.standard_normal(shape),
                       dtype=jnp.bool_ if dtype == 'bool' else jnp.float32)


def _kernel(cin=CIN, cout=COUT):
    return jnp.asarray(np.random.default_rng(1).standard_normal((K, cin, cout)), jnp.float32)


def _scan_loss(step_fn, xs):
    """A LIF-like recurrence over ``xs`` driven by ``step_fn``; returns a scalar."""
    def step(v, x):
        v = 0.9 * v + step_fn(x)
        return v, jnp.tanh(v)
    v0 = jnp.zeros(jax.eval_shape(step_fn, xs[0]).shape, jnp.float32)
    return jnp.sum(jax.lax.scan(step, v0, xs)[1] ** 2)


def _functional(model, fn):
    """``fn`` (which reads and writes ``model``'s variables) as a pure function of the
    trainable values, the other values and ``fn``'s arguments; returns ``fn``'s output and
    every variable's new value. The variables keep their values."""
    train = list(model.train_vars().unique().values())
    others = [v for v in model.vars().unique().values() if all(v is not t for t in train)]

    def pure(train_values, other_values, *args):
        variables = train + others
        saved = [v.value for v in variables]
        try:
            for v, value in zip(variables, list(train_values) + list(other_values)):
                v.value = value
            out = fn(*args)
            return out, [v.value for v in variables]
        finally:
            for v, value in zip(variables, saved):
                v.value = value

    return pure, [v.value for v in train], [v.value for v in others]


def _pure_program(backend, dtype, kind):
    x, w = _input((BATCH, LENGTH, CIN), dtype), _kernel()
    conv = functools.partial(conv1d, backend=backend)
    if kind == 'forward':
        return lambda x, w: conv(x, w), (x, w)
    if kind == 'grad':
        argnums = (0, 1) if dtype == 'float' else 1
        return jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums), (x, w)
    if kind == 'vmap':
        return jax.grad(lambda w, x: jnp.sum(jax.vmap(lambda xi: conv(xi, w))(x) ** 2)), (w, x)
    xs = _input((STEPS, BATCH, LENGTH, CIN), dtype)
    return jax.grad(lambda w, xs: _scan_loss(lambda xt: conv(xt, w), xs)), (w, xs)


def _layer_program(mode, backend, dtype, kind):
    batched = mode != 'nonbatching'
    # NonBatchingMode takes one [H, C] sample: a longer one keeps it over the check size.
    shape = (BATCH, LENGTH, CIN) if batched else (LENGTH * 10, CIN)
    layer = Conv1d(CIN, COUT, K, mode=MODES[mode]())
    layer.backend = backend
    if mode == 'training':
        pure, train, others = _functional(layer, layer)
    else:   # no trainable variables: the kernel is differentiated as a plain value
        def pure(train_values, other_values, x):
            saved = layer.w.value
            layer.w.value = train_values[0]
            try:
                return layer(x), []
            finally:
                layer.w.value = saved
        train, others = [layer.w.value], []
    if kind == 'forward':
        return lambda train, x: pure(train, others, x)[0], (train, _input(shape, dtype))
    if kind == 'grad':
        loss = lambda train, x: jnp.sum(jnp.sin(pure(train, others, x)[0]))
        return jax.grad(loss), (train, _input(shape, dtype))
    if kind == 'vmap':
        loss = lambda train, x: jnp.sum(jax.vmap(lambda xi: pure(train, others, xi)[0])(x) ** 2)
        return jax.grad(loss), (train, _input((4,) + shape, dtype))
    loss = lambda train, xs: _scan_loss(lambda xt: pure(train, others, xt)[0], xs)
    return jax.grad(loss), (train, _input((STEPS,) + shape, dtype))


def _network(backend):
    mode = bm.TrainingMode()
    conv = Conv1d(CIN, 8, K, mode=mode)
    conv.backend = backend
    return LayerByLayer(conv, bp.dyn.Lif((LENGTH, 8), keep_size=True, mode=mode),
                        bp.dnn.Flatten(mode=mode), bp.dnn.Dense(LENGTH * 8, 2, mode=mode),
                        mode=mode)


def _sequence_program(what, backend, dtype, kind):
    xs = _input((STEPS, BATCH, LENGTH, CIN), dtype)
    if what == 'multi_step':
        model = Conv1d(CIN, COUT, K, mode=bm.TrainingMode())
        model.backend = backend
        run = model.multi_step
    elif what == 'layer_by_layer':
        model = _network(backend)
        run = model.multi_step
    else:   # one LayerByLayerTrainer step: gradients and the optimizer update
        model = _network(backend)
        trainer = LayerByLayerTrainer(model, lambda p, t: jnp.mean((p - t) ** 2),
                                      bp.optim.SGD(lr=0.1), data_first_axis='T')

        def train_step(xs, ys):
            loss, grads = trainer.loss_and_grads(xs, ys)
            trainer.optimizer.update(grads)
            return loss

        pure, train, others = _functional(trainer.optimizer, train_step)
        ys = jnp.zeros((STEPS, BATCH, 2))
        return lambda train, others, xs: pure(train, others, xs, ys), (train, others, xs)
    pure, train, others = _functional(model, run)
    if kind == 'forward':
        return lambda train, xs: pure(train, others, xs)[0], (train, xs)
    return jax.grad(lambda train, xs: jnp.sum(jnp.sin(pure(train, others, xs)[0]))), (train, xs)


def _stateful(fn, *args):
    """``fn`` (which reads and writes brainstate states) as a pure function of the states'
    values and its arguments, returning the new values and ``fn``'s output."""
    stateful = brainstate.transform.StatefulFunction(fn)
    stateful.make_jaxpr(*args)
    values = [state.value for state in stateful.get_states(*args)]
    return lambda values, *args: stateful.jaxpr_call(values, *args), values


def _state_network(backend):
    from bp_conv_ext.state import Conv1d as StateConv1d
    from bp_conv_ext.state import LayerByLayer as StateLayerByLayer
    conv = StateConv1d((LENGTH, CIN), 8, K, w_init=brainstate.nn.init.XavierNormal(unit=u.mA))
    conv.backend = backend
    net = StateLayerByLayer(conv, brainpy.state.LIF((LENGTH, 8)),
                            brainstate.nn.Flatten(in_size=(LENGTH, 8)),
                            brainstate.nn.Linear(LENGTH * 8, 2))
    brainstate.nn.init_all_states(net, BATCH)
    return net


def _state_program(what, backend, dtype, kind):
    """Programs of brainpy.state users: the layer under brainstate's grad, vmap and scan; a
    network run layer by layer and step by step; a braintools optimizer step."""
    from bp_conv_ext.state import Conv1d as StateConv1d
    if what == 'state-layer':
        layer = StateConv1d((LENGTH, CIN), COUT, K, b_init=brainstate.nn.init.ZeroInit())
        layer.backend = backend
        params = layer.states(brainstate.ParamState)
        grad = lambda loss: brainstate.transform.grad(loss, params)()
        x = _input((BATCH, LENGTH, CIN), dtype)
        if kind == 'forward':
            fn = layer
        elif kind == 'grad':
            fn = lambda x: grad(lambda: jnp.sum(jnp.sin(layer(x))))
        elif kind == 'vmap':
            fn = lambda x: grad(lambda: jnp.sum(brainstate.transform.vmap(layer)(x) ** 2))
        else:
            x = _input((STEPS, BATCH, LENGTH, CIN), dtype)
            fn = lambda xs: grad(lambda: _scan_loss(layer, xs))
    else:
        net = _state_network(backend)
        params = net.states(brainstate.ParamState)
        x = _input((STEPS, BATCH, LENGTH, CIN), dtype)
        if what == 'state-layer_by_layer':
            run = net.multi_step
        else:
            run = lambda xs: brainstate.transform.for_loop(net, xs)
        loss = lambda xs: jnp.sum(jnp.sin(run(xs)))
        if kind == 'step':
            optimizer = braintools.optim.Adam(lr=1e-3)
            optimizer.register_trainable_weights(params)

            def fn(xs):
                grads, value = brainstate.transform.grad(loss, params, return_value=True)(xs)
                optimizer.update(grads)
                return value
        else:
            fn = lambda xs: brainstate.transform.grad(loss, params)(xs)
    with brainstate.environ.context(dt=0.1 * u.ms):   # the neurons' time step, when traced
        pure, values = _stateful(fn, x)
    return (lambda values, x: pure(values, x)[1]), (values, x)


STATE_PROGRAMS = ([('state-layer', kind) for kind in ('forward', 'grad', 'vmap', 'scan')]
                  + [('state-layer_by_layer', 'grad'), ('state-per_step', 'grad'),
                     ('state-per_step', 'step')])

PROGRAMS = (
    [('pure', kind) for kind in ('forward', 'grad', 'vmap', 'scan')]
    + [(f'layer-{mode}', kind) for mode in MODES for kind in ('forward', 'grad', 'vmap', 'scan')]
    + [(what, kind) for what in ('multi_step', 'layer_by_layer') for kind in ('forward', 'grad')]
    + [('trainer_step', 'step')]
    + (STATE_PROGRAMS if brainstate is not None else []))


@functools.cache
def _program(what, kind, backend, dtype):
    """The jitted program and its arguments (built once for all platform sets)."""
    bm.random.seed(0)
    if what == 'pure':
        f, args = _pure_program(backend, dtype, kind)
    elif what.startswith('state-'):
        f, args = _state_program(what, backend, dtype, kind)
    elif what.startswith('layer-'):
        f, args = _layer_program(what[len('layer-'):], backend, dtype, kind)
    else:
        f, args = _sequence_program(what, backend, dtype, kind)
    return jax.jit(f), args


#: The custom call of a Pallas kernel compiled through Triton (the CUDA event kernels).
TRITON = '__gpu$xla.gpu.triton'


def _accelerator_calls(text, backend):
    """The custom calls of a program exported for accelerators only. JAX 0.4 keeps every
    platform's branch of ``backend='auto'``'s choice in a one-platform export: the CPU's event
    branch too, with the event path lowered by the exported platform's rule (for CUDA, the
    Triton kernels). The platform index is a constant there and XLA drops the branches not
    taken."""
    calls = set(re.findall(r'custom_call @([\w.$]+)', text))
    if backend == 'auto' and jax.__version_info__ < (0, 5):
        calls -= {TRITON}
    return calls


def _export(f, args, platforms):
    """``jax.export`` for ``platforms``. The event kernels of the CPU and of CUDA GPUs are XLA
    custom calls without JAX's compatibility guarantees; their checks are disabled by name
    (what a user exporting such a program does too): Triton's always, the CPU kernels' as
    read from the program lowered with the CPU."""
    names = {TRITON}
    if 'cpu' in platforms:
        text = f.trace(*args).lower(lowering_platforms=platforms).as_text()
        names |= set(re.findall(r'custom_call @([\w.$]+)', text))
    checks = [export.DisabledSafetyCheck.custom_call(name) for name in sorted(names)]
    return export.export(f, platforms=platforms, disabled_checks=checks)(*args)


# Every program with every backend, and each of them with each dtype and platform set (a
# pairwise grid; the full product under `make test-full`): the program decides which
# transformations the convolution goes through, the backend which operations it lowers to,
# and the platform only which lowering rule each operation takes. The one rule that depends
# on more than the operation, the CUDA event kernels' (Pallas, lowered for a GPU this machine
# does not have), is exported for CUDA in every program.
EXPORT_GRID = pairwise(PROGRAMS, BACKENDS, DTYPES, PLATFORMS)
EXPORT_GRID += [row for i, program in enumerate(PROGRAMS)
                for row in [(program, 'event', DTYPES[i % 2], ('cuda',))]
                if row not in EXPORT_GRID]


@pytest.mark.parametrize('program,backend,dtype,platforms', EXPORT_GRID,
                         ids=['-'.join(program + (backend, dtype, '+'.join(platforms)))
                              for program, backend, dtype, platforms in EXPORT_GRID])
def test_program_exports(program, backend, dtype, platforms):
    what, kind = program
    f, args = _program(what, kind, backend, dtype)
    if 'cpu' in platforms and len(platforms) > 1 and \
            'bp_conv_ext_conv_lif_cpu' in str(jax.make_jaxpr(f)(*args)):
        # The spiking layer's C++ kernel (the CPU's fused step) has no lowering elsewhere: where
        # JAX lowers the CPU's branch for the export's other platforms, it is refused by name;
        # where it does not (seen with the default stack's JAX 0.12.1), the export succeeds.
        try:
            exported = _export(f, args, platforms)
        except NotImplementedError as error:
            assert re.search(r"C\+\+ CPU kernel .* has no lowering for '(cuda|rocm|tpu)'.*"
                             r"kernels='jax'", str(error), re.S), error
            return
    else:
        exported = _export(f, args, platforms)
    assert exported.platforms == platforms
    text = exported.mlir_module()
    if 'cpu' not in platforms:
        # Accelerators run only XLA's own operations, and on CUDA GPUs the event kernels.
        calls = _accelerator_calls(text, backend)
        assert calls == ({TRITON} if backend == 'event' and 'cuda' in platforms else set()), \
            platforms


def test_a_program_exported_for_cpu_and_cuda_runs_here_and_equals_the_dense_path():
    f, (x, w) = _program('pure', 'grad', 'auto', 'bool')
    exported = _export(f, (x, w), ('cpu', 'cuda'))
    dense, _ = _program('pure', 'grad', 'dense', 'bool')
    np.testing.assert_allclose(np.asarray(exported.call(x, w)), np.asarray(dense(x, w)),
                               rtol=1e-5, atol=1e-5)


def _module(backend, platforms, dtype='bool'):
    f, args = _program('pure', 'forward', backend, dtype)
    return _export(f, args, platforms).mlir_module()


@pytest.mark.parametrize('platform', ['cuda', 'rocm', 'tpu'])
def test_auto_is_the_dense_path_on_accelerators_with_no_density_check(platform):
    # The density check is a reduction over the input; the dense convolution has none.
    text = _module('auto', (platform,))
    assert not _accelerator_calls(text, 'auto')
    assert 'stablehlo.reduce' not in _module('dense', (platform,))
    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX 0.4 keeps the CPU's branch, and its density check, in the export")
    assert 'stablehlo.reduce' not in text


def test_cuda_convolves_with_matmuls_not_cudnn_unless_asked():
    # A folded sequence (T * B = 800 samples): XLA's convolution on the CPU, and on CUDA GPUs
    # the im2col matmuls (cuDNN's autotuner takes ~100 GiB for such programs); in the
    # forward pass and both gradients.
    x, w = _input((800, 60, CIN), 'float'), _kernel()

    def convolutions(backend, platform):
        f = jax.jit(jax.grad(lambda x, w: jnp.sum(conv1d(x, w, backend=backend) ** 2),
                             argnums=(0, 1)))
        return export.export(f, platforms=[platform])(x, w).mlir_module().count(
            'stablehlo.convolution')

    assert which_backend(x, w, platform='cpu') == 'xla'
    assert which_backend(x, w, platform='cuda') == 'im2col'
    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX 0.4 keeps every platform's branch in a one-platform export")
    assert convolutions('auto', 'cpu') == convolutions('xla', 'cuda') == 3
    assert convolutions('auto', 'cuda') == convolutions('dense', 'cuda') == 0


def test_auto_checks_the_density_on_the_cpu_where_the_event_kernels_win():
    cpu = jax.jit(lambda x, w: conv1d(x, w)).lower(*_program('pure', 'forward', 'auto',
                                                             'bool')[1]).as_text()
    wins = event_density_threshold('cpu') is not None
    assert ('custom_call' in cpu) == ('reduce' in cpu) == wins
    both = _module('auto', ('cpu', 'cuda'))       # the check stays in the CPU branch
    assert ('custom_call' in both) == wins


def test_forced_pure_jax_kernels_run_on_the_cpu_without_custom_calls():
    x, w = _input((BATCH, LENGTH, CIN), 'bool'), _kernel()
    f = lambda x, w: conv1d(x, w, backend='event')
    with use_event_kernels('jax'):
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda w: jnp.sum(f(x, w) ** 2)))(w))
        hlo = jax.jit(f).lower(x, w).as_text()
        assert event_kernel('cpu') == 'jax'
    assert 'bp_conv_ext_event_conv1d[' in jaxpr and 'bp_conv_ext_event_conv1d_kernel_grad[' in jaxpr
    assert jaxpr.count("kernels='jax'") == 2
    assert 'custom_call' not in hlo
    installed = jax.jit(lambda x, w: conv1d(x, w, backend='event')).lower(x, w).as_text()
    assert 'custom_call' in installed       # (a new function: jit keeps f's forced trace)


def test_event_kernels_lists_what_can_run_on_each_platform():
    cpu = event_kernels('cpu')
    names = [k.name for k in cpu]
    assert cpu[0].name == event_kernel('cpu') and event_kernels() == cpu
    # The CPU's own sets in the order it prefers them (the pure-JAX ones always there), then
    # the CUDA GPUs' ones (Pallas's interpreter); each with its measured threshold.
    order = ['c++', 'numba', 'jax', 'triton']
    assert names == sorted(names, key=order.index) and names[-2:] == ['jax', 'triton']
    assert [k.auto_density for k in cpu] == \
        [{'c++': 0.1, 'numba': 0.03, 'jax': None, 'triton': None}[n] for n in names]
    by_platform = {p: [(k.name, k.sharding) for k in event_kernels(p)]
                   for p in ('cuda', 'gpu', 'rocm', 'tpu')}
    assert by_platform == {'cuda': [('triton', 'split')], 'gpu': [('triton', 'split')],
                           'rocm': [('jax', 'xla')], 'tpu': [('jax', 'xla')]}
    with pytest.raises(ValueError, match=r"`platform` \(='metal'\) must be one of 'cpu'"):
        event_kernels('metal')


def test_a_kernel_record_says_what_its_kernels_need():
    records = {k.name: k for k in event_kernels('cpu')}
    jax_kernels = records['jax']
    assert (jax_kernels.package, jax_kernels.builds, jax_kernels.platforms) == \
        (None, False, ('cpu', 'rocm', 'tpu'))
    assert all(k.forceable for k in records.values())
    if 'numba' in records:
        assert records['numba'].package == 'brainevent'
    if 'c++' in records:
        assert records['c++'].builds and records['c++'].package is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        jax_kernels.auto_density = 0.5


@pytest.mark.parametrize('name', CPU_KERNELS)
def test_use_event_kernels_chooses_the_cpu_kernels_for_a_block(name):
    x = jnp.asarray(np.random.default_rng(4).random((2, 20, CIN)) < 0.2)
    w = _kernel()
    outside = event_kernel('cpu')
    with use_event_kernels(name) as chosen:
        assert chosen.name == event_kernel('cpu') == name
        assert event_density_threshold('cpu') == chosen.auto_density
        assert event_kernel('cuda') == 'triton'           # accelerators keep theirs
        f = jax.jit(lambda x, w: conv1d(x, w, backend='event'))
        y = f(x, w)
        jaxpr = str(jax.make_jaxpr(f)(x, w))
    assert event_kernel('cpu') == outside
    assert f"kernels={name}" in jaxpr.replace("'", '')
    np.testing.assert_allclose(y, conv1d(x, w, backend='dense'), rtol=1e-5, atol=1e-5)
    # A program traced inside the block keeps those kernels when it runs after it.
    np.testing.assert_allclose(f(x, w), y, rtol=0, atol=0)


def test_use_event_kernels_blocks_nest():
    with use_event_kernels('jax'):
        with use_event_kernels('triton'):
            assert event_kernel('cpu') == 'triton'
        assert event_kernel('cpu') == 'jax'
    assert event_kernel('cpu') == CPU_KERNELS[0]


@pytest.mark.parametrize('name', CPU_KERNELS)
def test_a_call_names_its_kernels_over_the_default(name):
    """``conv1d(..., kernels=name)`` traces that call with the set ``name`` on the CPU, inside
    a ``use_event_kernels`` block too, and leaves the default (and other calls) alone."""
    x = jnp.asarray(np.random.default_rng(5).random((2, 20, CIN)) < 0.2)
    w = _kernel()
    other = next(k for k in ('jax', 'triton') if k != name)
    with use_event_kernels(other):
        jaxpr = str(jax.make_jaxpr(lambda x, w: (conv1d(x, w, backend='event', kernels=name),
                                                 conv1d(x, w, backend='event')))(x, w))
        assert event_kernel('cpu') == other
    assert sorted(re.findall(r'kernels=(\S+?)[,)\]]', jaxpr.replace("'", ''))) == \
        sorted([name, other])
    np.testing.assert_allclose(conv1d(x, w, backend='event', kernels=name),
                               conv1d(x, w, backend='dense'), rtol=1e-5, atol=1e-5)
    # 'auto' takes the event path at the density threshold of the kernels it runs with.
    sparse = np.random.default_rng(6).random((32, 200, CIN)) < 0.02
    expected = 'event' if name in ('c++', 'numba') else which_backend(sparse, w, backend='dense')
    assert which_backend(sparse, w, kernels=name) == expected
    with pytest.raises(ValueError, match=r"`kernels` \(='pallas'\) must be one of 'c\+\+', "
                                         r"'numba', 'jax', 'triton'\.$"):
        conv1d(x, w, kernels='pallas')


def test_the_registry_names_one_runtime_alike_for_both_operations():
    conv = {k.name: k for k in registry.sets('conv')}
    spiking = {k.name: k for k in registry.sets('spiking')}
    assert list(conv) == ['c++', 'numba', 'jax', 'triton']
    assert list(spiking) == ['c++', 'mosaic', 'triton', 'jax']
    for name in set(conv) & set(spiking):
        assert conv[name].module == spiking[name].module or name == 'jax'
    # Mosaic runs only where named until a GPU has measured it; 'jax' serves everywhere.
    assert not spiking['mosaic'].by_default and spiking['mosaic'].capability == 9
    assert spiking['jax'].platforms == registry.PLATFORMS

    def everything(name):
        return True
    assert registry.spiking_kernels('cuda', None, everything, 9) == 'triton'
    assert registry.spiking_kernels('cuda', 'mosaic', everything) == 'mosaic'
    assert registry.spiking_kernels('cuda', 'mosaic', lambda name: False) == 'jax'
    assert registry.spiking_kernels('cpu', 'c++', everything) == 'c++'
    assert registry.spiking_kernels('tpu', 'c++', everything) == 'jax'
    assert registry.spiking_kernels('tpu', None, everything) == 'jax'
    assert registry.spiking_kernels('cpu', None, everything) == \
        ('c++' if registry.CXX_SPIKING_BY_DEFAULT else 'jax')


@pytest.mark.parametrize('name', ['cupy', 'brainevent', 'numba_cpu', None, 'C++'])
def test_use_event_kernels_must_name_a_kernel_set(name):
    with pytest.raises(ValueError, match=rf"`name` \(={re.escape(repr(name))}\) must be one "
                                         r"of 'c\+\+', 'numba', 'jax', 'triton'\.$"):
        with use_event_kernels(name):
            pass
    assert event_kernel('cpu') == CPU_KERNELS[0]


@pytest.mark.skipif('numba' in CPU_KERNELS, reason="the numba kernels are available here")
def test_use_event_kernels_says_why_kernels_are_not_available():
    with pytest.raises(ValueError, match=r"`name` \(='numba'\): these kernels are not "
                                         r"available here: they need the package "
                                         r"'brainevent', which is not installed\.$"):
        with use_event_kernels('numba'):
            pass


def test_event_kernel_on_each_platform():
    native = CPU_KERNELS[0]
    assert native in ('c++', 'numba'), "the test stacks have the C++ or numba kernels"
    assert event_kernel('cpu') == native
    assert [event_kernel(p) for p in ('cuda', 'rocm', 'tpu', 'gpu')] == \
        ['triton', 'jax', 'jax', 'triton']
    assert event_kernel() == native        # JAX's default backend here is the CPU
    with pytest.raises(ValueError, match=r"`platform` \(='metal'\) must be one of 'cpu', 'cuda'"):
        event_kernel('metal')


def test_the_auto_threshold_belongs_to_the_kernels_of_each_platform():
    # Measured per kernel (docs/performance.md); None: 'auto' stays dense there.
    native = {'c++': 0.1, 'numba': 0.03}[CPU_KERNELS[0]]
    assert event_density_threshold('cpu') == native == event_density_threshold()
    assert [event_density_threshold(p) for p in ('cuda', 'rocm', 'tpu', 'gpu')] == [None] * 4
    if 'numba' in CPU_KERNELS:
        with use_event_kernels('numba'):
            assert event_density_threshold('cpu') == 0.03
    with use_event_kernels('jax'):
        assert [event_density_threshold(p) for p in ('cpu', 'cuda', 'rocm', 'tpu')] == [None] * 4


@pytest.mark.parametrize('density', [0.01, 0.3])
def test_which_backend_says_what_auto_runs_on_each_platform(density):
    x, w = _input((BATCH, LENGTH, CIN), 'bool', seed=2), _kernel()
    x = jnp.asarray(np.random.default_rng(3).random(x.shape) < density)
    dense = which_backend(x, w, backend='dense')
    assert dense in ('xla', 'im2col')
    threshold = event_density_threshold('cpu')
    sparse = threshold is not None and density <= threshold
    assert which_backend(x, w, platform='cpu') == ('event' if sparse else dense)
    for platform in ('cuda', 'rocm', 'tpu', 'gpu'):
        assert which_backend(x, w, platform=platform) == (
            'im2col' if platform in ('cuda', 'gpu') else dense)
        assert which_backend(x, w, backend='event', platform=platform) == 'event'
    assert which_backend(x.astype(jnp.float32), w, platform='cpu') == dense
    layer = Conv1d(CIN, COUT, K, w_initializer=np.asarray(w), mode=bm.BatchingMode())
    assert layer.which_backend(x, platform='cpu') == which_backend(x, w, platform='cpu')
    layer.backend = 'im2col'
    assert layer.which_backend(x, platform='cpu') == 'im2col'


def test_which_backend_checks_its_arguments():
    x, w = _input((BATCH, LENGTH, CIN), 'bool'), _kernel()
    with pytest.raises(ValueError, match=r"`platform` \(='GPU'\) must be one of"):
        which_backend(x, w, platform='GPU')
    with pytest.raises(ValueError, match=r"`backend` \(='fast'\) must be one of"):
        which_backend(x, w, backend='fast')
    with pytest.raises(ValueError, match=r"expects in_channels=16 in the last axis"):
        Conv1d(CIN, COUT, K, mode=bm.BatchingMode()).which_backend(x[..., :3])


_PRECISIONS = {None: 'DEFAULT', 'default': 'DEFAULT', 'high': 'HIGH', 'highest': 'HIGHEST',
               'tensorfloat32': 'HIGH', 'float32': 'HIGHEST'}


@pytest.mark.parametrize('precision', list(_PRECISIONS), ids=str)
@pytest.mark.parametrize('backend', BACKENDS)
def test_every_convolution_and_matmul_follows_the_requested_precision(backend, precision):
    """JAX's ``jax.default_matmul_precision`` reaches every convolution and matmul of the
    dense algorithms and of the event path's rules, forward and backward (the CUDA event
    kernels themselves multiply no matrices)."""
    x, w = _input((BATCH, LENGTH, CIN), 'float'), _kernel()
    loss = lambda x, w: jnp.sum(jnp.sin(conv1d(x > 0, w, backend=backend)
                                        + conv1d(x, w, backend=backend)))
    with jax.default_matmul_precision(precision):
        text = export.export(jax.jit(jax.grad(loss, (0, 1))), platforms=['cuda'],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)])(
            x, w).mlir_module()
    ops = [line for line in text.splitlines()
           if re.search(r'stablehlo\.(convolution|dot_general)\b', line)]
    assert ops
    found = {(re.findall(r'precision[^A-Z]*(DEFAULT|HIGHEST|HIGH)\b', line) or ['DEFAULT'])[0]
             for line in ops}
    assert found == {_PRECISIONS[precision]}


@pytest.mark.parametrize('backend', ['xla', 'im2col', 'event'])
def test_the_precision_of_the_trace_holds_when_lowered_later(backend):
    # Dense operations take the precision when traced; the event kernels, lowered only with
    # the program, take the one their primitive was bound under, not the one at lowering
    # (lowered for ROCm, whose event kernels are pure JAX; CUDA's do no matmul).
    x, w = _input((BATCH, LENGTH, CIN), 'bool'), _kernel()
    loss = lambda x, w: jnp.sum(jnp.sin(conv1d(x, w, backend=backend)))
    with jax.default_matmul_precision('highest'):
        traced = jax.jit(jax.grad(loss, 1)).trace(x, w)
    with jax.default_matmul_precision('default'):
        text = traced.lower(lowering_platforms=('rocm',)).as_text()
    ops = [line for line in text.splitlines()
           if re.search(r'stablehlo\.(convolution|dot_general)\b', line)]
    assert ops and all('HIGHEST' in line for line in ops)

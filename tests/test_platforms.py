"""Every path on every platform: programs lowered for GPUs and TPUs with ``jax.export``.

No accelerator is needed: ``jax.export`` lowers for a platform this machine does not have.
The matrix covers the pure function, the layer in all three modes, ``multi_step``,
``LayerByLayer`` and one trainer step; every backend; ``bool`` and float input; forward,
gradients, ``vmap`` and a ``lax.scan`` with its gradient.
"""
import functools
import re

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import Conv1d, LayerByLayer, LayerByLayerTrainer, conv1d
from bp_conv_ext._conv import BACKENDS

export = pytest.importorskip('jax.export')

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


PROGRAMS = (
    [('pure', kind) for kind in ('forward', 'grad', 'vmap', 'scan')]
    + [(f'layer-{mode}', kind) for mode in MODES for kind in ('forward', 'grad', 'vmap', 'scan')]
    + [(what, kind) for what in ('multi_step', 'layer_by_layer') for kind in ('forward', 'grad')]
    + [('trainer_step', 'step')])


@functools.lru_cache(maxsize=None)
def _program(what, kind, backend, dtype):
    """The jitted program and its arguments (built once for all platform sets)."""
    bm.random.seed(0)
    if what == 'pure':
        f, args = _pure_program(backend, dtype, kind)
    elif what.startswith('layer-'):
        f, args = _layer_program(what[len('layer-'):], backend, dtype, kind)
    else:
        f, args = _sequence_program(what, backend, dtype, kind)
    return jax.jit(f), args


def _export(f, args, platforms):
    """``jax.export`` for ``platforms``. A CPU event kernel is an XLA custom call without
    JAX's compatibility guarantees; for a program that includes the CPU, its checks are
    disabled by name (what a user exporting such a program does too)."""
    checks = []
    if 'cpu' in platforms:
        text = f.trace(*args).lower(lowering_platforms=platforms).as_text()
        checks = [export.DisabledSafetyCheck.custom_call(name)
                  for name in set(re.findall(r'custom_call @([\w.$]+)', text))]
    return export.export(f, platforms=platforms, disabled_checks=checks)(*args)


@pytest.mark.parametrize('platforms', PLATFORMS, ids=PLATFORM_IDS)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('what,kind', PROGRAMS, ids=['-'.join(p) for p in PROGRAMS])
def test_program_exports(what, kind, backend, dtype, platforms):
    f, args = _program(what, kind, backend, dtype)
    exported = _export(f, args, platforms)
    assert exported.platforms == platforms
    text = exported.mlir_module()
    if 'cpu' not in platforms:
        # Accelerators run only XLA's own operations: no custom call at all.
        assert 'custom_call' not in text

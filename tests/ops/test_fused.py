"""The spiking layer Conv1d -> LIF over a sequence (``bp_conv_ext.ops.fused``): the fused Pallas
kernels, Mosaic GPU and Triton (interpreted here), equal the unfused layer, which equals
BrainPy's own neurons."""
import contextlib
import dataclasses
import functools
import re

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_conv_ext import Conv1d, output_length
from bp_conv_ext.event import registry
from bp_conv_ext.event.kernels import mosaic_gpu, pallas_gpu
from bp_conv_ext.ops import fused
from bp_conv_ext.ops.fused import LIF, choose_kernel, conv_lif

export = pytest.importorskip('jax.export')
TRITON, MOSAIC = '__gpu$xla.gpu.triton', 'mosaic_gpu_v2'
KERNELS = ['mosaic', 'triton']
#: Every choice of ``kernels``: the registry's (``None``) and each spiking kernel set.
CHOICES = [None, 'jax', 'c++', 'mosaic', 'triton']
NEURONS = LIF.make(tau=2., dt=1., v_th=1., v_reset=-0.2, v_rest=0.1, r=1.5)


def _case(batch=16, length=10, cin=3, cout=32, k=3, steps=4, spikes=True, padding='SAME',
          rhs_dilation=1, seed=0, dtype=jnp.float32, input_dtype=None):
    rng = np.random.default_rng(seed)
    xs = rng.random((steps, batch, length, cin)) < 0.3
    xs = jnp.asarray(xs if spikes else xs * rng.standard_normal(xs.shape), None if spikes
                     else jnp.float32)
    if input_dtype is not None:
        xs = xs.astype(input_dtype)
    w = jnp.asarray(rng.standard_normal((k, cin, cout)), dtype)
    b = jnp.asarray(rng.standard_normal(cout) * 0.1, dtype)
    out_len = output_length(length, k, 1, padding, 1, rhs_dilation)
    v0 = jnp.asarray(rng.standard_normal((batch, out_len, cout)) * 0.5, dtype)
    return xs, w, b, v0


def _kernel(name):
    if name == 'mosaic' and not mosaic_gpu.available():
        pytest.skip("Mosaic GPU's interpreter needs JAX 0.12")
    return name


def _unfused(kernel, *args, **options):
    """The ``'jax'`` kernels at the precision ``kernel`` computes: ``float32`` for the
    Mosaic GPU kernel, the platform's default (TF32 on GPUs) for the Triton one (the same on
    the CPU)."""
    with jax.default_matmul_precision('highest' if kernel == 'mosaic' else None):
        return conv_lif(*args, kernels='jax', **options)


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('options', [dict(), dict(padding='CAUSAL', rhs_dilation=2),
                                     dict(padding='VALID', spikes=False, k=5),
                                     dict(batch=3, cout=8)],
                         ids=['same-spikes', 'causal-dilated', 'valid-float', 'unsupported-shape'])
def test_fused_kernel_equals_the_unfused_layer(options, kernel):
    conv_options = {k: options[k] for k in ('padding', 'rhs_dilation') if k in options}
    xs, w, b, v0 = _case(**options)
    spikes, v = conv_lif(xs, w, b, v0, NEURONS, kernels=_kernel(kernel), **conv_options)
    expected_spikes, expected_v = _unfused(kernel, xs, w, b, v0, NEURONS, **conv_options)
    assert 0.05 < float(jnp.mean(expected_spikes)) < 0.95        # the neurons do spike
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(v, expected_v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('options', [
    dict(batch=70, cin=20, cout=48, k=2, padding='CAUSAL', length=5, steps=3),
    dict(dtype=jnp.bfloat16),
    dict(spikes=False, input_dtype=jnp.bfloat16),
    dict(spikes=False, input_dtype=jnp.int8, cin=70, cout=16)],
    ids=['padded-batch-narrow-block', 'bfloat16', 'bfloat16-input', 'int8-input-wide'])
def test_the_mosaic_kernel_over_its_tiles_and_dtypes(options):
    """The batch padded to 64 rows, 16-channel blocks, one-part ``bfloat16`` and 8-bit
    operands, three-part ``float32`` kernels on ``bfloat16`` inputs, 128 input channels."""
    xs, w, b, v0 = _case(**options)
    padding = options.get('padding', 'SAME')
    assert choose_kernel('mosaic', xs, w, v0) == _kernel('mosaic')
    spikes, v = conv_lif(xs, w, b, v0, NEURONS, kernels='mosaic', padding=padding)
    expected_spikes, expected_v = _unfused('mosaic', xs, w, b, v0, NEURONS, padding=padding)
    assert 0.05 < float(jnp.mean(expected_spikes)) < 0.95
    tolerance = 1e-2 if v0.dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(v.astype(jnp.float32), expected_v.astype(jnp.float32),
                               rtol=tolerance, atol=tolerance)


def test_bfloat16_parts_sum_to_every_float32():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.standard_normal(10000) * 10.0 ** rng.integers(-30, 30, 10000),
                        [np.pi, -1 / 3, 3.4e38, -3.4e38, 1.2e-38, 0.]]).astype(np.float32)
    parts = mosaic_gpu.split(jnp.asarray(a), 3)
    assert all(p.dtype == jnp.bfloat16 for p in parts)
    total = sum(np.asarray(p, np.float64) for p in parts)
    normal = np.abs(a) >= 2. ** -110            # parts of smaller ones may be flushed to 0
    np.testing.assert_array_equal(total[normal], a[normal].astype(np.float64))
    assert np.all(np.abs(total - a) <= 2. ** -126)
    assert np.any(np.asarray(parts[2]) != 0)               # the third part is needed


def test_the_kernel_each_gpu_runs():
    xs, w, _b, v0 = _case()
    assert choose_kernel('jax', xs, w, v0) is None
    assert choose_kernel('triton', xs[:, :3], w, v0[:3]) is None        # 3 rows: too few
    wide = jnp.zeros((7, 512, 32), jnp.float32)                    # no room in shared memory
    wide_xs = jnp.zeros(xs.shape[:3] + (512,), bool)
    assert choose_kernel('mosaic', wide_xs, wide, v0) is None
    assert choose_kernel(None, wide_xs, wide, v0) == 'triton'
    assert not pallas_gpu.conv_lif_supported(0, 32, 1, 1, 1)                 # empty
    assert not pallas_gpu.conv_lif_supported(16, 0, 1, 1, 1)
    assert not mosaic_gpu.supported(3, 2, 0, 1, 1, 1, jnp.float32, jnp.float32, jnp.float32)
    if hasattr(jax.sharding, 'AbstractDevice'):
        with _abstract_gpu('NVIDIA A100-SXM4-80GB'):
            assert choose_kernel(None, xs, w, v0) == 'triton'


@pytest.mark.parametrize('gpu', [None, 'NVIDIA H200'], ids=['default-h100', 'h200'])
def test_auto_takes_the_triton_kernel_on_hopper_gpus_too(gpu):
    """The Mosaic GPU kernel has not run on a GPU: the default choice takes the Triton kernel
    on compute capability 9 as elsewhere; ``'mosaic'`` is taken where named."""
    if gpu is not None and not hasattr(jax.sharding, 'AbstractDevice'):
        pytest.skip("JAX before 0.12 has no abstract devices")
    xs, w, _b, v0 = _case()
    with _abstract_gpu(gpu) if gpu else contextlib.nullcontext():
        assert fused.compute_capability()[0] == 9
        assert choose_kernel(None, xs, w, v0) == 'triton'
        if mosaic_gpu.available():
            assert choose_kernel('mosaic', xs, w, v0) == 'mosaic'


def _abstract_gpu(kind):
    device = jax.sharding.AbstractDevice(device_kind=kind, num_cores=None, platform='gpu')
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), (),
                                                                    abstract_device=device))


@pytest.mark.parametrize('mapped', ['inputs', 'kernels'])
def test_vmap_of_the_fused_kernel(mapped):
    """Mapped inputs and states fold into the batch; mapped kernels and biases take one call
    each (the primitive's rule, which both kernels share; the Triton one runs it here)."""
    xs, w, b, v0 = _case(steps=3)
    members = 2
    rng = np.random.default_rng(5)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, members), jnp.float32)
    if mapped == 'inputs':
        xs = jnp.stack([xs, ~xs])
        axes, args = (1, None, None, 0), (jnp.moveaxis(xs, 0, 1), w, b, jnp.stack([v0, -v0]))
    else:
        axes, args = (None, 0, 0, None), (xs, w * scale[:, None, None, None],
                                          b * scale[:, None], v0)

    def run(kernels):
        return jax.vmap(lambda xs, w, b, v0: conv_lif(xs, w, b, v0, NEURONS,
                                                      kernels=kernels),
                        in_axes=axes)(*args)

    (spikes, v), (expected_spikes, expected_v) = run('triton'), run('jax')
    assert spikes.shape == (members,) + expected_spikes.shape[1:]
    assert 0.05 < float(jnp.mean(expected_spikes)) < 0.95
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(v, expected_v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel', KERNELS)
def test_gradients_of_the_fused_kernel_are_the_unfused_layers(kernel):
    xs, w, b, v0 = _case(spikes=False)
    kernel = _kernel(kernel)

    def loss(kernels):
        def f(w, b, v0):
            spikes, v = conv_lif(xs, w, b, v0, NEURONS, kernels=kernels)
            return jnp.sum(jnp.sin(v)) + jnp.sum(spikes)
        return jax.grad(f, argnums=(0, 1, 2))(w, b, v0)

    for got, expected in zip(loss(kernel), loss('jax')):
        assert float(jnp.max(jnp.abs(expected))) > 0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('neurons', ['soft', 'reset-first', 'reset-first-soft'])
def test_the_fused_kernel_with_other_resets_and_surrogate_gradients(neurons):
    lif = NEURONS._replace(soft='soft' in neurons, reset_first='first' in neurons)
    xs, w, b, v0 = _case(batch=16, cout=16, spikes=False)
    surrogate = bm.surrogate.Arctan()

    def run(kernels, spike_fn=None):
        return conv_lif(xs, w, b, v0, lif, kernels=kernels, spike_fn=spike_fn)

    kernel = 'mosaic' if mosaic_gpu.available() else 'triton'
    spikes, v = run(kernel)
    expected_spikes, expected_v = _unfused(kernel, xs, w, b, v0, lif)
    assert 0.05 < float(jnp.mean(expected_spikes)) < 0.95
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(v, expected_v, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_unfused(kernel, xs, w, b, v0, lif, spike_fn=surrogate)[0],
                                  expected_spikes)

    def grads(kernels):
        def f(w, b, v0):
            spikes, v = conv_lif(xs, w, b, v0, lif, kernels=kernels,
                                 spike_fn=surrogate)
            return jnp.sum(jnp.sin(v)) + jnp.sum(spikes * jnp.arange(spikes.shape[-1]))
        return jax.grad(f, argnums=(0, 1, 2))(w, b, v0)

    for got, expected in zip(grads(kernel), grads('jax')):
        assert float(jnp.max(jnp.abs(expected))) > 0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_unfused_layer_is_conv1d_into_brainpy_lif():
    batch, length, cin, cout, steps, dt = 4, 12, 3, 8, 6, 0.5
    xs, w, b, _ = _case(batch=batch, length=length, cin=cin, cout=cout, steps=steps)
    mode = bm.BatchingMode(batch)
    conv = Conv1d(cin, cout, 3, w_initializer=np.asarray(w), b_initializer=np.asarray(b),
                  mode=mode)
    lif = bp.dyn.Lif((length, cout), keep_size=True, mode=mode, tau=2., V_th=1., V_reset=-0.2,
                     V_rest=0.1, R=1.5, V_initializer=bp.init.Constant(0.1))
    spikes = []
    for t in range(steps):
        bp.share.save(t=t * dt, dt=dt)
        spikes.append(lif(conv(xs[t])))
    neurons = LIF.make(tau=2., dt=dt, v_th=1., v_reset=-0.2, v_rest=0.1, r=1.5)
    expected, v = conv_lif(xs, w, b, jnp.full((batch, length, cout), 0.1), neurons,
                           kernels='jax')
    assert 0 < float(jnp.mean(expected)) < 1
    np.testing.assert_array_equal(jnp.stack(spikes).astype(expected.dtype), expected)
    np.testing.assert_allclose(lif.V.value, v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('per_step, mosaic', [(False, False), (True, False), (False, True)],
                         ids=['sequence', 'per-step-scan', 'sequence-mosaic-by-default'])
def test_cuda_runs_one_fused_kernel(per_step, mosaic, monkeypatch):
    """Exported for the GPU a machine without one lowers for (an H100): one Triton kernel, in
    the program or in its scan's body; with the Mosaic GPU kernel switched on for Hopper
    GPUs (JAX 0.12), one Mosaic GPU kernel, and the Triton kernel in the branch that runs
    where the operands are not all finite: no unfused convolution or scan."""
    if jax.__version_info__ < (0, 5):
        pytest.skip("JAX 0.4 keeps every platform's branch in a one-platform export")
    if mosaic and not mosaic_gpu.available():
        pytest.skip("Mosaic GPU needs JAX 0.12")
    monkeypatch.setattr(registry, 'SETS', tuple(
        dataclasses.replace(k, by_default=mosaic) if (k.operation, k.name) == ('spiking', 'mosaic')
        else k for k in registry.SETS))
    xs, w, b, v0 = _case()

    def sequence(xs, w, v0):
        return conv_lif(xs, w, b, v0, NEURONS)

    def steps(xs, w, v0):
        def step(v, x):
            s, v = conv_lif(x[None], w, b, v, NEURONS)
            return v, s[0]
        return jax.lax.scan(step, v0, xs)

    exported = export.export(jax.jit(steps if per_step else sequence), platforms=['cuda'],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)]
                             )(xs, w, v0)
    text = exported.mlir_module()
    kernels = sorted(re.findall(r'custom_call @"?([\w.$]+)', text))
    assert kernels == (sorted([MOSAIC, TRITON]) if mosaic else [TRITON])
    # The 'jax' kernels' convolution (im2col: a matmul on CUDA) and scan: nowhere.
    assert 'stablehlo.dot_general' not in text
    assert ('while' in text) == per_step


def test_gpus_before_hopper_run_the_triton_kernel():
    if not hasattr(jax.sharding, 'AbstractDevice'):
        pytest.skip("JAX before 0.12 lowers for a GPU it is not told of as for an H100")
    xs, w, b, v0 = (jax.device_put(a) for a in _case())
    with _abstract_gpu('NVIDIA A100-SXM4-80GB'):
        exported = export.export(
            jax.jit(lambda xs, w, v0: conv_lif(xs, w, b, v0, NEURONS)), platforms=['cuda'],
            disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)])(xs, w, v0)
    assert re.findall(r'custom_call @"?([\w.$]+)', exported.mlir_module()) == [TRITON]


def test_bad_arguments_are_named():
    xs, w, b, v0 = _case()
    with pytest.raises(ValueError, match=r"`kernels` \(='pallas'\) must be one of 'c\+\+', "
                                         r"'mosaic', 'triton', 'jax', or None"):
        conv_lif(xs, w, b, v0, NEURONS, kernels='pallas')
    with pytest.raises(ValueError, match=r'`v0` must be a floating array of shape \(16, 10, 32\)'):
        conv_lif(xs, w, b, v0[:, :5], NEURONS)
    with pytest.raises(ValueError, match='`tau`'):
        LIF.make(tau=0., dt=1.)


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('where', ['kernel', 'input'])
def test_operands_that_are_not_all_finite_give_the_ieee_results(where, kernel):
    """``inf`` in a kernel tap or an input: the results of the ``'jax'`` kernels
    (``+-inf`` currents, NaN where ``0 * inf``), not the NaN of ``inf``'s ``bfloat16``
    parts in the Mosaic GPU kernel."""
    xs, w, b, v0 = _case(batch=16, length=6, cin=2, cout=16, steps=3, spikes=False)
    if where == 'kernel':
        w = w.at[1, 0, 3].set(jnp.inf)
    else:
        xs = xs.at[0, 2, 3, 1].set(-jnp.inf)
    spikes, v = conv_lif(xs, w, b, v0, NEURONS, kernels=_kernel(kernel))
    expected_spikes, expected_v = _unfused(kernel, xs, w, b, v0, NEURONS)
    assert 0 < int(jnp.sum(jnp.isnan(expected_v))) < expected_v.size / 2
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(v, expected_v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernels', CHOICES)
@pytest.mark.parametrize('empty', ['steps', 'batch'])
def test_empty_sequences_and_batches_give_empty_outputs(empty, kernels):
    """``T = 0``: no spikes, ``v0`` unchanged; ``B = 0``: empty spikes and state; on every
    choice of kernels, as no kernel is chosen for an empty problem."""
    xs, w, b, v0 = _case(batch=16, length=6, cin=2, cout=16, steps=3)
    xs, v0 = (xs[:0], v0) if empty == 'steps' else (xs[:, :0], v0[:0])
    assert choose_kernel(kernels, xs, w, v0) is None
    spikes, v = conv_lif(xs, w, b, v0, NEURONS, kernels=kernels)
    assert spikes.shape == xs.shape[:2] + (6, 16) and spikes.dtype == v0.dtype
    np.testing.assert_array_equal(v, v0)


#: The choices that the C++ CPU kernel computes here, with its backward kernel (a
#: ``custom_vjp``: no forward mode); the default takes it with JAX 0.5 or later.
REVERSE_ONLY = (None, 'c++') if registry.CXX_SPIKING_BY_DEFAULT else ('c++',)


@functools.cache
def _transforms(kernels, forward=True):
    """Every transform of the fused step with surrogate spikes, in one compiled program
    (without forward mode unless ``forward``)."""
    primals = _case(batch=16, length=4, cin=2, cout=16, k=2, steps=2, spikes=False)
    tangents = tuple(jnp.asarray(np.random.default_rng(3).standard_normal(a.shape), a.dtype)
                     for a in primals)
    surrogate = bm.surrogate.Arctan()
    weights = jnp.arange(16.) / 16

    def run(xs, w, b, v0):
        return conv_lif(xs, w, b, v0, NEURONS, kernels=kernels,
                        spike_fn=surrogate)

    @jax.jit
    def transforms(primals, tangents):
        xs, w, b, v0 = primals

        def loss(xs, w, b, v0):
            spikes, v = run(xs, w, b, v0)
            return jnp.sum(spikes * weights) + jnp.sum(jnp.sin(v))

        outputs, vjp = jax.vjp(run, *primals)
        results = dict(
            vjp=vjp(tuple(jnp.cos(o) for o in outputs)),
            grad=jax.grad(loss, argnums=(0, 1, 2, 3))(*primals),
            grad_of_grad=jax.grad(lambda b: jnp.sum(jax.grad(loss, 2)(xs, w, b, v0) ** 2))(b),
            hessian=jax.hessian(lambda b: loss(xs, w, b, v0))(b),
            checkpoint=jax.grad(jax.checkpoint(loss), argnums=1)(*primals),
            vmap=jax.vmap(jax.grad(loss, 1), (None, 0, None, None))(xs, jnp.stack([w, -w]), b,
                                                                   v0))
        if forward:
            _, linear = jax.linearize(run, *primals)
            results.update(jvp=jax.jvp(run, primals, tangents),
                           jacfwd=jax.jacfwd(lambda b: run(xs, w, b, v0)[1])(b),
                           linearize=linear(*tangents))
        return results

    return transforms(primals, tangents), run, primals, tangents


@pytest.mark.parametrize('kernels', [k for k in CHOICES if k != 'jax'])
def test_every_transform_through_every_choice_of_kernels_is_the_jax_ones(kernels):
    """Reverse mode (``vjp``, ``grad``, ``grad`` of ``grad``, ``jax.hessian``, under
    ``jax.checkpoint`` and ``vmap``) and forward mode (``jvp``, ``jacfwd``, ``linearize``) with
    surrogate spikes: the ``'jax'`` kernels' values and derivatives, with the kernels
    (interpreted here) as well. The C++ kernel's backward is a ``custom_vjp``: forward mode
    raises JAX's ``TypeError`` there."""
    forward = kernels not in REVERSE_ONLY
    (got, run, primals, tangents) = _transforms(_kernel(kernels), forward)
    expected = _transforms('jax')[0]
    assert float(jnp.max(jnp.abs(expected['grad_of_grad']))) > 0
    for name in got:
        for a, e in zip(jax.tree.leaves(got[name]), jax.tree.leaves(expected[name])):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=name)
    if not forward:
        with pytest.raises(TypeError, match='forward-mode'):
            jax.jvp(run, primals, tangents)

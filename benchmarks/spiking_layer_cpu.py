"""The spiking layer (Conv1d -> LIF over a sequence) on the CPU: the package against the same
computation written by hand in plain JAX, side by side in one run.

Prints markdown tables; every time is the median of interleaved calls after calls that
compile, and every ratio compares numbers from this run only.

1. ``Conv1d(16 -> 64, K=5, SAME) -> LIF`` over T = 50 steps (B = 32, L = 140), on ``bool``
   spikes (p = 0.05) and on floats, the forward pass and a training loss's gradient with
   respect to the kernel and the bias:

   - ``hand JAX``: what a user writes: the convolution folded over time
     (``lax.conv_general_dilated`` on ``[T * B, L, C]``, channels last), then the neurons in a
     ``lax.scan`` (exponential Euler, a sigmoid surrogate spike (alpha = 4) as a
     ``jax.custom_jvp``, hard reset); the spikes enter the convolution as ``float32``;
   - ``package, layer``: ``LayerByLayer(Conv1d, bp.dyn.Lif).multi_step(xs)`` in
     ``TrainingMode``, with the same constants and weights (the fused spiking step);
     ``package, unfused``: the same with ``fuse=False`` (the two layers one after the other);
   - ``conv_lif 'NAME'``: :func:`bp_conv_ext.ops.fused.conv_lif` called directly (with
     ``backend='auto'``, as the layer calls it), once per kernel set of the spiking step
     (``kernels=NAME``) that runs on this machine; the default (``None``), the GPU kernels (on
     a CPU only in Pallas's interpreters) and any that fails are listed as skipped, and where
     the C++ kernel does not take a problem the note says why.

   Ratios: ``hand JAX / this`` (above 1: faster than the hand-written JAX) and
   ``unfused / this``; the forward rows give the spikes that differ from the hand-written
   ones (a membrane within rounding of the threshold may spike differently), the gradient
   rows the largest difference from its gradient relative to the largest entry. A second
   table sets ``hand JAX / package, layer`` beside what the package aims at (``TARGETS``).
2. The memory XLA plans for the compiled training step (``memory_analysis``: temporary,
   argument and output bytes) at T = 100, same shape: fused, unfused and hand JAX, and the
   fused step's temporary memory over the unfused one's (aim: ``MEMORY_TARGET``).
3. The first layer of a 1-D network: float input with one channel, B = 32, L = 700,
   ``1 -> 64``, K = 7, at T = 1 and T = 50: the package's ``Conv1d -> Lif`` forward against the
   fastest dense convolution alone (``lax.conv_general_dilated``; ``torch.conv1d`` when
   PyTorch is installed, with ``OMP_WAIT_POLICY=PASSIVE`` unless set, one thread per core).

    python benchmarks/spiking_layer_cpu.py [--quick] [--repeats N] [--out DIR]

``--quick`` runs tiny shapes once (a check that it runs); ``--out DIR`` also writes the
tables to ``DIR/spiking_layer_cpu.md`` and the numbers to ``DIR/spiking_layer_cpu.json``.
"""
import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # before PyTorch starts its threads

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import bp_conv_ext
from bp_conv_ext.event import registry
from bp_conv_ext.ops import fused as _fused

try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
except ImportError:      # the torch column is skipped with a note
    torch = None

#: (T, B, L, C_in, C_out, K) of the spiking layer (section 1), and its T for memory (2).
LAYER, MEMORY_T = (50, 32, 140, 16, 64, 5), 100
#: (B, L, C_in, C_out, K) and the sequence lengths of the first layer (section 3).
FIRST, FIRST_T = (32, 700, 1, 64, 7), (1, 50)
QUICK_LAYER, QUICK_MEMORY_T = (4, 2, 16, 16, 64, 5), 6
QUICK_FIRST, QUICK_FIRST_T = (2, 32, 1, 64, 7), (1, 4)
DENSITY = 0.05
#: The neurons: V_rest = V_reset = 0, R = 1, BrainPy's step dt (0.1 ms).
V_TH, TAU, ALPHA = 0.1, 1.0, 4.0
#: What the package aims at: hand JAX / package (time), and fused / unfused (temporary memory).
TARGETS = {('spikes p=0.05', 'forward'): 4., ('spikes p=0.05', 'gradient'): 2.5,
           ('floats', 'forward'): 1.5, ('floats', 'gradient'): 1.5}
MEMORY_TARGET = 0.5


# -- the hand-written version -------------------------------------------------------------

@jax.custom_jvp
def spike_fn(x):
    """Heaviside step forward (1 where ``x >= 0``); the derivative of ``sigmoid(ALPHA x)``
    backward."""
    return (x >= 0).astype(x.dtype)


@spike_fn.defjvp
def _spike_fn_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    sg = jax.nn.sigmoid(ALPHA * x)
    return spike_fn(x), dx * ALPHA * sg * (1. - sg)


def hand_layer(xs, w, b):
    """Spikes ``[T, B, L, C_out]`` of the layer, written in plain JAX."""
    steps, batch, length, channels = xs.shape
    x = xs.astype(jnp.float32).reshape(steps * batch, length, channels)
    current = lax.conv_general_dilated(x, w, (1,), 'SAME',
                                       dimension_numbers=('NWC', 'WIO', 'NWC')) + b
    current = current.reshape(steps, batch, length, w.shape[2])
    decay = math.exp(-float(bm.get_dt()) / TAU)
    v_rest = v_reset = 0.

    def step(v, i):
        v = v + (1. - decay) * (v_rest - v + 1. * i)
        spike = spike_fn(v - V_TH)
        v = v + (v_reset - v) * spike
        return v, spike

    _, spikes = lax.scan(step, jnp.zeros(current.shape[1:], jnp.float32), current)
    return spikes


# -- the package --------------------------------------------------------------------------

def package_layer(length, cin, cout, taps, w=None, b=None):
    """``LayerByLayer(Conv1d, bp.dyn.Lif)`` in TrainingMode (with kernel ``w`` and bias ``b``
    where given) and its convolution."""
    mode = bm.TrainingMode()
    conv = bp_conv_ext.Conv1d(cin, cout, taps, padding='SAME', mode=mode)
    lif = bp.dyn.Lif((length, cout), keep_size=True, V_th=V_TH, tau=TAU, V_rest=0.,
                     V_reset=0., spk_fun=bm.surrogate.Sigmoid(alpha=ALPHA), spk_reset='hard',
                     mode=mode)
    net = bp_conv_ext.LayerByLayer(conv, lif, mode=mode)
    if w is not None:
        conv.w.value = jnp.asarray(w, conv.w.value.dtype)
    if b is not None:
        conv.b.value = jnp.reshape(b, conv.b.value.shape).astype(conv.b.value.dtype)
    return net, conv


def lif_constants():
    return _fused.LIF.make(tau=TAU, dt=float(bm.get_dt()), v_rest=0., v_th=V_TH, v_reset=0.,
                           r=1.)


def conv_lif_names():
    """``[(name, None)]`` for each of the spiking step's kernel sets that runs here, and
    ``[(name, why)]`` for those skipped: the default choice (``None``: it takes one of the
    others) and, off a GPU, the GPU kernels, which a CPU runs only in Pallas's
    interpreters."""
    on_gpu = jax.default_backend() == 'gpu'
    names = [(None, "the default: takes one of the others")]
    for kernels in registry.sets('spiking'):
        if not on_gpu and kernels.platforms == ('cuda',):
            names.append((kernels.name, "a GPU kernel, on a CPU only in Pallas's interpreter"))
        else:
            names.append((kernels.name, None))
    return names


def runs(call):
    """None where ``call()`` runs, else its error in one line."""
    try:
        jax.block_until_ready(call())
    except Exception as error:
        return f"fails: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return None


# -- timing -------------------------------------------------------------------------------

def interleaved(calls, repeats):
    """``{name: (median, best)}`` seconds of ``calls`` (no-argument functions), each called
    twice to compile (a layer's first call gives its state the batch's shape, and the second
    compiles for that), then ``repeats`` rounds of one call each."""
    for call in calls.values():
        jax.block_until_ready(call())
        jax.block_until_ready(call())
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


class Report:
    """Prints lines as they come and keeps them (and the numbers) for ``--out``."""

    def __init__(self):
        self.lines, self.numbers = [], {}

    def __call__(self, line=''):
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header, rows, text=(0, 1)):
        """A markdown table, the columns ``text`` aligned left and the others right."""
        self('| ' + ' | '.join(header) + ' |')
        self('| ' + ' | '.join('---' if i in text else '---:' for i in range(len(header)))
             + ' |')
        for row in rows:
            self('| ' + ' | '.join(row) + ' |')
        self()

    def write(self, folder):
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / 'spiking_layer_cpu.md').write_text('\n'.join(self.lines) + '\n')
        (folder / 'spiking_layer_cpu.json').write_text(json.dumps(self.numbers, indent=1) + '\n')


def ms(seconds):
    return f"{seconds * 1e3:.2f}" if seconds < 0.1 else f"{seconds * 1e3:.1f}"


def ratio(a, b):
    return f"{a / b:.2f}" if b > 0 and math.isfinite(a / b) else '—'


def cpu_header():
    model, flags = None, set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and model is None:
                    model = value.strip()
                elif key.strip() == 'flags' and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    avx512 = sorted(f for f in flags if f.startswith('avx512'))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
    return dict(model=model or platform.processor() or platform.machine(), avx512=avx512,
                cores=os.cpu_count(), usable_cores=usable)


# -- 1. the spiking layer -----------------------------------------------------------------

def layer_inputs(shape, rng):
    steps, batch, length, cin, _cout, _ = shape
    return {'spikes p=0.05': jnp.asarray(rng.random((steps, batch, length, cin)) < DENSITY),
            'floats': jnp.asarray(rng.random((steps, batch, length, cin)), jnp.float32)}


def layer_weights(shape, rng):
    *_, cin, cout, taps = shape
    w = jnp.asarray(rng.normal(0., 1. / math.sqrt(taps * cin), (taps, cin, cout)), jnp.float32)
    b = jnp.asarray(rng.normal(0., 0.1, (cout,)), jnp.float32)
    return w, b


def section_layer(report, shape, repeats, rng):
    steps, batch, length, cin, cout, taps = shape
    report(f"## The spiking layer: T={steps} B={batch} L={length} {cin}->{cout} K={taps}, "
           f"SAME, LIF (V_th={V_TH}, tau={TAU}, hard reset, sigmoid surrogate alpha={ALPHA:g})")
    report()
    w, b = layer_weights(shape, rng)
    net, conv = package_layer(length, cin, cout, taps, w, b)
    lif = lif_constants()
    surrogate = bm.surrogate.Sigmoid(alpha=ALPHA)
    v0 = jnp.zeros((batch, length, cout), jnp.float32)
    grad_vars = [conv.w, conv.b]
    weights = jnp.asarray(rng.normal(size=(steps, batch, length, cout)), jnp.float32)
    inputs = layer_inputs(shape, rng)
    names = conv_lif_names()
    running = [name for name, why in names if why is None]
    skipped = [f"`{name!r}` ({why})" for name, why in names if why is not None]
    notes = []

    def hand_loss(w, b, xs, weights):
        return jnp.sum(hand_layer(xs, w, b) * weights)

    def conv_lif_spikes(xs, w, b, name):
        return _fused.conv_lif(xs, w, b, v0, lif, kernels=name, spike_fn=surrogate,
                               backend='auto')[0]

    def conv_lif_loss(w, b, xs, weights, name):
        return jnp.sum(conv_lif_spikes(xs, w, b, name) * weights)

    forward = {'hand JAX': jax.jit(hand_layer)}
    gradient = {'hand JAX': jax.jit(jax.grad(hand_loss, argnums=(0, 1)))}
    for label, fuse in (('package, layer', True), ('package, unfused', False)):
        forward[label] = bm.jit(lambda xs, fuse=fuse: net.multi_step(xs, fuse=fuse))
        gradient[label] = bm.jit(bm.grad(
            lambda xs, weights, fuse=fuse: jnp.sum(net.multi_step(xs, fuse=fuse) * weights),
            grad_vars=grad_vars))
    for name in list(running):
        label = f"conv_lif {name!r}"
        forward[label] = jax.jit(lambda xs, w, b, name=name: conv_lif_spikes(xs, w, b, name))
        gradient[label] = jax.jit(jax.grad(
            lambda w, b, xs, weights, name=name: conv_lif_loss(w, b, xs, weights, name),
            argnums=(0, 1)))
        why = next(filter(None, (runs(lambda: forward[label](xs, w, b))
                                 or runs(lambda: gradient[label](w, b, xs, weights))
                                 for xs in inputs.values())), None)
        if why is not None:
            running.remove(name)
            skipped.append(f"`{name!r}` ({why})")
            del forward[label], gradient[label]
    unsupported = getattr(_fused, 'cxx_unsupported', None)
    if 'c++' in running and unsupported is not None:
        for kind, xs in inputs.items():
            why = unsupported(xs, w, b, v0, lif, surrogate)
            if why is not None:
                notes.append(f"`'c++'` on {kind} runs the `'jax'` kernels: {why}")

    def forward_call(label, xs):
        if label == 'hand JAX' or label.startswith('conv_lif'):
            return lambda: forward[label](xs, w, b)
        return lambda: forward[label](xs)

    def gradient_call(label, xs):
        if label == 'hand JAX' or label.startswith('conv_lif'):
            return lambda: gradient[label](w, b, xs, weights)
        return lambda: gradient[label](xs, weights)

    rows, numbers, targets = [], {}, []
    for kind, xs in inputs.items():
        for pass_name, make in (('forward', forward_call), ('gradient', gradient_call)):
            calls = {label: make(label, xs) for label in forward}
            times = interleaved(calls, repeats)
            reference = calls['hand JAX']()
            checks = {}
            for label, call in calls.items():
                out = call()
                if pass_name == 'forward':
                    differ = int(jnp.sum(jnp.asarray(out, jnp.float32).reshape(reference.shape)
                                         != reference))
                    checks[label] = (f"{int(jnp.sum(reference))} spikes" if label == 'hand JAX'
                                     else f"{differ} differ")
                else:
                    errors = [float(jnp.max(jnp.abs(jnp.reshape(g, r.shape) - r))
                                    / max(float(jnp.max(jnp.abs(r))), 1e-30))
                              for g, r in zip(out, reference)]
                    checks[label] = ('' if label == 'hand JAX' else
                                     f"w {errors[0]:.1e}, b {errors[1]:.1e}")
            hand = times['hand JAX'][0]
            unfused = times['package, unfused'][0]
            targets.append([kind, pass_name, ratio(hand, times['package, layer'][0]),
                            f"{TARGETS[(kind, pass_name)]:g}"])
            for label, (median, best) in times.items():
                rows.append([kind, pass_name, label, ms(median), ratio(hand, median),
                             ratio(unfused, median), checks[label]])
                numbers[f"{kind} | {pass_name} | {label}"] = dict(
                    median_ms=median * 1e3, best_ms=best * 1e3, check=checks[label])
    report.table(['input', 'pass', 'contender', 'ms', 'hand JAX / this', 'unfused / this',
                  'against hand JAX'], rows, text=(0, 1, 2, 6))
    report.table(['input', 'pass', 'hand JAX / package, layer', 'target (at least)'], targets)
    report(f"`conv_lif` kernel sets run: {', '.join(repr(n) for n in running) or 'none'}; "
           f"skipped: {', '.join(skipped) or 'none'}. Gradient: of sum(spikes * a fixed "
           "random tensor) with respect to the kernel and the bias; its check is the largest "
           "difference relative to the largest entry of the hand-written gradient.")
    report()
    for note in notes:
        report(note)
        report()
    report.numbers['layer'] = numbers
    report.numbers['conv_lif'] = dict(run=running, skipped=skipped, notes=notes)


# -- 2. memory ----------------------------------------------------------------------------

def section_memory(report, shape, rng):
    steps, batch, length, cin, cout, taps = shape
    report(f"## Memory of the compiled training step: T={steps} B={batch} L={length} "
           f"{cin}->{cout} K={taps}")
    report()
    w, b = layer_weights(shape, rng)
    net, conv = package_layer(length, cin, cout, taps, w, b)
    weights = jnp.asarray(rng.normal(size=(steps, batch, length, cout)), jnp.float32)
    grad_vars = [conv.w, conv.b]

    def hand_loss(w, b, xs, weights):
        return jnp.sum(hand_layer(xs, w, b) * weights)

    rows, numbers, summary = [], {}, []
    for kind, xs in layer_inputs(shape, rng).items():
        stats = {}
        for label, fuse in (('package, fused', True), ('package, unfused', False)):
            step = bm.jit(bm.grad(
                lambda xs, weights, fuse=fuse: jnp.sum(net.multi_step(xs, fuse=fuse) * weights),
                grad_vars=grad_vars))
            stats[label] = memory(lambda: step.lower(xs, weights))
        step = jax.jit(jax.grad(hand_loss, argnums=(0, 1)))
        stats['hand JAX'] = memory(lambda: step.lower(w, b, xs, weights))
        fused_temp, unfused_temp = stats['package, fused'][0], stats['package, unfused'][0]
        for label, (temp, argument, output) in stats.items():
            rows.append([kind, label, mib(temp), mib(argument), mib(output),
                         ratio(temp, unfused_temp)])
            numbers[f"{kind} | {label}"] = dict(temp_bytes=temp, argument_bytes=argument,
                                                output_bytes=output)
        numbers[f"{kind} | fused / unfused temp"] = fused_temp / unfused_temp
        summary.append(f"{kind} {ratio(fused_temp, unfused_temp)}")
    report.table(['input', 'program', 'temp (MiB)', 'arguments (MiB)', 'outputs (MiB)',
                  'temp / unfused temp'], rows)
    report(f"Temporary memory, fused / unfused: {', '.join(summary)} (target: at most "
           f"{MEMORY_TARGET:g}). The package's programs take the layers' variables (kernel, "
           "bias, the neurons' state) as arguments and return the new state; temp is what XLA "
           "plans beyond them.")
    report()
    report.numbers['memory'] = numbers


def memory(lower):
    try:
        stats = lower().compile().memory_analysis()
        return (stats.temp_size_in_bytes, stats.argument_size_in_bytes,
                stats.output_size_in_bytes)
    except Exception:            # not every backend reports it
        return (float('nan'),) * 3


def mib(size):
    if not math.isfinite(size):
        return '—'
    return f"{size / 2 ** 20:.1f}" if size >= 10 * 2 ** 20 else f"{size / 2 ** 20:.2f}"


# -- 3. the first layer -------------------------------------------------------------------

def section_first(report, shape, lengths, repeats, rng):
    batch, length, cin, cout, taps = shape
    report(f"## The first layer: floats, B={batch} L={length} {cin}->{cout} K={taps}, "
           "the layer's forward against the convolution alone")
    report()
    net, conv = package_layer(length, cin, cout, taps)
    w = jnp.asarray(conv.w.value)
    rows, numbers = [], {}
    for steps in lengths:
        xs = jnp.asarray(rng.random((steps, batch, length, cin)), jnp.float32)
        layer = bm.jit(lambda xs: net.multi_step(xs))
        lax_conv = jax.jit(lambda x, w: lax.conv_general_dilated(
            x, w, (1,), 'SAME', dimension_numbers=('NWC', 'WIO', 'NWC')))
        folded = xs.reshape(steps * batch, length, cin)
        calls = {'package Conv1d -> Lif': lambda: layer(xs),
                 'lax.conv_general_dilated': lambda: lax_conv(folded, w)}
        if torch is not None:
            # PyTorch's layout (channels first), as writable copies.
            x_t = torch.from_numpy(np.array(np.asarray(folded).transpose(0, 2, 1), order='C'))
            w_t = torch.from_numpy(np.array(np.asarray(w).transpose(2, 1, 0), order='C'))

            def torch_conv():
                with torch.no_grad():
                    return torch.nn.functional.conv1d(x_t, w_t, padding='same')
            calls['torch.conv1d'] = torch_conv
        times = interleaved(calls, repeats)
        convs = {k: v for k, v in times.items() if k != 'package Conv1d -> Lif'}
        best_conv = min(convs, key=lambda k: convs[k][0])
        layer_time = times['package Conv1d -> Lif'][0]
        for label, (median, best) in times.items():
            rows.append([f"T={steps}", label, ms(median),
                         ratio(median, convs[best_conv][0])])
            numbers[f"T={steps} | {label}"] = dict(median_ms=median * 1e3, best_ms=best * 1e3)
        numbers[f"T={steps} | layer / fastest convolution"] = layer_time / convs[best_conv][0]
    report.table(['sequence', 'program', 'ms', 'this / fastest convolution'], rows)
    if torch is None:
        report("PyTorch is not installed: no torch.conv1d column.")
        report()
    report.numbers['first_layer'] = numbers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny shapes, one repeat (a check)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='interleaved calls of each (default 7, 1 with --quick)')
    parser.add_argument('--out', default=None, help='also write the tables and numbers here')
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 7)
    layer, memory_t = (QUICK_LAYER, QUICK_MEMORY_T) if args.quick else (LAYER, MEMORY_T)
    first, first_t = (QUICK_FIRST, QUICK_FIRST_T) if args.quick else (FIRST, FIRST_T)
    rng = np.random.default_rng(0)

    report = Report()
    cpu = cpu_header()
    threads = (f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
               if torch is not None else "no torch")
    report(f"jax {jax.__version__}, brainpy {bp.__version__}, {threads}, "
           f"{jax.default_backend()}; CPU: {cpu['model']}, {cpu['cores']} cores "
           f"({cpu['usable_cores']} usable), AVX-512: "
           f"{'yes (' + ' '.join(cpu['avx512']) + ')' if cpu['avx512'] else 'no'}; "
           f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; median of {repeats} "
           f"interleaved calls{' (--quick)' if args.quick else ''}")
    report()
    report.numbers['header'] = dict(jax=jax.__version__, brainpy=bp.__version__,
                                    torch=torch.__version__ if torch else None,
                                    backend=jax.default_backend(), repeats=repeats,
                                    quick=args.quick, **cpu)
    section_layer(report, layer, repeats, rng)
    section_memory(report, (memory_t,) + layer[1:], rng)
    section_first(report, first, first_t, repeats, rng)
    if args.out:
        report.write(args.out)


if __name__ == '__main__':
    main()

"""Conv1d against raw XLA, brainpy.dnn.Conv1d and PyTorch, measured side by side in one run.

Prints markdown tables: forward, forward+backward, per-step BPTT through a ``lax.scan``,
and the event-driven path at several spike densities, with achieved GFLOP/s and the
machine's matmul peak measured at the start. Every number is the median of interleaved
repeats after a warm-up call that compiles; ratios compare numbers from this run only.

    python benchmarks/conv_suite.py [--quick] [--gpu]

PyTorch runs with 2 threads; set ``OMP_WAIT_POLICY`` before starting (``make bench``
sets ``passive``), and ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` so that memory
one contender frees is not handed back to the system only for the next one to fault it in
again (``make bench`` sets both); the header prints them. ``--figure PATH`` draws the
event-driven speed-ups against spike density (forward and kernel gradient);
``--figure PATH --figure-from SAVED`` draws it again, without measuring, from the tables of a
saved run (its printed output, as `make bench` writes it to benchmarks/results/cpu-<date>/suite.md).

``--gpu`` runs the same tables on a CUDA GPU (JAX's default device; PyTorch on ``cuda``,
synchronised after every call): the batched shapes at batch 32 and 256, the event-driven
path (the Pallas kernels) at p in {0.01, 0.02, 0.05, 0.1, 0.2} with its crossover per shape,
and per-step BPTT on spikes, event-driven against cuDNN.
"""
import argparse
import os
import statistics
import time
from collections.abc import Callable

import brainpy as bp
import brainpy.math as bm
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import bp_conv_ext

try:
    import torch
    torch.set_num_threads(2)
except ImportError:      # the torch columns are skipped with a note
    torch = None

# (name, batch or None for non-batching, length, in, out, kernel)
SHAPES = [
    ('B32 L700 1->64 K7', 32, 700, 1, 64, 7),
    ('B32 L700 16->64 K5', 32, 700, 16, 64, 5),
    ('B32 L700 64->128 K3', 32, 700, 64, 128, 3),
    ('B32 L140 64->128 K3', 32, 140, 64, 128, 3),
    ('B32 L140 64->64 K7', 32, 140, 64, 64, 7),
    ('B32 L140 32->64 K5', 32, 140, 32, 64, 5),
    ('L1000 16->16 K3 (non-batching)', None, 1000, 16, 16, 3),
]
DENSITIES = (0.01, 0.03, 0.05, 0.1, 0.2, 0.5)
#: On a GPU (``--gpu``): the batched shapes at batch 32 and 256, and these densities.
GPU_SHAPES = [(f'B{b} ' + shape[0].split(' ', 1)[1], b) + shape[2:]
              for b in (32, 256) for shape in SHAPES if shape[1] is not None]
GPU_DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2)
#: Where PyTorch runs: 'cpu' (2 threads) or 'cuda' (``--gpu``).
TORCH_DEVICE = 'cpu'


def use_torch() -> bool:
    return torch is not None and TORCH_DEVICE is not None


def torch_tensor(array):
    return torch.from_numpy(array).to(TORCH_DEVICE)


def torch_timed(fn):
    """``fn`` that returns only when PyTorch's work is done (CUDA runs asynchronously)."""
    if TORCH_DEVICE == 'cpu':
        return fn

    def synced():
        out = fn()
        torch.cuda.synchronize()
        return out
    return synced


def measure(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call; contenders interleaved, in a new random order each round."""
    for call in calls.values():
        call()
        call()
    times = {name: [] for name in calls}
    order = list(calls)
    shuffle = np.random.default_rng(1).permutation
    for _ in range(repeats):
        for name in (order[i] for i in shuffle(len(order))):
            call = calls[name]
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def block(tree):
    return jax.block_until_ready(tree)


def matmul_peak(repeats: int) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    seconds = measure({'mm': lambda: block(f(a))}, repeats)['mm']
    return 2 * 2048 ** 3 / seconds / 1e9


def lax_conv(x, w, k):
    return lax.conv_general_dilated(x, w, (1,), [((k - 1) // 2, k // 2)],
                                    dimension_numbers=('NWC', 'WIO', 'NWC'))


def layer_fn(layer):
    """``f(w, x)``: the layer's output with kernel ``w`` (so jax.grad can reach it)."""
    def f(w, x):
        if isinstance(layer.w, bm.Variable):
            layer.w.value = w
            return layer(x)
        # brainpy.dnn.Conv1d outside TrainingMode keeps a plain array, which BrainPy 2.6
        # refuses to overwrite with a traced value: swap the attribute for the call.
        kept, layer.w = layer.w, bm.Array(w)
        try:
            return layer(x)
        finally:
            layer.w = kept
    return f


def dense_calls(batch, length, cin, cout, k, rng):
    """Forward and forward+backward callables for every contender on one shape."""
    unbatched = batch is None
    n = 1 if unbatched else batch
    x_np = rng.standard_normal((n, length, cin)).astype(np.float32)
    w_np = (rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)).astype(np.float32)
    g_np = rng.standard_normal((n, length, cout)).astype(np.float32)
    x, w, g = jnp.asarray(x_np), jnp.asarray(w_np), jnp.asarray(g_np)
    mode = bm.NonBatchingMode() if unbatched else bm.BatchingMode()
    xin = x[0] if unbatched else x
    gin = g[0] if unbatched else g
    ours = layer_fn(bp_conv_ext.Conv1d(cin, cout, k, w_initializer=w_np, b_initializer=None,
                                       mode=mode))
    theirs = layer_fn(bp.dnn.Conv1d(cin, cout, k, w_initializer=w_np, b_initializer=None,
                                    mode=mode))
    raw = (lambda w, x: lax_conv(x[None], w, k)[0]) if unbatched else \
        (lambda w, x: lax_conv(x, w, k))
    fwd, fb = {}, {}
    for name, f in (('lax', raw), ('brainpy', theirs), ('ours', ours)):
        fj = jax.jit(f)
        gj = jax.jit(jax.grad(lambda w, x, f=f: jnp.sum(f(w, x) * gin), argnums=(0, 1)))
        fwd[name] = lambda fj=fj: block(fj(w, xin))
        fb[name] = lambda gj=gj: block(gj(w, xin))
    if use_torch():
        xt = torch_tensor(x_np).permute(0, 2, 1).contiguous()
        wt = torch_tensor(w_np).permute(2, 1, 0).contiguous()
        gt = torch_tensor(g_np).permute(0, 2, 1).contiguous()
        pads = ((k - 1) // 2, k // 2)

        def torch_fwd():
            with torch.no_grad():
                return torch.nn.functional.conv1d(torch.nn.functional.pad(xt, pads), wt)

        xg, wg = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)

        def torch_fb():
            xg.grad = wg.grad = None
            y = torch.nn.functional.conv1d(torch.nn.functional.pad(xg, pads), wg)
            y.backward(gt)
            return xg.grad, wg.grad

        fwd['torch'], fb['torch'] = torch_timed(torch_fwd), torch_timed(torch_fb)
    return fwd, fb, 2 * n * length * cin * cout * k


def fmt_ratio(a, b):
    return f"{a / b:.2f}"


def dense_tables(repeats, rng, shapes):
    rows_fwd, rows_fb = [], []
    for name, batch, length, cin, cout, k in shapes:
        fwd, fb, flops = dense_calls(batch, length, cin, cout, k, rng)
        for rows, calls, mult in ((rows_fwd, fwd, 1), (rows_fb, fb, 3)):
            t = measure(calls, repeats)
            torch_cols = (f"{t['torch'] * 1e3:.3f} | {fmt_ratio(t['ours'], t['torch'])}"
                          if 'torch' in t else "n/a | n/a")
            rows.append(f"| {name} | {t['ours'] * 1e3:.3f} | {t['lax'] * 1e3:.3f} | "
                        f"{t['brainpy'] * 1e3:.3f} | {torch_cols} | "
                        f"{fmt_ratio(t['ours'], t['lax'])} | {fmt_ratio(t['brainpy'], t['lax'])} | "
                        f"{mult * flops / t['ours'] / 1e9:.0f} |")
    header = ("| shape | ours (ms) | lax (ms) | brainpy (ms) | torch (ms) | ours/torch | "
              "ours/lax | brainpy/lax | ours GFLOP/s |\n| --- | ---: | ---: | ---: | ---: | ---: | "
              "---: | ---: | ---: |")
    return header, rows_fwd, rows_fb


def bptt_table(repeats, rng):
    """grad through a lax.scan over T=100 of conv + a leaky integrator, vs the folded conv."""
    steps, batch, length, cin, cout, k = 100, 32, 140, 16, 64, 5
    xs = jnp.asarray(rng.random((steps, batch, length, cin)) < 0.1, jnp.float32)
    w_np = (rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)).astype(np.float32)
    w = jnp.asarray(w_np)
    mode = bm.TrainingMode()

    # The sequence is an argument, as in training (a constant would be folded into the
    # program when it is compiled).
    def per_step(layer):
        def loss(w, xs):
            layer.w.value = w        # the scan body reads it, as in bp.BPTT

            def step(v, x):
                v = 0.9 * v + layer(x)
                return v, jnp.tanh(v)
            _, ys = lax.scan(step, jnp.zeros((batch, length, cout)), xs)
            return jnp.mean(ys ** 2)
        return jax.jit(jax.grad(loss))

    ours_layer = bp_conv_ext.Conv1d(cin, cout, k, w_initializer=w_np, b_initializer=None, mode=mode)

    def folded_loss(w, xs):
        ours_layer.w.value = w
        y = ours_layer.multi_step(xs)

        def step(v, y_t):
            v = 0.9 * v + y_t
            return v, jnp.tanh(v)
        _, ys = lax.scan(step, jnp.zeros((batch, length, cout)), y)
        return jnp.mean(ys ** 2)

    fns = {
        'brainpy.dnn.Conv1d, per step': per_step(
            bp.dnn.Conv1d(cin, cout, k, w_initializer=w_np, b_initializer=None, mode=mode)),
        'bp_conv_ext.Conv1d, per step': per_step(ours_layer),
        'bp_conv_ext.Conv1d, folded (multi_step)': jax.jit(jax.grad(folded_loss)),
    }
    t = measure({name: (lambda f=f: block(f(w, xs))) for name, f in fns.items()}, repeats)
    base = t['brainpy.dnn.Conv1d, per step']
    folded = t['bp_conv_ext.Conv1d, folded (multi_step)']
    lines = ["| T=100 B32 L140 16->64 K5 | time (s) | speed-up vs brainpy | vs folded |",
             "| --- | ---: | ---: | ---: |"]
    for name, seconds in t.items():
        lines.append(f"| {name} | {seconds:.3f} | {base / seconds:.1f}x | "
                     f"{seconds / folded:.2f}x |")
    return lines


def spiking_bptt_table(repeats, rng, densities):
    """grad through a lax.scan over T=100 of conv + a leaky integrator on bool spikes, per
    step: the event-driven path against the dense one (cuDNN on a GPU) and raw lax."""
    steps, batch, length, cin, cout, k = 100, 32, 140, 16, 64, 5
    w_np = (rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)).astype(np.float32)
    w = jnp.asarray(w_np)

    def per_step(conv, xs):
        def loss(w):
            def step(v, x):
                v = 0.9 * v + conv(w, x)
                return v, jnp.tanh(v)
            _, ys = lax.scan(step, jnp.zeros((batch, length, cout)), xs)
            return jnp.mean(ys ** 2)
        return jax.jit(jax.grad(loss))

    lines = ["| T=100 B32 L140 16->64 K5, bool spikes | p | event (s) | dense (s) | lax (s) | "
             "lax/event |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for p in densities:
        xs = jnp.asarray(rng.random((steps, batch, length, cin)) < p)
        fns = {backend: per_step(lambda w, x, b=backend: bp_conv_ext.conv1d(x, w, backend=b,
                                                                          padding='SAME'), xs)
               for backend in ('event', 'dense')}
        fns['lax'] = per_step(lambda w, x: lax_conv(x.astype(w.dtype), w, k), xs)
        t = measure({name: (lambda f=f: block(f(w))) for name, f in fns.items()}, repeats)
        lines.append(f"| | {p} | {t['event']:.4f} | {t['dense']:.4f} | {t['lax']:.4f} | "
                     f"{t['lax'] / t['event']:.2f}x |")
    return lines


def fallback_runtime():
    """The CPU kernel set measured beside the default one: the numba kernels (``'numba'``)
    where the C++ kernels are the default and the numba ones available, else ``None``."""
    cpu = [k.name for k in bp_conv_ext.event_kernels('cpu')]
    return 'numba' if cpu[:2] == ['c++', 'numba'] and TORCH_DEVICE == 'cpu' else None


def event_jit(fn, runtime):
    """``jax.jit(fn)``, traced (at its first call) with the kernel set ``runtime``."""
    jitted = jax.jit(fn)
    if runtime is None:
        return jitted

    def call(*args):
        with bp_conv_ext.use_event_kernels(runtime):
            return jitted(*args)
    return call


def event_table(repeats, rng, densities, shapes):
    """Forward on bool spikes: event-driven (the platform's kernels, and on the CPU their
    numba fallback) and auto vs the best dense (min of lax, torch, both given the spikes as
    float32 already) and vs this project's dense path on the same bool input; then, per shape,
    the densities where the event path wins. Also returns the ratios, for the figure."""
    fallback = fallback_runtime()
    lines = ["| shape | p | event (ms) | " + ("numba (ms) | " if fallback else "") +
             "auto (ms) | ours dense (ms) | best dense (ms) | best dense/event | " +
             ("best dense/numba | " if fallback else "") + "auto/ours dense |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" +
             (" ---: | ---: |" if fallback else "")]
    crossovers, ratios = [], {}
    for name, batch, length, cin, cout, k in shapes:
        n = 1 if batch is None else batch
        w_np = (rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)).astype(np.float32)
        w = jnp.asarray(w_np)
        mode = bm.NonBatchingMode() if batch is None else bm.BatchingMode()
        layers = {}
        for backend in ('event', 'auto', 'dense'):
            layer = bp_conv_ext.Conv1d(cin, cout, k, w_initializer=w_np, b_initializer=None,
                                       mode=mode)
            layer.backend = backend
            layers[backend] = jax.jit(layer_fn(layer))
            if backend == 'event' and fallback:
                layers['numba'] = event_jit(layer_fn(layer), fallback)
        raw = jax.jit(lambda w, x: lax_conv(x, w, k))
        wins = []
        for p in densities:
            spikes = rng.random((n, length, cin)) < p
            xb = jnp.asarray(spikes[0] if batch is None else spikes)
            xf = jnp.asarray(spikes, jnp.float32)
            calls = {backend: (lambda f=f: block(f(w, xb))) for backend, f in layers.items()}
            calls['lax'] = lambda: block(raw(w, xf))
            if use_torch():
                xt = torch_tensor(spikes.astype(np.float32)).permute(0, 2, 1).contiguous()
                wt = torch_tensor(w_np).permute(2, 1, 0).contiguous()
                pads = ((k - 1) // 2, k // 2)

                def torch_fwd():
                    with torch.no_grad():
                        return torch.nn.functional.conv1d(torch.nn.functional.pad(xt, pads), wt)
                calls['torch'] = torch_timed(torch_fwd)
            t = measure(calls, repeats)
            best = min(t['lax'], t.get('torch', float('inf')))
            wins.append((p, best / t['event']))
            ratios.setdefault(name, []).append(
                (p, best / t['event'], best / t['numba'] if fallback else None))
            lines.append(f"| {name} | {p} | {t['event'] * 1e3:.3f} | " +
                         (f"{t['numba'] * 1e3:.3f} | " if fallback else "") +
                         f"{t['auto'] * 1e3:.3f} | {t['dense'] * 1e3:.3f} | {best * 1e3:.3f} | "
                         f"{best / t['event']:.1f}x | " +
                         (f"{best / t['numba']:.1f}x | " if fallback else "") +
                         f"{t['auto'] / t['dense']:.2f} |")
        faster = [p for p, ratio in wins if ratio > 1]
        crossovers.append(f"- {name}: event faster than the best dense at p <= "
                          f"{max(faster)}" if faster else f"- {name}: never faster")
    return lines + ["", "Crossover (the densest p at which the event path still wins):"] + \
        crossovers, ratios


def kernel_grad_table(repeats, rng, densities, shapes):
    """The kernel gradient on bool spikes (reverse mode with respect to the kernel only):
    event-driven (and its numba fallback) against the best dense kernel gradient (min of
    lax's, this project's dense path's and torch's ``conv1d_weight``). Also returns the
    ratios, for the figure."""
    fallback = fallback_runtime()
    lines = ["| shape | p | event (ms) | " + ("numba (ms) | " if fallback else "") +
             "best dense (ms) | best dense/event |" + (" best dense/numba |" if fallback else ""),
             "| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if fallback else "")]
    ratios = {}
    for name, batch, length, cin, cout, k in shapes:
        if batch is None:
            continue
        w = jnp.asarray((rng.standard_normal((k, cin, cout)) / np.sqrt(k * cin)), jnp.float32)
        dy = jnp.asarray(rng.standard_normal((batch, length, cout)), jnp.float32)

        def grad_of(conv):
            return lambda x, w: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]
        event = grad_of(lambda x, w: bp_conv_ext.conv1d(x, w, backend='event'))
        fns = {'event': jax.jit(event),
               'dense': jax.jit(grad_of(lambda x, w: bp_conv_ext.conv1d(x, w, backend='dense'))),
               'lax': jax.jit(grad_of(lambda x, w: lax_conv(x, w, k)))}
        if fallback:
            fns['numba'] = event_jit(event, fallback)
        for p in densities:
            spikes = rng.random((batch, length, cin)) < p
            xb, xf = jnp.asarray(spikes), jnp.asarray(spikes, jnp.float32)
            calls = {key: (lambda f=f, x=(xf if key == 'lax' else xb): block(f(x, w)))
                     for key, f in fns.items()}
            if use_torch():
                xt = torch_tensor(spikes.astype(np.float32)).permute(0, 2, 1).contiguous()
                dyt = torch_tensor(np.asarray(dy)).permute(0, 2, 1).contiguous()
                size = (cout, cin, k)
                calls['torch'] = torch_timed(lambda: torch.nn.grad.conv1d_weight(
                    xt, size, dyt, padding=(k - 1) // 2))
            t = measure(calls, repeats)
            best = min(t['lax'], t['dense'], t.get('torch', float('inf')))
            ratios.setdefault(name, []).append(
                (p, best / t['event'], best / t['numba'] if fallback else None))
            lines.append(f"| {name} | {p} | {t['event'] * 1e3:.3f} | " +
                         (f"{t['numba'] * 1e3:.3f} | " if fallback else "") +
                         f"{best * 1e3:.3f} | {best / t['event']:.1f}x |" +
                         (f" {best / t['numba']:.1f}x |" if fallback else ""))
    return lines, ratios


def density_figure(path, forward, kernel_grad, kernel_name):
    """Best dense / event-driven time against spike density, one line per batched shape:
    the forward and the kernel gradient, the default kernels solid, their fallback dashed.

    Drawn at the width the docs show it (about 9 inches at 110 dpi fills their body), with
    plain numbers on the log axes and the legend below the panels, clear of the lines."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    plt.rcParams.update({'font.size': 12, 'axes.titlesize': 13, 'axes.labelsize': 12,
                         'xtick.labelsize': 11, 'ytick.labelsize': 11, 'legend.fontsize': 11})
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.8), sharey=True)
    plain = FuncFormatter(lambda value, _: f'{value:g}')
    for ax, ratios, title in ((axes[0], forward, 'forward'), (axes[1], kernel_grad,
                                                              'kernel gradient')):
        for i, (name, points) in enumerate(ratios.items()):
            if name.startswith('L'):       # the non-batching shape
                continue
            color = f'C{i}'
            ps = [point[0] for point in points]
            ax.plot(ps, [point[1] for point in points], 'o-', color=color, label=name)
            if points[0][2] is not None:
                ax.plot(ps, [point[2] for point in points], 'x--', color=color, alpha=0.6)
        ax.axhline(1, color='black', linewidth=0.8)
        ax.set_xscale('log')
        ax.set_yscale('log')
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel('spike density p')
        ax.set_title(title)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].set_ylabel('best dense / event-driven time')
    handles, labels = axes[0].get_legend_handles_labels()
    kernels = {'c++': 'C++'}.get(kernel_name, kernel_name)
    figure.legend(handles, labels, loc='lower center', ncol=3, frameon=False,
                  title=f'{kernels} kernels solid, numba dashed; above 1 the event path is '
                        f'faster')
    figure.tight_layout(rect=(0, 0.18, 1, 1))
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


def saved_ratios(path):
    """The figure's data from a saved run: the event-driven tables that this script printed
    (``## Event-driven forward ...`` and ``## Event-driven kernel gradient ...``, at any
    heading level, as `make bench` writes them to benchmarks/results/), as ratios of their times
    in ms (best dense / event and best dense / numba), per shape and density."""
    with open(path) as f:
        lines = f.read().splitlines()

    def table(heading):
        start = next(i for i, line in enumerate(lines)
                     if line.startswith('#') and line.lstrip('#').strip().startswith(heading))
        rows = []
        for line in lines[start + 1:]:
            if line.startswith('|'):
                rows.append([cell.strip() for cell in line.strip('|').split('|')])
            elif rows:             # the line after the table
                break
        header, body = rows[0], rows[2:]
        column = {name: header.index(name) for name in header}
        ratios = {}
        for row in body:
            best, event = float(row[column['best dense (ms)']]), float(row[column['event (ms)']])
            numba = (best / float(row[column['numba (ms)']])) if 'numba (ms)' in column else None
            ratios.setdefault(row[column['shape']], []).append(
                (float(row[column['p']]), best / event, numba))
        return ratios

    return table('Event-driven forward on bool spikes'), \
        table('Event-driven kernel gradient on bool spikes')


def main():
    global TORCH_DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats (under 2 minutes)')
    parser.add_argument('--gpu', action='store_true',
                        help="the GPU tables, on JAX's default device (a CUDA GPU)")
    parser.add_argument('--figure', metavar='PATH',
                        help='draw the event-driven speed-ups against spike density there')
    parser.add_argument('--figure-from', metavar='SAVED',
                        help="with --figure: draw it from the event-driven tables of a saved "
                             "run's output (e.g. docs/performance.md) instead of measuring")
    args = parser.parse_args()
    if args.figure_from:
        if not args.figure:
            parser.error('--figure-from needs --figure PATH')
        density_figure(args.figure, *saved_ratios(args.figure_from),
                       bp_conv_ext.event_kernel('gpu' if args.gpu else 'cpu'))
        return
    if args.gpu and jax.default_backend() != 'gpu':
        parser.error(f"--gpu needs JAX on a GPU; its default backend is {jax.default_backend()!r}")
    shapes, densities = (GPU_SHAPES, GPU_DENSITIES) if args.gpu else (SHAPES, DENSITIES)
    platform = 'cuda' if args.gpu else 'cpu'
    if args.gpu and torch is not None:
        TORCH_DEVICE = 'cuda' if torch.cuda.is_available() else None
    repeats = 7 if args.quick else 41
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    print(f"# bp_conv_ext {bp_conv_ext.__version__} benchmark{' (quick)' if args.quick else ''}"
          f" on {jax.devices()[0].device_kind}")
    torch_note = ('not installed: torch columns skipped' if torch is None else
                  f"{torch.__version__} on {TORCH_DEVICE}" if args.gpu else
                  f"{torch.__version__} (2 threads)")
    print(f"jax {jax.__version__}, brainpy {bp.__version__}, torch {torch_note}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}, "
          f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset')}, "
          f"{os.cpu_count()} CPUs, "
          f"event-driven kernels: {bp_conv_ext.event_kernel(platform)}")
    print(f"matmul peak (2048x2048 float32): {matmul_peak(repeats):.0f} GFLOP/s\n")

    header, rows_fwd, rows_fb = dense_tables(repeats, rng, shapes)
    print("## Forward (SAME, float32, median ms)\n")
    print(header)
    print('\n'.join(rows_fwd))
    print("\n## Forward + backward (gradients for input and kernel)\n")
    print(header)
    print('\n'.join(rows_fb))
    print("\n## Per-step BPTT: grad through lax.scan\n")
    print('\n'.join(bptt_table(max(3, repeats // 3), rng)))
    if args.gpu:
        print("\n## Per-step BPTT on spikes: event-driven against the dense path\n")
        print('\n'.join(spiking_bptt_table(max(3, repeats // 3), rng, (0.01, 0.02, 0.05))))
    threshold = bp_conv_ext.event_density_threshold(platform)
    threshold = f"auto: event at density <= {threshold}" if threshold else "auto: dense here"
    print(f"\n## Event-driven forward on bool spikes ({threshold})\n")
    lines, forward = event_table(repeats, rng, densities, shapes)
    print('\n'.join(lines))
    print("\n## Event-driven kernel gradient on bool spikes\n")
    lines, kernel_grad = kernel_grad_table(repeats, rng, densities, shapes)
    print('\n'.join(lines))
    if args.figure:
        density_figure(args.figure, forward, kernel_grad, bp_conv_ext.event_kernel(platform))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == '__main__':
    main()

"""Learnable delays: training step against DCLS (PyTorch), and the per-step simulation cost.

1. One training step (forward, backward, Adam) of a delay network, B256, T100,
   140 -> 256 -> 256 -> 20, max delay 25: three delay layers with LIF neurons between them,
   the readout the time-mean of the last layer's currents. Ours: ``bp_conv_ext.DelayConv1d``
   run folded (``multi_step``: one causal convolution over time per layer). DCLS:
   ``DCLS.construct.modules.Dcls1d`` (Gaussian interpolation, the same kernel) with the same
   LIF written as a loop over time in PyTorch, as the reference implementation runs it. Both
   on this CPU, interleaved.
2. Simulation one step at a time (``update`` in ``bm.for_loop``, as ``bp.DSRunner`` runs it),
   140 -> 256, max delay 25, on bool spikes at 5 % density: the event-driven path against the
   dense one, per step.

    python benchmarks/delays.py [--repeats N] [--quick]
"""
import argparse
import itertools
import os
import time

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np

import bp_conv_ext

bm.set_dt(1.0)


def _ours_training(batch, steps, sizes, max_delay):
    mode = bm.TrainingMode()
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(bp_conv_ext.DelayConv1d(n_in, n_out, max_delay, mode=mode,
                                              sigma=max_delay / 2))
        if i < len(sizes) - 2:
            layers.append(bp.dyn.Lif(n_out, tau=2., V_th=1., mode=mode,
                                     spk_fun=bm.surrogate.arctan))
    net = bp_conv_ext.LayerByLayer(*layers, mode=mode)
    opt = bp.optim.Adam(lr=1e-3, train_vars=net.train_vars().unique())

    def loss(x, y):
        return bp.losses.cross_entropy_loss(net.multi_step(x).mean(0), y)

    grad = bm.grad(loss, grad_vars=net.train_vars().unique(), return_value=True)

    @bm.jit
    def step(x, y):
        grads, value = grad(x, y)
        opt.update(grads)
        return value

    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.random((steps, batch, sizes[0])) < 0.05).astype(np.float32))
    y = jnp.asarray(rng.integers(0, sizes[-1], batch))

    def run():
        net.reset(batch)
        return float(step(x, y))
    return run


def _dcls_training(batch, steps, sizes, max_delay):
    import torch
    from DCLS.construct.modules import Dcls1d

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v >= 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            v, = ctx.saved_tensors
            return grad / (1 + (np.pi * v) ** 2)         # arctan surrogate, as above

    def lif(currents, tau=2.0):                           # [B, C, T] -> spikes [B, C, T]
        decay = float(np.exp(-1.0 / tau))
        v = torch.zeros_like(currents[..., 0])
        out = []
        for t in range(currents.shape[-1]):
            v = decay * v + (1 - decay) * currents[..., t]
            s = Spike.apply(v - 1.0)
            v = v - s * 1.0
            out.append(s)
        return torch.stack(out, -1)

    layers = torch.nn.ModuleList(
        Dcls1d(n_in, n_out, kernel_count=1, dilated_kernel_size=max_delay + 1, padding=0,
               bias=False, version='gauss') for n_in, n_out in itertools.pairwise(sizes))
    for layer in layers:
        layer.SIG.data.fill_(max_delay / 2 - 0.27)
        layer.SIG.requires_grad_(False)
    opt = torch.optim.Adam([p for p in layers.parameters() if p.requires_grad], lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.random((batch, sizes[0], steps)) < 0.05).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, sizes[-1], batch))

    def forward(h):
        for i, layer in enumerate(layers):
            h = layer(torch.nn.functional.pad(h, (max_delay, 0)))     # causal over time
            if i < len(layers) - 1:
                h = lif(h)
        return h.mean(-1)

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return run


def _simulation(batch, steps, n_in, n_out, max_delay, density, backend):
    layer = bp_conv_ext.DelayConv1d(n_in, n_out, max_delay, mode=bm.BatchingMode(),
                                    interpolation='round')
    layer.backend = backend
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.random((steps, batch, n_in)) < density)

    @bm.jit
    def run_all(xs):
        return bm.for_loop(lambda x: layer(x).sum(), xs)

    def run():
        layer.reset_state(batch)
        return run_all(xs).block_until_ready()
    return run


def interleaved(fns, repeats):
    for fn in fns.values():
        fn()                                                  # compile / warm up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name in np.random.permutation(list(fns)):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--quick', action='store_true', help='small sizes (a check)')
    args = parser.parse_args()
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    batch, steps, sizes, max_delay = (16, 20, (14, 32, 32, 4), 5) if args.quick else \
        (256, 100, (140, 256, 256, 20), 25)

    print(f"## Training step: B{batch} T{steps} {' -> '.join(map(str, sizes))}, "
          f"max delay {max_delay} (median of {args.repeats}, interleaved)\n")
    fns = {'bp_conv_ext.DelayConv1d (folded)': _ours_training(batch, steps, sizes, max_delay)}
    try:
        fns['DCLS Dcls1d (PyTorch)'] = _dcls_training(batch, steps, sizes, max_delay)
    except ImportError:
        print("(DCLS is not installed: `pip install dcls`)\n")
    times = interleaved(fns, args.repeats)
    ours = times['bp_conv_ext.DelayConv1d (folded)']
    print("| implementation | step (s) | vs ours |\n| --- | ---: | ---: |")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {t / ours:.2f}x |")

    sim_batch, sim_steps = (4, 50) if args.quick else (64, 200)
    print(f"\n## Simulation step by step: B{sim_batch}, {sizes[0]} -> {sizes[1]}, max delay "
          f"{max_delay}, bool spikes at 5 %, {sim_steps} steps per run (median of "
          f"{args.repeats})\n")
    backends = ('dense', 'event')
    fns = {backend: _simulation(sim_batch, sim_steps, sizes[0], sizes[1], max_delay, 0.05,
                                backend) for backend in backends}
    times = interleaved(fns, args.repeats)
    print("| backend | per step (ms) | dense / this |\n| --- | ---: | ---: |")
    for name, t in times.items():
        print(f"| {name} | {1e3 * t / sim_steps:.3f} | {times['dense'] / t:.2f}x |")


if __name__ == '__main__':
    main()

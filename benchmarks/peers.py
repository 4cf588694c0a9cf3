"""Training steps of one spiking CNN in SpikingJelly 2.0 (PyTorch, CPU) and here, side by side.

The network, the same in both libraries::

    Conv1d(C_in->C, K1) -> LIF -> AvgPool(2) -> Conv1d(C->C, K2) -> LIF -> AvgPool(2)
    -> Flatten -> Dense(->classes)

with the loss the cross-entropy of the time-averaged output. One training step is the
forward pass over T steps, the backward pass and an SGD update. Here it is built as in
``examples/gunpoint.py`` (``bp_conv_ext.Conv1d``, ``bp.dyn.Lif`` with a sigmoid surrogate and
a hard reset, ``bp.dnn`` pooling and dense layers in a ``bp_conv_ext.LayerByLayer``) and
trained by ``LayerByLayerTrainer`` (``multi_step`` over the whole sequence, each Conv1d -> Lif
pair fused; one compiled call per step). In SpikingJelly it is ``activation_based``'s
``layer.Conv1d``, ``neuron.LIFNode``, ``layer.AvgPool1d``, ``layer.Flatten`` and
``layer.Linear`` in multi-step mode (``[T, B, C, L]``); its LIF runs on the CPU as its
PyTorch implementation (2.0 chooses the implementation by device: there is no ``backend``
argument to give).

The two neurons take the same step. BrainPy's exponential Euler step is
``v + (1 - exp(-dt / tau)) * (V_rest - v + R * I)``; SpikingJelly's, with ``decay_input``,
``v + (x - (v - v_reset)) / tau``; with ``V_rest = v_reset = 0`` and ``R = 1`` they agree for
``1 / tau_sj = 1 - exp(-dt / tau_bp)``. Both spike where ``v >= 1``, reset to 0 with the
reset's gradient kept, and take the derivative of ``sigmoid(4 x)`` as the spike's. Before any
timing, SpikingJelly's network is given this one's initial weights (channels-last kernels
``[K, C_in, C_out]`` and a flatten of ``[L, C]`` become ``[C_out, C_in, K]`` and ``[C, L]``)
and both compute the loss, the spike count of each LIF layer and the gradients on the same
batch: printed, they agree to float32 rounding (a spike may flip where a membrane lies within
a rounding of the threshold), and the run stops where they do not. With ``dt = 0.1``,
``tau_bp = 0.2`` (``tau_sj = 2.54``) and initial kernels drawn wide enough, 5-20 % of the
neurons of both LIF layers spike from the start, so the check sees both layers' spikes.

Two workloads: GunPoint's (the example's batch of 10 series of 150 samples, 8 steps of a
constant input current, 1 -> 32 channels, 2 classes) and a large one (batch 128, 32 steps,
length 700, 16 -> 64 channels, 10 classes, input spikes with p = 0.05: bool here, float32 in
PyTorch, which has no bool convolution). Every number is the median of interleaved repeats in
a new random order each round, after warm-up calls that compile; PyTorch uses all the cores
this process may run on, as JAX does.

    .venv-2.8/bin/python benchmarks/peers.py [--quick] [--repeats N] [--out DIR]

``make bench-peers`` runs it on the BrainPy 2.8 stack (which has PyTorch and SpikingJelly) and
writes what it prints to ``$(BENCH_OUT)/peers.md``. ``--out DIR`` writes the numbers to
``DIR/peers.json``. ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` unless given: PyTorch's
spinning idle threads slow the JAX call after them. ``--quick`` runs tiny shapes once, to
check that everything runs.
"""
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')     # before PyTorch is imported

import argparse
import datetime
import json
import math
import sys
from importlib.metadata import version

import brainpy as bp
import brainpy.math as bm
import jax
import numpy as np
import torch
import torch.nn.functional as F
from conv_suite import measure
from spikingjelly.activation_based import functional, layer, neuron, surrogate

import bp_conv_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                'examples'))
import gunpoint

DT = 0.1
TAU_BP = 0.2
TAU_SJ = 1.0 / (1.0 - math.exp(-DT / TAU_BP))    # 2.541: the same decay per step
ALPHA = 4.0                                      # the sigmoid surrogate's sharpness
LR = 0.01

# name: T, B, L, C_in, C, K1, K2, classes, input ('current': a constant float current,
# 'spikes': bool spikes with p = 0.05), the current's gain and the standard deviations of the
# two initial kernels (both set the spike rates of the LIF layers: 5-20 % from the start)
WORKLOADS = {
    'GunPoint': dict(T=8, B=gunpoint.RECIPE['batch_size'], L=gunpoint.LENGTH, C_in=1, C=32,
                     K1=7, K2=5, classes=2, input='current', gain=2.0, kernel_std=(0.4, 0.3)),
    'large': dict(T=32, B=128, L=700, C_in=16, C=64, K1=5, K2=5, classes=10, input='spikes',
                  gain=1.0, kernel_std=(1.0, 0.3)),
}
QUICK = {
    'GunPoint': dict(WORKLOADS['GunPoint'], T=4, B=4, L=40, C=8),
    'large': dict(WORKLOADS['large'], T=4, B=8, L=64, C=16),
}


def shape_label(w) -> str:
    return (f"T={w['T']} B={w['B']} L={w['L']} {w['C_in']}->{w['C']} K={w['K1']},{w['K2']} "
            f"{w['classes']} classes, {'spikes p=0.05' if w['input'] == 'spikes' else 'current'}")


def data(w, seed=0):
    """``(xs, labels)``: channels-last inputs ``[T, B, L, C_in]`` and integer labels."""
    rng = np.random.default_rng(seed)
    T, B, L, C_in = w['T'], w['B'], w['L'], w['C_in']
    if w['input'] == 'spikes':
        xs = rng.random((T, B, L, C_in)) < 0.05
    else:     # a series per row and channel, the same at every step (as the example feeds)
        series = w['gain'] * rng.standard_normal((B, L, C_in)).astype(np.float32)
        xs = np.broadcast_to(series, (T, B, L, C_in)).copy()
    return xs, rng.integers(0, w['classes'], B).astype(np.int32)


def build_ours(w, seed=0):
    """The network here: a LayerByLayer in TrainingMode (its layers are its children)."""
    bm.random.seed(seed)
    mode = bm.TrainingMode()
    L, C = w['L'], w['C']
    lif = dict(keep_size=True, tau=TAU_BP, V_rest=0., V_reset=0., V_th=1., R=1.,
               spk_fun=bm.surrogate.Sigmoid(alpha=ALPHA), spk_reset='hard', mode=mode)
    kernels = [bp.init.Normal(scale=std) for std in w['kernel_std']]
    return bp_conv_ext.LayerByLayer(
        bp_conv_ext.Conv1d(w['C_in'], C, w['K1'], w_initializer=kernels[0], mode=mode),
        bp.dyn.Lif((L, C), **lif),
        bp.dnn.AvgPool1d(2, 2, channel_axis=-1, mode=mode),
        bp_conv_ext.Conv1d(C, C, w['K2'], w_initializer=kernels[1], mode=mode),
        bp.dyn.Lif((L // 2, C), **lif),
        bp.dnn.AvgPool1d(2, 2, channel_axis=-1, mode=mode),
        bp.dnn.Flatten(mode=mode),
        bp.dnn.Dense(L // 4 * C, w['classes'], mode=mode),
        mode=mode)


def build_peer(w):
    """SpikingJelly's network, multi-step, channels first (its weights are set later)."""
    L, C = w['L'], w['C']
    lif = dict(tau=TAU_SJ, decay_input=True, v_threshold=1., v_reset=0.,
               surrogate_function=surrogate.Sigmoid(alpha=ALPHA), detach_reset=False)
    net = torch.nn.Sequential(
        layer.Conv1d(w['C_in'], C, w['K1'], padding=w['K1'] // 2), neuron.LIFNode(**lif),
        layer.AvgPool1d(2, 2),
        layer.Conv1d(C, C, w['K2'], padding=w['K2'] // 2), neuron.LIFNode(**lif),
        layer.AvgPool1d(2, 2),
        layer.Flatten(), layer.Linear(L // 4 * C, w['classes']))
    functional.set_step_mode(net, 'm')
    return net


def pairs(ours, peer):
    """``(our layer, SpikingJelly's layer)`` for the layers with parameters."""
    layers = list(ours.children.values())
    return [(layers[i], peer[i]) for i in (0, 3, 7)]


def to_torch_layout(ours_layer, name: str, value: np.ndarray, w) -> np.ndarray:
    """Our parameter ``name`` (or its gradient) laid out as PyTorch's (a copy)."""
    value = np.array(value)
    if name in ('b', 'bias'):
        return value.reshape(-1)
    if isinstance(ours_layer, bp_conv_ext.Conv1d):               # [K, C_in, C_out]
        return np.ascontiguousarray(value.transpose(2, 1, 0))
    n_out = value.shape[1]                                      # Dense W: [L/4 * C, out]
    return np.ascontiguousarray(
        value.reshape(w['L'] // 4, w['C'], n_out).transpose(2, 1, 0).reshape(n_out, -1))


def parameters(ours_layer):
    """``{torch name: our Variable}`` of a Conv1d or a Dense."""
    if isinstance(ours_layer, bp_conv_ext.Conv1d):
        return {'weight': ours_layer.w, 'bias': ours_layer.b}
    return {'weight': ours_layer.W, 'bias': ours_layer.b}


def copy_weights(ours, peer, w):
    for mine, theirs in pairs(ours, peer):
        state = {name: torch.from_numpy(to_torch_layout(mine, name, var.value, w))
                 for name, var in parameters(mine).items()}
        theirs.load_state_dict(state, strict=True)


def peer_forward(peer, x):
    functional.reset_net(peer)
    return peer(x)


def peer_loss(peer, x, y):
    return F.cross_entropy(peer_forward(peer, x).mean(0), y)


def our_loss(predictions, targets):
    """Cross-entropy of the time-averaged output; predictions are ``[T, B, classes]``."""
    return bp.losses.cross_entropy_loss(predictions.mean(axis=0), targets)


def check(w, ours, trainer, peer, xs, ys, x_torch, y_torch) -> dict:
    """Loss, spike counts and gradients of both networks on one batch, from one set of
    weights (before any training step)."""
    layers = list(ours.children.values())
    ours_spikes = [float(np.asarray(bp_conv_ext.LayerByLayer(*layers[:n], mode=ours.mode)
                                    .multi_step(xs)).sum()) for n in (2, 5)]
    with torch.no_grad():
        peer_spikes = [float(peer_forward(peer[:n], x_torch).sum()) for n in (2, 5)]
    loss, grads = trainer.loss_and_grads(xs, ys)
    peer.zero_grad()
    peer_value = peer_loss(peer, x_torch, y_torch)
    peer_value.backward()
    key = {id(var): k for k, var in trainer.train_vars.items()}
    gradients = {}
    for index, (mine, theirs) in zip((0, 3, 7), pairs(ours, peer)):
        for name, var in parameters(mine).items():
            g = to_torch_layout(mine, name, grads[key[id(var)]], w)
            g_peer = getattr(theirs, name).grad.numpy()
            gradients[f'{index}.{name}'] = float(np.linalg.norm(g_peer - g) /
                                                 max(np.linalg.norm(g), 1e-30))
    peer.zero_grad()
    neurons = [w['B'] * w['T'] * w['L'] * w['C'], w['B'] * w['T'] * (w['L'] // 2) * w['C']]
    return {'loss': {'bp_conv_ext': float(loss), 'spikingjelly': peer_value.item()},
            'spikes': {'bp_conv_ext': ours_spikes, 'spikingjelly': peer_spikes,
                       'neuron_steps': neurons},
            'gradient_relative_difference': gradients}


# How far the two may differ before the networks are taken to compute different things: far
# above float32 rounding (and a few flipped spikes), far below a wrong time constant or layout.
TOLERANCE = dict(loss=1e-4, spikes=1e-3, gradients=1e-2)


def agree(name, checked):
    """Raise ``RuntimeError`` where the two networks do not compute the same thing."""
    loss = checked['loss']
    spikes = checked['spikes']
    differences = {
        'loss': abs(loss['spikingjelly'] - loss['bp_conv_ext']) / abs(loss['bp_conv_ext']),
        'spikes': max(abs(a - b) / max(b, 1.0) for a, b in zip(spikes['spikingjelly'],
                                                                spikes['bp_conv_ext'])),
        'gradients': max(checked['gradient_relative_difference'].values())}
    wrong = {k: v for k, v in differences.items() if not v <= TOLERANCE[k]}
    if wrong:
        raise RuntimeError(f"{name}: the two networks differ (relative differences {wrong}, "
                           f"tolerances {TOLERANCE}): {checked}")


def workload(name, w, repeats) -> dict:
    xs_np, ys_np = data(w)
    bm.clear_name_cache()
    ours = build_ours(w)
    fusion = ours.fusion()
    print(f"{name}: {shape_label(w)}; LayerByLayer.fusion(): {fusion}")
    if len(fusion) != 2 or any(reason is not None for *_, reason in fusion):
        raise RuntimeError(f"both Conv1d -> Lif pairs must be fused; fusion() gave {fusion}")
    trainer = bp_conv_ext.LayerByLayerTrainer(ours, our_loss, bp.optim.SGD(lr=LR),
                                              data_first_axis='T')
    peer = build_peer(w)
    copy_weights(ours, peer, w)
    peer_optimizer = torch.optim.SGD(peer.parameters(), lr=LR)

    xs, ys = bm.as_jax(xs_np), bm.as_jax(ys_np)
    x_torch = torch.from_numpy(np.ascontiguousarray(
        np.swapaxes(xs_np, -1, -2), dtype=np.float32))          # [T, B, C_in, L]
    y_torch = torch.from_numpy(ys_np.astype(np.int64))
    checked = check(w, ours, trainer, peer, xs, ys, x_torch, y_torch)
    agree(name, checked)

    def peer_step():
        peer_optimizer.zero_grad()
        loss = peer_loss(peer, x_torch, y_torch)
        loss.backward()
        peer_optimizer.step()
        return loss.item()

    medians = measure({'spikingjelly': peer_step,
                       'bp_conv_ext': lambda: trainer.step(xs, ys)}, repeats)
    return {'workload': name, 'shape': shape_label(w), 'sizes': w, 'fusion': fusion,
            'check': checked, 'ms': {k: v * 1e3 for k, v in medians.items()},
            'ratio': medians['spikingjelly'] / medians['bp_conv_ext']}


def print_checks(results):
    print("\nSame weights, same batch, before any step: the loss, the spikes of each LIF "
          "layer (count / neuron-steps) and the gradients' largest relative difference "
          "(||g_sj - g_here|| / ||g_here|| over the parameters).\n")
    print("| workload | loss, SpikingJelly | loss, bp_conv_ext | LIF 1 spikes SJ / here | "
          "LIF 2 spikes SJ / here | gradients, rel. diff. |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        c = r['check']
        s = c['spikes']
        spikes = [f"{int(s['spikingjelly'][i])} / {int(s['bp_conv_ext'][i])} "
                  f"(of {s['neuron_steps'][i]})" for i in range(2)]
        print(f"| {r['workload']} | {c['loss']['spikingjelly']:.6f} | "
              f"{c['loss']['bp_conv_ext']:.6f} | {spikes[0]} | {spikes[1]} | "
              f"{max(c['gradient_relative_difference'].values()):.1e} |")


def print_table(results, repeats):
    print(f"\nWall time per training step (forward over T steps, backward, SGD update), "
          f"median of {repeats} interleaved repeats:\n")
    print("| workload | shape | SpikingJelly (ms) | bp_conv_ext (ms) | "
          "SpikingJelly / bp_conv_ext |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['workload']} | {r['shape']} | {r['ms']['spikingjelly']:.1f} | "
              f"{r['ms']['bp_conv_ext']:.1f} | {r['ratio']:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='tiny shapes and 1 repeat, to check that everything runs')
    parser.add_argument('--repeats', type=int, default=None, help='timed repeats (default 7)')
    parser.add_argument('--out', default=None, help='folder for peers.json')
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 7)
    bm.set_dt(DT)
    machine = gunpoint.machine()
    torch.set_num_threads(machine['cores'])
    versions = {'jax': jax.__version__, 'brainpy': bp.__version__,
                'bp_conv_ext': bp_conv_ext.__version__, 'torch': torch.__version__,
                'spikingjelly': version('spikingjelly')}
    env = {key: os.environ.get(key, 'unset') for key in
           ('OMP_WAIT_POLICY', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_')}
    print(f"{', '.join(f'{k} {v}' for k, v in versions.items())}; {machine['cpu']}, "
          f"{machine['cores']} cores, {'AVX-512' if machine['avx512f'] else 'no AVX-512'}; "
          f"torch threads {torch.get_num_threads()}; "
          f"{', '.join(f'{k}={v}' for k, v in env.items())}")
    print(f"dt={DT}, tau={TAU_BP} here and tau={TAU_SJ:.4f} in SpikingJelly (the same decay "
          f"per step), SGD lr={LR}, float32\n")

    results = [workload(name, w, repeats)
               for name, w in (QUICK if args.quick else WORKLOADS).items()]
    print_checks(results)
    print_table(results, repeats)

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        report = {'versions': versions, 'machine': machine, 'environment': env,
                  'dt': DT, 'tau_bp': TAU_BP, 'tau_sj': TAU_SJ, 'optimizer': f'SGD lr={LR}',
                  'repeats': repeats, 'quick': args.quick, 'workloads': results,
                  'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}
        path = os.path.join(args.out, 'peers.json')
        with open(path, 'w') as f:
            json.dump(report, f, indent=1)
        print(f"\nnumbers: {path}")
    return results


if __name__ == '__main__':
    main()

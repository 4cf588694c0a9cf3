"""Train the GunPoint spiking 1-D CNN data-parallel on several devices, and check that the
loss equals one device's.

Each batch is split along its batch axis over a one-axis mesh (``'data'``); the weights stay
replicated, and every device convolves only its part of the batch, in every layer and time
step; the only cross-device traffic of a training step is the all-reduce of the gradients.
The same network, from the same initial weights and on the same batches, is then trained on
one device, and the two loss curves are printed side by side.

Without a machine with several devices, ``--devices N`` simulates N CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``). ``--processes 2`` runs the same
training in two processes on this machine that talk through ``jax.distributed`` (gloo
collectives on 127.0.0.1), each with ``N / 2`` devices and feeding its own half of every
batch, as several hosts would. ``--paper`` prints, instead of training, what data parallelism
costs per device at 1, 8 and 64 devices (work from XLA's cost analysis of one device's share of
a training step, bytes from the gradients' sizes) for this network and for a larger one.

    python examples/data_parallel.py [--devices 4] [--processes 1] [--epochs 20] [--quick]
    python examples/data_parallel.py --paper
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--devices', type=int, default=4, help='devices in all (default 4)')
    parser.add_argument('--processes', type=int, default=1,
                        help='processes sharing them, through jax.distributed (default 1)')
    parser.add_argument('--epochs', type=int, default=None, help='epochs (default 20; 2 quick)')
    parser.add_argument('--per-device-batch', type=int, default=2,
                        help='examples per device in each batch (default 2)')
    parser.add_argument('--backend', default='auto', help="the Conv1d backend (default 'auto')")
    parser.add_argument('--quick', action='store_true', help='2 epochs, 4 time steps')
    parser.add_argument('--paper', action='store_true',
                        help='print the per-device work and traffic at 1, 8 and 64 devices')
    parser.add_argument('--timeout', type=float, default=600,
                        help='seconds the worker processes may take (default 600)')
    parser.add_argument('--process-id', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.devices % args.processes:
        parser.error(f"--devices ({args.devices}) must be a multiple of --processes "
                     f"({args.processes})")
    args.epochs = args.epochs or (2 if args.quick else 20)
    args.steps = 4 if args.quick else 8
    return args


def _batches(args):
    """The training set in fixed, full batches of ``devices * per_device_batch`` series."""
    import numpy as np
    sys.path.insert(0, HERE)
    import gunpoint
    x, y = gunpoint.load_gunpoint(args.quick)['train']
    x = gunpoint.encode(x, args.steps)
    size = args.devices * args.per_device_batch
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x) - size + 1, size)], np


def train(args, mesh=None):
    """Train a freshly built network; returns the loss of every step.

    With ``mesh``, each batch is split over its ``'data'`` axis; in several processes each
    one holds only its own rows of every batch.
    """
    import brainpy as bp
    import brainpy.math as bm
    import gunpoint
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    import bp_conv_ext

    batches, _np = _batches(args)
    bm.clear_name_cache()
    bm.random.seed(0)
    net = gunpoint.build_network()
    for layer in net.nodes().subset(bp_conv_ext.Conv1d).values():
        layer.backend = args.backend
    trainer = bp_conv_ext.LayerByLayerTrainer(net, gunpoint.loss_fun, bp.optim.Adam(lr=5e-3))
    losses = []
    for _ in range(args.epochs):
        for x, y in batches:
            if mesh is not None:
                sharding = NamedSharding(mesh, PartitionSpec('data'))
                rows = len(x) // jax.process_count()
                mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
                x, y = (jax.make_array_from_process_local_data(sharding, a[mine])
                        for a in (x, y))
            losses.append(trainer.step(x, y))
    return losses


def _worker(args):
    """One of several processes: join the others, train on the global mesh, report."""
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'127.0.0.1:{args.port}', num_processes=args.processes,
                               process_id=args.process_id)
    import numpy as np
    from jax.sharding import Mesh
    mesh = Mesh(np.array(jax.devices()), ('data',))
    start = time.perf_counter()
    losses = train(args, mesh)
    print(json.dumps({'process': jax.process_index(), 'local_devices': jax.local_device_count(),
                      'devices': jax.device_count(), 'losses': losses,
                      'seconds': time.perf_counter() - start}), flush=True)
    jax.distributed.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_processes(args, argv):
    """Start the workers and wait for them, never longer than ``args.timeout``."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count='
                                     f'{args.devices // args.processes}')
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv,
                                 '--process-id', str(i), '--port', str(port)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
               for i in range(args.processes)]
    deadline = time.monotonic() + args.timeout
    reports = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if worker.returncode != 0:
                raise RuntimeError(f"worker exited with {worker.returncode}:\n{err[-3000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:       # on a timeout or a failure, stop the others too
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return reports


def scaling_on_paper():
    """Per-device work and all-reduced bytes of one training step at 1, 8 and 64 devices.

    Work: XLA's cost analysis of the compiled step of one device's share of the batch.
    Traffic: the gradients (one float32 per trainable value) are all-reduced once per step;
    a ring all-reduce over N devices sends and receives 2 (N - 1) / N times their size per
    device. Nothing else crosses devices.
    """
    import brainpy as bp
    import brainpy.math as bm
    import jax.numpy as jnp
    import numpy as np
    sys.path.insert(0, HERE)
    import gunpoint

    import bp_conv_ext

    rows = []
    for name, length, steps, batch in (('GunPoint: B8/device T8 L150', 150, 8, None),
                                       ('B256 T100 L700', 700, 100, 256)):
        bm.clear_name_cache()
        net = gunpoint.build_network(length)
        trainer = bp_conv_ext.LayerByLayerTrainer(net, gunpoint.loss_fun, bp.optim.SGD(lr=0.1))
        values = sum(int(np.prod(v.shape)) for v in trainer.train_vars.values())
        for devices in (1, 8, 64):
            local = 8 if batch is None else batch // devices      # weak / fixed global batch
            xs = jnp.zeros((local, steps, length, 1), jnp.float32)
            cost = trainer.lower(xs, jnp.zeros(local, jnp.int32)).compile().cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            ring = 2 * (devices - 1) / devices * 4 * values
            rows.append((name, devices, local * devices, local, cost['flops'] / 1e9,
                         4 * values / 1e3, ring / 1e3))
    print("| network | devices | global batch | per device | GFLOP per device and step "
          "| gradient bytes (kB) | all-reduce traffic per device (kB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| {} | {} | {} | {} | {:.2f} | {:.1f} | {:.1f} |".format(*row))
    return rows


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.paper:
        return scaling_on_paper()
    if args.process_id is not None:
        return _worker(args)
    if args.processes > 1:
        reports = _run_processes(args, argv)
        split_losses, seconds = reports[0]['losses'], reports[0]['seconds']
        layout = (f"{args.processes} processes x {reports[0]['local_devices']} devices "
                  f"(jax.distributed, gloo on 127.0.0.1)")
    else:
        os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                                   f' --xla_force_host_platform_device_count={args.devices}')
        import jax
        import numpy as np
        from jax.sharding import Mesh
        if jax.device_count() < args.devices:
            raise RuntimeError(f"JAX has {jax.device_count()} devices, not {args.devices}: "
                               f"run this script in a fresh process")
        start = time.perf_counter()
        split_losses = train(args, Mesh(np.array(jax.devices()[:args.devices]), ('data',)))
        seconds = time.perf_counter() - start
        layout = f"1 process x {args.devices} devices"
    import jax
    start = time.perf_counter()
    single = train(args)      # the same training on one device
    single_seconds = time.perf_counter() - start
    batch = args.devices * args.per_device_batch
    print(f"GunPoint, {len(single) // args.epochs} batches of {batch} series x "
          f"{args.epochs} epochs, {args.steps} time steps, backend={args.backend!r}")
    print(f"split: {layout}: {args.per_device_batch} series per device and batch")
    print(f"{'step':>5} {'loss, split':>12} {'loss, 1 device':>15}")
    for i, (a, b) in enumerate(zip(split_losses, single)):
        if i < 3 or i == len(single) - 1 or (i + 1) % max(1, len(single) // 8) == 0:
            print(f"{i + 1:5d} {a:12.6f} {b:15.6f}")
    relative = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(split_losses, single)]
    per_epoch = len(single) // args.epochs
    difference = max(relative[:2 * per_epoch])
    print(f"largest relative difference of the losses: {difference:.2e} over the first two "
          f"epochs, {max(relative):.2e} over all {len(single)} steps")
    print("(the devices sum the gradient in another order than one device does; in float32 "
          "the last bits differ, and over many steps a spike that fires in one run and not "
          "in the other lets the two runs drift apart)")
    print(f"wall time: split {seconds:.1f} s, one device {single_seconds:.1f} s "
          f"(simulated devices share this machine's cores)")
    return {'split_losses': split_losses, 'single_losses': single,
            'max_relative_difference': difference, 'layout': layout}


if __name__ == '__main__':
    main()

"""Long runs in a fresh process, reporting peak resident memory as JSON on stdout.

    python tests/helpers/long_runs.py baseline        # import and one small call
    python tests/helpers/long_runs.py long-sequence   # H = 10**6, NonBatchingMode
    python tests/helpers/long_runs.py long-simulation  # T = 10_000 DSRunner steps, memory_efficient
    python tests/helpers/long_runs.py save PATH | load PATH   # a checkpoint across processes
"""
import json
import resource
import sys

import brainpy as bp
import brainpy.math as bm
import jax.numpy as jnp
import numpy as np

import bp_conv_ext


def peak_rss_mib() -> float:
    """Peak resident memory of this process image (VmHWM; getrusage's maximum would also
    count the memory of the parent this process was forked from)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def baseline():
    conv = bp_conv_ext.Conv1d(4, 8, 5, mode=bm.NonBatchingMode())
    conv(jnp.ones((100, 4))).block_until_ready()
    return {}


def long_sequence():
    conv = bp_conv_ext.Conv1d(4, 8, 5, mode=bm.NonBatchingMode())
    x = jnp.asarray(np.random.default_rng(0).random((10 ** 6, 4)) < 0.1)
    y = conv(x)
    y.block_until_ready()
    return {'shape': list(y.shape), 'finite': bool(jnp.isfinite(y).all())}


class Relay(bp.DynSysGroup):
    def __init__(self):
        super().__init__()
        self.pre = bp.dyn.Lif((64, 2), keep_size=True, tau=1.0, V_th=1.0)
        self.conv = bp_conv_ext.Conv1d(2, 4, 5, w_initializer=bp.init.Uniform(0.0, 4.0))
        self.post = bp.dyn.Lif((64, 4), keep_size=True, tau=1.0, V_th=1.0)

    def update(self, current):
        self.post(self.conv(self.pre(current)))


def long_simulation():
    bm.random.seed(0)
    net = Relay()
    runner = bp.DSRunner(net, monitors={'spikes': net.post.spike}, memory_efficient=True,
                         progress_bar=False)
    runner.run(inputs=np.full((10_000, 64, 2), 2.5, dtype=np.float32))
    spikes = np.asarray(runner.mon['spikes'])
    return {'steps': int(spikes.shape[0]), 'rate': float(spikes.mean())}


def build():
    bm.random.seed(123)
    return Relay()


def save(path):
    net = build()
    net.conv.w.value = net.conv.w.value * 2.0 + 1.0
    bp.checkpoints.save_pytree(path, net.state_dict(), verbose=False)
    return {'w': np.asarray(net.conv.w.value).ravel().tolist()}


def load(path):
    net = Relay()            # a different seed state: fresh weights until loaded
    result = net.load_state_dict(bp.checkpoints.load_pytree(path), warn=False)
    return {'w': np.asarray(net.conv.w.value).ravel().tolist(),
            'missing': list(result.missing_keys), 'unexpected': list(result.unexpected_keys)}


if __name__ == '__main__':
    command, *rest = sys.argv[1:]
    out = {'baseline': baseline, 'long-sequence': long_sequence, 'long-simulation': long_simulation,
           'save': save, 'load': load}[command](*rest)
    out['peak_rss_mib'] = peak_rss_mib()
    print(json.dumps(out))

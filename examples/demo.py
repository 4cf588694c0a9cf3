"""A short tour of bp_conv_ext.Conv1d inside spiking networks.

1. Simulation: bool spikes from a LIF group go through a causal Conv1d into a
   second LIF group, run by ``bp.DSRunner`` in ``NonBatchingMode``.
2. Training: a spiking 1-D CNN learns to tell two spike patterns apart with
   ``bp.BPTT`` in ``TrainingMode``.

Run with ``make demo`` (or ``python examples/demo.py``).
"""
import time

import brainpy as bp
import brainpy.math as bm
import numpy as np

import bp_conv_ext

LENGTH, CHANNELS = 64, 2


class SpikeRelay(bp.DynSysGroup):
    """LIF -> Conv1d -> LIF, all in NonBatchingMode."""

    def __init__(self):
        super().__init__()
        self.inp = bp.dyn.Lif((LENGTH, CHANNELS), keep_size=True, tau=1.0, V_th=1.0)
        self.conv = bp_conv_ext.Conv1d(CHANNELS, 4, 5, padding='CAUSAL',
                                       w_initializer=bp.init.Uniform(0.0, 20.0))
        self.out = bp.dyn.Lif((LENGTH, 4), keep_size=True, tau=1.0, V_th=1.0)

    def update(self, current):
        spikes = self.inp(current)            # bool [LENGTH, CHANNELS]
        self.out(self.conv(spikes))
        return spikes


def simulate():
    bm.set_mode(bm.NonBatchingMode())
    bm.random.seed(0)
    net = SpikeRelay()
    print(f"layer: {net.conv}")
    runner = bp.DSRunner(net, monitors={'out': net.out.spike}, progress_bar=False)
    steps = 200
    drive = np.random.default_rng(0).uniform(0.0, 2.5, (steps, LENGTH, CHANNELS))
    in_spikes = runner.run(inputs=drive.astype(np.float32))
    dt = bm.get_dt()
    print(f"simulated {steps} steps ({steps * dt:.0f} ms) of {LENGTH} positions; "
          f"input spikes are {in_spikes.dtype}")
    print(f"  input  firing rate: {in_spikes.mean() / dt * 1e3:7.1f} Hz")
    print(f"  output firing rate: {runner.mon['out'].mean() / dt * 1e3:7.1f} Hz "
          f"(over {runner.mon['out'].shape[-1]} conv channels)")


class SpikingCNN(bp.DynSysGroup):
    def __init__(self):
        mode = bm.TrainingMode()
        super().__init__(mode=mode)
        self.conv = bp_conv_ext.Conv1d(1, 8, 5, stride=2, mode=mode)
        self.lif = bp.dyn.Lif((LENGTH // 2, 8), keep_size=True, tau=0.5, V_th=0.1,
                              spk_fun=bm.surrogate.arctan, mode=mode)
        self.flat = bp.dnn.Flatten(mode=mode)
        self.readout = bp.dnn.Dense(LENGTH // 2 * 8, 2, mode=mode)

    def update(self, spikes):
        return self.readout(self.flat(self.lif(self.conv(spikes))))


def spike_patterns(n, steps, rng):
    """Class 0 fires on every 2nd position, class 1 on every 4th; both with noise."""
    labels = rng.integers(0, 2, n)
    period = np.where(labels == 0, 2, 4)
    phase = rng.integers(0, 4, n)
    active = (np.arange(LENGTH)[None] + phase[:, None]) % period[:, None] == 0
    prob = np.where(active, 0.6, 0.1)[:, None, :, None]
    spikes = rng.random((n, steps, LENGTH, 1)) < prob
    return spikes, labels


def train():
    bm.random.seed(0)
    rng = np.random.default_rng(1)
    x_train, y_train = spike_patterns(256, 10, rng)
    x_test, y_test = spike_patterns(128, 10, rng)
    net = SpikingCNN()

    def loss(predictions, targets):
        return bp.losses.cross_entropy_loss(predictions.mean(axis=1), targets)

    trainer = bp.BPTT(net, loss_fun=loss, optimizer=bp.optim.Adam(lr=2e-2), progress_bar=False)
    batches = [(x_train[i:i + 32], y_train[i:i + 32]) for i in range(0, 256, 32)]
    start = time.perf_counter()
    trainer.fit(batches, num_epoch=5)
    losses = np.asarray(trainer.get_hist_metric('fit'))
    accuracy = (trainer.predict(x_test, reset_state=True).mean(axis=1).argmax(-1) == y_test).mean()
    print(f"trained {net.conv} with bp.BPTT for 5 epochs in {time.perf_counter() - start:.1f} s")
    print(f"  loss per epoch: {' '.join(f'{v:.3f}' for v in losses)}")
    print(f"  test accuracy:  {accuracy:.3f} (chance 0.5)")


if __name__ == '__main__':
    print(f"bp_conv_ext {bp_conv_ext.__version__} on brainpy {bp.__version__}")
    simulate()
    train()

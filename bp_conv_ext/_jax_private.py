"""The one place this package reaches into JAX's private modules.

- ``jax._src.dispatch.prim_requires_devices_during_lowering``: the primitives whose lowering
  partitions a call (``jax.experimental.custom_partitioning``) need the devices while they are
  lowered; JAX has no public way to say so (its own ``custom_partitioning`` registers itself
  there). Present in every supported JAX (0.4.33 to 0.12).
"""
from jax._src.dispatch import prim_requires_devices_during_lowering as _needing_devices


def requires_devices_during_lowering(primitive) -> None:
    """Marks ``primitive`` as one whose lowering needs the devices (it partitions a call)."""
    _needing_devices.add(primitive)

"""The GPU a program is lowered for when the machine has none (internal).

``jax.export(..., platforms=['cuda'])`` and ``jit(...).trace(...).lower(lowering_platforms=
('cuda',))`` lower a program for a GPU on any machine. The CUDA event kernels are Pallas
(Triton) kernels, whose lowering asks JAX which GPU it compiles for. JAX before 0.12 answered
compute capability 9.0 when the machine had no GPU; JAX 0.12 raises instead ("No supported
GPU devices found, please specify an abstract GPU device using AbstractDevice") and takes the
answer from the abstract mesh's ``AbstractDevice``. :func:`cuda_lowering` gives it that
answer, through JAX's public API, around the lowering of the event kernels only:

- on a machine whose default device is a GPU: nothing (the kernels are lowered for it);
- inside ``jax.sharding.use_abstract_mesh`` with an ``AbstractDevice`` of the user's: nothing
  (that is the GPU the user chose);
- otherwise, with JAX that has ``AbstractDevice``: :data:`DEFAULT_GPU` (compute capability
  9.0, what JAX before 0.12 assumed), keeping the current mesh's axes.

:func:`compute_capability` says which GPU generation a program is lowered for, by the same
rules, for the choices that depend on it (the fused step's Mosaic GPU kernel runs on Hopper).
"""
import contextlib

import jax

#: The GPU the CUDA event kernels are lowered for on a machine without one, unless the
#: program is lowered under an abstract mesh naming another.
DEFAULT_GPU = 'NVIDIA H100'
#: Its compute capability.
DEFAULT_CAPABILITY = (9, 0)
#: Words in the names of GPUs of compute capability 9.x (Hopper).
HOPPER = ('H100', 'H200', 'H800', 'H20', 'GH200')

_AbstractDevice = getattr(jax.sharding, 'AbstractDevice', None)   # JAX 0.12+


@contextlib.contextmanager
def cuda_lowering():
    """The context in which the CUDA event kernels are lowered (see the module docstring).
    A lowering that still finds no GPU fails with an error that names the ways out."""
    target = _abstract_target()
    try:
        with (jax.sharding.use_abstract_mesh(target) if target is not None
              else contextlib.nullcontext()):
            yield
    except RuntimeError as error:
        if 'AbstractDevice' not in str(error):
            raise
        raise RuntimeError(
            "Lowering the CUDA event kernels (backend='event' for 'cuda') needs the GPU they "
            "are compiled for, and this machine has none. Lower inside "
            "jax.sharding.use_abstract_mesh(AbstractMesh(..., abstract_device="
            f"AbstractDevice(device_kind={DEFAULT_GPU!r}, num_cores=None, platform='gpu'))), "
            "or use backend='dense' for this program.") from error


def compute_capability():
    """``(major, minor)`` of the GPU a program is lowered for: the machine's GPU; else the
    abstract mesh's device (``(9, 0)`` if its name is a Hopper's, else ``(0, 0)``: unknown);
    else :data:`DEFAULT_CAPABILITY`."""
    if jax.default_backend() == 'gpu':
        capability = getattr(jax.devices()[0], 'compute_capability', None)
        if capability:
            return tuple(int(part) for part in str(capability).split('.')[:2])
        return (0, 0)
    get_mesh = getattr(jax.sharding, 'get_abstract_mesh', None)
    device = getattr(get_mesh(), 'abstract_device', None) if get_mesh else None
    if device is None:
        return DEFAULT_CAPABILITY
    return (9, 0) if any(name in device.device_kind.split() for name in HOPPER) else (0, 0)


def _abstract_target():
    """The abstract mesh to lower under, or ``None`` to lower as JAX would by itself."""
    if _AbstractDevice is None or jax.default_backend() == 'gpu':
        return None
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.abstract_device is not None:
        return None
    device = _AbstractDevice(device_kind=DEFAULT_GPU, num_cores=None, platform='gpu')
    if mesh.empty:
        return jax.sharding.AbstractMesh((), (), abstract_device=device)
    return mesh.update(abstract_device=device)

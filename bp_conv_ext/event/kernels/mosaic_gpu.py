"""The spiking convolution step for Hopper GPUs, in Pallas Mosaic GPU: warpgroup matrix products.

:func:`conv_lif` computes what :func:`.pallas_gpu.conv_lif` computes (a 1-D convolution into
neurons over a whole sequence, the neurons' state kept on chip, only spikes stored) with the
instructions of Hopper GPUs (compute capability 9.x): tensor memory accelerator (TMA) copies
into shared memory and ``wgmma`` products of one warpgroup. JAX 0.12 deprecates Pallas's
Triton backend in favour of this one.

``wgmma`` multiplies ``bfloat16`` (or ``tfloat32``, which would round ``float32`` kernels to 10
bits). To keep ``float32`` numbers, every operand is written as a sum of ``bfloat16`` parts,
``a = a_1 + a_2 + a_3`` (each part the leading bits of what the parts before it leave: exact
for a ``float32``), and the products ``a_i b_j`` with ``i + j <= 4`` are summed in ``float32`` (the
ones left out are below ``2**-32`` of the result). Spikes (``bool``) and 8-bit integers are one
part, ``bfloat16`` kernels too; the parts of the input are stacked on its channel axis, those
of the kernel are separate products with the same input tile. The kernel's result is the
convolution to ``float32`` rounding, as the ``'jax'`` kernels compute it.

One program (one warpgroup) per output sample ``h``, block of 64 batch rows (the batch is
padded to a multiple of 64) and block of output channels holds its kernel slice in shared
memory for the whole sequence; at each step it copies the ``K`` input rows its taps read,
multiplies, rounds the sums to ``conv_dtype``, adds the bias, advances the neurons in
registers and stores their spikes (two buffers, so a step's store overlaps the next step).

Runs where :func:`supported` says so (stride 1, no input dilation, one channel group, output
channels a multiple of 16, ``float32``/``bfloat16``/``float16`` kernels and states, shared
memory within :data:`SHARED_MEMORY`), and only where named (``kernels='mosaic'``): no GPU
has compiled or run it yet, so the default choice takes the Triton kernel on Hopper GPUs too
(its record in :data:`bp_conv_ext.event.registry.SETS`). The parts of an ``inf`` are ``inf,
nan, nan``, so its products are IEEE's only for finite operands: the caller
(:mod:`bp_conv_ext.ops.fused`) computes the others with the ``'jax'`` kernels. On the
CPU it runs in Pallas's GPU interpreter (JAX 0.12+), which simulates the copies, barriers and
products.
"""
import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

try:
    from jax.experimental.pallas import mosaic_gpu as plgpu
except ImportError:           # JAX 0.4.33 (BrainPy 2.6's)
    plgpu = None  # type: ignore[assignment]

#: Batch rows of one program: the rows of one ``wgmma``.
ROWS = 64
#: The shared memory one program may use (an H100 gives 227 KiB to a block).
SHARED_MEMORY = 200 * 1024
#: How many ``bfloat16`` parts a dtype's numbers take.
_PARTS = {jnp.dtype(jnp.bool_): 1, jnp.dtype(jnp.int8): 1, jnp.dtype(jnp.uint8): 1,
          jnp.dtype(jnp.bfloat16): 1, jnp.dtype(jnp.float16): 3, jnp.dtype(jnp.float32): 3}
_STATES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def available() -> bool:
    """Whether this JAX has the Mosaic GPU backend with its interpreter (JAX 0.12+)."""
    return plgpu is not None and hasattr(plgpu, 'InterpretGPUParams')


def _channels(channels: int) -> int:
    """Input channels padded for the copies and the products: 16, 32, 64, then 64s."""
    if channels <= 64:
        return max(16, 1 << (channels - 1).bit_length())
    return -(-channels // 64) * 64


def _input_parts(dtype, conv_dtype) -> int:
    """The parts of the input: one where it is cast to ``bfloat16`` or exact in it."""
    if jnp.dtype(conv_dtype) == jnp.bfloat16:
        return 1
    return _PARTS.get(jnp.dtype(dtype), 3)


def _plan(taps, in_channels, out_channels, x_dtype, conv_dtype, state_dtype):
    """``(block, shared bytes)`` of the widest block of output channels that fits, or
    ``None``."""
    if (jnp.dtype(conv_dtype) not in _PARTS or jnp.dtype(state_dtype) not in _STATES
            or jnp.dtype(x_dtype) == jnp.float64):
        return None
    width = _channels(in_channels) * _input_parts(x_dtype, conv_dtype)
    parts = _PARTS[jnp.dtype(conv_dtype)]
    for block in (64, 32, 16):
        if out_channels % block:
            continue
        state = jnp.dtype(state_dtype).itemsize * ROWS * block
        size = 2 * (parts * taps * width * block + 2 * taps * ROWS * width) + 4 * state
        if size <= SHARED_MEMORY:
            return block, size
    return None


def supported(taps, in_channels, out_channels, groups, stride, lhs_dilation, x_dtype,
              conv_dtype, state_dtype) -> bool:
    """Whether :func:`conv_lif` runs a problem (not an empty one)."""
    return (available() and groups == stride == lhs_dilation == 1
            and min(taps, in_channels, out_channels) > 0
            and _plan(taps, in_channels, out_channels, x_dtype, conv_dtype,
                      state_dtype) is not None)


def split(a, parts: int):
    """``a`` (``float32`` or narrower) as ``parts`` ``bfloat16`` arrays whose sum is ``a``:
    each part the leading 8 significant bits of what the parts before it leave (cut, not
    rounded, so that no part overflows). Three parts hold every ``float32``."""
    rest = jnp.asarray(a, jnp.float32)
    pieces = []
    for _ in range(parts):
        bits = lax.bitcast_convert_type(rest, jnp.uint32) & jnp.uint32(0xFFFF0000)
        piece = lax.bitcast_convert_type(bits, jnp.float32)
        pieces.append(piece.astype(jnp.bfloat16))
        rest = rest - piece
    return pieces


def _operands(xs, w, padding, conv_dtype):
    """The input ``[T, B', H + pads, parts * C']`` and kernel ``[parts * K, parts * C',
    C_out]`` in ``bfloat16``, padded and split (see the module)."""
    low, high = padding
    _steps, batch, _, channels = xs.shape
    _taps, _, _n_out = w.shape
    width, rows = _channels(channels), -(-batch // ROWS) * ROWS
    x_parts = _input_parts(xs.dtype, conv_dtype)
    w_parts = _PARTS[jnp.dtype(conv_dtype)]
    x = xs.astype(conv_dtype) if x_parts > 1 else xs.astype(jnp.bfloat16)
    x = jnp.pad(x, ((0, 0), (0, rows - batch), (low, high), (0, width - channels)))
    if x_parts > 1:           # one part is the input itself: no pass over it to split it
        x = jnp.concatenate(split(x, x_parts), axis=-1)
    w = jnp.pad(w, ((0, 0), (0, width - channels), (0, 0)))
    w_pieces = split(w, w_parts)
    zero = jnp.zeros_like(w_pieces[0])
    limit = max(x_parts, w_parts) + 1
    kernel = [jnp.concatenate([w_pieces[p] if i + p + 2 <= limit else zero
                               for i in range(x_parts)], axis=1) for p in range(w_parts)]
    return x, jnp.concatenate(kernel, axis=0)


def _transforms(minor: int, dtype, swizzle=None):
    swizzle = swizzle or plgpu.find_swizzle(minor * jnp.dtype(dtype).itemsize * 8)
    # (JAX declares their `transform_array` with an empty body, which mypy takes as abstract.)
    return (plgpu.TilingTransform((8, swizzle // jnp.dtype(dtype).itemsize)),  # type: ignore[abstract]
            plgpu.SwizzleTransform(swizzle))  # type: ignore[abstract]


def conv_lif(xs, w, b, v0, update, *, padding, rhs_dilation, conv_dtype, interpret=True,
             tiles=None):
    """A convolution into neurons over a whole sequence, in one kernel (the arguments and
    results of :func:`.pallas_gpu.conv_lif`; ``tiles``: the block of output channels)."""
    steps, batch, length, channels = xs.shape
    taps, _, n_out = w.shape
    out_len = length + sum(padding) - (taps - 1) * rhs_dilation
    block = tiles or _plan(taps, channels, n_out, xs.dtype, conv_dtype, v0.dtype)[0]
    x, kernel = _operands(xs, w, padding, conv_dtype)
    rows = x.shape[1]
    width, parts = x.shape[3], kernel.shape[0] // taps
    v0 = jnp.pad(v0, ((0, rows - batch), (0, 0), (0, 0)))
    bias = jnp.broadcast_to(jnp.asarray(b, conv_dtype), (ROWS, n_out))
    state = v0.dtype
    # One swizzle for both operands of a product, as wgmma asks: the widest whose row of
    # bfloat16 elements divides both the input's channels and the block.
    swizzle = next(2 * e for e in (64, 32, 16) if width % e == 0 and block % e == 0)

    def body(x_gmem, w_gmem, b_gmem, v0_gmem, s_gmem, v_gmem):
        h, i, j = lax.axis_index('h'), lax.axis_index('i'), lax.axis_index('j')
        batch_rows, columns = pl.ds(i * ROWS, ROWS), pl.ds(j * block, block)

        def scope(w_smem, x_smem, b_smem, v_smem, s_smem, barriers):
            plgpu.copy_gmem_to_smem(w_gmem.at[:, :, columns], w_smem, barriers.at[0])
            plgpu.copy_gmem_to_smem(b_gmem.at[:, columns], b_smem, barriers.at[1])
            plgpu.copy_gmem_to_smem(v0_gmem.at[batch_rows, h, columns], v_smem, barriers.at[2])
            for k in range(3):
                plgpu.barrier_wait(barriers.at[k])
            layout = dict(layout=plgpu.Layout.WGMMA)
            bias_rows = plgpu.load(b_smem, **layout)

            def load(t, slot):
                for k in range(taps):
                    plgpu.copy_gmem_to_smem(x_gmem.at[t, batch_rows, h + k * rhs_dilation, :],
                                            x_smem.at[slot, k], barriers.at[3 + slot * taps + k])

            def step(t, v):
                slot = lax.rem(t, 2)

                @pl.when(t + 1 < steps)
                def _():
                    load(t + 1, 1 - slot)

                for k in range(taps):
                    plgpu.barrier_wait(barriers.at[3 + slot * taps + k])

                def products(acc):
                    for p in range(parts):
                        for k in range(taps):
                            plgpu.wgmma(acc, x_smem.at[slot, k], w_smem.at[p * taps + k])
                    plgpu.wgmma_wait(0)
                    return acc[...]

                total = pl.run_scoped(products, plgpu.ACC((ROWS, block), jnp.float32))
                spike, v = update(v, total.astype(conv_dtype) + bias_rows)
                plgpu.wait_smem_to_gmem(1, wait_read_only=True)
                s_smem[slot] = spike.astype(state)
                plgpu.commit_smem()
                plgpu.copy_smem_to_gmem(s_smem.at[slot], s_gmem.at[t, batch_rows, h, columns])
                return v

            load(0, 0)
            v = lax.fori_loop(0, steps, step, plgpu.load(v_smem, **layout))
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)
            v_smem[...] = v
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(v_smem, v_gmem.at[batch_rows, h, columns])
            plgpu.wait_smem_to_gmem(0)

        pl.run_scoped(
            scope,
            plgpu.SMEM((parts * taps, width, block), jnp.bfloat16,
                       transforms=_transforms(block, jnp.bfloat16, swizzle)),
            plgpu.SMEM((2, taps, ROWS, width), jnp.bfloat16,
                       transforms=_transforms(width, jnp.bfloat16, swizzle)),
            plgpu.SMEM((ROWS, block), bias.dtype, transforms=_transforms(block, bias.dtype)),
            plgpu.SMEM((ROWS, block), state, transforms=_transforms(block, state)),
            plgpu.SMEM((2, ROWS, block), state, transforms=_transforms(block, state)),
            plgpu.Barrier(num_barriers=3 + 2 * taps))

    shapes = (jax.ShapeDtypeStruct((steps, rows, out_len, n_out), state),
              jax.ShapeDtypeStruct(v0.shape, state))
    options = dict(interpret=plgpu.InterpretGPUParams(detect_races=True)) if interpret else {}
    call = plgpu.kernel(body, out_type=shapes, grid=(out_len, rows // ROWS, n_out // block),
                        grid_names=('h', 'i', 'j'),
                        compiler_params=plgpu.CompilerParams(
                            lowering_semantics=plgpu.LoweringSemantics.Lane),
                        **options)
    spikes, v = call(x, kernel, bias, v0)
    return spikes[:, :batch], v[:batch]

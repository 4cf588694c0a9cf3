"""Event-driven kernels for GPUs, in Pallas (Triton): work proportional to the spikes.

Both kernels first compact the input's nonzero entries with XLA (a prefix sum and a scatter,
linear in the input), so that the Pallas kernel visits only those:

- **forward** (output-stationary gather). The active input channels of every input sample
  ``x[n, h, :]`` (per channel group) are listed with their values. One Pallas program per
  output sample ``y[n, t, :]`` and block of up to 128 output channels keeps its sums in
  registers; for each tap ``k`` it finds the input sample ``h`` the tap reads (none in the
  padding or the holes of ``lhs_dilation``) and adds the kernel row ``w[k, c, block]`` of each
  active channel ``c`` there, scaled by the input value. Nothing is written twice, so no
  atomics; the kernel rows are contiguous and read coalesced.
- **kernel gradient** (gather per kernel row). The active ``(n, h)`` entries of every input
  channel are listed. One program per (tap ``k``, input channel ``c``, slice of that list,
  block of output channels) sums ``dy[n, t, block]`` over the entries of its slice, ``t`` the
  output sample tap ``k`` of ``(n, h)`` reaches; XLA then adds the slices.

So the work is ``K * C_out`` multiply-adds per spike in each kernel, against
``K * C_in * C_out`` per output sample for a dense convolution: at density ``p``, ``p`` times
the dense work, plus the compaction's linear pass. Every stride, padding, dilation and group
option; any input dtype (zeros are skipped, other values multiply); ``float32`` and
``bfloat16`` (any floating) kernels, summed in ``float32`` (``float64`` for ``float64``).

On a GPU the kernels lower through Triton (Ampere and later). On the CPU they run in Pallas's
interpreter, which is how the tests check them against the dense path (``kernels='triton'``);
there they are slow.
"""
import functools

import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.experimental import pallas as pl

try:                          # JAX 0.4.36+
    from jax.experimental.pallas import triton as _triton

    def _compiler_params(warps: int):
        return _triton.CompilerParams(num_warps=warps, num_stages=1)
except ImportError:           # JAX 0.4.33 (BrainPy 2.6's): the same as a dict
    def _compiler_params(warps: int):
        return dict(triton=dict(num_warps=warps, num_stages=1))

_COMPILER_PARAMS = _compiler_params(4)

#: The widest block of output channels one program sums (Triton blocks are powers of two).
MAX_BLOCK = 128
#: How many slices each input channel's list of spikes is cut into for the kernel gradient.
CHUNKS = 16


def threads():
    """Unused (the GPU schedules the programs)."""
    return 1


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _blocks(group_out: int):
    """The block of output channels and the padded group width it tiles."""
    block = min(MAX_BLOCK, _next_power_of_2(group_out))
    return block, -(-group_out // block) * block


def compact(active, values):
    """Move the nonzero entries of the last axis to its front.

    ``active``: ``[R, L]`` bool, ``values``: ``[R, L]``. Returns ``index`` (``[R, L]``
    int32, the positions of the active entries first), their ``values`` and ``count``
    (``[R]``): row ``r`` has ``count[r]`` active entries, at ``index[r, :count[r]]``.
    """
    rows, length = active.shape
    position = jnp.cumsum(active, axis=1, dtype=jnp.int32) - 1
    target = jnp.where(active, position, length)                  # inactive: dropped
    row = jnp.arange(rows)[:, None]
    index = jnp.zeros((rows, length), jnp.int32).at[row, target].set(
        jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length)), mode='drop')
    kept = jnp.zeros((rows, length), values.dtype).at[row, target].set(values, mode='drop')
    return index, kept, position[:, -1] + 1


def _configuration(spec):
    c = spec.conv
    return c.stride, c.padding[0], c.lhs_dilation, c.rhs_dilation, c.groups


def _call(kernel, grid, out_shape, interpret, *args):
    options = dict(interpret=True) if interpret else dict(compiler_params=_COMPILER_PARAMS)
    return pl.pallas_call(kernel, grid=grid, out_shape=out_shape, **options)(*args)


def forward(x, w, params, *, outs, spec, interpret=True):
    """``[N, H, C_in]`` input (any dtype) convolved with ``w``; returns ``[y]``."""
    stride, low, lhs_dilation, rhs_dilation, groups = _configuration(spec)
    n, length, _channels = x.shape
    taps, group_in, n_out = w.shape
    out_len = outs[0].shape[1]
    group_out = n_out // groups
    block, padded = _blocks(group_out)
    blocks = padded // block
    dilated = (length - 1) * lhs_dilation + 1
    total_dtype = jnp.promote_types(outs[0].dtype, jnp.float32)
    grouped = x.reshape(n * length * groups, group_in)
    index, values, count = compact(grouped != 0, grouped.astype(w.dtype))
    index = index.reshape(n, length, groups, group_in)
    values = values.reshape(n, length, groups, group_in)
    count = count.reshape(n, length, groups)
    w = jnp.pad(w.reshape(taps, group_in, groups, group_out),
                ((0, 0), (0, 0), (0, 0), (0, padded - group_out)))

    def kernel(index_ref, values_ref, count_ref, w_ref, y_ref):
        row, column = pl.program_id(0), pl.program_id(1)
        b, t = row // out_len, row % out_len
        g, first = column // blocks, (column % blocks) * block
        total = jnp.zeros((block,), total_dtype)
        for k in range(taps):
            offset = t * stride + k * rhs_dilation - low         # in the dilated input
            reads = (offset >= 0) & (offset < dilated) & (offset % lhs_dilation == 0)
            h = jnp.clip(offset // lhs_dilation, 0, length - 1)
            active = jnp.where(reads, count_ref[b, h, g], 0)

            def add(j, total, k=k, h=h):
                c = index_ref[b, h, g, j]
                weights = w_ref[k, c, g, pl.ds(first, block)].astype(total_dtype)
                return total + values_ref[b, h, g, j].astype(total_dtype) * weights

            total = jax.lax.fori_loop(0, active, add, total)
        y_ref[b, t, g, pl.ds(first, block)] = total.astype(y_ref.dtype)

    shape = jax.ShapeDtypeStruct((n, out_len, groups, padded), outs[0].dtype)
    y = _call(kernel, (n * out_len, groups * blocks), shape, interpret, index, values, count, w)
    return [y[..., :group_out].reshape(n, out_len, n_out)]


def kernel_grad(x, dy, params, *, outs, spec, interpret=True):
    """The kernel gradient ``K(x)^T dy``, ``[K, C_in // groups, C_out]``; returns ``[dw]``."""
    stride, low, lhs_dilation, rhs_dilation, groups = _configuration(spec)
    n, length, channels = x.shape
    taps, group_in, n_out = outs[0].shape
    out_len = dy.shape[1]
    group_out = n_out // groups
    block, padded = _blocks(group_out)
    blocks = padded // block
    entries = n * length
    total_dtype = jnp.promote_types(outs[0].dtype, jnp.float32)
    by_channel = jnp.swapaxes(x.reshape(entries, channels), 0, 1)       # [C, N * H]
    index, values, count = compact(by_channel != 0, by_channel.astype(outs[0].dtype))
    dy = jnp.pad(dy.reshape(n, out_len, groups, group_out),
                 ((0, 0), (0, 0), (0, 0), (0, padded - group_out)))
    chunks = max(1, min(CHUNKS, entries))
    chunk = -(-entries // chunks)

    def kernel(index_ref, values_ref, count_ref, dy_ref, dw_ref):
        kc, part, column = pl.program_id(0), pl.program_id(1), pl.program_id(2)
        k, c = kc // channels, kc % channels
        g, i, first = c // group_in, c % group_in, column * block
        start = part * chunk
        stop = jnp.maximum(jnp.minimum(count_ref[c], start + chunk), start)

        def add(j, total):
            entry = index_ref[c, j]
            b, h = entry // length, entry % length
            offset = h * lhs_dilation + low - k * rhs_dilation   # = t * stride when reached
            t = offset // stride
            reached = (offset >= 0) & (offset % stride == 0) & (t < out_len)
            value = jnp.where(reached, values_ref[c, j].astype(total_dtype), 0)
            row = dy_ref[b, jnp.clip(t, 0, out_len - 1), g, pl.ds(first, block)]
            return total + value * row.astype(total_dtype)

        total = jax.lax.fori_loop(start, stop, add, jnp.zeros((block,), total_dtype))
        dw_ref[part, k, i, g, pl.ds(first, block)] = total

    shape = jax.ShapeDtypeStruct((chunks, taps, group_in, groups, padded), total_dtype)
    parts = _call(kernel, (taps * channels, chunks, blocks), shape, interpret,
                  index, values, count, dy)
    dw = parts.sum(axis=0)[..., :group_out].reshape(taps, group_in, n_out)
    return [dw.astype(outs[0].dtype)]


#: The kernels as a GPU runs them (compiled through Triton, not interpreted).
compiled = dict(forward=functools.partial(forward, interpret=False),
                kernel_grad=functools.partial(kernel_grad, interpret=False))


def _batch_block(batch: int):
    """The rows of one program of :func:`conv_lif`: 32 or 16, whichever divides the batch
    (Triton's matrix products need at least 16), or ``None``. With 64 output channels, 32
    rows were the fastest measured on an H200 (64 rows: up to 1.7x slower; 16: 1.5x)."""
    for block in (32, 16):
        if batch % block == 0:
            return block
    return None


def _channel_block(channels: int):
    """The output channels of one program of :func:`conv_lif`: the widest power of two from
    16 to 64 that divides them, or ``None`` (128 measured up to 1.7x slower on an H200: its
    sums and neuron states exceed the registers of 4 warps)."""
    for block in (64, 32, 16):
        if channels % block == 0:
            return block
    return None


def conv_lif_supported(batch: int, out_channels: int, groups: int, stride: int,
                       lhs_dilation: int) -> bool:
    """Whether :func:`conv_lif` runs a problem (else the caller computes it unfused): not an
    empty one."""
    return (batch > 0 and out_channels > 0 and _batch_block(batch) is not None
            and _channel_block(out_channels) is not None and groups == stride == lhs_dilation == 1)


def conv_lif(xs, w, b, v0, update, *, padding, rhs_dilation, conv_dtype, interpret=True,
             tiles=None):
    """A convolution into neurons over a whole sequence, in one kernel.

    ``xs``: ``[T, B, H, C_in]`` (any dtype), ``w``: ``[K, C_in, C_out]``, ``b``: ``[C_out]``,
    ``v0``: ``[B, H_out, C_out]``; ``update(v, current) -> (spike, v)`` advances the neurons
    one step. One program per output sample ``h``, block of the batch and block of output
    channels keeps its neurons' state in registers through all ``T`` steps: at each step it
    sums the ``K`` taps as matrix products ``[rows, C_in] @ [C_in, channels]`` (in
    ``float32``), rounds the sums to ``conv_dtype`` as the convolution would, adds the bias,
    advances the neurons and stores only their spikes. Stride 1, no input dilation, one
    channel group (:func:`conv_lif_supported`). Returns ``spikes`` (``[T, B, H_out, C_out]``,
    ``v0``'s dtype) and the final state. ``tiles``: ``(rows, channels, warps)`` of one
    program, to measure others than the default (the widest blocks above, 4 warps).
    """
    steps, batch, length, channels = xs.shape
    taps, _, n_out = w.shape
    low, high = padding
    out_len = length + low + high - (taps - 1) * rhs_dilation
    rows, block, warps = tiles or (_batch_block(batch), _channel_block(n_out), 4)
    padded_in = max(16, _next_power_of_2(channels))
    # Spikes travel as one byte each; other inputs in the kernel's dtype.
    carry = jnp.int8 if xs.dtype == jnp.bool_ else w.dtype
    x = jnp.pad(xs.astype(carry), ((0, 0), (0, 0), (low, high), (0, padded_in - channels)))
    w = jnp.pad(w, ((0, 0), (0, padded_in - channels), (0, 0)))
    total_dtype = jnp.promote_types(w.dtype, jnp.float32)

    def kernel(x_ref, w_ref, b_ref, v0_ref, s_ref, v_ref):
        h, i, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
        batch_rows, columns = pl.ds(i * rows, rows), pl.ds(j * block, block)
        bias = b_ref[columns]

        def step(t, v):
            total = jnp.zeros((rows, block), total_dtype)
            for k in range(taps):
                inputs = x_ref[t, batch_rows, h + k * rhs_dilation, :].astype(w_ref.dtype)
                total += jnp.dot(inputs, w_ref[k, :, columns], preferred_element_type=total_dtype)
            spike, v = update(v, total.astype(conv_dtype) + bias)
            s_ref[t, batch_rows, h, columns] = spike.astype(s_ref.dtype)
            return v

        v_ref[batch_rows, h, columns] = jax.lax.fori_loop(0, steps, step,
                                                          v0_ref[batch_rows, h, columns])

    # Abstract arrays, not ShapeDtypeStructs: the kernel is lowered for one device's arrays,
    # also inside shard_map (where a ShapeDtypeStruct would have to name varying axes).
    shapes = (ShapedArray((steps, batch, out_len, n_out), v0.dtype),
              ShapedArray(v0.shape, v0.dtype))
    grid = (out_len, batch // rows, n_out // block)
    options = (dict(interpret=True) if interpret else
               dict(compiler_params=_compiler_params(warps)))
    return pl.pallas_call(kernel, grid=grid, out_shape=shapes, **options)(x, w, b, v0)

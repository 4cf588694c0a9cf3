// Event-driven 1-D convolution on the CPU: the forward convolution and its kernel gradient,
// called from JAX through the XLA FFI (bp_conv_ext/kernels/cxx_cpu.py builds and registers
// them).
//
// Layouts: x [N, H, C] (bool, float32 or float64; zeros are skipped), w and dw
// [K, C / groups, O], y and dy [N, T, O]. Output sample t, tap k reads the input at the
// dilated, padded position q = t * stride + k * rhs - low, which is input sample q / lhs when
// 0 <= q <= (H - 1) * lhs and lhs divides q.
//
// Both kernels first compact, per input sample, the active channels of each group into a list,
// which every tap reaching that sample reuses (bool input with one group: 64 inputs a word of
// bits, read off bit by bit; else branch-free over words of bools).
// - forward (output-stationary): a block of up to 128 outputs of y[n, t] is summed in vector
//   registers over the kernel rows of the active channels of the samples its taps read, and
//   written once (aligned blocks by streaming stores on AVX and AVX-512, past the caches).
//   With no input dilation and no kernel dilation those samples are adjacent and their lists
//   one range: one loop per block, whatever the number of taps; with AVX-512, rows of narrow
//   blocks (64 floats) are summed two output samples at a time, over the union of their
//   windows.
// - kernel gradient: for each active input sample and tap, the dy row it reaches is held in
//   registers a block at a time and added to the dw rows of its active channels. Both keep
//   their compacted lists per thread from call to call.
// Threads: over the samples of the batch (XLA's intra-op thread pool), the kernel gradient
// with one copy of dw per thread, summed at the end. No fast-math: NaN and inf in the inputs
// reach the outputs as in a dense convolution over the nonzero inputs.
#include "cpu_common.h"

#ifndef BP_CONV_EXT_NO_FFI
#include "xla/ffi/api/ffi.h"
#endif

namespace {

struct Geometry {
  int64_t batch, length, channels, taps, group_in, outs, out_len;
  int64_t stride, low, lhs, rhs, groups;

  int64_t group_out() const { return outs / groups; }
  // The input sample tap k of output t reads, or -1 for padding and dilation holes.
  int64_t source(int64_t t, int64_t k) const {
    const int64_t q = t * stride + k * rhs - low;
    if (q < 0) return -1;
    if (lhs == 1) return q < length ? q : -1;
    if (q % lhs != 0) return -1;
    const int64_t h = q / lhs;
    return h < length ? h : -1;
  }
  // The output sample input sample h reaches through tap k, or -1.
  int64_t target(int64_t h, int64_t k) const {
    const int64_t p = h * lhs + low - k * rhs;
    if (p < 0) return -1;
    if (stride == 1) return p < out_len ? p : -1;
    if (p % stride != 0) return -1;
    const int64_t t = p / stride;
    return t < out_len ? t : -1;
  }
};

// Adds row[entry[j] + shift] (scaled by values[j] for inputs that are not bool) to a block
// of outputs for j in [j0, j1).
template <typename X, typename T, typename Sums>
void add_rows(Sums& sums, const T* rows, const int64_t* entry, const T* values, int64_t j0,
              int64_t j1, int64_t shift) {
  for (int64_t j = j0; j < j1; ++j) {
    if constexpr (std::is_same_v<X, bool>) {
      sums.add(rows + entry[j] + shift);
    } else {
      sums.add(rows + entry[j] + shift, values[j]);
    }
  }
}

// The last block of a row, narrower than a vector block: sums in a local array.
template <typename T>
struct Tail {
  int64_t width;
  T acc[Block<T, kVectors>::kWidth];

  explicit Tail(int64_t width) : width(width) { std::fill(acc, acc + width, T(0)); }
  void add(const T* row) {
    for (int64_t o = 0; o < width; ++o) acc[o] += row[o];
  }
  void add(const T* row, T scale) {
    for (int64_t o = 0; o < width; ++o) acc[o] += scale * row[o];
  }
  void store(T* out) const { std::memcpy(out, acc, width * sizeof(T)); }
};

// --- forward ------------------------------------------------------------------------------

template <typename X, typename T>
struct ActiveRows {
  // The active channels c of input sample h in group g, as the offsets (h * Cg + c) * O of
  // their kernel rows (tap k's row is at shift (k - h) * Cg * O), group by group:
  // entry[start[g * H + h] : start[g * H + h + 1]], so that consecutive samples are adjacent.
  std::vector<int64_t> start, entry;
  std::vector<T> values;

  std::vector<uint64_t> words;   // bool input, one group: 64 inputs a word
  std::vector<int64_t> before;   // and the active inputs before each word

  void build(const X* x, const Geometry& g) {
    start.resize(g.groups * g.length + 1);
    entry.resize(g.length * g.channels);
    if constexpr (std::is_same_v<X, bool>) {
      if (g.groups == 1) return build_flat(x, g);
    }
    if constexpr (!std::is_same_v<X, bool>) values.resize(g.length * g.channels);
    int64_t m = 0;
    for (int64_t group = 0; group < g.groups; ++group) {
      for (int64_t h = 0; h < g.length; ++h) {
        start[group * g.length + h] = m;
        m += compact(x + h * g.channels + group * g.group_in, g.group_in,
                     h * g.group_in * g.outs, g.outs, entry.data() + m, values.data() + m);
      }
    }
    start[g.groups * g.length] = m;
  }

  // One group: input h * C + c is kernel row (h * C + c) * O, so one sample's lists are one
  // list, taken 64 inputs at a time from a word of their bits (one unpredictable branch per
  // word with a spike, not per input); start[h] counts the bits before input h * C.
  void build_flat(const bool* x, const Geometry& g) {
    const unsigned char* bytes = reinterpret_cast<const unsigned char*>(x);
    const int64_t count = g.length * g.channels;
    const int64_t n = (count + 63) / 64;
    words.resize(n);
    before.resize(n + 1);
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t i0 = i * 64;
      uint64_t word = 0;
      if (i0 + 64 <= count) {
        word = bits64(bytes + i0);
      } else {
        for (int64_t c = i0; c < count; ++c) word |= uint64_t(bytes[c]) << (c - i0);
      }
      words[i] = word;
      before[i] = m;
      for (; word; word &= word - 1) entry[m++] = (i0 + __builtin_ctzll(word)) * g.outs;
    }
    before[n] = m;
    for (int64_t h = 0; h <= g.length; ++h) {
      const int64_t i = h * g.channels / 64, r = h * g.channels % 64;
      const uint64_t lower = r == 0 ? 0 : words[i] & ((uint64_t(1) << r) - 1);
      start[h] = before[i] + __builtin_popcountll(lower);
    }
  }
};

// One block y[t, group, o0 : ...] of one sample: the sum over the taps of the kernel rows of
// the active channels of the input sample each tap reads.
template <typename X, typename T, typename Sums>
void forward_sums(Sums& sums, const ActiveRows<X, T>& rows, const T* w, const Geometry& g,
                  int64_t t, int64_t group, int64_t o0) {
  const T* base = w + group * g.group_out() + o0;
  const int64_t* start = rows.start.data() + group * g.length;
  const int64_t tap = g.group_in * g.outs;
  if (g.lhs == 1 && g.rhs == 1) {
    // The taps read consecutive input samples, whose lists are adjacent: one range.
    const int64_t first = t * g.stride - g.low;
    const int64_t h0 = std::max<int64_t>(first, 0);
    const int64_t h1 = std::min(first + g.taps, g.length);
    if (h0 < h1) {
      add_rows<X>(sums, base, rows.entry.data(), rows.values.data(), start[h0], start[h1],
                  -first * tap);
    }
    return;
  }
  for (int64_t k = 0; k < g.taps; ++k) {
    const int64_t h = g.source(t, k);
    if (h < 0) continue;
    add_rows<X>(sums, base, rows.entry.data(), rows.values.data(), start[h], start[h + 1],
                (k - h) * tap);
  }
}

// Output samples summed together where their blocks are narrow (measured: two; more, or
// pairs of wide blocks, add more work than they save).
constexpr int kRows = 2;

// kRows adjacent output samples t, t + 1, ... of one group at once (stride 1, no dilation):
// their windows are one range of K + kRows - 1 input samples, over which each active channel
// adds its kernel rows to all the sums, taken from a kernel with kRows - 1 zero taps before
// and after the K taps (`padded`), so that a sample a tap does not reach adds zeros. One loop
// for kRows blocks.
template <typename X, typename T, int kCount>
void forward_rows(const ActiveRows<X, T>& rows, const T* padded, T* out, const Geometry& g,
                  int64_t t, int64_t group, int64_t o0) {
  Block<T, kCount> sums[kRows];
  const int64_t tap = g.group_in * g.outs;
  const int64_t* start = rows.start.data() + group * g.length;
  const int64_t first = t - g.low;
  const int64_t h0 = std::max<int64_t>(first, 0);
  const int64_t h1 = std::min(first + g.taps + kRows - 1, g.length);
  if (h0 < h1) {
    const T* base = padded + (kRows - 1 - first) * tap + group * g.group_out() + o0;
    const int64_t* entry = rows.entry.data();
    for (int64_t j = start[h0]; j < start[h1]; ++j) {
      const T* row = base + entry[j];
      for (int r = 0; r < kRows; ++r) {
        if constexpr (std::is_same_v<X, bool>) {
          sums[r].add(row - r * tap);
        } else {
          sums[r].add(row - r * tap, rows.values[j]);
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) sums[r].store(out + r * g.outs + o0);
}

// Block y[t, group, o0 : o0 + width] for the output samples t in [t0, t1) (`make` gives the
// empty sums).
template <typename X, typename T, typename Make>
void forward_column(const ActiveRows<X, T>& rows, const T* w, T* out, const Geometry& g,
                    int64_t group, int64_t o0, int64_t t0, int64_t t1, const Make& make) {
  for (int64_t t = t0; t < t1; ++t) {
    auto sums = make();
    forward_sums<X>(sums, rows, w, g, t, group, o0);
    sums.store(out + t * g.outs + o0);
  }
}

// The outputs of one group of one sample (`out` is y[n, 0, group * O / groups]) at the
// output samples [t0, t1), a block at a time: blocks as wide as registers allow, then the
// tail; with `padded`, blocks of kVectors kRows output samples at a time.
template <typename X, typename T>
void forward_group(const ActiveRows<X, T>& rows, const T* w, const T* padded, T* out,
                   const Geometry& g, int64_t group, int64_t t0, int64_t t1) {
  using Wide = Block<T, kWide>;
  using Narrow = Block<T, kVectors>;
  const int64_t og = g.group_out();
  int64_t o0 = 0;
  for (; o0 + Wide::kWidth <= og; o0 += Wide::kWidth) {
    forward_column<X>(rows, w, out, g, group, o0, t0, t1, [] { return Wide(); });
  }
  for (; o0 + Narrow::kWidth <= og; o0 += Narrow::kWidth) {
    int64_t t = t0;
    for (; padded && t + kRows <= t1; t += kRows) {
      forward_rows<X, T, kVectors>(rows, padded, out + t * g.outs, g, t, group, o0);
    }
    forward_column<X>(rows, w, out, g, group, o0, t, t1, [] { return Narrow(); });
  }
  for (; o0 < og; o0 += Narrow::kWidth) {
    const int64_t width = std::min(Narrow::kWidth, og - o0);
    forward_column<X>(rows, w, out, g, group, o0, t0, t1, [width] { return Tail<T>(width); });
  }
}

template <typename X, typename T, typename Pool>
void forward(Pool& pool, const X* x, const T* w, T* y, const Geometry& g, int64_t threads) {
  // kRows output samples at a time where a group has a block of kVectors (see forward_rows).
  const int64_t og = g.group_out();
  const bool together = g.stride == 1 && g.lhs == 1 && g.rhs == 1 &&
                        og % Block<T, kWide>::kWidth >= Block<T, kVectors>::kWidth;
  const int64_t tap = g.group_in * g.outs;
  std::vector<T> padded;
  if (together) {
    padded.assign((g.taps + 2 * (kRows - 1)) * tap, T(0));
    std::copy(w, w + g.taps * tap, padded.begin() + (kRows - 1) * tap);
  }
  // Output samples a group's blocks are summed over before the next block: all where a group
  // has one block (one loop over the samples), else one (or kRows) at a time (all the blocks
  // of a sample first: block by block over all samples measured 15-20 % slower there).
  const int64_t span = og <= Block<T, kWide>::kWidth ? g.out_len : together ? kRows : 1;
  parallel_for<ActiveRows<X, T>>(pool, g.batch, threads, [&](int64_t n, ActiveRows<X, T>& rows) {
    rows.build(x + n * g.length * g.channels, g);
    T* yn = y + n * g.out_len * g.outs;
    for (int64_t t = 0; t < g.out_len; t += span) {
      for (int64_t group = 0; group < g.groups; ++group) {
        forward_group<X>(rows, w, together ? padded.data() : nullptr, yn + group * og, g, group,
                         t, std::min(t + span, g.out_len));
      }
    }
  });
}

// --- kernel gradient ----------------------------------------------------------------------

// dst[entry[j] + o] += src[o] (times values[j] for inputs that are not bool) for every j in
// [j0, j1) and o in [0, width): one dy row, held in registers a block at a time, added to the
// kernel-gradient rows of the active channels.
template <typename X, typename T>
void scatter_row(const T* src, T* dst, const ActiveRows<X, T>& rows, int64_t j0, int64_t j1,
                 int64_t width) {
  using B = Block<T, kVectors>;
  const int64_t* entry = rows.entry.data();
  int64_t o0 = 0;
  for (; o0 + B::kWidth <= width; o0 += B::kWidth) {
    const B row(src + o0);
    for (int64_t j = j0; j < j1; ++j) {
      if constexpr (std::is_same_v<X, bool>) {
        row.add_to(dst + entry[j] + o0);
      } else {
        row.add_to(dst + entry[j] + o0, rows.values[j]);
      }
    }
  }
  for (int64_t j = j0; j < j1 && o0 < width; ++j) {
    const T scale = std::is_same_v<X, bool> ? T(1) : rows.values[j];
    T* out = dst + entry[j];
    for (int64_t o = o0; o < width; ++o) out[o] += scale * src[o];
  }
}

// dw[k, c, :] = sum over the active x[n, h, c] of x * dy[n, t, :], t the output sample that
// input reaches through tap k. Threads over slices of the batch, each summing into its own
// copy of dw (the first into dw itself), added up at the end.
template <typename X, typename T, typename Pool>
void kernel_grad(Pool& pool, const X* x, const T* dy, T* dw, const Geometry& g,
                 int64_t threads) {
  const int64_t size = g.taps * g.group_in * g.outs;
  const int64_t tap = g.group_in * g.outs;
  const int64_t og = g.group_out();
  const int64_t slices = std::max<int64_t>(1, std::min(threads, g.batch));
  std::vector<std::vector<T>> copies(slices - 1);
  std::fill(dw, dw + size, T(0));
  parallel_for<ActiveRows<X, T>>(pool, slices, slices, [&](int64_t slice, ActiveRows<X, T>& rows) {
    T* acc = dw;
    if (slice > 0) {
      copies[slice - 1].assign(size, T(0));
      acc = copies[slice - 1].data();
    }
    const int64_t n1 = g.batch * (slice + 1) / slices;
    for (int64_t n = g.batch * slice / slices; n < n1; ++n) {
      rows.build(x + n * g.length * g.channels, g);
      const T* dyn = dy + n * g.out_len * g.outs;
      for (int64_t group = 0; group < g.groups; ++group) {
        const int64_t* start = rows.start.data() + group * g.length;
        for (int64_t h = 0; h < g.length; ++h) {
          if (start[h] == start[h + 1]) continue;
          for (int64_t k = 0; k < g.taps; ++k) {
            const int64_t t = g.target(h, k);
            if (t < 0) continue;
            scatter_row(dyn + t * g.outs + group * og, acc + group * og + (k - h) * tap, rows,
                        start[h], start[h + 1], og);
          }
        }
      }
    }
  });
  for (const auto& copy : copies) {
    for (int64_t i = 0; i < size; ++i) dw[i] += copy[i];
  }
}

}  // namespace

// --- FFI handlers -------------------------------------------------------------------------
// (Left out with -DBP_CONV_EXT_NO_FFI, to call the kernels above from a C++ program.)
#ifndef BP_CONV_EXT_NO_FFI

namespace {

namespace ffi = xla::ffi;

Geometry geometry(ffi::AnyBuffer x, ffi::AnyBuffer kernel_shape, int64_t out_len, int64_t stride,
                  int64_t low, int64_t lhs, int64_t rhs, int64_t groups) {
  auto xd = x.dimensions();
  auto wd = kernel_shape.dimensions();
  return Geometry{xd[0], xd[1], xd[2], wd[0], wd[1], wd[2], out_len,
                  stride, low, lhs, rhs, groups};
}

template <typename Call>
ffi::Error dispatch(ffi::DataType x_type, ffi::DataType type, const Call& call) {
  auto with_x = [&](auto t) -> ffi::Error {
    using T = decltype(t);
    switch (x_type) {
      case ffi::DataType::PRED: return call(bool{}, t);
      case ffi::DataType::F32: return call(float{}, t);
      case ffi::DataType::F64: return call(double{}, t);
      default:
        return ffi::Error(ffi::ErrorCode::kInvalidArgument, "unsupported input dtype");
    }
  };
  switch (type) {
    case ffi::DataType::F32: return with_x(float{});
    case ffi::DataType::F64: return with_x(double{});
    default:
      return ffi::Error(ffi::ErrorCode::kInvalidArgument, "unsupported kernel dtype");
  }
}

// One handler for both kernels: the forward (operand w, output y) and the kernel gradient
// (operand dy, output dw).
template <bool kForward>
ffi::Error Handler(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer operand,
                   ffi::Result<ffi::AnyBuffer> out, int64_t stride, int64_t low, int64_t lhs,
                   int64_t rhs, int64_t groups, int64_t threads) {
  if (operand.element_type() != out->element_type())
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "operand and output dtypes differ");
  const ffi::AnyBuffer& kernel = kForward ? operand : *out;
  const int64_t out_len = (kForward ? out->dimensions() : operand.dimensions())[1];
  const Geometry g = geometry(x, kernel, out_len, stride, low, lhs, rhs, groups);
  return dispatch(x.element_type(), operand.element_type(), [&](auto xv, auto tv) {
    using X = decltype(xv);
    using T = decltype(tv);
    const X* input = reinterpret_cast<const X*>(x.untyped_data());
    const T* in = reinterpret_cast<const T*>(operand.untyped_data());
    T* result = reinterpret_cast<T*>(out->untyped_data());
    if constexpr (kForward) {
      forward<X, T>(pool, input, in, result, g, threads);
    } else {
      kernel_grad<X, T>(pool, input, in, result, g, threads);
    }
    return ffi::Error::Success();
  });
}

}  // namespace

#define BP_CONV_EXT_BIND(binding)          \
  binding.Ctx<ffi::ThreadPool>()           \
      .Arg<ffi::AnyBuffer>()               \
      .Arg<ffi::AnyBuffer>()               \
      .Ret<ffi::AnyBuffer>()               \
      .Attr<int64_t>("stride")             \
      .Attr<int64_t>("low")                \
      .Attr<int64_t>("lhs_dilation")       \
      .Attr<int64_t>("rhs_dilation")       \
      .Attr<int64_t>("groups")             \
      .Attr<int64_t>("threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(bp_conv_ext_event_forward, Handler<true>,
                              BP_CONV_EXT_BIND(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bp_conv_ext_event_kernel_grad, Handler<false>,
                              BP_CONV_EXT_BIND(ffi::Ffi::Bind()));
#endif  // BP_CONV_EXT_NO_FFI

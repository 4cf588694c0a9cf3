// The spiking layer over a whole sequence on the CPU: a 1-D convolution (stride 1, one group)
// into LIF neurons, forward and backward, called from JAX through the XLA FFI (cxx_cpu.py
// builds it into one library with event_cpu.cc; bp_conv_ext/ops/fused.py calls it).
//
// Layouts: xs [T, N, H, C] (bool or float32), w [K, C, O], b [O], v0, v and their gradients
// [N, P, O] (P: the output length), spikes, the saved potentials u, the surrogate's derivative
// g and the spikes' gradient ds [T, N, P, O]. Output p, tap k reads input h = p + k * rhs - low.
//
// forward: threads over the batch; for each row, step by step, the active inputs of the step
// (spikes, or nonzero floats) are compacted into one list per input sample; then for each
// block of up to 64 outputs of an output sample, the current is summed in vector registers
// from the bias and the kernel rows of the active inputs its taps read (the work follows the
// spikes), and the neurons advance with exactly the float32 arithmetic of
// bp_conv_ext.ops.fused.lif_update: exponential Euler, soft or hard reset, the reset applied
// after the spike (brainpy.dyn.Lif) or first thing in the next step (brainpy.state.LIF). The
// potentials stay in a per-thread buffer across the steps; the spikes are written as bool (one
// byte each), and, for the backward, the potential before the reset (u) of every step. Where the
// kernel is not all finite every input is active, zeros included (0 * inf is NaN, as in a dense
// convolution).
// backward: threads over slices of the batch; for each row, from the last step to the first,
// the reverse LIF recursion (g given: any surrogate's derivative, computed in JAX) gives the
// gradient dI of the step's current; then the bias gradient, the kernel gradient over the
// active inputs (every input where dI is not all finite) and, when asked, the input gradient
// dx[h, c] = sum over taps k and outputs o of w[k, c, o] * dI[p, o]. Kernel and bias gradients
// are summed per slice, then added. No fast-math: NaN and inf propagate as in the unfused layer.
#include <cmath>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "cpu_common.h"

#ifndef BP_CONV_EXT_NO_FFI
#include "xla/ffi/api/ffi.h"
#endif

namespace {

// Subnormal floats read and written as zero while it lives, as XLA's CPU code treats them
// (x86: the FTZ and DAZ bits of the thread's MXCSR, restored after): the same spikes where a
// potential is subnormal, and no slow arithmetic on subnormals in the surrogates' tails.
struct FlushSubnormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushSubnormals() { _mm_setcsr(saved); }
#endif
};

struct Shape {
  int64_t steps, batch, length, channels, taps, outs, out_len, low, rhs;

  int64_t frame_in() const { return length * channels; }     // one step of one row: xs
  int64_t frame_out() const { return out_len * outs; }       // and the neurons
  // The input sample tap k of output p reads, or -1 (padding).
  int64_t source(int64_t p, int64_t k) const {
    const int64_t h = p + k * rhs - low;
    return h >= 0 && h < length ? h : -1;
  }
  // The output that input h reaches through tap k, or -1.
  int64_t target(int64_t h, int64_t k) const {
    const int64_t p = h + low - k * rhs;
    return p >= 0 && p < out_len ? p : -1;
  }
};

// The neurons' constants, as float32 (what JAX makes of the Python floats of fused.LIF):
// a = 1 - decay, c = v_th - v_reset (each rounded once, from double).
struct Neurons {
  float a, v_rest, v_th, v_reset, r, c;
  bool soft, reset_first, surrogate, detach;
  // The surrogate's derivative computed here (else given as g): its kind and parameters.
  int64_t slope;
  float alpha, beta;
};

// The surrogates whose derivative the kernel computes, at x = u - v_th (reset_first: at
// (u - v_th) / c, divided by c). fused.py checks each against JAX's derivative before it
// hands one over.
enum Slope : int64_t { kGiven = 0, kSigmoid, kArctan, kInvSquare, kRelu, kGaussian };

// Slopes are computed a vector of float32 at a time (the vector extension's operators: the
// compiler does not vectorize the same loops written with scalar calls).
using Floats = Lanes<float>::type;
using Ints = Lanes<int32_t>::type;
constexpr int64_t kLanes = sizeof(Floats) / sizeof(float);

// e^x: x = k ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor polynomial to r^7 (within 2 ulp
// of e^x), times 2^k. x is clamped to [-87, 88] (e^x a normal float32): below, about 1.6e-38
// instead of a smaller number or 0; above, 1.7e38 instead of more or inf. NaN stays NaN.
inline Floats exp_of(Floats x) {
  x = x < -87.f ? Floats{} - 87.f : x;
  x = x > 88.f ? Floats{} + 88.f : x;
  const Floats k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  const Floats r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
  Floats p = Floats{} + 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const Ints bits = (__builtin_convertvector(k, Ints) + 127) << 23;
  Floats scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline Floats abs_of(Floats x) { return x < 0.f ? -x : x; }

// Floats from p[0:width], zeros past it (a whole vector, read at once, where width is).
inline Floats load(const float* p, int64_t width) {
  Floats v{};
  if (width == kLanes) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    std::memcpy(&v, p, width * sizeof(float));
  }
  return v;
}

// p[0:width] = v[0:width].
inline void store(float* p, const Floats& v, int64_t width) {
  if (width == kLanes) {
    std::memcpy(p, &v, sizeof(v));
  } else {
    std::memcpy(p, &v, width * sizeof(float));
  }
}

// The derivative of surrogate kKind at x.
template <int64_t kKind>
inline Floats slope_at(const Neurons& n, Floats x) {
  if constexpr (kKind == kSigmoid) {
    const Floats s = 1.f / (1.f + exp_of(-(n.alpha * x)));
    return (1.f - s) * s * n.alpha;
  } else if constexpr (kKind == kArctan) {
    const Floats y = 1.5707963267948966f * n.alpha * x;
    return n.alpha * 0.5f / (1.f + y * y);
  } else if constexpr (kKind == kInvSquare) {
    const Floats y = n.alpha * abs_of(x) + 1.f;
    return 1.f / (y * y);
  } else if constexpr (kKind == kRelu) {
    const Floats m = n.alpha * n.beta - abs_of(x) * n.alpha;
    return m < 0.f ? Floats{} : m;     // max(m, 0), NaN kept
  } else {
    return n.alpha * exp_of(-(x * x) / (2.f * n.beta * n.beta)) /
           (2.5066282746310002f * n.beta);
  }
}

template <int64_t kKind>
void slopes_of(const Neurons& n, const float* u, int64_t count, float* g) {
  for (int64_t e = 0; e < count; e += kLanes) {
    const int64_t width = std::min<int64_t>(kLanes, count - e);
    const Floats x = load(u + e, width);
    store(g + e, n.reset_first ? slope_at<kKind>(n, (x - n.v_th) / n.c) / n.c
                               : slope_at<kKind>(n, x - n.v_th), width);
  }
}

// The surrogate's derivative at the potentials u[0:count], into g.
inline void slopes(const Neurons& n, const float* u, int64_t count, float* g) {
  switch (n.slope) {
    case kSigmoid: return slopes_of<kSigmoid>(n, u, count, g);
    case kArctan: return slopes_of<kArctan>(n, u, count, g);
    case kInvSquare: return slopes_of<kInvSquare>(n, u, count, g);
    case kRelu: return slopes_of<kRelu>(n, u, count, g);
    default: return slopes_of<kGaussian>(n, u, count, g);
  }
}

// The active inputs of one step of one row: for input sample h, the channels
// channel[start[h] : start[h + 1]] with their values (every channel where `dense`).
template <typename X>
struct Active {
  std::vector<int64_t> start, channel;
  std::vector<float> value;

  void build(const X* x, const Shape& s, bool dense) {
    start.resize(s.length + 1);
    channel.resize(s.frame_in());
    value.resize(s.frame_in());
    int64_t m = 0;
    for (int64_t h = 0; h < s.length; ++h) {
      start[h] = m;
      const X* row = x + h * s.channels;
      for (int64_t c = 0; c < s.channels; ++c) {
        channel[m] = c;
        value[m] = static_cast<float>(row[c]);
        m += dense || row[c] != X(0);  // NaN is active
      }
    }
    start[s.length] = m;
  }
};

template <typename X>
struct ForwardScratch {
  Active<X> active;
  std::vector<float> v;
};

// The neurons' flags as template arguments, so that their loops have no branches (and
// vectorize): soft reset, reset first, surrogate spikes.
template <bool kSoft, bool kResetFirst, bool kSurrogate>
struct Mode {
  static constexpr bool soft = kSoft, reset_first = kResetFirst, surrogate = kSurrogate;
};

// One step of `width` neurons, a vector at a time and without branches (a spike's place is
// not predictable): the potentials v (after the last step; with reset_first, before its reset)
// advanced by the currents, the spikes out and (where u is not null) the potentials before
// the reset.
template <typename M>
inline void lif_block(const Neurons& neurons, float* v, const float* current, bool* spikes,
                      float* u, int64_t width) {
  using Bytes = int8_t __attribute__((vector_size(kLanes)));
  const Neurons n = neurons;
  const Floats one = Floats{} + 1.f, zero{};
  for (int64_t o = 0; o < width; o += kLanes) {
    const int64_t count = std::min<int64_t>(kLanes, width - o);
    const Floats last_v = load(v + o, count);
    Floats w = last_v;
    if constexpr (M::reset_first) {
      const auto last = last_v >= n.v_th;
      if constexpr (M::surrogate) {
        const Floats fired = last ? one : zero;
        w = M::soft ? last_v - n.c * fired : last_v - (last_v - n.v_reset) * fired;
      } else {
        w = last ? (M::soft ? last_v - n.c : zero + n.v_reset) : last_v;
      }
    }
    const Floats before = w + n.a * ((n.v_rest - w) + n.r * load(current + o, count));
    const auto spike = before >= n.v_th;
    Floats after = before;
    if constexpr (!M::reset_first) {
      if constexpr (M::surrogate) {
        const Floats fired = spike ? one : zero;
        after = M::soft ? before - n.c * fired : before + (n.v_reset - before) * fired;
      } else {
        after = spike ? (M::soft ? before - n.c : zero + n.v_reset) : before;
      }
    }
    store(v + o, after, count);
    if (u != nullptr) store(u + o, before, count);
    const Bytes bits = __builtin_convertvector(spike, Bytes) & 1;
    std::memcpy(spikes + o, &bits, count);
  }
}

inline bool all_finite(const float* p, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

// sums[k * O + o] = sum over c of 0 * w[k, c, o] (0, or NaN where one w[k, c, o] is not
// finite) where `needed`, else empty: what the taps of a dense convolution that read zeros (its
// padding) add.
inline std::vector<float> zero_times(const float* w, int64_t taps, int64_t channels,
                                     int64_t outs, bool needed) {
  std::vector<float> sums;
  if (!needed) return sums;
  sums.assign(taps * outs, 0.f);
  for (int64_t k = 0; k < taps; ++k)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t o = 0; o < outs; ++o)
        sums[k * outs + o] += 0.f * w[(k * channels + c) * outs + o];
  return sums;
}

template <typename M, typename X, typename Pool>
void forward(Pool& pool, const X* xs, const float* w, const float* b, const float* v0,
             bool* spikes, float* v_out, float* saved, const Shape& s, const Neurons& n,
             bool dense, int64_t threads) {
  using B = Block<float, kVectors>;
  const int64_t frame = s.frame_out();
  // What a tap that reads padding adds where the kernel is not all finite: 0 * w[k, c, o]
  // summed over c (NaN where one of them is not finite), as a dense convolution adds it.
  const std::vector<float> padding = zero_times(w, s.taps, s.channels, s.outs, dense);
  parallel_for<ForwardScratch<X>>(pool, s.batch, threads, [&](int64_t row,
                                                              ForwardScratch<X>& scratch) {
    const FlushSubnormals flush;
    std::vector<float>& v = scratch.v;
    v.assign(v0 + row * frame, v0 + (row + 1) * frame);
    float current[B::kWidth];
    for (int64_t t = 0; t < s.steps; ++t) {
      scratch.active.build(xs + (t * s.batch + row) * s.frame_in(), s, dense);
      const Active<X>& active = scratch.active;
      const int64_t out = (t * s.batch + row) * frame;
      for (int64_t p = 0; p < s.out_len; ++p) {
        for (int64_t o0 = 0; o0 < s.outs; o0 += B::kWidth) {
          const int64_t width = std::min<int64_t>(B::kWidth, s.outs - o0);
          if (width == B::kWidth) {
            B sums(b + o0);
            for (int64_t k = 0; k < s.taps; ++k) {
              const int64_t h = s.source(p, k);
              if (h < 0) continue;
              const float* rows = w + k * s.channels * s.outs + o0;
              for (int64_t j = active.start[h]; j < active.start[h + 1]; ++j) {
                if constexpr (std::is_same_v<X, bool>) {
                  if (!dense) {
                    sums.add(rows + active.channel[j] * s.outs);
                    continue;
                  }
                }
                sums.add(rows + active.channel[j] * s.outs, active.value[j]);
              }
            }
            std::memcpy(current, sums.acc, sizeof(current));
          } else {
            std::copy(b + o0, b + o0 + width, current);
            for (int64_t k = 0; k < s.taps; ++k) {
              const int64_t h = s.source(p, k);
              if (h < 0) continue;
              const float* rows = w + k * s.channels * s.outs + o0;
              for (int64_t j = active.start[h]; j < active.start[h + 1]; ++j) {
                const float* row = rows + active.channel[j] * s.outs;
                const float x = active.value[j];
                for (int64_t o = 0; o < width; ++o) current[o] += x * row[o];
              }
            }
          }
          if (dense) {
            for (int64_t k = 0; k < s.taps; ++k) {
              if (s.source(p, k) >= 0) continue;
              for (int64_t o = 0; o < width; ++o) current[o] += padding[k * s.outs + o0 + o];
            }
          }
          const int64_t at = p * s.outs + o0;
          lif_block<M>(n, v.data() + at, current, spikes + out + at,
                       saved != nullptr ? saved + out + at : nullptr, width);
        }
      }
    }
    std::copy(v.begin(), v.end(), v_out + row * frame);
  });
}

// --- backward -----------------------------------------------------------------------------

// The gradient reaching the potential u from the reset that follows it (reset applied after
// the spike) or that starts the next step (reset_first), given the gradient dw of the potential
// after that reset; adds the reset's share of the spike's gradient to ds.
template <typename M>
inline Floats through_reset(const Neurons& n, Floats u, Floats dw, Floats& ds) {
  const auto fired = u >= n.v_th;
  if constexpr (!M::surrogate) {
    // where(spike, reset, u): a soft reset passes the gradient, a hard one blocks it.
    return M::soft ? dw : (fired ? Floats{} : dw);
  } else if constexpr (M::reset_first) {
    // w = u - c * s (soft), u - (stop_gradient(u) - v_reset) * s (hard).
    ds += M::soft ? -(n.c * dw) : -(dw * (u - n.v_reset));
    return dw;
  } else if constexpr (M::soft) {
    // v = u - c * s
    ds += n.c * -dw;
    return dw;
  } else {
    // v = u + (v_reset - u) * s
    ds += dw * (n.v_reset - u);
    return dw - dw * (fired ? Floats{} + 1.f : Floats{});
  }
}

// One step of the reverse recursion over the `frame` neurons of one row: from the gradient
// `carry` of the potentials after step t (reset_first: of u_t) to the gradient di of the
// step's current and, in carry, that of the potentials after step t - 1. `prev` and
// `prev_g`: u and g of step t - 1 (or v0 and g0); g and ds are read where kSpikes (the spikes
// pass a gradient). Returns whether every di is finite.
template <typename M, bool kSpikes>
bool reverse_step(const Neurons& n, int64_t frame, const float* u, const float* g,
                  const float* ds, const float* prev, const float* prev_g, float* carry,
                  float* di) {
  Ints bad{};
  for (int64_t e = 0; e < frame; e += kLanes) {
    const int64_t width = std::min<int64_t>(kLanes, frame - e);
    const Floats d = load(carry + e, width);
    Floats spike_ct = kSpikes ? load(ds + e, width) : Floats{};
    Floats du = M::reset_first ? d : through_reset<M>(n, load(u + e, width), d, spike_ct);
    if constexpr (kSpikes) du += spike_ct * load(g + e, width);
    const Floats t1 = n.a * du;
    const Floats grad = t1 * n.r;
    const Floats dw = du - t1;   // the gradient of the potential the step started from
    Floats next = dw;
    if constexpr (M::reset_first) {
      // Through this step's opening reset of the previous state.
      Floats last_ct{};
      next = through_reset<M>(n, load(prev + e, width), dw, last_ct);
      if constexpr (M::surrogate) {
        if (prev_g != nullptr) next += last_ct * load(prev_g + e, width);
      }
    }
    store(di + e, grad, width);
    store(carry + e, next, width);
    bad |= !(abs_of(grad) <= std::numeric_limits<float>::max());   // inf or NaN
  }
  for (int64_t i = 0; i < kLanes; ++i)
    if (bad[i]) return false;
  return true;
}

// sums[i] += sum over o of src[i][o] * wt[o * padded : +kLanes] for i < kRows: input rows
// in registers, one kernel vector read for all of them.
template <int kRows>
inline void input_rows(Floats* sums, const float* const* src, const float* wt, int64_t outs,
                       int64_t padded) {
  for (int64_t o = 0; o < outs; ++o) {
    Floats wv;
    std::memcpy(&wv, wt + o * padded, sizeof(wv));
    for (int i = 0; i < kRows; ++i) sums[i] += src[i][o] * wv;
  }
}

// dx[h, c] = sum over taps k and outputs o of w[k, c, o] * di[p, o], p the output that input h
// reaches through tap k (one step of one row): four input samples at a time, their channels
// a vector at a time. Taps that reach no output (padding) add nothing.
inline void input_grad(const Shape& s, const float* wt, int64_t padded, const float* di,
                       const float* zero_inputs, float* dx) {
  constexpr int kRows = 4;
  for (int64_t c0 = 0; c0 < padded; c0 += kLanes) {
    const int64_t width = std::min<int64_t>(kLanes, s.channels - c0);
    for (int64_t h0 = 0; h0 < s.length; h0 += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, s.length - h0);
      Floats sums[kRows] = {};
      for (int64_t k = 0; k < s.taps; ++k) {
        const float* src[kRows];
        int reached = 0;
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t p = s.target(h0 + i, k);
          src[i] = p >= 0 ? di + p * s.outs : nullptr;
          reached += p >= 0;
        }
        const float* wk = wt + k * s.outs * padded + c0;
        if (reached == kRows) {
          input_rows<kRows>(sums, src, wk, s.outs, padded);
        } else {
          for (int64_t i = 0; i < rows; ++i) {
            if (src[i] != nullptr) input_rows<1>(sums + i, src + i, wk, s.outs, padded);
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        std::memcpy(dx + (h0 + i) * s.channels + c0, &sums[i], width * sizeof(float));
      }
    }
  }
  if (zero_inputs == nullptr) return;
  for (int64_t h = 0; h < s.length; ++h) {
    for (int64_t k = 0; k < s.taps; ++k) {
      if (s.target(h, k) >= 0) continue;
      for (int64_t c = 0; c < s.channels; ++c) {
        dx[h * s.channels + c] += zero_inputs[k * s.channels + c];
      }
    }
  }
}

struct BackwardScratch {
  Active<bool> spikes;
  Active<float> values;
  std::vector<float> carry, current, slope, prev_slope;
};

template <typename X>
Active<X>& active_of(BackwardScratch& scratch);
template <>
Active<bool>& active_of<bool>(BackwardScratch& scratch) { return scratch.spikes; }
template <>
Active<float>& active_of<float>(BackwardScratch& scratch) { return scratch.values; }

// dx (may be null), dw, db, dv0 from xs, w, the saved u, g (null without a surrogate
// gradient), ds (null likewise), dv and (reset_first) v0 and g0.
template <typename M, typename X, typename Pool>
void backward(Pool& pool, const X* xs, const float* w, const float* u, const float* g,
              const float* ds, const float* dv, const float* v0, const float* g0, float* dx,
              float* dw, float* db, float* dv0, const Shape& s, const Neurons& n,
              int64_t threads) {
  const int64_t frame = s.frame_out();
  const int64_t kernel_size = s.taps * s.channels * s.outs;
  const int64_t slices = std::max<int64_t>(1, std::min(threads, s.batch));
  // Slice i sums into sums[i]: [dw | db].
  std::vector<std::vector<float>> sums(slices);
  // The kernel transposed, [K, O, C'], C' the channels padded to whole vectors, for the
  // input gradient.
  const int64_t padded = (s.channels + kLanes - 1) / kLanes * kLanes;
  std::vector<float> wt;
  if (dx != nullptr) {
    wt.assign(s.taps * s.outs * padded, 0.f);
    for (int64_t k = 0; k < s.taps; ++k)
      for (int64_t c = 0; c < s.channels; ++c)
        for (int64_t o = 0; o < s.outs; ++o)
          wt[(k * s.outs + o) * padded + c] = w[(k * s.channels + c) * s.outs + o];
  }
  // What a tap that reaches no output adds to the input gradient where the kernel is not all
  // finite: 0 * w[k, c, o] summed over o, as the dense gradient (a convolution of the padded
  // di) adds it; else empty.
  std::vector<float> zero_inputs;
  if (dx != nullptr && !all_finite(w, kernel_size)) {
    zero_inputs.assign(s.taps * s.channels, 0.f);
    for (int64_t k = 0; k < s.taps; ++k)
      for (int64_t c = 0; c < s.channels; ++c)
        for (int64_t o = 0; o < s.outs; ++o)
          zero_inputs[k * s.channels + c] += 0.f * w[(k * s.channels + c) * s.outs + o];
  }
  const bool spike_grad = n.surrogate && (n.reset_first || !n.detach);
  parallel_for<BackwardScratch>(pool, slices, slices, [&](int64_t slice,
                                                         BackwardScratch& scratch) {
    const FlushSubnormals flush;
    std::vector<float>& acc = sums[slice];
    acc.assign(kernel_size + s.outs, 0.f);
    float* kernel_grad = acc.data();
    float* bias_grad = acc.data() + kernel_size;
    std::vector<float>& carry = scratch.carry;    // the gradient of the potential after step t
    std::vector<float>& di = scratch.current;     // the gradient of step t's current
    Active<X>& active = active_of<X>(scratch);
    di.resize(frame);
    scratch.slope.resize(frame);
    scratch.prev_slope.resize(frame);
    const int64_t row1 = s.batch * (slice + 1) / slices;
    for (int64_t row = s.batch * slice / slices; row < row1; ++row) {
      carry.assign(dv + row * frame, dv + (row + 1) * frame);
      for (int64_t t = s.steps - 1; t >= 0; --t) {
        const int64_t at = (t * s.batch + row) * frame;
        const int64_t before = at - s.batch * frame;     // step t - 1, same row
        const float* prev = t > 0 ? u + before : v0 + row * frame;
        const float* prev_g = t > 0 ? (g != nullptr ? g + before : nullptr)
                                    : (g0 != nullptr ? g0 + row * frame : nullptr);
        const float* g_t = g != nullptr ? g + at : nullptr;
        if (spike_grad && g == nullptr) {
          // The kernel's own surrogate: this step's slopes (kept from the last iteration,
          // where they were the previous step's) and, resetting first, the previous step's.
          if (t == s.steps - 1) slopes(n, u + at, frame, scratch.slope.data());
          g_t = scratch.slope.data();
          if (n.reset_first) {
            slopes(n, prev, frame, scratch.prev_slope.data());
            prev_g = scratch.prev_slope.data();
          }
        }
        const bool finite =
            spike_grad ? reverse_step<M, true>(n, frame, u + at, g_t, ds + at, prev, prev_g,
                                               carry.data(), di.data())
                       : reverse_step<M, false>(n, frame, u + at, nullptr, nullptr, prev,
                                                prev_g, carry.data(), di.data());
        if (spike_grad && g == nullptr && t > 0) {
          if (n.reset_first) {
            std::swap(scratch.slope, scratch.prev_slope);
          } else {
            slopes(n, u + before, frame, scratch.slope.data());
          }
        }
        for (int64_t p = 0; p < s.out_len; ++p)
          for (int64_t o = 0; o < s.outs; ++o) bias_grad[o] += di[p * s.outs + o];
        const X* x = xs + (t * s.batch + row) * s.frame_in();
        active.build(x, s, !finite);
        for (int64_t h = 0; h < s.length; ++h) {
          for (int64_t k = 0; k < s.taps; ++k) {
            const int64_t p = s.target(h, k);
            if (p < 0) continue;
            const float* src = di.data() + p * s.outs;
            float* rows = kernel_grad + k * s.channels * s.outs;
            for (int64_t j = active.start[h]; j < active.start[h + 1]; ++j) {
              float* dst = rows + active.channel[j] * s.outs;
              const float scale = active.value[j];
              for (int64_t o = 0; o < s.outs; ++o) dst[o] += scale * src[o];
            }
          }
        }
        if (!finite) {
          // The zeros of the padding times di, as the dense kernel gradient sums them.
          for (int64_t p = 0; p < s.out_len; ++p) {
            for (int64_t k = 0; k < s.taps; ++k) {
              if (s.source(p, k) >= 0) continue;
              const float* src = di.data() + p * s.outs;
              for (int64_t c = 0; c < s.channels; ++c) {
                float* dst = kernel_grad + (k * s.channels + c) * s.outs;
                for (int64_t o = 0; o < s.outs; ++o) dst[o] += 0.f * src[o];
              }
            }
          }
        }
        if (dx != nullptr) {
          input_grad(s, wt.data(), padded, di.data(), zero_inputs.empty() ? nullptr
                                                                         : zero_inputs.data(),
                     dx + (t * s.batch + row) * s.frame_in());
        }
      }
      std::copy(carry.begin(), carry.end(), dv0 + row * frame);
    }
  });
  std::fill(dw, dw + kernel_size, 0.f);
  std::fill(db, db + s.outs, 0.f);
  for (const auto& acc : sums) {
    for (int64_t i = 0; i < kernel_size; ++i) dw[i] += acc[i];
    for (int64_t o = 0; o < s.outs; ++o) db[o] += acc[kernel_size + o];
  }
}

}  // namespace

// --- FFI handlers -------------------------------------------------------------------------
#ifndef BP_CONV_EXT_NO_FFI

namespace {

namespace ffi = xla::ffi;

Neurons neurons(double a, double v_rest, double v_th, double v_reset, double r, double c,
                int64_t soft, int64_t reset_first, int64_t surrogate, int64_t detach,
                int64_t slope, double alpha, double beta) {
  return Neurons{float(a), float(v_rest), float(v_th), float(v_reset), float(r), float(c),
                 soft != 0, reset_first != 0, surrogate != 0, detach != 0,
                 slope, float(alpha), float(beta)};
}

// call(Mode<...>{}) for the neurons' flags.
template <typename Call>
ffi::Error with_mode(const Neurons& n, const Call& call) {
  auto reset = [&](auto soft) {
    constexpr bool kSoft = decltype(soft)::value;
    if (n.reset_first) {
      return n.surrogate ? call(Mode<kSoft, true, true>{}) : call(Mode<kSoft, true, false>{});
    }
    return n.surrogate ? call(Mode<kSoft, false, true>{}) : call(Mode<kSoft, false, false>{});
  };
  return n.soft ? reset(std::true_type{}) : reset(std::false_type{});
}


ffi::Error Forward(ffi::ThreadPool pool, ffi::AnyBuffer xs, ffi::AnyBuffer w, ffi::AnyBuffer b,
                   ffi::AnyBuffer v0, ffi::Result<ffi::AnyBuffer> spikes,
                   ffi::Result<ffi::AnyBuffer> v, ffi::Result<ffi::AnyBuffer> saved,
                   int64_t low, int64_t rhs, double a, double v_rest, double v_th,
                   double v_reset, double r, double c, int64_t soft, int64_t reset_first,
                   int64_t surrogate, int64_t detach, int64_t slope, double alpha,
                   double beta, int64_t threads) {
  if (w.element_type() != ffi::DataType::F32 || b.element_type() != ffi::DataType::F32 ||
      v0.element_type() != ffi::DataType::F32)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "w, b and v0 must be float32");
  auto xd = xs.dimensions();
  auto wd = w.dimensions();
  const Shape s{xd[0], xd[1], xd[2], xd[3], wd[0], wd[2], v0.dimensions()[1], low, rhs};
  const Neurons n = neurons(a, v_rest, v_th, v_reset, r, c, soft, reset_first, surrogate,
                            detach, slope, alpha, beta);
  const float* wp = reinterpret_cast<const float*>(w.untyped_data());
  const bool dense = !all_finite(wp, s.taps * s.channels * s.outs);
  float* keep = saved->element_count() ? reinterpret_cast<float*>(saved->untyped_data())
                                       : nullptr;
  if (spikes->element_type() != ffi::DataType::PRED)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "spikes must be bool");
  auto run = [&](auto x_type) {
    using X = decltype(x_type);
    return with_mode(n, [&](auto mode) {
      forward<decltype(mode), X>(pool, reinterpret_cast<const X*>(xs.untyped_data()), wp,
                                 reinterpret_cast<const float*>(b.untyped_data()),
                                 reinterpret_cast<const float*>(v0.untyped_data()),
                                 reinterpret_cast<bool*>(spikes->untyped_data()),
                                 reinterpret_cast<float*>(v->untyped_data()), keep, s, n, dense,
                                 threads);
      return ffi::Error::Success();
    });
  };
  switch (xs.element_type()) {
    case ffi::DataType::PRED: return run(bool{});
    case ffi::DataType::F32: return run(float{});
    default: return ffi::Error(ffi::ErrorCode::kInvalidArgument, "xs must be bool or float32");
  }
}

const float* optional(const ffi::AnyBuffer& buffer) {
  return buffer.element_count() ? reinterpret_cast<const float*>(buffer.untyped_data()) : nullptr;
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::AnyBuffer xs, ffi::AnyBuffer w, ffi::AnyBuffer u,
                    ffi::AnyBuffer g, ffi::AnyBuffer ds, ffi::AnyBuffer dv, ffi::AnyBuffer v0,
                    ffi::AnyBuffer g0, ffi::Result<ffi::AnyBuffer> dx,
                    ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> db,
                    ffi::Result<ffi::AnyBuffer> dv0, int64_t low, int64_t rhs, double a,
                    double v_rest, double v_th, double v_reset, double r, double c, int64_t soft,
                    int64_t reset_first, int64_t surrogate, int64_t detach,
                    int64_t slope, double alpha, double beta, int64_t threads) {
  auto xd = xs.dimensions();
  auto wd = w.dimensions();
  const Shape s{xd[0], xd[1], xd[2], xd[3], wd[0], wd[2], dv.dimensions()[1], low, rhs};
  const Neurons n = neurons(a, v_rest, v_th, v_reset, r, c, soft, reset_first, surrogate,
                            detach, slope, alpha, beta);
  float* input_grad = dx->element_count() ? reinterpret_cast<float*>(dx->untyped_data())
                                          : nullptr;
  auto run = [&](auto x_type) {
    using X = decltype(x_type);
    return with_mode(n, [&](auto mode) {
    backward<decltype(mode), X>(pool, reinterpret_cast<const X*>(xs.untyped_data()),
                reinterpret_cast<const float*>(w.untyped_data()), optional(u), optional(g),
                optional(ds), optional(dv), optional(v0), optional(g0), input_grad,
                reinterpret_cast<float*>(dw->untyped_data()),
                reinterpret_cast<float*>(db->untyped_data()),
                reinterpret_cast<float*>(dv0->untyped_data()), s, n, threads);
    return ffi::Error::Success();
    });
  };
  switch (xs.element_type()) {
    case ffi::DataType::PRED: return run(bool{});
    case ffi::DataType::F32: return run(float{});
    default: return ffi::Error(ffi::ErrorCode::kInvalidArgument, "xs must be bool or float32");
  }
}

}  // namespace

#define BP_CONV_EXT_NEURONS(binding)       \
  binding.Attr<int64_t>("low")             \
      .Attr<int64_t>("rhs_dilation")       \
      .Attr<double>("a")                   \
      .Attr<double>("v_rest")              \
      .Attr<double>("v_th")                \
      .Attr<double>("v_reset")             \
      .Attr<double>("r")                   \
      .Attr<double>("c")                   \
      .Attr<int64_t>("soft")               \
      .Attr<int64_t>("reset_first")        \
      .Attr<int64_t>("surrogate")          \
      .Attr<int64_t>("detach")             \
      .Attr<int64_t>("slope")              \
      .Attr<double>("alpha")               \
      .Attr<double>("beta")                \
      .Attr<int64_t>("threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(bp_conv_ext_conv_lif_forward, Forward,
                              BP_CONV_EXT_NEURONS(ffi::Ffi::Bind()
                                                      .Ctx<ffi::ThreadPool>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bp_conv_ext_conv_lif_backward, Backward,
                              BP_CONV_EXT_NEURONS(ffi::Ffi::Bind()
                                                      .Ctx<ffi::ThreadPool>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Arg<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()
                                                      .Ret<ffi::AnyBuffer>()));
#endif  // BP_CONV_EXT_NO_FFI

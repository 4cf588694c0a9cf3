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
// potentials stay in a per-thread buffer across the steps; the spikes are written as bool or
// float32, and, for the backward, the potential before the reset (u) of every step. Where the
// kernel is not all finite every input is active, zeros included (0 * inf is NaN, as in a dense
// convolution).
// backward: threads over slices of the batch; for each row, from the last step to the first,
// the reverse LIF recursion (g given: any surrogate's derivative, computed in JAX) gives the
// gradient dI of the step's current; then the bias gradient, the kernel gradient over the
// active inputs (every input where dI is not all finite) and, when asked, the input gradient
// dx[h, c] = sum over taps k and outputs o of w[k, c, o] * dI[p, o]. Kernel and bias gradients
// are summed per slice, then added. No fast-math: NaN and inf propagate as in the unfused layer.
#include <cmath>

#include "cpu_common.h"

#ifndef BP_CONV_EXT_NO_FFI
#include "xla/ffi/api/ffi.h"
#endif

namespace {

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
};

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

// One neuron's step: the potential v (after the last step; with reset_first, before its
// reset) and the current; returns the potential before the reset, u, and sets v and spike.
inline float lif_step(const Neurons& n, float& v, float current, bool& spike) {
  float w = v;
  if (n.reset_first) {
    const bool last = v >= n.v_th;
    if (n.surrogate) {
      const float fired = last ? 1.f : 0.f;
      w = n.soft ? v - n.c * fired : v - (v - n.v_reset) * fired;
    } else if (last) {
      w = n.soft ? v - n.c : n.v_reset;
    }
  }
  const float u = w + n.a * ((n.v_rest - w) + n.r * current);
  spike = u >= n.v_th;
  if (n.reset_first) {
    v = u;
  } else if (n.surrogate) {
    const float fired = spike ? 1.f : 0.f;
    v = n.soft ? u - n.c * fired : u + (n.v_reset - u) * fired;
  } else {
    v = spike ? (n.soft ? u - n.c : n.v_reset) : u;
  }
  return u;
}

template <typename X, typename S, typename Pool>
void forward(Pool& pool, const X* xs, const float* w, const float* b, const float* v0,
             S* spikes, float* v_out, float* saved, const Shape& s, const Neurons& n,
             bool dense, int64_t threads) {
  using B = Block<float, kVectors>;
  const int64_t frame = s.frame_out();
  parallel_for<ForwardScratch<X>>(pool, s.batch, threads, [&](int64_t row,
                                                              ForwardScratch<X>& scratch) {
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
          const int64_t at = p * s.outs + o0;
          for (int64_t o = 0; o < width; ++o) {
            bool spike;
            const float u = lif_step(n, v[at + o], current[o], spike);
            spikes[out + at + o] = static_cast<S>(spike);
            if (saved != nullptr) saved[out + at + o] = u;
          }
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
inline float through_reset(const Neurons& n, float u, float dw, float& ds) {
  const bool fired = u >= n.v_th;
  if (!n.surrogate) {
    // where(spike, reset, u): a soft reset passes the gradient, a hard one blocks it.
    return n.soft || !fired ? dw : 0.f;
  }
  const float f = fired ? 1.f : 0.f;
  if (n.reset_first) {
    // w = u - c * s (soft), u - (stop_gradient(u) - v_reset) * s (hard).
    ds += n.soft ? -(n.c * dw) : -(dw * (u - n.v_reset));
    return dw;
  }
  // v = u - c * s (soft), u + (v_reset - u) * s (hard).
  if (n.soft) {
    ds += n.c * -dw;
    return dw;
  }
  ds += dw * (n.v_reset - u);
  return dw - dw * f;
}

struct BackwardScratch {
  Active<bool> spikes;
  Active<float> values;
  std::vector<float> carry, current;
};

template <typename X>
Active<X>& active_of(BackwardScratch& scratch);
template <>
Active<bool>& active_of<bool>(BackwardScratch& scratch) { return scratch.spikes; }
template <>
Active<float>& active_of<float>(BackwardScratch& scratch) { return scratch.values; }

// dx (may be null), dw, db, dv0 from xs, w, the saved u, g (null without a surrogate
// gradient), ds (null likewise), dv and (reset_first) v0 and g0.
template <typename X, typename Pool>
void backward(Pool& pool, const X* xs, const float* w, const float* u, const float* g,
              const float* ds, const float* dv, const float* v0, const float* g0, float* dx,
              float* dw, float* db, float* dv0, const Shape& s, const Neurons& n,
              int64_t threads) {
  const int64_t frame = s.frame_out();
  const int64_t kernel_size = s.taps * s.channels * s.outs;
  const int64_t slices = std::max<int64_t>(1, std::min(threads, s.batch));
  // Slice i sums into sums[i]: [dw | db].
  std::vector<std::vector<float>> sums(slices);
  // The kernel transposed, [K, O, C], for the input gradient (sums over the outputs, vectors
  // over the channels).
  std::vector<float> wt;
  if (dx != nullptr) {
    wt.resize(kernel_size);
    for (int64_t k = 0; k < s.taps; ++k)
      for (int64_t c = 0; c < s.channels; ++c)
        for (int64_t o = 0; o < s.outs; ++o)
          wt[(k * s.outs + o) * s.channels + c] = w[(k * s.channels + c) * s.outs + o];
  }
  const bool spike_grad = n.surrogate && (n.reset_first || !n.detach);
  parallel_for<BackwardScratch>(pool, slices, slices, [&](int64_t slice,
                                                         BackwardScratch& scratch) {
    std::vector<float>& acc = sums[slice];
    acc.assign(kernel_size + s.outs, 0.f);
    float* kernel_grad = acc.data();
    float* bias_grad = acc.data() + kernel_size;
    std::vector<float>& carry = scratch.carry;    // the gradient of the potential after step t
    std::vector<float>& di = scratch.current;     // the gradient of step t's current
    Active<X>& active = active_of<X>(scratch);
    di.resize(frame);
    const int64_t row1 = s.batch * (slice + 1) / slices;
    for (int64_t row = s.batch * slice / slices; row < row1; ++row) {
      carry.assign(dv + row * frame, dv + (row + 1) * frame);
      for (int64_t t = s.steps - 1; t >= 0; --t) {
        const int64_t at = (t * s.batch + row) * frame;
        bool finite = true;
        for (int64_t e = 0; e < frame; ++e) {
          const float ue = u[at + e];
          float d = carry[e];       // the gradient of the potential after step t
          float spike_ct = spike_grad ? ds[at + e] : 0.f;
          float du;
          if (n.reset_first) {
            // The state is u itself; carry holds the gradient of u_t from the next step's
            // reset (through_reset applied below) plus dv at the last step.
            du = d;
          } else {
            du = through_reset(n, ue, d, spike_ct);
          }
          if (spike_grad) du += spike_ct * g[at + e];
          const float t1 = n.a * du;
          di[e] = t1 * n.r;
          const float dw_e = du - t1;   // the gradient of the potential the step started from
          if (n.reset_first) {
            // Through this step's opening reset of the previous state u_{t-1} (or v0).
            const float prev = t > 0 ? u[at - s.batch * frame + e] : v0[row * frame + e];
            const float gp = t > 0 ? (g ? g[at - s.batch * frame + e] : 0.f)
                                   : (g0 ? g0[row * frame + e] : 0.f);
            float last_ct = 0.f;
            float dprev = through_reset(n, prev, dw_e, last_ct);
            if (n.surrogate) dprev += last_ct * gp;
            carry[e] = dprev;
          } else {
            carry[e] = dw_e;
          }
          finite = finite && std::isfinite(di[e]);
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
        if (dx != nullptr) {
          float* out = dx + (t * s.batch + row) * s.frame_in();
          std::fill(out, out + s.frame_in(), 0.f);
          for (int64_t h = 0; h < s.length; ++h) {
            float* dst = out + h * s.channels;
            for (int64_t k = 0; k < s.taps; ++k) {
              const int64_t p = s.target(h, k);
              if (p < 0) continue;
              const float* src = di.data() + p * s.outs;
              const float* rows = wt.data() + k * s.outs * s.channels;
              for (int64_t o = 0; o < s.outs; ++o) {
                const float d = src[o];
                const float* wr = rows + o * s.channels;
                for (int64_t c = 0; c < s.channels; ++c) dst[c] += d * wr[c];
              }
            }
          }
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
                int64_t soft, int64_t reset_first, int64_t surrogate, int64_t detach) {
  return Neurons{float(a), float(v_rest), float(v_th), float(v_reset), float(r), float(c),
                 soft != 0, reset_first != 0, surrogate != 0, detach != 0};
}

bool all_finite(const float* p, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::AnyBuffer xs, ffi::AnyBuffer w, ffi::AnyBuffer b,
                   ffi::AnyBuffer v0, ffi::Result<ffi::AnyBuffer> spikes,
                   ffi::Result<ffi::AnyBuffer> v, ffi::Result<ffi::AnyBuffer> saved,
                   int64_t low, int64_t rhs, double a, double v_rest, double v_th,
                   double v_reset, double r, double c, int64_t soft, int64_t reset_first,
                   int64_t surrogate, int64_t detach, int64_t threads) {
  if (w.element_type() != ffi::DataType::F32 || b.element_type() != ffi::DataType::F32 ||
      v0.element_type() != ffi::DataType::F32)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "w, b and v0 must be float32");
  auto xd = xs.dimensions();
  auto wd = w.dimensions();
  const Shape s{xd[0], xd[1], xd[2], xd[3], wd[0], wd[2], v0.dimensions()[1], low, rhs};
  const Neurons n = neurons(a, v_rest, v_th, v_reset, r, c, soft, reset_first, surrogate,
                            detach);
  const float* wp = reinterpret_cast<const float*>(w.untyped_data());
  const bool dense = !all_finite(wp, s.taps * s.channels * s.outs);
  float* keep = saved->element_count() ? reinterpret_cast<float*>(saved->untyped_data())
                                       : nullptr;
  auto run = [&](auto x_type, auto spike_type) {
    using X = decltype(x_type);
    using S = decltype(spike_type);
    forward<X, S>(pool, reinterpret_cast<const X*>(xs.untyped_data()), wp,
                  reinterpret_cast<const float*>(b.untyped_data()),
                  reinterpret_cast<const float*>(v0.untyped_data()),
                  reinterpret_cast<S*>(spikes->untyped_data()),
                  reinterpret_cast<float*>(v->untyped_data()), keep, s, n, dense, threads);
    return ffi::Error::Success();
  };
  auto with_x = [&](auto spike_type) {
    switch (xs.element_type()) {
      case ffi::DataType::PRED: return run(bool{}, spike_type);
      case ffi::DataType::F32: return run(float{}, spike_type);
      default: return ffi::Error(ffi::ErrorCode::kInvalidArgument, "xs must be bool or float32");
    }
  };
  switch (spikes->element_type()) {
    case ffi::DataType::PRED: return with_x(bool{});
    case ffi::DataType::F32: return with_x(float{});
    default: return ffi::Error(ffi::ErrorCode::kInvalidArgument, "spikes must be bool or float32");
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
                    int64_t reset_first, int64_t surrogate, int64_t detach, int64_t threads) {
  auto xd = xs.dimensions();
  auto wd = w.dimensions();
  const Shape s{xd[0], xd[1], xd[2], xd[3], wd[0], wd[2], dv.dimensions()[1], low, rhs};
  const Neurons n = neurons(a, v_rest, v_th, v_reset, r, c, soft, reset_first, surrogate,
                            detach);
  float* input_grad = dx->element_count() ? reinterpret_cast<float*>(dx->untyped_data())
                                          : nullptr;
  auto run = [&](auto x_type) {
    using X = decltype(x_type);
    backward<X>(pool, reinterpret_cast<const X*>(xs.untyped_data()),
                reinterpret_cast<const float*>(w.untyped_data()), optional(u), optional(g),
                optional(ds), optional(dv), optional(v0), optional(g0), input_grad,
                reinterpret_cast<float*>(dw->untyped_data()),
                reinterpret_cast<float*>(db->untyped_data()),
                reinterpret_cast<float*>(dv0->untyped_data()), s, n, threads);
    return ffi::Error::Success();
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

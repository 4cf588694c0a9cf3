// What the CPU kernels (event_cpu.cc, spiking_cpu.cc) share: the machine's vector registers,
// blocks of sums held in them, a parallel loop over XLA's intra-op thread pool and the
// compaction of spikes into lists. Its names are in an anonymous namespace: each source that
// includes it has its own copy.
#ifndef BP_CONV_EXT_CPU_COMMON_H_
#define BP_CONV_EXT_CPU_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

// The machine's own vector registers: their width in bytes and how many there are. (Vectors
// wider than the machine's are split by the compiler, but sums of that type live on the
// stack: 2.6x slower on AVX2.)
#if defined(__AVX512F__)
constexpr int kBytes = 64, kRegisters = 32;
#elif defined(__AVX__)
constexpr int kBytes = 32, kRegisters = 16;
#elif defined(__aarch64__)
constexpr int kBytes = 16, kRegisters = 32;
#else
constexpr int kBytes = 16, kRegisters = 16;
#endif

template <typename T>
struct Lanes {
  typedef T type __attribute__((vector_size(kBytes)));
};

// Stores one aligned vector past the caches, where the machine has such a store (kStreams).
#if defined(__AVX512F__) || defined(__AVX__)
constexpr bool kStreams = true;
#else
constexpr bool kStreams = false;
#endif
template <typename T>
inline void stream(T* out, const typename Lanes<T>::type& v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    _mm512_stream_ps(out, reinterpret_cast<const __m512&>(v));
  } else {
    _mm512_stream_pd(out, reinterpret_cast<const __m512d&>(v));
  }
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    _mm256_stream_ps(out, reinterpret_cast<const __m256&>(v));
  } else {
    _mm256_stream_pd(out, reinterpret_cast<const __m256d&>(v));
  }
#else
  std::memcpy(out, &v, sizeof(v));
#endif
}

// Blocks of outputs summed in registers: kVectors registers (256 bytes: 64 float32 outputs),
// kWide (twice that) where 32 registers of 64 bytes hold them (AVX-512). (On AVX2, 16
// registers of sums, for two output samples or 128 outputs, measured no faster or slower.)
constexpr int kVectors = 256 / kBytes;
constexpr int kWide = kRegisters * kBytes >= 2048 ? 2 * kVectors : kVectors;

template <typename T, int kCount>
struct Block {
  using V = typename Lanes<T>::type;
  static constexpr int64_t kLanes = sizeof(V) / sizeof(T);
  static constexpr int64_t kWidth = kCount * kLanes;
  V acc[kCount];

  Block() {
    for (int i = 0; i < kCount; ++i) acc[i] = V{};
  }
  explicit Block(const T* row) {
    for (int i = 0; i < kCount; ++i) acc[i] = load(row + i * kLanes);
  }
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  void add(const T* row) {
    for (int i = 0; i < kCount; ++i) acc[i] += load(row + i * kLanes);
  }
  void add(const T* row, T scale) {
    for (int i = 0; i < kCount; ++i) acc[i] += scale * load(row + i * kLanes);
  }
  // Written around the caches where the block is aligned (a convolution's output is written
  // once and read by the next operation, not by this one): no read for ownership, and the
  // kernel rows stay cached.
  void store(T* out) const {
    if (kStreams && (reinterpret_cast<uintptr_t>(out) & (kBytes - 1)) == 0) {
      for (int i = 0; i < kCount; ++i) stream(out + i * kLanes, acc[i]);
      return;
    }
    std::memcpy(out, acc, sizeof(acc));
  }
  // out += acc (times scale).
  void add_to(T* out) const {
    for (int i = 0; i < kCount; ++i) {
      const V sum = load(out + i * kLanes) + acc[i];
      std::memcpy(out + i * kLanes, &sum, sizeof(V));
    }
  }
  void add_to(T* out, T scale) const {
    for (int i = 0; i < kCount; ++i) {
      const V sum = load(out + i * kLanes) + scale * acc[i];
      std::memcpy(out + i * kLanes, &sum, sizeof(V));
    }
  }
};

// Runs body(item, scratch) for every item in [0, count): on the calling thread and on up to
// `threads - 1` tasks of XLA's intra-op thread pool, each claiming the next item until none is
// left. A task that starts after the last item was claimed returns at once, touching only the
// shared counters, so the caller never waits for a task to start. Each thread keeps its
// Scratch from call to call (no allocation, no fresh pages); a thread runs one task at a time.
// The threads of XLA's pool (at least 1); older XLA (JAX before 0.4.36) does not say, and
// then the caller's thread count stands.
template <typename Pool>
auto pool_size(Pool& pool, int) -> decltype(int64_t(pool.num_threads())) {
  return std::max<int64_t>(pool.num_threads(), 1);
}
template <typename Pool>
int64_t pool_size(Pool&, long) {
  return std::numeric_limits<int64_t>::max();
}

template <typename Scratch, typename Pool, typename Body>
void parallel_for(Pool& pool, int64_t count, int64_t threads, const Body& body) {
  struct Items {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto items = std::make_shared<Items>();
  const Body* shared = &body;
  auto run = [items, shared, count] {
    static thread_local Scratch scratch;
    for (int64_t item; (item = items->next.fetch_add(1)) < count;) {
      (*shared)(item, scratch);
#if defined(__AVX512F__) || defined(__AVX__)
      _mm_sfence();  // streaming stores are ordered before the release below
#endif
      items->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min({threads, count, pool_size(pool, 0)}) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(run)(run));
  run();
  while (items->done.load(std::memory_order_acquire) < count) std::this_thread::yield();
}

// Bit i set where bytes[i] (a bool: 0 or 1) is 1, for i in [0, 64).
inline uint64_t bits64(const unsigned char* bytes) {
#ifdef __AVX2__
  const __m256i zero = _mm256_setzero_si256();
  const uint32_t low = ~static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes)), zero)));
  const uint32_t high = ~static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + 32)), zero)));
  return uint64_t(low) | uint64_t(high) << 32;
#else
  // Byte k's low bit lands on bit 56 + k of the product, with no carries between them.
  uint64_t bits = 0;
  for (int k = 0; k < 8; ++k) {
    uint64_t word;
    std::memcpy(&word, bytes + 8 * k, sizeof(word));
    bits |= ((word * 0x0102040810204080ULL) >> 56) << (8 * k);
  }
  return bits;
#endif
}

// Writes base + c * step for every active c of x[0:count] to entry[] and, for inputs that are
// not bool, x[c] to values[]; returns how many. Words of bools that hold a spike are compacted
// without branches (a spike's position is not predictable).
template <typename X, typename T>
int64_t compact(const X* x, int64_t count, int64_t base, int64_t step, int64_t* entry,
                T* values) {
  int64_t m = 0;
  if constexpr (std::is_same_v<X, bool>) {
    const unsigned char* bits = reinterpret_cast<const unsigned char*>(x);
    int64_t c = 0;
    for (; c + 8 <= count; c += 8) {
      uint64_t word;
      std::memcpy(&word, bits + c, sizeof(word));
      if (word == 0) continue;
      for (int64_t i = c; i < c + 8; ++i) {
        entry[m] = base + i * step;
        m += bits[i];
      }
    }
    for (; c < count; ++c) {
      entry[m] = base + c * step;
      m += bits[c];
    }
  } else {
    for (int64_t c = 0; c < count; ++c) {
      if (x[c] != X(0)) {  // NaN is active
        entry[m] = base + c * step;
        values[m] = static_cast<T>(x[c]);
        ++m;
      }
    }
  }
  return m;
}

}  // namespace

#endif  // BP_CONV_EXT_CPU_COMMON_H_

// PEFT Lab native kernels: an N-API addon that computes directly on the memory of TF.js's
// WebAssembly backend (the WebAssembly.Memory ArrayBuffer). Every entry point takes that buffer
// first and byte offsets of the tensors in it (the wasm backend's `memoryOffset`s), so no data is
// copied in or out; outputs are allocated by the caller with the backend's own allocator.
//
// Built by scripts/build-native.mjs with plain g++ (C++17, -O3 -march=x86-64-v3, i.e. AVX2 + FMA)
// and shipped prebuilt per platform in dist/native/<platform>-<arch>/; the JS side loads it only on
// CPUs with those features and otherwise keeps the pure wasm kernels.
//
// Numerics: -ffp-contract=off, so element-wise kernels round exactly like the composite tfjs ops
// they replace (AdamW is bitwise equal); reductions and GEMM differ only in summation order. Every
// output element is computed by one thread in a fixed order, so results do not depend on the
// thread count.
#include <node_api.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---- errors ---------------------------------------------------------------------------------------

struct Fail {
  std::string msg;
};

// ---- thread pool ----------------------------------------------------------------------------------

class Pool {
 public:
  ~Pool() { resize(1); }
  int size() const { return n_; }

  void resize(int n) {
    n = std::max(1, std::min(n, 256));
    if (n == n_) return;
    std::lock_guard<std::mutex> owner(run_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    n_ = n;
    const unsigned g = generation_;
    for (int i = 1; i < n_; i++) workers_.emplace_back([this, g] { loop(g); });
  }

  // Runs fn(task) for every task in [0, tasks), on the calling thread and the workers.
  template <class F>
  void run(int tasks, F&& fn) {
    if (tasks <= 0) return;
    // Serial when single-threaded, nested, or when another JS thread (a worker) holds the pool.
    std::unique_lock<std::mutex> owner(run_mu_, std::defer_lock);
    if (n_ == 1 || tasks == 1 || in_parallel_ || !owner.try_lock()) {
      for (int t = 0; t < tasks; t++) fn(t);
      return;
    }
    std::function<void(int)> f = fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &f;
      tasks_ = tasks;
      next_.store(0);
      active_ = (int)workers_.size();
      ++generation_;
    }
    cv_.notify_all();
    in_parallel_ = true;
    work(f, tasks);
    in_parallel_ = false;
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return active_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(const std::function<void(int)>& f, int tasks) {
    for (int t; (t = next_.fetch_add(1)) < tasks;) f(t);
  }
  void loop(unsigned seen) {
    in_parallel_ = true;  // nested parallel regions inside a task run serially
    for (;;) {
      const std::function<void(int)>* job;
      int tasks;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        job = job_;
        tasks = tasks_;
      }
      if (job) work(*job, tasks);
      std::lock_guard<std::mutex> lock(mu_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  int n_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int tasks_ = 0;
  std::atomic<int> next_{0};
  int active_ = 0;
  unsigned generation_ = 0;
  bool stop_ = false;
  static thread_local bool in_parallel_;
};
thread_local bool Pool::in_parallel_ = false;

Pool pool;

// ---- scratch memory -------------------------------------------------------------------------------

struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      n = (want + 1023) & ~size_t(1023);
      p = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
      if (!p) throw Fail{"out of memory for native scratch"};
    }
    return p;
  }
};

// ---- GEMM -----------------------------------------------------------------------------------------
// C[M,N] = alpha * op(A) op(B) (+ beta C) (+ bias[N]), with A and B given by row/column strides, so
// transposes are handled by the packing routines. Blocked as in BLIS/GotoBLAS: B is packed into
// KC x NR panels (L1/L2), A into MR x KC panels per MC block, and a 6x16 AVX2 FMA micro-kernel
// accumulates in 12 ymm registers.

constexpr int MR = 6;
constexpr int NR = 16;
#ifndef PEFT_KC
#define PEFT_KC 256
#endif
#ifndef PEFT_MC
#define PEFT_MC 120
#endif
constexpr int KC = PEFT_KC;
constexpr int MC = PEFT_MC;  // multiple of MR
constexpr int NC = 3072;     // multiple of NR

struct GemmArgs {
  int M, N, K;
  const float* A;
  long rsA, csA;
  const float* B;
  long rsB, csB;
  float* C;
  long ldc;
  float alpha, beta;
  const float* bias;  // [N] or null
};

// In-register transpose of 8 rows of 8 floats.
static inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Packs the mc x kc block of op(A) into MR-row panels (p-major: Ap[p*MR + i]). Row-major A (cs == 1)
// is transposed 8 columns at a time in registers. Writes exactly mc/MR*MR*kc floats (rounded up).
static void pack_a(int mc, int kc, const float* A, long rs, long cs, float* Ap) {
  for (int i0 = 0; i0 < mc; i0 += MR) {
    const int mr = std::min(MR, mc - i0);
    const float* a = A + i0 * rs;
    if (mr == MR && rs == 1) {
      for (int p = 0; p < kc; p++, Ap += MR) {
        const float* s = a + p * cs;
        _mm_storeu_ps(Ap, _mm_loadu_ps(s));
        _mm_storel_pi((__m64*)(Ap + 4), _mm_castpd_ps(_mm_load_sd((const double*)(s + 4))));
      }
    } else if (mr == MR && cs == 1) {
      const float *r0 = a, *r1 = a + rs, *r2 = a + 2 * rs, *r3 = a + 3 * rs, *r4 = a + 4 * rs, *r5 = a + 5 * rs;
      int p = 0;
      for (; p + 8 <= kc; p += 8, Ap += 8 * MR) {
        const __m256 x0 = _mm256_loadu_ps(r0 + p), x1 = _mm256_loadu_ps(r1 + p), x2 = _mm256_loadu_ps(r2 + p);
        const __m256 x3 = _mm256_loadu_ps(r3 + p), x4 = _mm256_loadu_ps(r4 + p), x5 = _mm256_loadu_ps(r5 + p);
        // t01l = [a0 b0 a1 b1 | a4 b4 a5 b5], t01h = [a2 b2 a3 b3 | a6 b6 a7 b7] (a = row 0, b = row 1)
        const __m256 t01l = _mm256_unpacklo_ps(x0, x1), t01h = _mm256_unpackhi_ps(x0, x1);
        const __m256 t23l = _mm256_unpacklo_ps(x2, x3), t23h = _mm256_unpackhi_ps(x2, x3);
        const __m256 t45l = _mm256_unpacklo_ps(x4, x5), t45h = _mm256_unpackhi_ps(x4, x5);
        // column q of rows 0-3: s_q's low lane (q < 4) or high lane (q + 4)
        const __m256 s0 = _mm256_shuffle_ps(t01l, t23l, 0x44), s1 = _mm256_shuffle_ps(t01l, t23l, 0xEE);
        const __m256 s2 = _mm256_shuffle_ps(t01h, t23h, 0x44), s3 = _mm256_shuffle_ps(t01h, t23h, 0xEE);
        _mm_storeu_ps(Ap + 0 * MR, _mm256_castps256_ps128(s0));
        _mm_storeu_ps(Ap + 1 * MR, _mm256_castps256_ps128(s1));
        _mm_storeu_ps(Ap + 2 * MR, _mm256_castps256_ps128(s2));
        _mm_storeu_ps(Ap + 3 * MR, _mm256_castps256_ps128(s3));
        _mm_storeu_ps(Ap + 4 * MR, _mm256_extractf128_ps(s0, 1));
        _mm_storeu_ps(Ap + 5 * MR, _mm256_extractf128_ps(s1, 1));
        _mm_storeu_ps(Ap + 6 * MR, _mm256_extractf128_ps(s2, 1));
        _mm_storeu_ps(Ap + 7 * MR, _mm256_extractf128_ps(s3, 1));
        // rows 4-5: 64-bit pairs (c4 c5) of column q
        const __m128 l0 = _mm256_castps256_ps128(t45l), h0 = _mm256_extractf128_ps(t45l, 1);
        const __m128 l1 = _mm256_castps256_ps128(t45h), h1 = _mm256_extractf128_ps(t45h, 1);
        _mm_storel_pi((__m64*)(Ap + 0 * MR + 4), l0);
        _mm_storeh_pi((__m64*)(Ap + 1 * MR + 4), l0);
        _mm_storel_pi((__m64*)(Ap + 2 * MR + 4), l1);
        _mm_storeh_pi((__m64*)(Ap + 3 * MR + 4), l1);
        _mm_storel_pi((__m64*)(Ap + 4 * MR + 4), h0);
        _mm_storeh_pi((__m64*)(Ap + 5 * MR + 4), h0);
        _mm_storel_pi((__m64*)(Ap + 6 * MR + 4), h1);
        _mm_storeh_pi((__m64*)(Ap + 7 * MR + 4), h1);
      }
      for (; p < kc; p++, Ap += MR) {
        Ap[0] = r0[p];
        Ap[1] = r1[p];
        Ap[2] = r2[p];
        Ap[3] = r3[p];
        Ap[4] = r4[p];
        Ap[5] = r5[p];
      }
    } else {
      for (int p = 0; p < kc; p++, Ap += MR) {
        int i = 0;
        for (; i < mr; i++) Ap[i] = a[i * rs + p * cs];
        for (; i < MR; i++) Ap[i] = 0.f;
      }
    }
  }
}

static void pack_b(int kc, int nc, const float* B, long rs, long cs, float* Bp) {
  for (int j0 = 0; j0 < nc; j0 += NR, Bp += (long)kc * NR) {
    const int nr = std::min(NR, nc - j0);
    const float* b = B + j0 * cs;
    if (nr == NR && cs == 1) {
      for (int p = 0; p < kc; p++) {
        const float* s = b + p * rs;
        _mm256_store_ps(Bp + p * NR, _mm256_loadu_ps(s));
        _mm256_store_ps(Bp + p * NR + 8, _mm256_loadu_ps(s + 8));
      }
    } else if (rs == 1) {
      // Transposed B: column j is contiguous over p; 8 x 8 blocks are transposed in registers.
      float* d = Bp;
      int p = 0;
      if (nr == NR)
        for (; p + 8 <= kc; p += 8)
          for (int h = 0; h < 2; h++) {
            const float* s = b + (h * 8) * cs + p;
            __m256 r[8];
            for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(s + q * cs);
            transpose8(r);
            for (int q = 0; q < 8; q++) _mm256_store_ps(d + (p + q) * NR + h * 8, r[q]);
          }
      for (int j = 0; j < nr; j++) {
        const float* s = b + j * cs;
        for (int q = p; q < kc; q++) d[q * NR + j] = s[q];
      }
      for (int j = nr; j < NR; j++)
        for (int q = p; q < kc; q++) d[q * NR + j] = 0.f;
    } else {
      for (int p = 0; p < kc; p++) {
        int j = 0;
        for (; j < nr; j++) Bp[p * NR + j] = b[p * rs + j * cs];
        for (; j < NR; j++) Bp[p * NR + j] = 0.f;
      }
    }
  }
}

// acc = Ap(6 x kc) * Bp(kc x 16); then C tile = alpha*acc + (first ? beta*C : C) (+ bias).
static inline void micro_6x16(int kc, const float* __restrict Ap, const float* __restrict Bp, float* C, long ldc, int mr, int nr, float alpha,
                              bool first, float beta, const float* bias) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  // The C tile is read (beta, accumulation) or written after the loop: fetch its lines meanwhile.
  for (int i = 0; i < mr; i++) {
    _mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char*)(C + i * ldc + nr - 1), _MM_HINT_T0);
  }
  _Pragma("GCC unroll 4") for (int p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(Bp);
    const __m256 b1 = _mm256_load_ps(Bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(Ap + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(Ap + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(Ap + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(Ap + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(Ap + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(Ap + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    Ap += MR;
    Bp += NR;
  }
  alignas(32) float tile[MR * NR];
  __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(alpha);
  if (alpha != 1.f)
    for (int i = 0; i < MR; i++) {
      acc[i][0] = _mm256_mul_ps(acc[i][0], va);
      acc[i][1] = _mm256_mul_ps(acc[i][1], va);
    }
  // r = first ? acc (+ beta·C) : C + acc; then + bias (given on the last K block only, so the bias
  // is added to the finished product as a separate Add would).
  const __m256 vb = _mm256_set1_ps(beta);
  if (mr == MR && nr == NR) {
    __m256 bb0 = _mm256_setzero_ps(), bb1 = _mm256_setzero_ps();
    if (bias) {
      bb0 = _mm256_loadu_ps(bias);
      bb1 = _mm256_loadu_ps(bias + 8);
    }
    for (int i = 0; i < MR; i++) {
      float* c = C + i * ldc;
      __m256 r0 = acc[i][0], r1 = acc[i][1];
      if (!first) {
        r0 = _mm256_add_ps(_mm256_loadu_ps(c), r0);
        r1 = _mm256_add_ps(_mm256_loadu_ps(c + 8), r1);
      } else if (beta != 0.f) {
        r0 = _mm256_add_ps(r0, _mm256_mul_ps(vb, _mm256_loadu_ps(c)));
        r1 = _mm256_add_ps(r1, _mm256_mul_ps(vb, _mm256_loadu_ps(c + 8)));
      }
      if (bias) {
        r0 = _mm256_add_ps(r0, bb0);
        r1 = _mm256_add_ps(r1, bb1);
      }
      _mm256_storeu_ps(c, r0);
      _mm256_storeu_ps(c + 8, r1);
    }
    return;
  }
  for (int i = 0; i < MR; i++) {
    _mm256_store_ps(tile + i * NR, acc[i][0]);
    _mm256_store_ps(tile + i * NR + 8, acc[i][1]);
  }
  for (int i = 0; i < mr; i++) {
    float* c = C + i * ldc;
    const float* t = tile + i * NR;
    for (int j = 0; j < nr; j++) {
      float r = t[j];
      if (!first) r = c[j] + r;
      else if (beta != 0.f) r = r + beta * c[j];
      if (bias) r = r + bias[j];
      c[j] = r;
    }
  }
}

thread_local Scratch tl_apack;
thread_local Scratch tl_bpack;
thread_local Scratch shared_bpack;  // the calling thread's; its workers read it

// Multiplies the MC-block [ic, ic+mc) x [j0, j0+nc) of one (jc, pc) step.
static void macro_block(const GemmArgs& g, int ic, int mc, int pc, int kc, int jc, int j0, int nc, const float* Bp, float* Ap) {
  pack_a(mc, kc, g.A + ic * g.rsA + pc * g.csA, g.rsA, g.csA, Ap);
  const bool first = pc == 0, last = pc + kc >= g.K;
  if (kc <= 32) {
    // Short products are bound by writing C: walk it row panel by row panel (contiguous lines).
    for (int ir = 0; ir < mc; ir += MR) {
      const int mr = std::min(MR, mc - ir);
      for (int jr = j0; jr < j0 + nc; jr += NR) {
        const float* bp = Bp + (long)(jr - jc) / NR * kc * NR;
        const float* bias = last && g.bias ? g.bias + jr : nullptr;
        micro_6x16(kc, Ap + (long)ir * kc, bp, g.C + (ic + ir) * g.ldc + jr, g.ldc, mr, std::min(NR, j0 + nc - jr), g.alpha, first, g.beta, bias);
      }
    }
    return;
  }
  for (int jr = j0; jr < j0 + nc; jr += NR) {
    const int nr = std::min(NR, j0 + nc - jr);
    const float* bp = Bp + (long)(jr - jc) / NR * kc * NR;
    const float* bias = last && g.bias ? g.bias + jr : nullptr;
    for (int ir = 0; ir < mc; ir += MR) {
      const int mr = std::min(MR, mc - ir);
      micro_6x16(kc, Ap + (long)ir * kc, bp, g.C + (ic + ir) * g.ldc + jr, g.ldc, mr, nr, g.alpha, first, g.beta, bias);
    }
  }
}

// Single-threaded GEMM (used inside other parallel kernels).
static void gemm_serial(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {
    for (int i = 0; i < g.M; i++)
      for (int j = 0; j < g.N; j++) {
        float* c = g.C + i * g.ldc + j;
        float r = g.beta != 0.f ? g.beta * *c : 0.f;
        *c = g.bias ? r + g.bias[j] : r;
      }
    return;
  }
  float* Ap = tl_apack.get((size_t)MC * KC);
  float* Bp = tl_bpack.get((size_t)KC * NC);
  for (int jc = 0; jc < g.N; jc += NC) {
    const int nc = std::min(NC, g.N - jc);
    for (int pc = 0; pc < g.K; pc += KC) {
      const int kc = std::min(KC, g.K - pc);
      pack_b(kc, nc, g.B + pc * g.rsB + jc * g.csB, g.rsB, g.csB, Bp);
      for (int ic = 0; ic < g.M; ic += MC) macro_block(g, ic, std::min(MC, g.M - ic), pc, kc, jc, jc, nc, Bp, Ap);
    }
  }
}

static void gemm_parallel(const GemmArgs& g) {
  const int threads = pool.size();
  const double flops = 2.0 * g.M * g.N * std::max(g.K, 1);
  if (threads == 1 || flops < 4e6 || g.K <= 0) return gemm_serial(g);
  float* Bp = shared_bpack.get((size_t)KC * NC);
  const int mblocks = (g.M + MC - 1) / MC;
  for (int jc = 0; jc < g.N; jc += NC) {
    const int nc = std::min(NC, g.N - jc);
    const int panels = (nc + NR - 1) / NR;
    // Split the columns too when there are fewer M blocks than threads.
    const int nsplit = std::max(1, std::min(panels, (threads + mblocks - 1) / mblocks));
    const int panelsPer = (panels + nsplit - 1) / nsplit;
    for (int pc = 0; pc < g.K; pc += KC) {
      const int kc = std::min(KC, g.K - pc);
      pool.run(std::min(threads, panels), [&](int t) {
        const int per = (panels + std::min(threads, panels) - 1) / std::min(threads, panels);
        const int p0 = t * per, p1 = std::min(panels, p0 + per);
        for (int p = p0; p < p1; p++) {
          const int j = p * NR;
          pack_b(kc, std::min(NR, nc - j), g.B + pc * g.rsB + (jc + j) * g.csB, g.rsB, g.csB, Bp + (long)p * kc * NR);
        }
      });
      pool.run(mblocks * nsplit, [&](int t) {
        const int mb = t / nsplit, ns = t % nsplit;
        const int ic = mb * MC, mc = std::min(MC, g.M - ic);
        const int p0 = ns * panelsPer, p1 = std::min(panels, p0 + panelsPer);
        if (p0 >= p1) return;
        const int j0 = jc + p0 * NR, n = std::min(nc - p0 * NR, (p1 - p0) * NR);
        float* Ap = tl_apack.get((size_t)MC * KC);
        macro_block(g, ic, mc, pc, kc, jc, j0, n, Bp, Ap);
      });
    }
  }
}

// ---- vector math ----------------------------------------------------------------------------------

// exp(x) for float32 lanes (Cephes polynomial, ~1 ulp); NaN propagates, overflow → +inf, underflow → 0.
static inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  const __m256 big = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  x = _mm256_min_ps(hi, x);
  x = _mm256_max_ps(lo, x);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.f));
  __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  // fx = -127 at the lower clamp: a zero exponent field (a denormal-free 0-ish result is fine here).
  e = _mm256_max_epi32(e, _mm256_setzero_si256());
  __m256 r = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
  return _mm256_blendv_ps(r, _mm256_set1_ps(INFINITY), big);
}

static inline float exp1(float x) {
  alignas(32) float t[8];
  _mm256_store_ps(t, exp256(_mm256_set1_ps(x)));
  return t[0];
}

// tanh(x) = sign(x) (1 − 2 / (exp(2|x|) + 1)), saturating to ±1.
static inline __m256 tanh256(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.f));
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x);
  const __m256 e = exp256(_mm256_add_ps(ax, ax));
  const __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.f), _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(e, _mm256_set1_ps(1.f))));
  return _mm256_or_ps(t, sign);
}

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
static inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
static inline float dot(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// Runs fn(begin, end) over [0, n) in chunks of at least `grain`, on the pool.
template <class F>
static void parallel_range(long n, long grain, F&& fn) {
  const int threads = pool.size();
  long chunks = std::min<long>(threads * 4, (n + grain - 1) / std::max<long>(grain, 1));
  if (threads == 1 || chunks <= 1) return fn(0L, n);
  const long per = (n + chunks - 1) / chunks;
  pool.run((int)chunks, [&](int t) {
    const long b = t * per, e = std::min(n, b + per);
    if (b < e) fn(b, e);
  });
}

// ---- attention ------------------------------------------------------------------------------------
// Per (batch, head): S = scale·Q Kᵀ (causal: key j ≤ query i), P = softmax(S), O = P V, and the
// log-sum-exp of each row (for the backward pass, which recomputes P from it).

struct AttnDims {
  int BH, T, D;  // T queries and T keys per head
  float scale;
  bool causal;
  // Layout: head bh = b·H + h of a tensor with row stride ld starts at b·T·ld + h·D. [BH, T, D]
  // tensors are H = 1, ld = D; a fused qkv [B·T, 3·H·D] has ld = 3·H·D (q, k, v at column offsets 0,
  // H·D, 2·H·D), the merged output [B·T, H·D] ld = H·D.
  int H = 1;
  long ldi = 0;  // q, k, v and dq, dk, dv
  long ldo = 0;  // o and dO
  long offI(int bh) const { return (long)(bh / H) * T * ldi + (long)(bh % H) * D; }
  long offO(int bh) const { return (long)(bh / H) * T * ldo + (long)(bh % H) * D; }
};

// Causal attention works on row blocks of RB queries: block [i0, i1) needs keys [0, i1) only, so the
// score matrices are computed, stored and used for the lower block triangle (about half the work
// for long rows). Entries above the diagonal inside a block are zero; nothing else above is read.
static int attn_block(const AttnDims& d) { return d.causal ? (d.T <= 128 ? 12 : 32) : d.T; }

// Row i of S (keys [0, n)): in place P = softmax; zero for keys [n, end).
static void softmax_row(float* s, int n, int end, float* lse) {
  __m256 vm = _mm256_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + j));
  float m = hmax(vm);
  for (; j < n; j++) m = std::max(m, s[j]);
  __m256 vs = _mm256_setzero_ps();
  const __m256 vmax = _mm256_set1_ps(m);
  j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmax));
    _mm256_storeu_ps(s + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  float sum = hsum(vs);
  for (; j < n; j++) {
    s[j] = exp1(s[j] - m);
    sum += s[j];
  }
  const float inv = 1.f / sum;
  const __m256 vinv = _mm256_set1_ps(inv);
  j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), vinv));
  for (; j < n; j++) s[j] = s[j] * inv;
  for (j = n; j < end; j++) s[j] = 0.f;
  *lse = m + std::log(sum);
}

static void attn_fwd_generic(const AttnDims& d, const float* Q, const float* K, const float* V, float* O, float* L) {
  const int T = d.T, D = d.D, RB = attn_block(d);
  const long li = d.ldi, lo = d.ldo;
  pool.run(d.BH, [&](int bh) {
    thread_local Scratch sbuf;
    float* S = sbuf.get((size_t)T * T);
    const long oi = d.offI(bh);
    const float *q = Q + oi, *k = K + oi, *v = V + oi;
    float* o = O + d.offO(bh);
    float* lse = L + (long)bh * T;
    for (int i0 = 0; i0 < T; i0 += RB) {
      const int i1 = std::min(T, i0 + RB), keys = d.causal ? i1 : T;
      float* s = S + (long)i0 * T;
      // S[i0:i1, 0:keys] = scale · Q[i0:i1] K[0:keys]ᵀ
      gemm_serial({i1 - i0, keys, D, q + (long)i0 * li, li, 1, k, 1, li, s, T, d.scale, 0.f, nullptr});
      for (int i = i0; i < i1; i++) softmax_row(S + (long)i * T, d.causal ? i + 1 : T, keys, lse + i);
      // O[i0:i1] = P[i0:i1, 0:keys] V[0:keys]
      gemm_serial({i1 - i0, D, keys, s, T, 1, v, li, 1, o + (long)i0 * lo, lo, 1.f, 0.f, nullptr});
    }
  });
}

static void attn_bwd_generic(const AttnDims& d, const float* Q, const float* K, const float* V, const float* O, const float* L, const float* dO,
                             float* dQ, float* dK, float* dV) {
  const int T = d.T, D = d.D, RB = attn_block(d);
  const long li = d.ldi, lo = d.ldo;
  pool.run(d.BH, [&](int bh) {
    thread_local Scratch sbuf;
    float* P = sbuf.get((size_t)2 * T * T + T);
    float* dP = P + (long)T * T;
    float* Di = dP + (long)T * T;
    const long oi = d.offI(bh), oo = d.offO(bh);
    const float *q = Q + oi, *k = K + oi, *v = V + oi, *o = O + oo, *dout = dO + oo;
    const float* lse = L + (long)bh * T;
    float *dq = dQ + oi, *dk = dK + oi, *dv = dV + oi;
    for (int i = 0; i < T; i++) Di[i] = dot(dout + (long)i * lo, o + (long)i * lo, D);
    // Row blocks: P = exp(scale · Q Kᵀ − lse); dP = dO Vᵀ; dS = P ∘ (dP − Di) (in P); dQ = scale · dS K.
    for (int i0 = 0; i0 < T; i0 += RB) {
      const int i1 = std::min(T, i0 + RB), keys = d.causal ? i1 : T;
      float* p = P + (long)i0 * T;
      gemm_serial({i1 - i0, keys, D, q + (long)i0 * li, li, 1, k, 1, li, p, T, d.scale, 0.f, nullptr});
      gemm_serial({i1 - i0, keys, D, dout + (long)i0 * lo, lo, 1, v, 1, li, dP + (long)i0 * T, T, 1.f, 0.f, nullptr});
      for (int i = i0; i < i1; i++) {
        float* pr = P + (long)i * T;
        const float* dpr = dP + (long)i * T;
        const int n = d.causal ? i + 1 : T;
        const __m256 vl = _mm256_set1_ps(lse[i]), vd = _mm256_set1_ps(Di[i]);
        int j = 0;
        for (; j + 8 <= n; j += 8) {
          const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(pr + j), vl));
          const __m256 dp = _mm256_loadu_ps(dpr + j);
          _mm256_storeu_ps(dP + (long)i * T + j, e);  // keep P (over dP) for dV
          _mm256_storeu_ps(pr + j, _mm256_mul_ps(e, _mm256_sub_ps(dp, vd)));
        }
        for (; j < n; j++) {
          const float e = exp1(pr[j] - lse[i]);
          const float dp = dpr[j];
          dP[(long)i * T + j] = e;
          pr[j] = e * (dp - Di[i]);
        }
        for (j = n; j < keys; j++) pr[j] = dP[(long)i * T + j] = 0.f;
      }
      gemm_serial({i1 - i0, D, keys, p, T, 1, k, li, 1, dq + (long)i0 * li, li, d.scale, 0.f, nullptr});
    }
    // Now P is in dP and dS in P. Column blocks (keys [j0, j1) see queries [j0, T) when causal):
    // dV = Pᵀ dO ; dK = scale · dSᵀ Q.
    for (int j0 = 0; j0 < T; j0 += RB) {
      const int j1 = std::min(T, j0 + RB), q0 = d.causal ? j0 : 0;
      gemm_serial({j1 - j0, D, T - q0, dP + (long)q0 * T + j0, 1, T, dout + (long)q0 * lo, lo, 1, dv + (long)j0 * li, li, 1.f, 0.f, nullptr});
      gemm_serial({j1 - j0, D, T - q0, P + (long)q0 * T + j0, 1, T, q + (long)q0 * li, li, 1, dk + (long)j0 * li, li, d.scale, 0.f, nullptr});
    }
  });
}

// With T and D at most KC, each head's K, V (and in the backward pass dO, Q) are packed once into
// GEMM B panels and reused by every row block; only the A side is packed per block.

// C[M,N] = alpha · op(A)[M,K] · B, B prepacked as NR-column panels (`pstride` floats apart, row p of
// a panel at p·NR); K ≤ KC.
static void gemm_prepacked(int M, int N, int K, const float* A, long rsA, long csA, const float* Bp, long pstride, float* C, long ldc, float alpha) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) C[i * ldc + j] = 0.f;
    return;
  }
  float* Ap = tl_apack.get((size_t)MC * KC);
  for (int ic = 0; ic < M; ic += MC) {
    const int mc = std::min(MC, M - ic);
    pack_a(mc, K, A + ic * rsA, rsA, csA, Ap);
    for (int jr = 0; jr < N; jr += NR) {
      const int nr = std::min(NR, N - jr);
      const float* bp = Bp + (long)(jr / NR) * pstride;
      for (int ir = 0; ir < mc; ir += MR)
        micro_6x16(K, Ap + (long)ir * K, bp, C + (ic + ir) * ldc + jr, ldc, std::min(MR, mc - ir), nr, alpha, true, 0.f, nullptr);
    }
  }
}

static inline long panels(int n) { return (n + NR - 1) / NR; }

static void attn_fwd(const AttnDims& d, const float* Q, const float* K, const float* V, float* O, float* L) {
  if (d.T > KC || d.D > KC) return attn_fwd_generic(d, Q, K, V, O, L);
  const int T = d.T, D = d.D, RB = attn_block(d);
  const long li = d.ldi, lo = d.ldo;
  pool.run(d.BH, [&](int bh) {
    thread_local Scratch sbuf, pbuf;
    float* S = sbuf.get((size_t)T * T);
    float* KTp = pbuf.get((size_t)panels(T) * NR * D + (size_t)panels(D) * NR * T);
    float* Vp = KTp + panels(T) * NR * D;
    const long oi = d.offI(bh);
    const float *q = Q + oi, *k = K + oi, *v = V + oi;
    float* o = O + d.offO(bh);
    float* lse = L + (long)bh * T;
    pack_b(D, T, k, 1, li, KTp);  // Kᵀ: [D, T]
    pack_b(T, D, v, li, 1, Vp);   // V: [T, D]
    for (int i0 = 0; i0 < T; i0 += RB) {
      const int i1 = std::min(T, i0 + RB), keys = d.causal ? i1 : T;
      float* s = S + (long)i0 * T;
      gemm_prepacked(i1 - i0, keys, D, q + (long)i0 * li, li, 1, KTp, (long)D * NR, s, T, d.scale);
      for (int i = i0; i < i1; i++) softmax_row(S + (long)i * T, d.causal ? i + 1 : T, keys, lse + i);
      gemm_prepacked(i1 - i0, D, keys, s, T, 1, Vp, (long)T * NR, o + (long)i0 * lo, lo, 1.f);
    }
  });
}

static void attn_bwd(const AttnDims& d, const float* Q, const float* K, const float* V, const float* O, const float* L, const float* dO, float* dQ,
                     float* dK, float* dV) {
  if (d.T > KC || d.D > KC) return attn_bwd_generic(d, Q, K, V, O, L, dO, dQ, dK, dV);
  const int T = d.T, D = d.D, RB = attn_block(d);
  const long li = d.ldi, lo = d.ldo;
  pool.run(d.BH, [&](int bh) {
    thread_local Scratch sbuf, pbuf;
    float* P = sbuf.get((size_t)2 * T * T + T);
    float* dP = P + (long)T * T;
    float* Di = dP + (long)T * T;
    const long tPanel = panels(T) * NR * D, dPanel = panels(D) * NR * T;
    float* KTp = pbuf.get((size_t)(2 * tPanel + 3 * dPanel));
    float* VTp = KTp + tPanel;
    float* Kp = VTp + tPanel;
    float* dOp = Kp + dPanel;
    float* Qp = dOp + dPanel;
    const long oi = d.offI(bh), oo = d.offO(bh);
    const float *q = Q + oi, *k = K + oi, *v = V + oi, *o = O + oo, *dout = dO + oo;
    const float* lse = L + (long)bh * T;
    float *dq = dQ + oi, *dk = dK + oi, *dv = dV + oi;
    pack_b(D, T, k, 1, li, KTp);     // Kᵀ
    pack_b(D, T, v, 1, li, VTp);     // Vᵀ
    pack_b(T, D, k, li, 1, Kp);      // K
    pack_b(T, D, dout, lo, 1, dOp);  // dO
    pack_b(T, D, q, li, 1, Qp);      // Q
    for (int i = 0; i < T; i++) Di[i] = dot(dout + (long)i * lo, o + (long)i * lo, D);
    // Row blocks: P = exp(scale · Q Kᵀ − lse); dP = dO Vᵀ; dS = P ∘ (dP − Di) (in P); dQ = scale · dS K.
    for (int i0 = 0; i0 < T; i0 += RB) {
      const int i1 = std::min(T, i0 + RB), keys = d.causal ? i1 : T;
      float* p = P + (long)i0 * T;
      gemm_prepacked(i1 - i0, keys, D, q + (long)i0 * li, li, 1, KTp, (long)D * NR, p, T, d.scale);
      gemm_prepacked(i1 - i0, keys, D, dout + (long)i0 * lo, lo, 1, VTp, (long)D * NR, dP + (long)i0 * T, T, 1.f);
      for (int i = i0; i < i1; i++) {
        float* pr = P + (long)i * T;
        float* dpr = dP + (long)i * T;
        const int n = d.causal ? i + 1 : T;
        const __m256 vl = _mm256_set1_ps(lse[i]), vd = _mm256_set1_ps(Di[i]);
        int j = 0;
        for (; j + 8 <= n; j += 8) {
          const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(pr + j), vl));
          const __m256 dp = _mm256_loadu_ps(dpr + j);
          _mm256_storeu_ps(dpr + j, e);  // keep P (over dP) for dV
          _mm256_storeu_ps(pr + j, _mm256_mul_ps(e, _mm256_sub_ps(dp, vd)));
        }
        for (; j < n; j++) {
          const float e = exp1(pr[j] - lse[i]);
          const float dp = dpr[j];
          dpr[j] = e;
          pr[j] = e * (dp - Di[i]);
        }
        for (j = n; j < keys; j++) pr[j] = dpr[j] = 0.f;
      }
      gemm_prepacked(i1 - i0, D, keys, p, T, 1, Kp, (long)T * NR, dq + (long)i0 * li, li, d.scale);
    }
    // P is in dP and dS in P. Column blocks (keys [j0, j1) see queries [j0, T) when causal):
    // dV = Pᵀ dO ; dK = scale · dSᵀ Q (the packed dO and Q from row q0 on).
    for (int j0 = 0; j0 < T; j0 += RB) {
      const int j1 = std::min(T, j0 + RB), q0 = d.causal ? j0 : 0;
      gemm_prepacked(j1 - j0, D, T - q0, dP + (long)q0 * T + j0, 1, T, dOp + (long)q0 * NR, (long)T * NR, dv + (long)j0 * li, li, 1.f);
      gemm_prepacked(j1 - j0, D, T - q0, P + (long)q0 * T + j0, 1, T, Qp + (long)q0 * NR, (long)T * NR, dk + (long)j0 * li, li, d.scale);
    }
  });
}

// ---- layer norm -----------------------------------------------------------------------------------
// y = ((x − mean) · rstd) · γ + β, rstd = 1/sqrt(var + eps), as ops.ts's composite rounds it.

static void ln_fwd(long N, int D, const float* X, const float* G, const float* Bt, float eps, float* Y, float* Mean, float* Rstd) {
  const float invD = 1.f / (float)D;
  parallel_range(N, 16, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      const float* x = X + r * D;
      float* y = Y + r * D;
      __m256 vs = _mm256_setzero_ps();
      int j = 0;
      for (; j + 8 <= D; j += 8) vs = _mm256_add_ps(vs, _mm256_loadu_ps(x + j));
      float s = hsum(vs);
      for (; j < D; j++) s += x[j];
      const float mean = s / (float)D;
      const __m256 vm = _mm256_set1_ps(mean);
      __m256 vv = _mm256_setzero_ps();
      j = 0;
      for (; j + 8 <= D; j += 8) {
        __m256 c = _mm256_sub_ps(_mm256_loadu_ps(x + j), vm);
        vv = _mm256_add_ps(vv, _mm256_mul_ps(c, c));
      }
      float v = hsum(vv);
      for (; j < D; j++) {
        float c = x[j] - mean;
        v += c * c;
      }
      const float var = v / (float)D;
      const float rstd = 1.f / std::sqrt(var + eps);
      (void)invD;
      const __m256 vr = _mm256_set1_ps(rstd);
      j = 0;
      for (; j + 8 <= D; j += 8) {
        __m256 c = _mm256_sub_ps(_mm256_loadu_ps(x + j), vm);
        __m256 o = _mm256_mul_ps(_mm256_mul_ps(c, vr), _mm256_loadu_ps(G + j));
        _mm256_storeu_ps(y + j, _mm256_add_ps(o, _mm256_loadu_ps(Bt + j)));
      }
      for (; j < D; j++) y[j] = ((x[j] - mean) * rstd) * G[j] + Bt[j];
      Mean[r] = mean;
      Rstd[r] = rstd;
    }
  });
}

// dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), g = dy · γ, x̂ = (x − mean) · rstd.
static void ln_bwd_x(long N, int D, const float* dY, const float* X, const float* G, const float* Mean, const float* Rstd, float* dX) {
  parallel_range(N, 16, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      const float *dy = dY + r * D, *x = X + r * D;
      float* dx = dX + r * D;
      const __m256 vm = _mm256_set1_ps(Mean[r]), vr = _mm256_set1_ps(Rstd[r]);
      __m256 s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps();
      int j = 0;
      for (; j + 8 <= D; j += 8) {
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + j), _mm256_loadu_ps(G + j));
        __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm), vr);
        s1 = _mm256_add_ps(s1, g);
        s2 = _mm256_fmadd_ps(g, xh, s2);
      }
      float a = hsum(s1), b = hsum(s2);
      for (; j < D; j++) {
        float g = dy[j] * G[j], xh = (x[j] - Mean[r]) * Rstd[r];
        a += g;
        b += g * xh;
      }
      a /= (float)D;
      b /= (float)D;
      const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
      j = 0;
      for (; j + 8 <= D; j += 8) {
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + j), _mm256_loadu_ps(G + j));
        __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm), vr);
        __m256 t = _mm256_sub_ps(_mm256_sub_ps(g, va), _mm256_mul_ps(xh, vb));
        _mm256_storeu_ps(dx + j, _mm256_mul_ps(t, vr));
      }
      for (; j < D; j++) {
        float g = dy[j] * G[j], xh = (x[j] - Mean[r]) * Rstd[r];
        dx[j] = (g - a - xh * b) * Rstd[r];
      }
    }
  });
}

// dγ[j] = Σ_r dy[r,j] · x̂[r,j]
static void ln_bwd_gamma(long N, int D, const float* dY, const float* X, const float* Mean, const float* Rstd, float* dG) {
  const long cols = D;
  parallel_range((cols + 63) / 64, 1, [&](long c0, long c1) {
    const int j0 = (int)(c0 * 64), j1 = (int)std::min<long>(cols, c1 * 64);
    for (int j = j0; j < j1; j++) dG[j] = 0.f;
    for (long r = 0; r < N; r++) {
      const float *dy = dY + r * D, *x = X + r * D;
      const __m256 vm = _mm256_set1_ps(Mean[r]), vr = _mm256_set1_ps(Rstd[r]);
      int j = j0;
      for (; j + 8 <= j1; j += 8) {
        __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm), vr);
        _mm256_storeu_ps(dG + j, _mm256_fmadd_ps(_mm256_loadu_ps(dy + j), xh, _mm256_loadu_ps(dG + j)));
      }
      for (; j < j1; j++) dG[j] += dy[j] * ((x[j] - Mean[r]) * Rstd[r]);
    }
  });
}

// ---- reductions -----------------------------------------------------------------------------------

// out[c] = Σ_r x[r, c] over a row-major [R, C].
static void sum_rows(long R, long C, const float* X, float* out) {
  parallel_range((C + 255) / 256, 1, [&](long c0, long c1) {
    const long j0 = c0 * 256, j1 = std::min(C, c1 * 256);
    for (long j = j0; j < j1; j++) out[j] = 0.f;
    for (long r = 0; r < R; r++) {
      const float* x = X + r * C;
      long j = j0;
      for (; j + 8 <= j1; j += 8) _mm256_storeu_ps(out + j, _mm256_add_ps(_mm256_loadu_ps(out + j), _mm256_loadu_ps(x + j)));
      for (; j < j1; j++) out[j] += x[j];
    }
  });
}

// out[r] = Σ_c x[r, c]
static void sum_cols(long R, long C, const float* X, float* out) {
  parallel_range(R, 64, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      const float* x = X + r * C;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      long j = 0;
      for (; j + 16 <= C; j += 16) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + j));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + j + 8));
      }
      for (; j + 8 <= C; j += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + j));
      float s = hsum(_mm256_add_ps(a0, a1));
      for (; j < C; j++) s += x[j];
      out[r] = s;
    }
  });
}

// ---- GELU (tanh approximation) ----------------------------------------------------------------------
// y = (x·0.5) · (1 + tanh((x + x·x·x·0.044715) · √(2/π))), in ops.ts's order of operations.

constexpr float GELU_C = 0.044715f;
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;

static inline __m256 gelu8(__m256 x) {
  const __m256 c = _mm256_set1_ps(GELU_C), s = _mm256_set1_ps(SQRT_2_OVER_PI), h = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f);
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 inner = _mm256_mul_ps(_mm256_add_ps(x, _mm256_mul_ps(x3, c)), s);
  return _mm256_mul_ps(_mm256_mul_ps(x, h), _mm256_add_ps(one, tanh256(inner)));
}

static void gelu_fwd(long n, const float* X, float* Y) {
  parallel_range(n, 4096, [X, Y](long b, long e) {
    long i = b;
    // Four independent vectors per iteration: the chain exp → div is long, this keeps the FMA
    // units busy where the out-of-order window alone does not.
    for (; i + 32 <= e; i += 32) {
      const __m256 y0 = gelu8(_mm256_loadu_ps(X + i)), y1 = gelu8(_mm256_loadu_ps(X + i + 8));
      const __m256 y2 = gelu8(_mm256_loadu_ps(X + i + 16)), y3 = gelu8(_mm256_loadu_ps(X + i + 24));
      _mm256_storeu_ps(Y + i, y0);
      _mm256_storeu_ps(Y + i + 8, y1);
      _mm256_storeu_ps(Y + i + 16, y2);
      _mm256_storeu_ps(Y + i + 24, y3);
    }
    for (; i + 8 <= e; i += 8) _mm256_storeu_ps(Y + i, gelu8(_mm256_loadu_ps(X + i)));
    if (i < e) {
      alignas(32) float t[8] = {0};
      for (long j = i; j < e; j++) t[j - i] = X[j];
      _mm256_store_ps(t, gelu8(_mm256_load_ps(t)));
      for (long j = i; j < e; j++) Y[j] = t[j - i];
    }
  });
}

// dx = dy · (0.5 (1 + t) + 0.5 x (1 − t²) √(2/π) (1 + 3·0.044715 x²))
static inline __m256 gelu_grad8(__m256 dy, __m256 x) {
  const __m256 c = _mm256_set1_ps(GELU_C), s = _mm256_set1_ps(SQRT_2_OVER_PI), h = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f),
               c3 = _mm256_set1_ps(3.f * GELU_C);
  const __m256 x2 = _mm256_mul_ps(x, x);
  const __m256 inner = _mm256_mul_ps(_mm256_add_ps(x, _mm256_mul_ps(_mm256_mul_ps(x2, x), c)), s);
  const __m256 t = tanh256(inner);
  const __m256 dinner = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(c3, x2)));
  const __m256 g = _mm256_add_ps(_mm256_mul_ps(h, _mm256_add_ps(one, t)), _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(h, x), _mm256_sub_ps(one, _mm256_mul_ps(t, t))), dinner));
  return _mm256_mul_ps(dy, g);
}

static void gelu_bwd(long n, const float* dY, const float* X, float* dX) {
  parallel_range(n, 4096, [dY, X, dX](long b, long e) {
    long i = b;
    for (; i + 32 <= e; i += 32) {
      const __m256 r0 = gelu_grad8(_mm256_loadu_ps(dY + i), _mm256_loadu_ps(X + i));
      const __m256 r1 = gelu_grad8(_mm256_loadu_ps(dY + i + 8), _mm256_loadu_ps(X + i + 8));
      const __m256 r2 = gelu_grad8(_mm256_loadu_ps(dY + i + 16), _mm256_loadu_ps(X + i + 16));
      const __m256 r3 = gelu_grad8(_mm256_loadu_ps(dY + i + 24), _mm256_loadu_ps(X + i + 24));
      _mm256_storeu_ps(dX + i, r0);
      _mm256_storeu_ps(dX + i + 8, r1);
      _mm256_storeu_ps(dX + i + 16, r2);
      _mm256_storeu_ps(dX + i + 24, r3);
    }
    for (; i + 8 <= e; i += 8) _mm256_storeu_ps(dX + i, gelu_grad8(_mm256_loadu_ps(dY + i), _mm256_loadu_ps(X + i)));
    if (i < e) {
      alignas(32) float a[8] = {0}, x[8] = {0};
      for (long j = i; j < e; j++) {
        a[j - i] = dY[j];
        x[j - i] = X[j];
      }
      _mm256_store_ps(a, gelu_grad8(_mm256_load_ps(a), _mm256_load_ps(x)));
      for (long j = i; j < e; j++) dX[j] = a[j - i];
    }
  });
}

// ---- softmax cross-entropy ------------------------------------------------------------------------
// loss = −Σ_valid (x[label] − lse) / #valid, label −100 ignored (PyTorch); lse per row saved.

static void xent_fwd(long N, int C, const float* X, const int32_t* labels, float* lse, float* loss) {
  std::vector<double> part(N);
  parallel_range(N, 32, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      const float* x = X + r * C;
      __m256 vm = _mm256_set1_ps(-INFINITY);
      int j = 0;
      for (; j + 8 <= C; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + j));
      float m = hmax(vm);
      for (; j < C; j++) m = std::max(m, x[j]);
      const __m256 vmax = _mm256_set1_ps(m);
      __m256 vs = _mm256_setzero_ps();
      j = 0;
      for (; j + 8 <= C; j += 8) vs = _mm256_add_ps(vs, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmax)));
      float s = hsum(vs);
      for (; j < C; j++) s += exp1(x[j] - m);
      const float l = m + std::log(s);
      lse[r] = l;
      const int y = labels[r];
      // An out-of-range label picks nothing (a zero one-hot row) but still counts, as the composite.
      part[r] = y >= 0 && y < C ? (double)(x[y] - l) : 0.0;
    }
  });
  double sum = 0;
  long valid = 0;
  for (long r = 0; r < N; r++) {
    sum += part[r];
    valid += labels[r] != -100;
  }
  *loss = (float)(-sum / (double)valid);
}

static void xent_bwd(long N, int C, const float* X, const int32_t* labels, const float* lse, float dy, float* dX) {
  long valid = 0;
  for (long r = 0; r < N; r++) valid += labels[r] != -100;
  const float scale = dy / (float)valid;
  parallel_range(N, 32, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      const float* x = X + r * C;
      float* dx = dX + r * C;
      const int y = labels[r];
      if (y < 0 || y >= C) {
        std::memset(dx, 0, sizeof(float) * C);
        continue;
      }
      const __m256 vl = _mm256_set1_ps(lse[r]), vs = _mm256_set1_ps(scale);
      int j = 0;
      for (; j + 8 <= C; j += 8) _mm256_storeu_ps(dx + j, _mm256_mul_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl)), vs));
      for (; j < C; j++) dx[j] = exp1(x[j] - lse[r]) * scale;
      dx[y] -= scale;
    }
  });
}

// ---- AdamW ----------------------------------------------------------------------------------------
// PyTorch's AdamW in adamw.ts's float32 order of operations (bitwise equal to the composite):
// m = m0·β1 + g·(1−β1); v = v0·β2 + (g·g)·(1−β2); p' = p·(1−lr·wd) − ((m/c1) / (sqrt(v/c2) + eps))·lr

struct AdamArgs {
  long n;
  const float *p, *g, *m0, *v0;
  float *pOut, *mOut, *vOut;
  float b1, omb1, b2, omb2, decay, c1, c2, eps, lr;
  bool hasDecay;
};

static void adamw(const AdamArgs& a) {
  parallel_range(a.n, 1 << 14, [&](long b, long e) {
    const __m256 b1 = _mm256_set1_ps(a.b1), omb1 = _mm256_set1_ps(a.omb1), b2 = _mm256_set1_ps(a.b2), omb2 = _mm256_set1_ps(a.omb2),
                 dec = _mm256_set1_ps(a.decay), c1 = _mm256_set1_ps(a.c1), c2 = _mm256_set1_ps(a.c2), eps = _mm256_set1_ps(a.eps),
                 lr = _mm256_set1_ps(a.lr);
    long i = b;
    for (; i + 8 <= e; i += 8) {
      const __m256 g = _mm256_loadu_ps(a.g + i);
      __m256 m = _mm256_mul_ps(g, omb1);
      __m256 v = _mm256_mul_ps(_mm256_mul_ps(g, g), omb2);
      if (a.m0) m = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a.m0 + i), b1), m);
      if (a.v0) v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a.v0 + i), b2), v);
      __m256 p = _mm256_loadu_ps(a.p + i);
      if (a.hasDecay) p = _mm256_mul_ps(p, dec);
      const __m256 u = _mm256_div_ps(_mm256_div_ps(m, c1), _mm256_add_ps(_mm256_sqrt_ps(_mm256_div_ps(v, c2)), eps));
      _mm256_storeu_ps(a.pOut + i, _mm256_sub_ps(p, _mm256_mul_ps(u, lr)));
      _mm256_storeu_ps(a.mOut + i, m);
      _mm256_storeu_ps(a.vOut + i, v);
    }
    for (; i < e; i++) {
      const float g = a.g[i];
      float m = g * a.omb1, v = (g * g) * a.omb2;
      if (a.m0) m = a.m0[i] * a.b1 + m;
      if (a.v0) v = a.v0[i] * a.b2 + v;
      float p = a.p[i];
      if (a.hasDecay) p = p * a.decay;
      const float u = (m / a.c1) / (std::sqrt(v / a.c2) + a.eps);
      a.pOut[i] = p - u * a.lr;
      a.mOut[i] = m;
      a.vOut[i] = v;
    }
  });
}

// ---- element-wise binary ops with trailing broadcast ---------------------------------------------------
// out[i] = a[i mod na] ∘ b[i mod nb], where na and nb divide n (a full tensor, a trailing block such as
// a bias row, or a scalar). One IEEE operation per element, as XNNPACK's.

template <int OP>
static inline __m256 vop(__m256 x, __m256 y) {
  if (OP == 0) return _mm256_add_ps(x, y);
  if (OP == 1) return _mm256_sub_ps(x, y);
  return _mm256_mul_ps(x, y);
}
template <int OP>
static inline float sop(float x, float y) {
  return OP == 0 ? x + y : OP == 1 ? x - y : x * y;
}

template <int OP>
static void binary_run(const float* a, long sa, const float* b, long sb, float* o, long n) {
  // sa/sb: 1 = contiguous, 0 = one value repeated.
  long i = 0;
  if (sa && sb) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, vop<OP>(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) o[i] = sop<OP>(a[i], b[i]);
  } else if (sa) {
    const __m256 vb = _mm256_set1_ps(*b);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, vop<OP>(_mm256_loadu_ps(a + i), vb));
    for (; i < n; i++) o[i] = sop<OP>(a[i], *b);
  } else if (sb) {
    const __m256 va = _mm256_set1_ps(*a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, vop<OP>(va, _mm256_loadu_ps(b + i)));
    for (; i < n; i++) o[i] = sop<OP>(*a, b[i]);
  } else {
    const float r = sop<OP>(*a, *b);
    for (; i < n; i++) o[i] = r;
  }
}

template <int OP>
static void binary(long n, const float* a, long na, const float* b, long nb, float* o) {
  // Walk the output in rows of the smaller period (a bias row repeats every nb elements).
  const long period = std::min(na, nb) > 1 ? std::min(na, nb) : std::max(na, nb) > 1 ? n : 1;
  if (period == 1 || period == n) {
    parallel_range(n, 1 << 15, [&](long s0, long s1) {
      binary_run<OP>(na == 1 ? a : a + s0, na == 1 ? 0 : 1, nb == 1 ? b : b + s0, nb == 1 ? 0 : 1, o + s0, s1 - s0);
    });
    return;
  }
  const long rows = n / period;
  parallel_range(rows, std::max<long>(1, (1 << 15) / period), [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      const long at = r * period;
      const float* pa = na == 1 ? a : a + (at % na);
      const float* pb = nb == 1 ? b : b + (at % nb);
      binary_run<OP>(pa, na == 1 ? 0 : 1, pb, nb == 1 ? 0 : 1, o + at, period);
    }
  });
}

// ---- strided copies (Transpose, Slice, SplitV, Concat) ----------------------------------------------
// dst[Σ idx·dstStride] = src[Σ idx·srcStride] over the index space `dims` (4-byte elements); the
// innermost axis is a memcpy when contiguous on both sides.

static inline void copy_run(uint32_t* __restrict t, const uint32_t* __restrict s, long n) {
  long j = 0;
  for (; j + 16 <= n; j += 16) {
    _mm256_storeu_si256((__m256i*)(t + j), _mm256_loadu_si256((const __m256i*)(s + j)));
    _mm256_storeu_si256((__m256i*)(t + j + 8), _mm256_loadu_si256((const __m256i*)(s + j + 8)));
  }
  for (; j + 8 <= n; j += 8) _mm256_storeu_si256((__m256i*)(t + j), _mm256_loadu_si256((const __m256i*)(s + j)));
  for (; j < n; j++) t[j] = s[j];
}

static void copy_nd(int rank, const long* dims, const long* ss, const long* ds, const uint32_t* src, uint32_t* dst) {
  if (rank == 0) {
    *dst = *src;
    return;
  }
  const long inner = dims[rank - 1], si = ss[rank - 1], di = ds[rank - 1];
  long outer = 1;
  for (int d = 0; d < rank - 1; d++) outer *= dims[d];
  long idx[8] = {0};
  long so = 0, dof = 0;
  for (long n = 0; n < outer; n++) {
    const uint32_t* s = src + so;
    uint32_t* t = dst + dof;
    if (si == 1 && di == 1) {
      if (inner >= 1024) std::memcpy(t, s, inner * 4);
      else copy_run(t, s, inner);
    } else {
      for (long j = 0; j < inner; j++) t[j * di] = s[j * si];
    }
    for (int d = rank - 2; d >= 0; d--) {
      so += ss[d];
      dof += ds[d];
      if (++idx[d] < dims[d]) break;
      so -= ss[d] * dims[d];
      dof -= ds[d] * dims[d];
      idx[d] = 0;
    }
  }
}

// ---- N-API glue -----------------------------------------------------------------------------------

struct Call {
  napi_env env;
  size_t argc = 32;
  napi_value argv[32];
  uint8_t* heap = nullptr;
  size_t heapLen = 0;

  Call(napi_env e, napi_callback_info info, bool needsHeap = true) : env(e) {
    if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) throw Fail{"bad call"};
    if (needsHeap) {
      void* data = nullptr;
      bool isAb = false;
      if (argc < 1 || napi_is_arraybuffer(env, argv[0], &isAb) != napi_ok || !isAb) throw Fail{"first argument must be the wasm heap ArrayBuffer"};
      if (napi_get_arraybuffer_info(env, argv[0], &data, &heapLen) != napi_ok || !data) throw Fail{"cannot read the wasm heap"};
      heap = static_cast<uint8_t*>(data);
    }
  }
  double num(size_t i) const {
    double v;
    if (i >= argc || napi_get_value_double(env, argv[i], &v) != napi_ok) throw Fail{"argument " + std::to_string(i) + " must be a number"};
    return v;
  }
  long integer(size_t i) const { return (long)num(i); }
  // A float32 region of `count` elements at byte offset argv[i]; negative offset → null.
  template <class T = float>
  T* ptr(size_t i, double count) const {
    const double off = num(i);
    if (off < 0) return nullptr;
    if (std::fmod(off, 4.0) != 0 || off + count * 4.0 > (double)heapLen) throw Fail{"argument " + std::to_string(i) + ": region outside the wasm heap"};
    return reinterpret_cast<T*>(heap + (size_t)off);
  }
};

template <class F>
napi_value guard(napi_env env, F&& f) {
  try {
    return f();
  } catch (const Fail& e) {
    napi_throw_error(env, "PEFT_NATIVE", e.msg.c_str());
  } catch (const std::exception& e) {
    napi_throw_error(env, "PEFT_NATIVE", e.what());
  }
  return nullptr;
}

napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// gemm(heap, batch, M, N, K, a, rsA, csA, strideA, b, rsB, csB, strideB, c, ldc, strideC, alpha, beta, bias)
napi_value Gemm(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long batch = c.integer(1);
    const int M = (int)c.integer(2), N = (int)c.integer(3), K = (int)c.integer(4);
    const long rsA = c.integer(6), csA = c.integer(7), sA = c.integer(8);
    const long rsB = c.integer(10), csB = c.integer(11), sB = c.integer(12);
    const long ldc = c.integer(14), sC = c.integer(15);
    const float alpha = (float)c.num(16), beta = (float)c.num(17);
    auto extent = [](long rows, long cols, long rs, long cs) { return rows && cols ? (double)((rows - 1) * rs + (cols - 1) * cs + 1) : 0.0; };
    const float* A = c.ptr(5, extent(M, K, rsA, csA) + (double)(batch - 1) * sA);
    const float* B = c.ptr(9, extent(K, N, rsB, csB) + (double)(batch - 1) * sB);
    float* C = c.ptr(13, extent(M, N, ldc, 1) + (double)(batch - 1) * sC);
    const float* bias = c.ptr(18, N);
    if (batch == 1 || pool.size() == 1 || (double)M * N * K > 2e7) {
      for (long i = 0; i < batch; i++) gemm_parallel({M, N, K, A + i * sA, rsA, csA, B + i * sB, rsB, csB, C + i * sC, ldc, alpha, beta, bias});
    } else {
      pool.run((int)batch, [&](int i) { gemm_serial({M, N, K, A + i * sA, rsA, csA, B + i * sB, rsB, csB, C + i * sC, ldc, alpha, beta, bias}); });
    }
    return undef(env);
  });
}

// attnFwd(heap, BH, T, D, scale, causal, q, k, v, o, lse)
// Optional trailing layout arguments (AttnDims): H, ldi, ldo. Without them q, k, v, o (and the
// gradients) are [BH, T, D].
static AttnDims attnDims(const Call& c, size_t layoutArg) {
  AttnDims d{(int)c.integer(1), (int)c.integer(2), (int)c.integer(3), (float)c.num(4), c.num(5) != 0};
  d.ldi = d.ldo = d.D;
  if (c.argc > layoutArg) {
    d.H = (int)c.integer(layoutArg);
    d.ldi = c.integer(layoutArg + 1);
    d.ldo = c.integer(layoutArg + 2);
    if (d.H < 1 || d.BH % d.H != 0 || d.ldi < (long)d.H * d.D || d.ldo < (long)d.H * d.D) throw Fail{"bad attention layout"};
  }
  if (d.BH < 0 || d.T < 0 || d.D < 0) throw Fail{"bad attention dims"};
  return d;
}
// Elements spanned by one layout (head rows of D floats): ((B·T − 1)·ld + H·D).
static double attnExtent(const AttnDims& d, long ld) {
  const double rows = (double)(d.BH / d.H) * d.T;
  return rows > 0 && d.D > 0 ? (rows - 1) * (double)ld + (double)d.H * d.D : 0.0;
}

// attnFwd(heap, BH, T, D, scale, causal, q, k, v, o, lse[, H, ldi, ldo])
napi_value AttnFwd(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const AttnDims d = attnDims(c, 11);
    const double ni = attnExtent(d, d.ldi), no = attnExtent(d, d.ldo);
    attn_fwd(d, c.ptr(6, ni), c.ptr(7, ni), c.ptr(8, ni), c.ptr(9, no), c.ptr(10, (double)d.BH * d.T));
    return undef(env);
  });
}

// attnBwd(heap, BH, T, D, scale, causal, q, k, v, o, lse, dO, dq, dk, dv[, H, ldi, ldo])
napi_value AttnBwd(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const AttnDims d = attnDims(c, 15);
    const double ni = attnExtent(d, d.ldi), no = attnExtent(d, d.ldo);
    attn_bwd(d, c.ptr(6, ni), c.ptr(7, ni), c.ptr(8, ni), c.ptr(9, no), c.ptr(10, (double)d.BH * d.T), c.ptr(11, no), c.ptr(12, ni), c.ptr(13, ni),
             c.ptr(14, ni));
    return undef(env);
  });
}

// layerNorm(heap, N, D, eps, x, gamma, beta, y, mean, rstd)
napi_value LayerNorm(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long N = c.integer(1);
    const int D = (int)c.integer(2);
    const double n = (double)N * D;
    ln_fwd(N, D, c.ptr(4, n), c.ptr(5, D), c.ptr(6, D), (float)c.num(3), c.ptr(7, n), c.ptr(8, N), c.ptr(9, N));
    return undef(env);
  });
}

// layerNormGradX(heap, N, D, dy, x, gamma, mean, rstd, dx)
napi_value LayerNormGradX(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long N = c.integer(1);
    const int D = (int)c.integer(2);
    const double n = (double)N * D;
    ln_bwd_x(N, D, c.ptr(3, n), c.ptr(4, n), c.ptr(5, D), c.ptr(6, N), c.ptr(7, N), c.ptr(8, n));
    return undef(env);
  });
}

// layerNormGradGamma(heap, N, D, dy, x, mean, rstd, dgamma)
napi_value LayerNormGradGamma(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long N = c.integer(1);
    const int D = (int)c.integer(2);
    const double n = (double)N * D;
    ln_bwd_gamma(N, D, c.ptr(3, n), c.ptr(4, n), c.ptr(5, N), c.ptr(6, N), c.ptr(7, D));
    return undef(env);
  });
}

// sum(heap, R, C, x, out, overRows): overRows → out[C] = Σ_r x[r, :], else out[R] = Σ_c x[:, c]
napi_value Sum(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long R = c.integer(1), C = c.integer(2);
    const bool overRows = c.num(5) != 0;
    const float* x = c.ptr(3, (double)R * C);
    if (overRows) sum_rows(R, C, x, c.ptr(4, C));
    else sum_cols(R, C, x, c.ptr(4, R));
    return undef(env);
  });
}

// gelu(heap, n, x, y) / geluGrad(heap, n, dy, x, dx)
napi_value Gelu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long n = c.integer(1);
    gelu_fwd(n, c.ptr(2, n), c.ptr(3, n));
    return undef(env);
  });
}
napi_value GeluGrad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long n = c.integer(1);
    gelu_bwd(n, c.ptr(2, n), c.ptr(3, n), c.ptr(4, n));
    return undef(env);
  });
}

// xent(heap, N, C, logits, labels, lse, loss) / xentGrad(heap, N, C, logits, labels, lse, dy, dlogits)
napi_value Xent(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long N = c.integer(1);
    const int C = (int)c.integer(2);
    xent_fwd(N, C, c.ptr(3, (double)N * C), c.ptr<int32_t>(4, N), c.ptr(5, N), c.ptr(6, 1));
    return undef(env);
  });
}
napi_value XentGrad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long N = c.integer(1);
    const int C = (int)c.integer(2);
    xent_bwd(N, C, c.ptr(3, (double)N * C), c.ptr<int32_t>(4, N), c.ptr(5, N), *c.ptr(6, 1), c.ptr(7, (double)N * C));
    return undef(env);
  });
}

// adamw(heap, n, p, g, m0, v0, pOut, mOut, vOut, b1, 1−b1, b2, 1−b2, decayFactor, c1, c2, eps, lr, hasDecay)
napi_value AdamW(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const long n = c.integer(1);
    AdamArgs a{n,
               c.ptr(2, n),
               c.ptr(3, n),
               c.ptr(4, n),
               c.ptr(5, n),
               c.ptr(6, n),
               c.ptr(7, n),
               c.ptr(8, n),
               (float)c.num(9),
               (float)c.num(10),
               (float)c.num(11),
               (float)c.num(12),
               (float)c.num(13),
               (float)c.num(14),
               (float)c.num(15),
               (float)c.num(16),
               (float)c.num(17),
               c.num(18) != 0};
    adamw(a);
    return undef(env);
  });
}

// copy(heap, src, srcCount, dst, dstCount, rank, dims..., srcStrides..., dstStrides...) in elements
napi_value Copy(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const int rank = (int)c.integer(5);
    if (rank < 0 || rank > 8 || c.argc < (size_t)(6 + 3 * rank)) throw Fail{"copy: bad rank"};
    long dims[8], ss[8], ds[8];
    double smax = 0, dmax = 0;
    bool empty = false;
    for (int d = 0; d < rank; d++) {
      dims[d] = c.integer(6 + d);
      ss[d] = c.integer(6 + rank + d);
      ds[d] = c.integer(6 + 2 * rank + d);
      if (dims[d] <= 0) empty = true;
      if (ss[d] < 0 || ds[d] < 0) throw Fail{"copy: negative stride"};
      smax += (double)(dims[d] - 1) * ss[d];
      dmax += (double)(dims[d] - 1) * ds[d];
    }
    if (empty) return undef(env);
    if (smax >= c.num(2) || dmax >= c.num(4)) throw Fail{"copy: index space outside the tensors"};
    copy_nd(rank, dims, ss, ds, c.ptr<uint32_t>(1, c.num(2)), c.ptr<uint32_t>(3, c.num(4)));
    return undef(env);
  });
}

// binary(heap, op (0 add, 1 sub, 2 mul), n, a, na, b, nb, out)
napi_value Binary(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info);
    const int op = (int)c.integer(1);
    const long n = c.integer(2), na = c.integer(4), nb = c.integer(6);
    if (na <= 0 || nb <= 0 || n % na || n % nb || (na != n && nb != n && na != 1 && nb != 1)) throw Fail{"binary: unsupported broadcast"};
    const float *a = c.ptr(3, na), *b = c.ptr(5, nb);
    float* o = c.ptr(7, n);
    if (op == 0) binary<0>(n, a, na, b, nb, o);
    else if (op == 1) binary<1>(n, a, na, b, nb, o);
    else if (op == 2) binary<2>(n, a, na, b, nb, o);
    else throw Fail{"binary: unknown op"};
    return undef(env);
  });
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Call c(env, info, false);
    pool.resize((int)c.integer(0));
    napi_value r;
    napi_create_int32(env, pool.size(), &r);
    return r;
  });
}

napi_value Info(napi_env env, napi_callback_info) {
  return guard(env, [&] {
    __builtin_cpu_init();
    napi_value o, v;
    napi_create_object(env, &o);
    napi_get_boolean(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), &v);
    napi_set_named_property(env, o, "avx2fma", v);
    napi_create_int32(env, pool.size(), &v);
    napi_set_named_property(env, o, "threads", v);
    napi_create_int32(env, 1, &v);
    napi_set_named_property(env, o, "abi", v);
    napi_create_string_utf8(env, "gemm 6x16 avx2-fma", NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, o, "gemm", v);
    return o;
  });
}

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gemm", nullptr, Gemm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attnFwd", nullptr, AttnFwd, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attnBwd", nullptr, AttnBwd, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNorm", nullptr, LayerNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNormGradX", nullptr, LayerNormGradX, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNormGradGamma", nullptr, LayerNormGradGamma, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sum", nullptr, Sum, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gelu", nullptr, Gelu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"geluGrad", nullptr, GeluGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"xent", nullptr, Xent, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"xentGrad", nullptr, XentGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"adamw", nullptr, AdamW, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"copy", nullptr, Copy, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binary", nullptr, Binary, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

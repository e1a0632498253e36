// attrib's GPU kernels: CUDA C, f32, NCHW row-major, compiled at run time by NVRTC
// (no CUDA toolkit at build time) and, for the tests, as C++ on the host by the
// `attrib-gpu-emu` crate, which runs each launch's threads one after another.
//
// Every kernel has one signature, `(const Args a)`: pointers in `a.p`, integers in
// `a.i`, with `a.i[0]` the number of threads. One ABI lets the Rust side launch any
// kernel by name with one argument block, and the host emulator call any kernel
// through one function pointer type. Consequently no kernel uses shared memory or
// synchronises threads: each thread computes its own outputs (gathers, never
// scatters with atomics), so a serial emulation runs exactly the device's arithmetic.
//
// Rectifier kinds: 0 none, 1 ReLU, 2 ReLU6. Rules: 0 gradient, 1 guided, 2 deconvnet.
// Backward kernels take `acc`: 1 adds into the output (a gradient already holds a
// share), 0 overwrites it (the first share, which saves zero-filling the buffer).

struct Args {
  unsigned long long p[6];
  long long i[24];
};

#ifndef KERNEL
#define KERNEL(name) extern "C" __global__ void name(const Args a)
#endif
#ifndef THREAD
#define THREAD ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#endif

#define F(k) ((float*)a.p[k])
#define CF(k) ((const float*)a.p[k])
#define BEGIN                 \
  const long long t = THREAD; \
  if (t >= a.i[0]) return;

__device__ __forceinline__ float act_apply(int kind, float v) {
  if (kind == 1) return v > 0.f ? v : 0.f;
  if (kind == 2) return v > 6.f ? 6.f : (v > 0.f ? v : 0.f);
  return v;
}

// The rule's keep predicate for a rectifier of `kind` with output y and incoming g;
// the same predicates as the CPU's `rectifier_mask`.
__device__ __forceinline__ bool rule_keep(int kind, int rule, float y, float g) {
  if (rule == 2) return g > 0.f;
  bool active = kind == 2 ? (y > 0.f && y < 6.f) : y > 0.f;
  return rule == 1 ? (active && g > 0.f) : active;
}

__device__ __forceinline__ void put(float* out, long long k, float v, long long acc) {
  if (acc) out[k] += v; else out[k] = v;
}

// --- elementwise -----------------------------------------------------------------

// y (+)= x.  i: n, acc
KERNEL(copy_add) {
  BEGIN
  put(F(0), t, CF(1)[t], a.i[1]);
}

// y = act(a + b).  p: y, a, b  i: n, act
KERNEL(add_act) {
  BEGIN
  F(0)[t] = act_apply((int)a.i[1], CF(1)[t] + CF(2)[t]);
}

// y = act(x).  p: y, x  i: n, act
KERNEL(rectify) {
  BEGIN
  F(0)[t] = act_apply((int)a.i[1], CF(1)[t]);
}

// out (+)= rule(dy) at a rectifier of `kind` whose output is y (unused by
// deconvnet, which may pass 0). out may be dy itself with acc 0 (masking in place).
// p: out, dy, y  i: n, kind, rule, acc
KERNEL(rectifier_back) {
  BEGIN
  const int kind = (int)a.i[1], rule = (int)a.i[2];
  const float g = CF(1)[t];
  const float y = rule == 2 ? 0.f : CF(2)[t];
  put(F(0), t, rule_keep(kind, rule, y, g) ? g : 0.f, a.i[3]);
}

// Inference batch norm: y = x * scale[c] + shift[c].  p: y, x, scale, shift  i: n, C, HW
KERNEL(affine) {
  BEGIN
  const long long c = (t / a.i[2]) % a.i[1];
  F(0)[t] = CF(1)[t] * CF(2)[c] + CF(3)[c];
}

// dx (+)= dy * scale[c].  p: dx, dy, scale  i: n, C, HW, acc
KERNEL(affine_back) {
  BEGIN
  const long long c = (t / a.i[2]) % a.i[1];
  put(F(0), t, CF(1)[t] * CF(2)[c], a.i[3]);
}

// y[r, k] += bias[k] for a row-major (rows, K) matrix.  p: y, bias  i: n, K
KERNEL(bias_rows) {
  BEGIN
  F(0)[t] += CF(1)[t % a.i[1]];
}

// --- convolution by im2col + gemm --------------------------------------------------
// Geometry block, shared by the convolution kernels from a.i[1]:
//   1 N, 2 C, 3 H, 4 W, 5 kh, 6 kw, 7 sh, 8 sw, 9 dh, 10 dw, 11 pad_top, 12 pad_left,
//   13 Ho, 14 Wo

// col[(c*kh + i)*kw + j, n*P + p] = x[n, c, oy*sh + i*dh - pt, ox*sw + j*dw - pl]
// (0 outside), P = Ho*Wo: every image's columns side by side, so one gemm per group
// covers the batch. Rows of group g are contiguous because c = g*Cg + ci.
// p: col, x  i: n = C*kh*kw*N*P, geometry
KERNEL(im2col) {
  BEGIN
  const long long N = a.i[1], C = a.i[2], H = a.i[3], W = a.i[4], kh = a.i[5], kw = a.i[6];
  const long long Ho = a.i[13], Wo = a.i[14], P = Ho * Wo;
  const long long q = t % (N * P), row = t / (N * P);
  const long long n = q / P, p = q % P, oy = p / Wo, ox = p % Wo;
  const long long j = row % kw, i = (row / kw) % kh, c = row / (kw * kh);
  const long long y = oy * a.i[7] + i * a.i[9] - a.i[11];
  const long long x = ox * a.i[8] + j * a.i[10] - a.i[12];
  (void)C;
  F(0)[t] = (y >= 0 && y < H && x >= 0 && x < W) ? CF(1)[((n * C + c) * H + y) * W + x] : 0.f;
}

// The output position whose kernel tap `i` (dilation d, stride s, leading padding p)
// reads input position `pos`, if there is one among `outs`: the gathers of the input
// gradients run the forward's taps backwards with this.
__device__ __forceinline__ bool tap_source(long long pos, long long p, long long i,
                                           long long d, long long s, long long outs,
                                           long long* o) {
  const long long t = pos + p - i * d;
  if (t < 0 || t % s) return false;
  *o = t / s;
  return *o < outs;
}

// dx[n, c, y, x] (+)= sum of dcol over the kernel taps that read (y, x): the
// transpose of im2col as a gather.  p: dx, dcol  i: n = N*C*H*W, geometry, 15 acc
KERNEL(col2im) {
  BEGIN
  const long long N = a.i[1], C = a.i[2], H = a.i[3], W = a.i[4], kh = a.i[5], kw = a.i[6];
  const long long sh = a.i[7], sw = a.i[8], dh = a.i[9], dw = a.i[10];
  const long long Ho = a.i[13], Wo = a.i[14], P = Ho * Wo;
  const long long x = t % W, y = (t / W) % H, c = (t / (W * H)) % C, n = t / (W * H * C);
  float s = 0.f;
  long long oy, ox;
  for (long long i = 0; i < kh; ++i) {
    if (!tap_source(y, a.i[11], i, dh, sh, Ho, &oy)) continue;
    for (long long j = 0; j < kw; ++j) {
      if (!tap_source(x, a.i[12], j, dw, sw, Wo, &ox)) continue;
      s += CF(1)[((c * kh + i) * kw + j) * (N * P) + n * P + oy * Wo + ox];
    }
  }
  put(F(0), t, s, a.i[15]);
}

// y[n, o, p] = act(g[o, n*P + p] + bias[o]): the gemm's (O, N*P) result to NCHW,
// with the bias (p[2] may be 0) and a fused rectifier.  p: y, g, bias  i: n, N, O, P, act
KERNEL(onp_to_nchw) {
  BEGIN
  const long long N = a.i[1], O = a.i[2], P = a.i[3];
  const long long p = t % P, o = (t / P) % O, n = t / (P * O);
  float v = CF(1)[o * (N * P) + n * P + p];
  if (a.p[2]) v += CF(2)[o];
  F(0)[t] = act_apply((int)a.i[4], v);
}

// g[o, n*P + p] = dy[n, o, p]: the inverse layout change, for the input gradient.
// p: g, dy  i: n, N, O, P
KERNEL(nchw_to_onp) {
  BEGIN
  const long long N = a.i[1], O = a.i[2], P = a.i[3];
  const long long p = t % P, o = (t / P) % O, n = t / (P * O);
  F(0)[o * (N * P) + n * P + p] = CF(1)[t];
}

// --- depthwise convolution (groups = C, any channel multiplier) ---------------------
// y[n, o, oy, ox] = act(bias[o] + sum_ij w[o, i, j] x[n, o / m, ...]), m = O / C.
// p: y, x, w, bias  i: n = N*O*Ho*Wo, geometry, 15 O, 16 act
KERNEL(depthwise) {
  BEGIN
  const long long C = a.i[2], H = a.i[3], W = a.i[4], kh = a.i[5], kw = a.i[6];
  const long long Ho = a.i[13], Wo = a.i[14], O = a.i[15], m = O / C;
  const long long ox = t % Wo, oy = (t / Wo) % Ho, o = (t / (Wo * Ho)) % O;
  const long long n = t / (Wo * Ho * O);
  const float* plane = CF(1) + (n * C + o / m) * H * W;
  const float* w = CF(2) + o * kh * kw;
  float s = a.p[3] ? CF(3)[o] : 0.f;
  for (long long i = 0; i < kh; ++i) {
    const long long y = oy * a.i[7] + i * a.i[9] - a.i[11];
    if (y < 0 || y >= H) continue;
    for (long long j = 0; j < kw; ++j) {
      const long long x = ox * a.i[8] + j * a.i[10] - a.i[12];
      if (x >= 0 && x < W) s += w[i * kw + j] * plane[y * W + x];
    }
  }
  F(0)[t] = act_apply((int)a.i[16], s);
}

// dx[n, c, y, x] (+)= sum over the c's m output channels and the taps reading (y, x).
// p: dx, dy, w  i: n = N*C*H*W, geometry, 15 O, 16 acc
KERNEL(depthwise_back) {
  BEGIN
  const long long C = a.i[2], H = a.i[3], W = a.i[4], kh = a.i[5], kw = a.i[6];
  const long long sh = a.i[7], sw = a.i[8], dh = a.i[9], dw = a.i[10];
  const long long Ho = a.i[13], Wo = a.i[14], O = a.i[15], m = O / C;
  const long long x = t % W, y = (t / W) % H, c = (t / (W * H)) % C, n = t / (W * H * C);
  float s = 0.f;
  for (long long k = 0; k < m; ++k) {
    const long long o = c * m + k;
    const float* g = CF(1) + (n * O + o) * Ho * Wo;
    const float* w = CF(2) + o * kh * kw;
    long long oy, ox;
    for (long long i = 0; i < kh; ++i) {
      if (!tap_source(y, a.i[11], i, dh, sh, Ho, &oy)) continue;
      for (long long j = 0; j < kw; ++j)
        if (tap_source(x, a.i[12], j, dw, sw, Wo, &ox)) s += w[i * kw + j] * g[oy * Wo + ox];
    }
  }
  put(F(0), t, s, a.i[16]);
}

// --- pooling -------------------------------------------------------------------------
// Pool geometry from a.i[1]: 1 planes, 2 H, 3 W, 4 kh, 5 kw, 6 sh, 7 sw, 8 ph, 9 pw,
// 10 Ho, 11 Wo. Windows are clipped to the input (padding never wins a max).

__device__ __forceinline__ void window(long long o, long long s, long long p, long long k,
                                       long long len, long long* lo, long long* hi,
                                       long long* padded) {
  const long long start = o * s - p;
  long long end = start + k;
  if (end > len + p) end = len + p;
  *padded = end - start;
  *lo = start < 0 ? 0 : start;
  *hi = end > len ? len : end;
}

// First output index along one axis whose window can contain position `pos`, and
// one past the last: o*s - p <= pos < o*s - p + k.
__device__ __forceinline__ void reach(long long pos, long long s, long long p, long long k,
                                      long long outs, long long* lo, long long* hi) {
  const long long top = pos + p;  // o*s <= top, o*s > top - k
  long long first = top - k + 1;
  first = first <= 0 ? 0 : (first + s - 1) / s;
  long long last = top / s + 1;
  *lo = first;
  *hi = last < outs ? last : outs;
}

// Output (oy, ox)'s window: rows [y0, y1) and columns [x0, x1) of the input, and its
// height and width within the padded input (the average pool's divisor with padding).
struct PoolWindow {
  long long y0, y1, x0, x1, ph, pw;
};

__device__ __forceinline__ PoolWindow pool_window(const Args& a, long long oy, long long ox) {
  PoolWindow w;
  window(oy, a.i[6], a.i[8], a.i[4], a.i[2], &w.y0, &w.y1, &w.ph);
  window(ox, a.i[7], a.i[9], a.i[5], a.i[3], &w.x0, &w.x1, &w.pw);
  return w;
}

// The outputs whose windows can contain input pixel (y, x): rows [oy0, oy1), columns
// [ox0, ox1).
struct PoolReach {
  long long oy0, oy1, ox0, ox1;
};

__device__ __forceinline__ PoolReach pool_reach(const Args& a, long long y, long long x) {
  PoolReach r;
  reach(y, a.i[6], a.i[8], a.i[4], a.i[10], &r.oy0, &r.oy1);
  reach(x, a.i[7], a.i[9], a.i[5], a.i[11], &r.ox0, &r.ox1);
  return r;
}

// PyTorch's average-pool divisor: the window within the padded input
// (count_include_pad), else the pixels it covers.
__device__ __forceinline__ float avg_divisor(const PoolWindow& w, long long include_pad) {
  const long long cnt = include_pad ? w.ph * w.pw : (w.y1 - w.y0) * (w.x1 - w.x0);
  return (float)(cnt > 0 ? cnt : 1);
}

// y = window max, argmax = its index within the plane (as a float: planes are far
// below 2^24 pixels): the first maximum in row-major order, as PyTorch records it.
// p: y, argmax, x  i: n = planes*Ho*Wo, pool geometry
KERNEL(max_pool) {
  BEGIN
  const long long H = a.i[2], W = a.i[3], Ho = a.i[10], Wo = a.i[11];
  const long long ox = t % Wo, oy = (t / Wo) % Ho, pl = t / (Wo * Ho);
  const PoolWindow w = pool_window(a, oy, ox);
  const float* plane = CF(2) + pl * H * W;
  float m = plane[w.y0 * W + w.x0];
  long long at = w.y0 * W + w.x0;
  for (long long y = w.y0; y < w.y1; ++y)
    for (long long x = w.x0; x < w.x1; ++x) {
      const float v = plane[y * W + x];
      if (v > m || (v != v && m == m)) { m = v; at = y * W + x; }
    }
  F(0)[t] = m;
  F(1)[t] = (float)at;
}

// dx (+)= the gradients of the outputs whose switch is this pixel.
// p: dx, dy, argmax  i: n = planes*H*W, pool geometry, 12 acc
KERNEL(max_pool_back) {
  BEGIN
  const long long H = a.i[2], W = a.i[3], Ho = a.i[10], Wo = a.i[11];
  const long long x = t % W, y = (t / W) % H, pl = t / (W * H);
  const PoolReach r = pool_reach(a, y, x);
  const float me = (float)(y * W + x);
  const float* g = CF(1) + pl * Ho * Wo;
  const float* sw = CF(2) + pl * Ho * Wo;
  float s = 0.f;
  for (long long oy = r.oy0; oy < r.oy1; ++oy)
    for (long long ox = r.ox0; ox < r.ox1; ++ox)
      if (sw[oy * Wo + ox] == me) s += g[oy * Wo + ox];
  put(F(0), t, s, a.i[12]);
}

// Average pool with PyTorch's divisor (count_include_pad: the window within the
// padded input, else the pixels it covers).  p: y, x  i: n, pool geometry, 12 include_pad
KERNEL(avg_pool) {
  BEGIN
  const long long H = a.i[2], W = a.i[3], Ho = a.i[10], Wo = a.i[11];
  const long long ox = t % Wo, oy = (t / Wo) % Ho, pl = t / (Wo * Ho);
  const PoolWindow w = pool_window(a, oy, ox);
  const float* plane = CF(1) + pl * H * W;
  float s = 0.f;
  for (long long y = w.y0; y < w.y1; ++y)
    for (long long x = w.x0; x < w.x1; ++x) s += plane[y * W + x];
  F(0)[t] = s / avg_divisor(w, a.i[12]);
}

// p: dx, dy  i: n = planes*H*W, pool geometry, 12 include_pad, 13 acc
KERNEL(avg_pool_back) {
  BEGIN
  const long long H = a.i[2], W = a.i[3], Ho = a.i[10], Wo = a.i[11];
  const long long x = t % W, y = (t / W) % H, pl = t / (W * H);
  const PoolReach r = pool_reach(a, y, x);
  const float* g = CF(1) + pl * Ho * Wo;
  float s = 0.f;
  for (long long oy = r.oy0; oy < r.oy1; ++oy)
    for (long long ox = r.ox0; ox < r.ox1; ++ox)
      s += g[oy * Wo + ox] / avg_divisor(pool_window(a, oy, ox), a.i[12]);
  put(F(0), t, s, a.i[13]);
}

// Adaptive average pool: bin o of `out` over `len` is [o*len/out, ceil((o+1)*len/out)).
// p: y, x  i: n = planes*Ho*Wo, 1 planes, 2 H, 3 W, 4 Ho, 5 Wo
KERNEL(adaptive_avg) {
  BEGIN
  const long long H = a.i[2], W = a.i[3], Ho = a.i[4], Wo = a.i[5];
  const long long ox = t % Wo, oy = (t / Wo) % Ho, pl = t / (Wo * Ho);
  const long long y0 = oy * H / Ho, y1 = ((oy + 1) * H + Ho - 1) / Ho;
  const long long x0 = ox * W / Wo, x1 = ((ox + 1) * W + Wo - 1) / Wo;
  const float* plane = CF(1) + pl * H * W;
  float s = 0.f;
  for (long long y = y0; y < y1; ++y)
    for (long long x = x0; x < x1; ++x) s += plane[y * W + x];
  F(0)[t] = s / (float)((y1 - y0) * (x1 - x0));
}

// p: dx, dy  i: n = planes*H*W, 1 planes, 2 H, 3 W, 4 Ho, 5 Wo, 6 acc
KERNEL(adaptive_avg_back) {
  BEGIN
  const long long H = a.i[2], W = a.i[3], Ho = a.i[4], Wo = a.i[5];
  const long long x = t % W, y = (t / W) % H, pl = t / (W * H);
  const float* g = CF(1) + pl * Ho * Wo;
  float s = 0.f;
  for (long long oy = 0; oy < Ho; ++oy) {
    const long long y0 = oy * H / Ho, y1 = ((oy + 1) * H + Ho - 1) / Ho;
    if (y < y0 || y >= y1) continue;
    for (long long ox = 0; ox < Wo; ++ox) {
      const long long x0 = ox * W / Wo, x1 = ((ox + 1) * W + Wo - 1) / Wo;
      if (x >= x0 && x < x1) s += g[oy * Wo + ox] / (float)((y1 - y0) * (x1 - x0));
    }
  }
  put(F(0), t, s, a.i[6]);
}

// --- rows ------------------------------------------------------------------------------

// y[r] = x[idx[r]] for rows of `per` values (idx holds row numbers as floats, exact
// below 2^24).  p: y, x, idx  i: n = rows*per, per
KERNEL(gather_rows) {
  BEGIN
  const long long per = a.i[1], r = t / per;
  F(0)[t] = CF(1)[(long long)CF(2)[r] * per + t % per];
}

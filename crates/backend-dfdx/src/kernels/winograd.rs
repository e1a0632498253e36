//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2x2 block of outputs is `A^T [(G g G^T) ⊙ (B^T d B)] A` for the 4x4 input
//! tile `d` that covers it: 16 multiplications instead of 36. Across channels the
//! elementwise products become 16 independent matrix products
//! `M[ξ] (c_out x tiles) = U[ξ] (c_out x c_in) * V[ξ] (c_in x tiles)`, whose tiles run
//! over the whole batch, so one gemm serves every image. ResNet and VGG spend most of
//! their FLOPs in such convolutions, forward and (as the same correlation with the
//! flipped, transposed kernel) in the input gradient.
//!
//! The transforms only add and halve, so rounding stays at the level of the direct
//! sum (the tests compare against im2col in f64 and f32). Weight transforms are made
//! once per layer and cached by the caller ([`Winograd`]).

use rayon::prelude::*;

use super::{matmul_on, ConvGeom, MatRef, SharedOut};
use crate::device::with_scratch;
use crate::Elem;

/// Below this many input or output channels the im2col path is as fast (the inner
/// dimension of the tile products would be too short for gemm to pay off).
const MIN_CHANNELS: usize = 16;

/// Below this many 2x2 output tiles per thread the tile products are too narrow
/// for gemm to beat im2col in the forward pass (late layers of a single image:
/// 512 channels at 7x7 take 1.51 ms this way and 1.36 ms by im2col).
const MIN_TILES_PER_THREAD: usize = 20;

/// The same for the input gradient, where im2col's col2im pass makes the direct way
/// dearer (512 channels at 7x7: 1.54 ms this way, 2.00 ms by im2col).
const MIN_TILES_PER_THREAD_BACKWARD: usize = 8;

/// Tiles a unit covers at least, when the batch has them: gemm's register blocks run
/// along the tiles, 64 at a time.
const MIN_UNIT_TILES: usize = 64;

/// Scratch per unit of work, in values: a unit's transformed inputs and products
/// (`16 * tiles * (c_in + c_out)`) stay within about 1 MB of f32, in L2.
const BLOCK_VALUES: usize = 1 << 18;

/// Layers whose transformed tiles (inputs and products) take at most this many
/// values run whole ([`Plan::run_layer`]): 16 MB of f32, which covers every 3x3
/// layer of ResNet-18 at batch 1. At batch 8 the whole-layer way wins where the
/// units would read the transformed kernels over more than half as many values as
/// it moves (128 channels at 28x28: 4.4 against 5.0 ms; 64 channels at 56x56: 5.3
/// against 5.2 ms, so those stay in units).
const LAYER_VALUES: usize = 1 << 22;

/// The transformed kernels of one 3x3 convolution: `U = G g G^T` for the forward
/// pass and for the input gradient (kernel flipped, channels swapped), the latter made
/// on first use so forward-only passes never pay for it.
///
/// One `Winograd` per kernel: the transforms are made from the first `weight` passed
/// and reused, so a layer owns its own (as [`Conv2d`](crate::Conv2d) does).
#[derive(Debug, Default)]
pub struct Winograd<E> {
    fwd: std::sync::OnceLock<Vec<E>>,
    bwd: std::sync::OnceLock<Vec<E>>,
}

impl<E: Elem> Winograd<E> {
    /// Whether `g` is a convolution this path computes, and faster than im2col: 3x3,
    /// stride 1, no dilation, one group, enough channels both ways and enough output
    /// tiles to keep every thread's products wide.
    pub fn applies(g: &ConvGeom) -> bool {
        Self::worth_it(g, MIN_TILES_PER_THREAD)
    }

    /// [`Winograd::applies`] for the input gradient of `g`.
    pub fn applies_backward(g: &ConvGeom) -> bool {
        Self::worth_it(g, MIN_TILES_PER_THREAD_BACKWARD)
    }

    fn worth_it(g: &ConvGeom, tiles_per_thread: usize) -> bool {
        let tiles = g.n * g.ho.div_ceil(2) * g.wo.div_ceil(2);
        Self::supports(g)
            && g.c_in >= MIN_CHANNELS
            && g.c_out >= MIN_CHANNELS
            && tiles >= tiles_per_thread * rayon::current_num_threads().max(1)
    }

    /// Whether `g` can be computed this way at all (any size, any padding): 3x3,
    /// stride 1, no dilation, one group.
    pub fn supports(g: &ConvGeom) -> bool {
        g.kernel == [3, 3] && g.stride == [1, 1] && g.dilation == [1, 1] && g.groups == 1
    }

    /// `y = conv(x, weight) + bias` for a geometry [`Winograd::supports`],
    /// overwriting `y`; `weight` is the `(c_out, c_in, 3, 3)` kernel these transforms
    /// were (or will be) made from.
    ///
    /// # Panics
    /// If `g` is not [supported](Winograd::supports) or the slices are shorter than
    /// `g` says.
    pub fn forward(&self, g: &ConvGeom, x: &[E], weight: &[E], bias: Option<&[E]>, y: &mut [E]) {
        self.forward_on(g, x, weight, bias, y, false)
    }

    fn forward_on(
        &self,
        g: &ConvGeom,
        x: &[E],
        weight: &[E],
        bias: Option<&[E]>,
        y: &mut [E],
        add: bool,
    ) {
        assert!(
            Self::supports(g),
            "Winograd F(2x2, 3x3) needs a 3x3, stride-1, ungrouped convolution"
        );
        let u = self
            .fwd
            .get_or_init(|| transform_kernels(weight, g.c_out, g.c_in, false));
        let plan = Plan {
            n: g.n,
            c_in: g.c_in,
            h: g.h,
            w: g.w,
            c_out: g.c_out,
            ho: g.ho,
            wo: g.wo,
            top: -(g.pad[0] as isize),
            left: -(g.pad[2] as isize),
        };
        plan.run(x, u, bias, y, add);
    }

    /// `y += conv(x, weight)`, otherwise as [`Winograd::forward`].
    ///
    /// # Panics
    /// As [`Winograd::forward`].
    pub fn forward_add(&self, g: &ConvGeom, x: &[E], weight: &[E], y: &mut [E]) {
        self.forward_on(g, x, weight, None, y, true)
    }

    /// `dx += conv_transpose(dy, weight)`: the same correlation with the kernel
    /// flipped and its channels swapped, and the padding mirrored.
    ///
    /// # Panics
    /// As [`Winograd::forward`].
    pub fn backward_input(&self, g: &ConvGeom, dy: &[E], weight: &[E], dx: &mut [E]) {
        assert!(
            Self::supports(g),
            "Winograd F(2x2, 3x3) needs a 3x3, stride-1, ungrouped convolution"
        );
        let u = self
            .bwd
            .get_or_init(|| transform_kernels(weight, g.c_out, g.c_in, true));
        // dx[q] = sum_j dy[q + pad - 2 + j] * w[2 - j]
        let plan = Plan {
            n: g.n,
            c_in: g.c_out,
            h: g.ho,
            w: g.wo,
            c_out: g.c_in,
            ho: g.h,
            wo: g.w,
            top: g.pad[0] as isize - 2,
            left: g.pad[2] as isize - 2,
        };
        plan.run(dy, u, None, dx, true);
    }
}

/// `U[ξ][o][i] = (G g G^T)[ξ]` for each kernel `g = weight[o][i]` (forward), or for
/// `g = flip(weight[i][o])` with input and output swapped (input gradient). Computed
/// in f64 and rounded once.
fn transform_kernels<E: Elem>(weight: &[E], c_out: usize, c_in: usize, flipped: bool) -> Vec<E> {
    let (rows, cols) = if flipped {
        (c_in, c_out)
    } else {
        (c_out, c_in)
    };
    let mut u = vec![E::zero(); 16 * rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let (o, i) = if flipped { (c, r) } else { (r, c) };
            let k = &weight[(o * c_in + i) * 9..][..9];
            let g = |a: usize, b: usize| {
                if flipped {
                    k[(2 - a) * 3 + (2 - b)].as_f64()
                } else {
                    k[a * 3 + b].as_f64()
                }
            };
            // G g: 4x3, column b from the kernel's column b.
            let col = |b: usize| {
                let (g0, g1, g2) = (g(0, b), g(1, b), g(2, b));
                [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
            };
            let cols3 = [col(0), col(1), col(2)];
            let gg: [[f64; 3]; 4] = std::array::from_fn(|a| std::array::from_fn(|b| cols3[b][a]));
            for (a, row) in gg.iter().enumerate() {
                let [g0, g1, g2] = *row;
                let t = [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2];
                for (b, &v) in t.iter().enumerate() {
                    u[((a * 4 + b) * rows + r) * cols + c] = E::of(v);
                }
            }
        }
    }
    u
}

/// One correlation of `x (n, c_in, h, w)` with 3x3 kernels into `y (n, c_out, ho,
/// wo)`, where output `(oy, ox)` reads input rows `oy + top ..= oy + top + 2` (and
/// likewise columns); reads outside the input are zeros.
struct Plan {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    ho: usize,
    wo: usize,
    top: isize,
    left: isize,
}

impl Plan {
    /// Runs small layers whole ([`Plan::run_layer`]), larger ones in units of tile
    /// rows ([`Plan::run_units`]).
    fn run<E: Elem>(&self, x: &[E], u: &[E], bias: Option<&[E]>, y: &mut [E], add: bool) {
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        if self.n * th * tw == 0 {
            return;
        }
        assert!(
            y.len() >= self.n * self.c_out * self.ho * self.wo
                && x.len() >= self.n * self.c_in * self.h * self.w
        );
        // Each unit reads all the transformed kernels; the whole-layer way reads
        // them once but moves every transformed tile through memory.
        let transformed = 16 * self.n * th * tw * (self.c_in + self.c_out);
        let units = (self.n * th).div_ceil(self.unit_rows());
        if transformed <= LAYER_VALUES || 2 * units * 16 * self.c_in * self.c_out > transformed {
            self.run_layer(x, u, bias, y, add)
        } else {
            self.run_units(x, u, bias, y, add)
        }
    }

    /// Tile rows per unit: runs of tile rows over the whole batch (row R is tile row
    /// R % th of image R / th), within the cache budget, but at least MIN_UNIT_TILES
    /// tiles where the batch allows (narrower tile products run gemm's slow edge
    /// kernels), and enough units for every thread.
    fn unit_rows(&self) -> usize {
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let threads = rayon::current_num_threads().max(1);
        (BLOCK_VALUES / (16 * (self.c_in + self.c_out) * tw))
            .max(MIN_UNIT_TILES.div_ceil(tw))
            .min((self.n * th).div_ceil(threads))
            .max(1)
    }

    /// Splits the output into units of whole tile rows and runs them in parallel,
    /// each through input transform, the 16 products and output transform on its
    /// own scratch. Within a unit the tiles of a row are contiguous, so both
    /// transforms run along rows. The caller checks the slices' lengths.
    fn run_units<E: Elem>(&self, x: &[E], u: &[E], bias: Option<&[E]>, y: &mut [E], add: bool) {
        let (ci, co) = (self.c_in, self.c_out);
        let tw = self.wo.div_ceil(2);
        let all_rows = self.n * self.ho.div_ceil(2);
        let rows = self.unit_rows();
        let out = SharedOut(y.as_mut_ptr());
        (0..all_rows.div_ceil(rows))
            .into_par_iter()
            .for_each(|unit| {
                let row0 = unit * rows;
                let nrows = rows.min(all_rows - row0);
                let tb = nrows * tw;
                let len = 16 * tb * (ci + co) + 9 * (tw + 2);
                with_scratch(len, |scratch| {
                    self.unit(x, u, bias, out, add, row0, nrows, scratch)
                });
            });
    }

    /// The whole layer in three parallel passes: every tile's input transform (by
    /// input channel), the 16 tile products (by transform position, so each
    /// transformed kernel is read once in all), and the output transforms (by output
    /// channel). For layers with few tiles and many channels, where units of tile rows
    /// would each read all of the transformed kernels.
    fn run_layer<E: Elem>(&self, x: &[E], u: &[E], bias: Option<&[E]>, y: &mut [E], add: bool) {
        let (ci, co) = (self.c_in, self.c_out);
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let all_rows = self.n * th;
        let tiles = all_rows * tw;
        let hw = self.h * self.w;
        with_scratch(16 * tiles * (ci + co), |scratch: &mut [E]| {
            // v: [c_in][ξ][tile], m: [ξ][c_out][tile].
            let (v, m) = scratch.split_at_mut(16 * ci * tiles);
            v.par_chunks_mut(16 * tiles)
                .enumerate()
                .for_each(|(c, vc)| {
                    with_scratch(8 * (tw + 1), |buf| {
                        for r in 0..all_rows {
                            let (b, ty) = (r / th, r % th);
                            let plane = &x[(b * ci + c) * hw..][..hw];
                            self.input_rows(plane, ty, tw, buf, vc, r * tw, tiles);
                        }
                    })
                });
            let v = &*v;
            m.par_chunks_mut(co * tiles)
                .enumerate()
                .for_each(|(xi, mx)| {
                    matmul_on(
                        mx,
                        co,
                        tiles,
                        ci,
                        MatRef::rows(&u[xi * co * ci..][..co * ci], ci),
                        MatRef {
                            data: &v[xi * tiles..],
                            row_stride: 16 * tiles,
                            col_stride: 1,
                        },
                        false,
                        false,
                    );
                });
            let m = &*m;
            let out = SharedOut(y.as_mut_ptr());
            (0..co).into_par_iter().for_each(|o| {
                with_scratch(6 * tw, |buf| {
                    for r in 0..all_rows {
                        // SAFETY: `run` checked `y`'s length; this task alone
                        // writes channel `o`.
                        unsafe { self.output_rows(m, tiles, r * tw, r, o, out, bias, add, buf) };
                    }
                })
            });
        });
    }

    /// One unit: global tile rows `row0 .. row0 + nrows`.
    #[allow(clippy::too_many_arguments)]
    fn unit<E: Elem>(
        &self,
        x: &[E],
        u: &[E],
        bias: Option<&[E]>,
        out: SharedOut<E>,
        add: bool,
        row0: usize,
        nrows: usize,
        scratch: &mut [E],
    ) {
        let (ci, co) = (self.c_in, self.c_out);
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let tb = nrows * tw;
        let (v, rest) = scratch.split_at_mut(16 * ci * tb);
        let (m, row_buf) = rest.split_at_mut(16 * co * tb);
        let hw = self.h * self.w;
        for r in 0..nrows {
            let (b, ty) = ((row0 + r) / th, (row0 + r) % th);
            for c in 0..ci {
                let plane = &x[(b * ci + c) * hw..][..hw];
                self.input_rows(plane, ty, tw, row_buf, v, c * tb + r * tw, ci * tb);
            }
        }
        for xi in 0..16 {
            matmul_on(
                &mut m[xi * co * tb..][..co * tb],
                co,
                tb,
                ci,
                MatRef::rows(&u[xi * co * ci..][..co * ci], ci),
                MatRef::rows(&v[xi * ci * tb..][..ci * tb], tb),
                false,
                false,
            );
        }
        for o in 0..co {
            for r in 0..nrows {
                // SAFETY: `run` checked `y`'s length; the unit owns its tile rows
                // (units partition the tile rows of the batch).
                unsafe { self.output_rows(m, tb, r * tw, row0 + r, o, out, bias, add, row_buf) };
            }
        }
    }

    /// `A^T M A` for output channel `o` of the tiles of tile row `row` (counted over
    /// the batch): the two output rows they cover, with `bias` added, or added into
    /// `out` when `add`. `m` holds the products `[ξ][c_out][tiles]`, the tile row's
    /// first tile at `first`.
    ///
    /// # Safety
    /// `out` is a live slice of the whole output and no other thread accesses
    /// channel `o` of these rows meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_rows<E: Elem>(
        &self,
        m: &[E],
        tiles: usize,
        first: usize,
        row: usize,
        o: usize,
        out: SharedOut<E>,
        bias: Option<&[E]>,
        add: bool,
        buf: &mut [E],
    ) {
        let (th, tw) = (self.ho.div_ceil(2), self.wo.div_ceil(2));
        let co = self.c_out;
        let b0 = if add {
            None
        } else {
            Some(bias.map_or(E::zero(), |bs| bs[o]))
        };
        let (b, ty) = (row / th, row % th);
        let mrow = |xi: usize| &m[(xi * co + o) * tiles + first..][..tw];
        let oy = 2 * ty;
        for (dy, pair) in [[0, 4, 8], [4, 8, 12]].iter().enumerate() {
            if oy + dy >= self.ho {
                break;
            }
            let at = ((b * co + o) * self.ho + oy + dy) * self.wo;
            // SAFETY: by the caller's contract.
            let dst = unsafe { out.row(at, self.wo) };
            output_row(
                [mrow(pair[0]), mrow(pair[1]), mrow(pair[2])],
                [mrow(pair[0] + 1), mrow(pair[1] + 1), mrow(pair[2] + 1)],
                [mrow(pair[0] + 2), mrow(pair[1] + 2), mrow(pair[2] + 2)],
                [mrow(pair[0] + 3), mrow(pair[1] + 3), mrow(pair[2] + 3)],
                dy == 1,
                buf,
                dst,
                b0,
            );
        }
    }

    /// `B^T d B` for every tile of tile row `ty` of one plane, written to
    /// `v[base + ξ * stride ..][..tw]` for each transform position `ξ`, tiles
    /// contiguous. The four input rows are split into even and odd columns so that
    /// every step runs along a row.
    #[allow(clippy::too_many_arguments)]
    fn input_rows<E: Elem>(
        &self,
        plane: &[E],
        ty: usize,
        tw: usize,
        buf: &mut [E],
        v: &mut [E],
        base: usize,
        stride: usize,
    ) {
        let k = tw + 1;
        let (even, odd) = buf[..8 * k].split_at_mut(4 * k);
        let y0 = (2 * ty) as isize + self.top;
        let (w, left) = (self.w as isize, self.left);
        // Pairs (even, odd) i whose both columns left + 2i, left + 2i + 1 lie inside
        // the row are copied; the few at the borders are tested.
        let lo = ((-left).max(0) as usize).div_ceil(2).min(k);
        let hi = (((w - left).max(0) as usize) / 2).clamp(lo, k);
        for r in 0..4 {
            let (e, o) = (&mut even[r * k..][..k], &mut odd[r * k..][..k]);
            let yy = y0 + r as isize;
            if yy < 0 || yy >= self.h as isize {
                e.fill(E::zero());
                o.fill(E::zero());
                continue;
            }
            let row = &plane[yy as usize * self.w..][..self.w];
            let at = |xx: isize| {
                if xx >= 0 && xx < w {
                    row[xx as usize]
                } else {
                    E::zero()
                }
            };
            for i in (0..lo).chain(hi..k) {
                e[i] = at(left + 2 * i as isize);
                o[i] = at(left + 2 * i as isize + 1);
            }
            if lo < hi {
                let src = &row[(left + 2 * lo as isize) as usize..][..2 * (hi - lo)];
                for ((pair, ev), od) in src.chunks_exact(2).zip(&mut e[lo..hi]).zip(&mut o[lo..hi])
                {
                    *ev = pair[0];
                    *od = pair[1];
                }
            }
        }
        // B^T along the rows, in place: row 0 - row 2, row 1 + row 2, row 2 - row 1,
        // row 1 - row 3 (each for the even and the odd columns).
        for cols in [&mut *even, &mut *odd] {
            let (r0, rest) = cols.split_at_mut(k);
            let (r1, rest) = rest.split_at_mut(k);
            let (r2, r3) = rest.split_at_mut(k);
            for i in 0..k {
                let (a, b, c, d) = (r0[i], r1[i], r2[i], r3[i]);
                r0[i] = a - c;
                r1[i] = b + c;
                r2[i] = c - b;
                r3[i] = b - d;
            }
        }
        // B along the columns: tile tx reads columns 2tx .. 2tx+3, i.e. even[tx],
        // odd[tx], even[tx+1], odd[tx+1].
        for r in 0..4 {
            let (e, o) = (&even[r * k..][..k], &odd[r * k..][..k]);
            let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
            let at = |j: usize| base + (r * 4 + j) * stride;
            let out = &mut v[at(0)..][..tw];
            for t in 0..tw {
                out[t] = e0[t] - e1[t];
            }
            let out = &mut v[at(1)..][..tw];
            for t in 0..tw {
                out[t] = o0[t] + e1[t];
            }
            let out = &mut v[at(2)..][..tw];
            for t in 0..tw {
                out[t] = e1[t] - o0[t];
            }
            let out = &mut v[at(3)..][..tw];
            for t in 0..tw {
                out[t] = o0[t] - o1[t];
            }
        }
    }
}

/// One output row of every tile in a tile row: `A^T M A` where `cj` holds, for
/// column `j` of the 4x4 product, the three rows `A^T` combines (rows 0,1,2 for the
/// tile's first output row, rows 1,2,3 for its second, then `a + b + c` or
/// `a - b - c`). Writes columns `2tx` and `2tx + 1` of `dst`, adding the bias or
/// adding into `dst` when `bias` is `None`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn output_row<E: Elem>(
    c0: [&[E]; 3],
    c1: [&[E]; 3],
    c2: [&[E]; 3],
    c3: [&[E]; 3],
    second: bool,
    buf: &mut [E],
    dst: &mut [E],
    bias: Option<E>,
) {
    let tw = c0[0].len();
    let (s, rest) = buf.split_at_mut(4 * tw);
    let (ev, od) = rest.split_at_mut(tw);
    let od = &mut od[..tw];
    for (j, cj) in [c0, c1, c2, c3].iter().enumerate() {
        let sj = &mut s[j * tw..][..tw];
        let [a, b, c] = *cj;
        if second {
            for t in 0..tw {
                sj[t] = a[t] - b[t] - c[t];
            }
        } else {
            for t in 0..tw {
                sj[t] = a[t] + b[t] + c[t];
            }
        }
    }
    let (s0, s1, s2, s3) = (&s[..tw], &s[tw..2 * tw], &s[2 * tw..3 * tw], &s[3 * tw..]);
    for t in 0..tw {
        ev[t] = s0[t] + s1[t] + s2[t];
        od[t] = s1[t] - s2[t] - s3[t];
    }
    let wo = dst.len();
    let pairs = wo / 2;
    let (head, tail) = dst.split_at_mut(2 * pairs);
    match bias {
        Some(b0) => {
            for (d, (&e, &o)) in head.chunks_exact_mut(2).zip(ev.iter().zip(od.iter())) {
                d[0] = e + b0;
                d[1] = o + b0;
            }
            if let Some(d) = tail.first_mut() {
                *d = ev[pairs] + b0;
            }
        }
        None => {
            for (d, (&e, &o)) in head.chunks_exact_mut(2).zip(ev.iter().zip(od.iter())) {
                d[0] += e;
                d[1] += o;
            }
            if let Some(d) = tail.first_mut() {
                *d += ev[pairs];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::values;

    /// The two ways of running a layer agree (the integration tests compare the one
    /// each size picks against im2col; this ties the other to it), forward with bias
    /// and accumulating, on odd sizes, batches and padding that units split unevenly.
    #[test]
    fn whole_layer_and_units_agree() {
        for (n, ci, co, h, w, top, left) in [
            (1, 16, 24, 9, 7, -1, -1),
            (3, 20, 16, 13, 11, -1, 0),
            (2, 32, 40, 30, 29, 0, -2),
        ] {
            let plan = Plan {
                n,
                c_in: ci,
                h,
                w,
                c_out: co,
                ho: h,
                wo: w,
                top,
                left,
            };
            let x = values(n * ci * h * w, 1);
            let weight = values(co * ci * 9, 2);
            let bias = values(co, 3);
            let u = transform_kernels(&weight, co, ci, false);
            let start = values(n * co * h * w, 4);
            for add in [false, true] {
                let (mut a, mut b) = (start.clone(), start.clone());
                plan.run_layer(&x, &u, Some(&bias), &mut a, add);
                plan.run_units(&x, &u, Some(&bias), &mut b, add);
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
                assert!(err < 1e-12, "n={n} {ci}->{co} {h}x{w} add={add}: {err}");
            }
        }
    }
}

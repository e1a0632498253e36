//! Host kernels on plain slices, NCHW and row-major, one file per op family. The tape
//! ops in [`crate::ops`] call these for the forward and the backward pass; keeping them
//! free of dfdx types keeps them testable on their own and shared by every device path.

pub mod boxes;
mod conv;
mod depthwise;
mod gemm;
mod geom;
mod linear;
mod lstm;
mod parallel;
mod pool;
pub mod roi;
mod rows;
pub mod winograd;

pub use conv::*;
pub(crate) use gemm::*;
pub use geom::*;
pub use linear::*;
pub use lstm::*;
pub use parallel::*;
pub use pool::*;
pub use roi::{Roi, RoiAlign};
pub use rows::*;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `len` values in [-0.5, 0.5) from an xorshift stream seeded by `seed`.
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn matmul_transposes() {
        // [[1,2],[3,4]] * [[5,6],[7,8]]^T = [[17,23],[39,53]]
        let a = [1.0f64, 2.0, 3.0, 4.0];
        let b = [5.0f64, 6.0, 7.0, 8.0];
        let mut c = [0.0f64; 4];
        matmul(
            &mut c,
            2,
            2,
            2,
            MatRef::rows(&a, 2),
            MatRef::transposed(&b, 2),
            false,
        );
        assert_eq!(c, [17.0, 23.0, 39.0, 53.0]);
        matmul(
            &mut c,
            2,
            2,
            2,
            MatRef::transposed(&a, 2),
            MatRef::rows(&b, 2),
            true,
        );
        // a^T b = [[26,30],[38,44]] added on top.
        assert_eq!(c, [43.0, 53.0, 77.0, 97.0]);
    }

    #[test]
    fn conv_by_hand() {
        // 1x1x3x3 input, 2x2 kernel of ones, stride 1: sums of 2x2 windows.
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let w = vec![1.0; 4];
        let g = ConvGeom::new([1, 1, 3, 3], 1, 1, [2, 2], [1, 1], [1, 1], [0; 4], 1).unwrap();
        let mut y = vec![0.0; g.out_len()];
        conv2d_forward(&g, &x, &w, Some(&[0.5]), &mut y);
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
        // Asymmetric "same" padding (bottom/right only), stride 2: windows at 0 and 2.
        let g = ConvGeom::new([1, 1, 3, 3], 1, 1, [2, 2], [2, 2], [1, 1], [0, 1, 0, 1], 1).unwrap();
        let mut y = vec![0.0; g.out_len()];
        conv2d_forward(&g, &x, &w, None, &mut y);
        assert_eq!(y, vec![12.0, 9.0, 15.0, 9.0]);
    }

    /// The blocked im2col forward (stems with large im2col matrices) against the
    /// convolution sum written out, with groups, stride, dilation, asymmetric padding,
    /// a batch, bias or none; blocks split the output rows unevenly.
    #[test]
    fn blocked_forward_is_the_convolution_sum() {
        let g = ConvGeom::new(
            [2, 16, 83, 81],
            6,
            8,
            [5, 4],
            [1, 2],
            [2, 1],
            [3, 1, 2, 0],
            2,
        )
        .unwrap();
        assert!(g.blocked() && !g.ho.is_multiple_of(g.block_rows()));
        let x = values(2 * 16 * 83 * 81, 1);
        let w = values(6 * 8 * 5 * 4, 2);
        let bias = values(6, 3);
        let mut want = vec![0.0; g.out_len()];
        for b in 0..2 {
            for o in 0..6 {
                let grp = o / 3;
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut sum = bias[o];
                        for ci in 0..8 {
                            let c = grp * 8 + ci;
                            for i in 0..5 {
                                for j in 0..4 {
                                    let yy = (oy + 2 * i) as isize - 3;
                                    let xx = (ox * 2 + j) as isize - 2;
                                    if (0..83).contains(&yy) && (0..81).contains(&xx) {
                                        let xv =
                                            x[((b * 16 + c) * 83 + yy as usize) * 81 + xx as usize];
                                        sum += xv * w[((o * 8 + ci) * 5 + i) * 4 + j];
                                    }
                                }
                            }
                        }
                        want[((b * 6 + o) * g.ho + oy) * g.wo + ox] = sum;
                    }
                }
            }
        }
        let mut y = vec![7.0; g.out_len()];
        conv2d_forward(&g, &x, &w, Some(&bias), &mut y);
        let err = y
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-12, "with bias: {err}");
        let mut y = vec![7.0; g.out_len()];
        conv2d_forward(&g, &x, &w, None, &mut y);
        let err = y
            .iter()
            .zip(&want)
            .enumerate()
            .fold(0.0f64, |m, (k, (a, b))| {
                m.max((a - (b - bias[k / g.pixels() % 6])).abs())
            });
        assert!(err < 1e-12, "without bias: {err}");
        // Into new memory, block by block, with a rectifier as the epilogue.
        let relu = |s: &mut [f64]| s.iter_mut().for_each(|v| *v = v.max(0.0));
        let y = conv2d_forward_new(&g, &x, &w, Some(&bias), &relu);
        let err = y
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b.max(0.0)).abs()));
        assert!(err < 1e-12, "new, rectified: {err}");
    }

    #[test]
    fn pools_by_hand() {
        let x = [1.0f32, 5.0, 2.0, 5.0, 3.0, 0.0, 4.0, 1.0, 6.0];
        let g = PoolGeom::new(1, 3, 3, [2, 2], [1, 1], [0, 0], false).unwrap();
        let (mut y, mut a) = (vec![0.0; 4], vec![0u32; 4]);
        max_pool_forward(&g, &x, &mut y, &mut a);
        assert_eq!(y, vec![5.0, 5.0, 5.0, 6.0]);
        assert_eq!(a, vec![1, 1, 3, 8]); // first maximum wins the tie at 1 vs 3
        let mut avg = vec![0.0; 4];
        avg_pool_forward(&g, true, &x, &mut avg);
        assert_eq!(avg, vec![14.0 / 4.0, 10.0 / 4.0, 13.0 / 4.0, 10.0 / 4.0]);
        // ceil_mode: 3 with k=2,s=2 -> 2 windows, the second clipped.
        let g = PoolGeom::new(1, 3, 3, [2, 2], [2, 2], [0, 0], true).unwrap();
        assert_eq!((g.ho, g.wo), (2, 2));
        assert_eq!(adaptive_bins(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
    }
}

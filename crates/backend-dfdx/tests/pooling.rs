//! Max pooling against a direct transcription of PyTorch's rule (scan the window in
//! row-major order; a larger value or any NaN replaces the best; a NaN ends its row):
//! the pool must pick the same values *and* switches, ties and NaN included.

use attrib_dfdx::kernels::{max_pool_forward, PoolGeom};
use proptest::prelude::*;

fn reference(g: &PoolGeom, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let (mut y, mut arg) = (Vec::new(), Vec::new());
    let bound = |o: usize, s: usize, p: usize, k: usize, len: usize| {
        let start = (o * s) as isize - p as isize;
        let end = (start + k as isize).min(len as isize);
        (start.max(0) as usize, end.max(0) as usize)
    };
    for plane in x.chunks(g.h * g.w).take(g.planes) {
        for oy in 0..g.ho {
            let (y0, y1) = bound(oy, g.stride[0], g.pad[0], g.kernel[0], g.h);
            for ox in 0..g.wo {
                let (x0, x1) = bound(ox, g.stride[1], g.pad[1], g.kernel[1], g.w);
                let (mut best, mut best_i) = (f64::NEG_INFINITY, y0 * g.w + x0);
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        let v = plane[yy * g.w + xx];
                        if v > best || v.is_nan() {
                            best = v;
                            best_i = yy * g.w + xx;
                            if v.is_nan() {
                                break;
                            }
                        }
                    }
                }
                y.push(best);
                arg.push(best_i as u32);
            }
        }
    }
    (y, arg)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn pools_match_pytorchs_rule(
        planes in 1usize..4,
        h in 1usize..12,
        w in 1usize..12,
        k in 1usize..5,
        s in 1usize..4,
        pad in 0usize..3,
        ceil in any::<bool>(),
        // Small integers, so that windows hold ties (as after a ReLU).
        data in proptest::collection::vec(-2i32..3, 4 * 11 * 11),
        nans in proptest::collection::vec(0usize..1000, 0..4),
    ) {
        prop_assume!(pad * 2 <= k);
        let Ok(g) = PoolGeom::new(planes, h, w, [k, k], [s, s], [pad, pad], ceil) else {
            return Ok(());
        };
        let mut x: Vec<f64> = data[..planes * h * w].iter().map(|&v| v as f64).collect();
        let len = x.len();
        for i in nans {
            x[i % len] = f64::NAN;
        }
        let n = planes * g.ho * g.wo;
        let (want, want_arg) = reference(&g, &x);
        let (mut a, mut arg) = (vec![0.0; n], vec![0u32; n]);
        max_pool_forward(&g, &x, &mut a, &mut arg);
        let same = |p: f64, q: f64| p == q || (p.is_nan() && q.is_nan());
        for i in 0..n {
            prop_assert!(same(a[i], want[i]), "value {i}: {} vs {}", a[i], want[i]);
            prop_assert_eq!(arg[i], want_arg[i], "switch {}", i);
        }
        // f32 selects through its own bit masks: the same switches.
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let (mut a32, mut arg32) = (vec![0.0f32; n], vec![0u32; n]);
        max_pool_forward(&g, &x32, &mut a32, &mut arg32);
        for i in 0..n {
            prop_assert!(same(a32[i] as f64, want[i]), "f32 value {i}");
            prop_assert_eq!(arg32[i], want_arg[i], "f32 switch {}", i);
        }
    }
}

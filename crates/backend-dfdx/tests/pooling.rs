//! The switch-free max pool of untraced passes against the one that records
//! switches: same values for any window, stride, padding and ceil mode, NaN included.

use attrib_dfdx::kernels::{max_pool_forward, max_pool_values, PoolGeom};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn values_match_the_switch_recording_pool(
        planes in 1usize..4,
        h in 1usize..12,
        w in 1usize..12,
        k in 1usize..5,
        s in 1usize..4,
        pad in 0usize..3,
        ceil in any::<bool>(),
        data in proptest::collection::vec(-10.0f64..10.0, 4 * 11 * 11),
        nan_at in proptest::option::of(0usize..1000),
    ) {
        prop_assume!(pad * 2 <= k);
        let Ok(g) = PoolGeom::new(planes, h, w, [k, k], [s, s], [pad, pad], ceil) else {
            return Ok(());
        };
        let mut x: Vec<f64> = data[..planes * h * w].to_vec();
        if let Some(i) = nan_at {
            let i = i % x.len();
            x[i] = f64::NAN;
        }
        let n = planes * g.ho * g.wo;
        let (mut a, mut b, mut arg) = (vec![0.0; n], vec![0.0; n], vec![0u32; n]);
        max_pool_forward(&g, &x, &mut a, &mut arg);
        max_pool_values(&g, &x, &mut b);
        for (p, q) in a.iter().zip(&b) {
            prop_assert!(p == q || (p.is_nan() && q.is_nan()), "{p} vs {q}");
        }
    }
}

//! The Winograd F(2x2, 3x3) path against im2col + gemm (itself checked by finite
//! differences in `gradcheck.rs`): forward with bias and the input gradient, for odd
//! and even sizes, symmetric, asymmetric, zero and wide padding, batches, and channel
//! counts that are not multiples of the transform's channel blocks.

use attrib_dfdx::kernels::{conv2d_backward_input, conv2d_forward, conv2d_forward_add, ConvGeom};
use attrib_dfdx::winograd::Winograd;
use proptest::prelude::*;

fn values(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn rel_err<E: Copy + Into<f64>>(a: &[E], b: &[E]) -> f64 {
    let scale = b
        .iter()
        .fold(0.0f64, |m, &v| m.max(v.into().abs()))
        .max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x.into() - y.into()).abs()))
        / scale
}

/// Both paths on one geometry, in f64 and f32; returns the relative errors
/// (forward f64, input gradient f64, forward f32, input gradient f32).
fn compare(input: [usize; 4], c_out: usize, pad: [usize; 4], seed: u64) -> [f64; 4] {
    let g = ConvGeom::new(input, c_out, input[1], [3, 3], [1, 1], [1, 1], pad, 1)
        .expect("valid geometry");
    assert!(Winograd::<f64>::supports(&g));
    let x = values(input.iter().product(), seed);
    let w = values(c_out * input[1] * 9, seed + 1);
    let b = values(c_out, seed + 2);
    let dy = values(g.out_len(), seed + 3);
    let mut errs = [0.0; 4];

    let mut y_ref = vec![0.0; g.out_len()];
    conv2d_forward(&g, &x, &w, Some(&b), &mut y_ref);
    // Garbage in the output: the forward overwrites it.
    let mut y = vec![7.0; g.out_len()];
    let wg = Winograd::default();
    wg.forward(&g, &x, &w, Some(&b), &mut y);
    errs[0] = rel_err(&y, &y_ref);
    // Adding onto an output that already holds the bias, both ways, gives the same.
    let biased: Vec<f64> = (0..g.out_len())
        .map(|i| b[i / (g.ho * g.wo) % c_out])
        .collect();
    let (mut y_add, mut y_add_ref) = (biased.clone(), biased);
    wg.forward_add(&g, &x, &w, &mut y_add);
    conv2d_forward_add(&g, &x, &w, &mut y_add_ref);
    errs[0] = errs[0]
        .max(rel_err(&y_add, &y_ref))
        .max(rel_err(&y_add_ref, &y_ref));
    // The input gradient adds into what is there.
    let start = values(x.len(), seed + 4);
    let (mut dx_ref, mut dx) = (start.clone(), start);
    conv2d_backward_input(&g, &dy, &w, &mut dx_ref);
    wg.backward_input(&g, &dy, &w, &mut dx);
    errs[1] = rel_err(&dx, &dx_ref);

    let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (x, w, b, dy) = (f(&x), f(&w), f(&b), f(&dy));
    let mut y_ref = vec![0.0f32; g.out_len()];
    conv2d_forward(&g, &x, &w, Some(&b), &mut y_ref);
    let mut y = vec![0.0f32; g.out_len()];
    let wg = Winograd::default();
    wg.forward(&g, &x, &w, Some(&b), &mut y);
    errs[2] = rel_err(&y, &y_ref);
    let mut dx_ref = vec![0.0f32; x.len()];
    let mut dx = vec![0.0f32; x.len()];
    conv2d_backward_input(&g, &dy, &w, &mut dx_ref);
    wg.backward_input(&g, &dy, &w, &mut dx);
    errs[3] = rel_err(&dx, &dx_ref);
    errs
}

fn check(input: [usize; 4], c_out: usize, pad: [usize; 4], seed: u64) {
    let e = compare(input, c_out, pad, seed);
    assert!(
        e[0] < 1e-13 && e[1] < 1e-13,
        "f64 {input:?} -> {c_out}, pad {pad:?}: {e:?}"
    );
    assert!(
        e[2] < 2e-5 && e[3] < 2e-5,
        "f32 {input:?} -> {c_out}, pad {pad:?}: {e:?}"
    );
}

#[test]
fn matches_im2col_on_network_shapes() {
    // ResNet's 3x3 convolutions (reduced), VGG's, a batch, and the same under
    // TensorFlow-style asymmetric padding.
    check([1, 64, 56, 56], 64, [1; 4], 1);
    check([2, 32, 28, 28], 48, [1; 4], 2);
    check([3, 16, 14, 14], 16, [1; 4], 3);
    check([1, 24, 7, 7], 40, [1; 4], 4);
    check([2, 16, 9, 12], 20, [0, 1, 0, 1], 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn matches_im2col_on_any_geometry(
        n in 1usize..4,
        c_in in 1usize..21,
        c_out in 1usize..37,
        h in 1usize..12,
        w in 1usize..12,
        pad in proptest::array::uniform4(0usize..3),
        seed in 0u64..1000,
    ) {
        // Skip geometries whose output is empty or negative (the window does not fit).
        prop_assume!(h + pad[0] + pad[1] >= 3 && w + pad[2] + pad[3] >= 3);
        check([n, c_in, h, w], c_out, pad, seed);
    }
}

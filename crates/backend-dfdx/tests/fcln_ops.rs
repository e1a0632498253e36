//! The FCLN building blocks against torchvision (fixtures from
//! `tools/reference/fcln_ops.py`, float64): RoI Align's values and gradient on odd
//! box geometries (past the borders, sub-pixel, inverted, empty, outside, `aligned`
//! both ways, fixed and adaptive sampling), its backward against finite differences,
//! NMS keep lists, box decoding and clipping.

use std::path::{Path, PathBuf};

use attrib_dfdx::kernels::boxes::{clip, decode, iou, nms, Box4};
use attrib_dfdx::kernels::{Roi, RoiAlign};
use ndarray::ArrayD;
use ndarray_npy::read_npy;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/fcln")
}

fn load(name: &str) -> ArrayD<f64> {
    let p = dir().join(format!("{name}.npy"));
    read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rows<const K: usize>(a: &ArrayD<f64>) -> Vec<[f64; K]> {
    a.outer_iter()
        .map(|r| std::array::from_fn(|i| r[i]))
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

struct Case {
    op: RoiAlign,
    out: ArrayD<f64>,
    grad_out: ArrayD<f64>,
    grad_feats: ArrayD<f64>,
}

fn cases() -> Vec<Case> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("roi.json")).unwrap()).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| Case {
            op: RoiAlign::new(
                c["output_size"][0].as_u64().unwrap() as usize,
                c["output_size"][1].as_u64().unwrap() as usize,
                c["spatial_scale"].as_f64().unwrap(),
                c["sampling_ratio"].as_i64().unwrap() as i32,
                c["aligned"].as_bool().unwrap(),
            )
            .unwrap(),
            out: load(&format!("roi.{i}.out")),
            grad_out: load(&format!("roi.{i}.grad_out")),
            grad_feats: load(&format!("roi.{i}.grad_features")),
        })
        .collect()
}

#[test]
fn roi_align_matches_torchvision() {
    let feats = load("roi.features");
    let dims: [usize; 4] = std::array::from_fn(|i| feats.shape()[i]);
    let rois: Vec<Roi> = rows(&load("roi.boxes"));
    let f64s: Vec<f64> = feats.iter().copied().collect();
    let f32s: Vec<f32> = f64s.iter().map(|&v| v as f32).collect();
    for (i, c) in cases().iter().enumerate() {
        let mut out = vec![0.0f64; c.out.len()];
        c.op.forward(dims, &f64s, &rois, &mut out).unwrap();
        let want: Vec<f64> = c.out.iter().copied().collect();
        let e = max_diff(&out, &want);
        assert!(e < 1e-12, "case {i} ({:?}) forward: {e:e}", c.op);
        let mut grad = vec![0.0f64; f64s.len()];
        let go: Vec<f64> = c.grad_out.iter().copied().collect();
        c.op.backward(dims, &rois, &go, &mut grad).unwrap();
        let e = max_diff(&grad, &c.grad_feats.iter().copied().collect::<Vec<_>>());
        assert!(e < 1e-12, "case {i} ({:?}) backward: {e:e}", c.op);
        // f32 to 1e-5.
        let mut out32 = vec![0.0f32; c.out.len()];
        c.op.forward(dims, &f32s, &rois, &mut out32).unwrap();
        let out32: Vec<f64> = out32.iter().map(|&v| f64::from(v)).collect();
        assert!(max_diff(&out32, &want) < 1e-5, "case {i} f32");
    }
    // The odd boxes do what torchvision does: with adaptive sampling an empty aligned
    // box takes no samples, and a box entirely outside reads nothing (0); a sub-pixel
    // box reads its neighbourhood.
    let c = &cases()[3];
    let per = dims[1] * c.op.bins();
    let out = c.out.as_slice().unwrap();
    assert!(
        out[5 * per..6 * per].iter().all(|&v| v == 0.0),
        "empty aligned box"
    );
    assert!(
        out[7 * per..8 * per].iter().all(|&v| v == 0.0),
        "box outside"
    );
    assert!(
        out[3 * per..4 * per].iter().any(|&v| v != 0.0),
        "sub-pixel box"
    );
}

/// RoI Align is linear in the features: its backward is its adjoint, checked by
/// central differences along random directions.
#[test]
fn roi_align_backward_matches_finite_differences() {
    let feats = load("roi.features");
    let dims: [usize; 4] = std::array::from_fn(|i| feats.shape()[i]);
    let rois: Vec<Roi> = rows(&load("roi.boxes"));
    let x: Vec<f64> = feats.iter().copied().collect();
    let mut s = 7u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for c in cases() {
        let go: Vec<f64> = c.grad_out.iter().copied().collect();
        let mut grad = vec![0.0; x.len()];
        c.op.backward(dims, &rois, &go, &mut grad).unwrap();
        let f = |x: &[f64]| -> f64 {
            let mut out = vec![0.0; go.len()];
            c.op.forward(dims, x, &rois, &mut out).unwrap();
            out.iter().zip(&go).map(|(a, b)| a * b).sum()
        };
        for _ in 0..5 {
            let v: Vec<f64> = (0..x.len()).map(|_| rnd()).collect();
            let h = 1e-4;
            let xp: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + h * b).collect();
            let xm: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - h * b).collect();
            let fd = (f(&xp) - f(&xm)) / (2.0 * h);
            let an: f64 = grad.iter().zip(&v).map(|(a, b)| a * b).sum();
            assert!(
                (fd - an).abs() < 1e-9 * (1.0 + an.abs()),
                "{:?}: {fd} vs {an}",
                c.op
            );
        }
    }
}

#[test]
fn roi_align_rejects_bad_input() {
    let op = RoiAlign::new(2, 2, 1.0, 2, false).unwrap();
    let x = vec![0.0f64; 16];
    let mut out = vec![0.0; 4];
    let e = op
        .forward([1, 1, 4, 4], &x, &[[1.0, 0.0, 0.0, 2.0, 2.0]], &mut out)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid roi: box 0 is on batch item 1, not one of 0..1"
    );
    let e = op
        .forward(
            [1, 1, 4, 4],
            &x,
            &[[0.0, f64::NAN, 0.0, 2.0, 2.0]],
            &mut out,
        )
        .unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    assert!(op
        .forward(
            [1, 1, 4, 4],
            &x[..15],
            &[[0.0, 0.0, 0.0, 2.0, 2.0]],
            &mut out
        )
        .is_err());
    assert!(RoiAlign::new(0, 2, 1.0, 2, false).is_err());
    assert!(RoiAlign::new(2, 2, f64::NAN, 2, false).is_err());
}

#[test]
fn nms_keeps_what_torchvision_keeps() {
    let boxes: Vec<Box4> = rows(&load("nms.boxes"));
    let scores: Vec<f64> = load("nms.scores").iter().copied().collect();
    for (t, name) in [(0.7, "keep7"), (0.5, "keep5"), (0.3, "keep3")] {
        let want: Vec<usize> = load(&format!("nms.{name}"))
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(nms(&boxes, &scores, t).unwrap(), want, "threshold {t}");
    }
    assert!(nms(&boxes[..2], &[0.5, f64::NAN], 0.5).is_err());
    assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 3.0, 3.0]) - 1.0 / 7.0).abs() < 1e-15);
}

#[test]
fn box_decoding_and_clipping_match_torchvision() {
    let anchors: Vec<Box4> = rows(&load("decode.anchors"));
    let deltas: Vec<[f64; 4]> = rows(&load("decode.deltas"));
    let want: Vec<Box4> = rows(&load("decode.boxes"));
    let clipped: Vec<Box4> = rows(&load("decode.clipped"));
    for (k, ((a, d), (w, c))) in anchors
        .iter()
        .zip(&deltas)
        .zip(want.iter().zip(&clipped))
        .enumerate()
    {
        let b = decode(a, d);
        assert!(
            max_diff(&b, w) < 1e-9 * (1.0 + w.iter().fold(0.0f64, |m, v| m.max(v.abs()))),
            "box {k}: {b:?} vs {w:?}"
        );
        assert!(max_diff(&clip(&b, 48.0, 56.0), c) < 1e-9, "clipped box {k}");
    }
}

/// The tape op: RoI Align, then a fixed weighting, then the loss; its gradient to the
/// features against central differences of the whole chain.
#[test]
fn roi_align_on_the_tape_matches_finite_differences() {
    use attrib_dfdx::ops::{self, region::roi_align, tensor4};
    use attrib_dfdx::{Cpu, KernelDevice};
    use dfdx::tensor::Trace;
    let dev = Cpu::default();
    let feats = load("roi.features");
    let shape: [usize; 4] = std::array::from_fn(|i| feats.shape()[i]);
    let x: Vec<f64> = feats.iter().copied().collect();
    let rois: Vec<Roi> = rows(&load("roi.boxes"));
    let op = RoiAlign::new(3, 2, 0.5, -1, true).unwrap();
    let seed: Vec<f64> = (0..rois.len() * shape[1] * op.bins())
        .map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let loss = |x: &[f64]| -> (f64, Vec<f64>) {
        let xt = tensor4(&dev, x.to_vec(), shape).unwrap();
        let y = roi_align(xt.leaky_trace(), &rois, op).unwrap();
        let l = ops::seed_loss(y, seed.clone()).unwrap();
        let v = l.as_vec()[0];
        let g = <Cpu as KernelDevice<f64>>::run_backward(l).unwrap();
        (v, g.get(&xt).as_vec())
    };
    let (_, analytic) = loss(&x);
    let h = 1e-6;
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (loss(&p).0 - loss(&m).0) / (2.0 * h);
        worst = worst.max((fd - analytic[i]).abs());
    }
    let scale = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        scale > 1e-3 && worst <= 1e-7 * scale,
        "{worst:e} at {scale:e}"
    );
}

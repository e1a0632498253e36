//! Builds attrib's CUDA path for real and checks it on a GPU: ResNet-18 (synthetic
//! weights) at 224x224, batch 8, on the CPU and on the GPU; prints, per method, the
//! relative difference of the maps and the median times of both, as JSON lines.

use std::time::Instant;

use attrib_core::{Attribution, Target};
use attrib_dfdx::{Arch, Cuda, Synthetic};
use attrib_methods::{GradCam, GuidedBackprop, Saliency};
use ndarray::Array4;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(iters: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut out = f();
    let mut times = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        out = f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (out, median(times))
}

fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let cpu = Arch::Resnet18
        .synthetic::<f32>(0, 1000)
        .expect("cpu network");
    let gpu = Arch::Resnet18
        .build_on::<f32, Cuda>(&mut Synthetic::new(0, 1000), Cuda::default())
        .expect("gpu network");
    let x = Array4::from_shape_fn((batch, 3, 224, 224), |(n, c, i, j)| {
        (((n * 7 + c * 13 + i * 3 + j * 5) % 29) as f32 / 29.0 - 0.5) * 2.0
    });
    let t = Target::TopPredicted;
    macro_rules! check {
        ($name:expr, $m:expr) => {{
            let (a, cpu_ms) = time(3, || $m.attribute(&cpu, x.view(), &t).expect("cpu"));
            let (b, gpu_ms) = time(3, || $m.attribute(&gpu, x.view(), &t).expect("gpu"));
            let d = a.values.iter().zip(b.values.iter()).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            let s = a.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            println!(
                "{{\"arch\":\"resnet18\",\"method\":\"{}\",\"batch\":{batch},\"size\":224,\"rel_diff\":{:e},\"cpu_median_ms\":{cpu_ms:.1},\"gpu_median_ms\":{gpu_ms:.1}}}",
                $name,
                d / s.max(1e-30)
            );
        }};
    }
    check!("grad-cam", GradCam::new());
    check!("saliency", Saliency);
    check!("guided-backprop", GuidedBackprop);
}

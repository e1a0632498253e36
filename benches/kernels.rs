//! Convolution kernels: forward and input gradient, for the shapes that dominate
//! ResNet-style networks (3x3 and 1x1 convolutions, depthwise 3x3); and ResNet's max
//! pool.

use attrib_dfdx::kernels::{
    conv2d_backward_input, conv2d_forward, max_pool_forward, ConvGeom, PoolGeom,
};
use attrib_dfdx::winograd::Winograd;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn geometries() -> Vec<(&'static str, ConvGeom)> {
    let g = |x: [usize; 4], c_out, win, k, s, p, groups| {
        ConvGeom::new(x, c_out, win, [k, k], [s, s], [1, 1], [p; 4], groups)
            .expect("valid geometry")
    };
    vec![
        (
            "7x7/2 3->64 224x224",
            g([1, 3, 224, 224], 64, 3, 7, 2, 3, 1),
        ),
        (
            "3x3/2 64->128 56x56",
            g([1, 64, 56, 56], 128, 64, 3, 2, 1, 1),
        ),
        (
            "1x1/2 64->128 56x56",
            g([1, 64, 56, 56], 128, 64, 1, 2, 0, 1),
        ),
        ("3x3 64->64 56x56", g([1, 64, 56, 56], 64, 64, 3, 1, 1, 1)),
        (
            "3x3 256->256 14x14",
            g([1, 256, 14, 14], 256, 256, 3, 1, 1, 1),
        ),
        (
            "1x1 256->1024 14x14",
            g([1, 256, 14, 14], 1024, 256, 1, 1, 0, 1),
        ),
        ("3x3 512->512 7x7", g([1, 512, 7, 7], 512, 512, 3, 1, 1, 1)),
        (
            "3x3 64->64 56x56 b8",
            g([8, 64, 56, 56], 64, 64, 3, 1, 1, 1),
        ),
        (
            "3x3 512->512 7x7 b8",
            g([8, 512, 7, 7], 512, 512, 3, 1, 1, 1),
        ),
        ("dw3x3 144 56x56", g([1, 144, 56, 56], 144, 1, 3, 1, 1, 144)),
        (
            "dw3x3/2 96 112x112",
            g([1, 96, 112, 112], 96, 1, 3, 2, 1, 96),
        ),
        ("dw5x5 672 14x14", g([1, 672, 14, 14], 672, 1, 5, 1, 2, 672)),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    for (name, g) in geometries() {
        let x = vec![0.5f32; g.n * g.c_in * g.h * g.w];
        let w = vec![0.01f32; g.c_out * (g.c_in / g.groups) * g.kernel[0] * g.kernel[1]];
        let mut y = vec![0.0f32; g.out_len()];
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| conv2d_forward(&g, &x, &w, None, &mut y))
        });
        let dy = vec![0.1f32; g.out_len()];
        let mut dx = vec![0.0f32; x.len()];
        group.bench_function(BenchmarkId::new("input-grad", name), |b| {
            b.iter(|| conv2d_backward_input(&g, &dy, &w, &mut dx))
        });
        if Winograd::<f32>::supports(&g) {
            let wg = Winograd::default();
            group.bench_function(BenchmarkId::new("winograd-forward", name), |b| {
                b.iter(|| wg.forward(&g, &x, &w, None, &mut y))
            });
            group.bench_function(BenchmarkId::new("winograd-input-grad", name), |b| {
                b.iter(|| wg.backward_input(&g, &dy, &w, &mut dx))
            });
        }
    }
    group.finish();
    // ResNet's stem pool: 3x3, stride 2, padding 1 over 64 planes of 112x112, on
    // values with ties (as after a ReLU).
    let g = PoolGeom::new(64, 112, 112, [3, 3], [2, 2], [1, 1], false).expect("valid pool");
    let x: Vec<f32> = (0..64usize * 112 * 112)
        .map(|i| ((i * 7919) % 13) as f32 - 4.0)
        .map(|v: f32| v.max(0.0))
        .collect();
    let (mut y, mut arg) = (vec![0.0f32; 64 * 56 * 56], vec![0u32; 64 * 56 * 56]);
    c.bench_function("max-pool 3x3/2 64x112x112", |b| {
        b.iter(|| max_pool_forward(&g, &x, &mut y, &mut arg))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

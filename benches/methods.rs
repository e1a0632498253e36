//! Each method on ResNet-18 (synthetic weights) at 224x224, batch 1 and 8, and on a
//! small VGG-style network with max-pool. The many-pass methods (Score-CAM: one
//! forward per channel; integrated gradients: 50 path points) run on the small network
//! and at batch 1 on ResNet-18 only where a run takes under a second.

use attrib_core::{Attribution, Target};
use attrib_dfdx::{
    Arch, Conv2d, Conv2dConfig, Linear, Network, NetworkBuilder, Padding, Pool2dConfig,
};
use attrib_methods::{
    AblationCam, EigenCam, GradCam, GradCamPlusPlus, Gradient, GuidedBackprop, GuidedGradCam,
    HiResCam, InputXGradient, IntegratedGradients, LayerCam, NoiseKind, NoiseTunnel, Occlusion,
    Saliency, ScoreCam, XGradCam,
};
use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array4;

fn vgg_like() -> Network<f32> {
    let cfg = Conv2dConfig {
        padding: Padding::symmetric(1),
        ..Default::default()
    };
    let mut b = NetworkBuilder::<f32>::new([3, 64, 64]);
    let mut c_in = 3;
    for (i, c) in [32, 64, 128].into_iter().enumerate() {
        let w: Vec<f32> = (0..c * c_in * 9)
            .map(|k| ((k * 31 % 17) as f32 - 8.0) / 100.0)
            .collect();
        b.conv2d(
            &format!("conv{i}"),
            Conv2d::from_vec(w, [c, c_in, 3, 3], Some(vec![0.01; c]), cfg).unwrap(),
        )
        .unwrap()
        .relu(&format!("relu{i}"))
        .unwrap()
        .max_pool(&format!("pool{i}"), Pool2dConfig::new(2, 2, 0))
        .unwrap();
        c_in = c;
    }
    b.global_avg_pool("gap")
        .unwrap()
        .flatten("flatten")
        .unwrap();
    let fc: Vec<f32> = (0..10 * 128)
        .map(|k| ((k * 13 % 7) as f32 - 3.0) / 10.0)
        .collect();
    b.linear("fc", Linear::from_vec(fc, [10, 128], None).unwrap())
        .unwrap();
    b.default_layer("relu2");
    b.build().unwrap()
}

fn bench(c: &mut Criterion) {
    let net = vgg_like();
    let t = Target::TopPredicted;
    for batch in [1, 8] {
        let x = Array4::from_shape_fn((batch, 3, 64, 64), |(n, ch, i, j)| {
            ((n + ch * 3 + i * j) % 13) as f32 / 13.0
        });
        let mut g = c.benchmark_group(format!("methods/vgg-like-64/batch{batch}"));
        g.sample_size(10);
        g.bench_function("gradient", |b| {
            b.iter(|| Gradient.attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("saliency", |b| {
            b.iter(|| Saliency.attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("guided-backprop", |b| {
            b.iter(|| GuidedBackprop.attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("grad-cam", |b| {
            b.iter(|| GradCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("guided-grad-cam", |b| {
            b.iter(|| GuidedGradCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        if batch == 1 {
            g.bench_function("occlusion-16-8", |b| {
                b.iter(|| Occlusion::new(16, 8).attribute(&net, x.view(), &t).unwrap())
            });
        }
        g.bench_function("score-cam", |b| {
            b.iter(|| ScoreCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("ablation-cam", |b| {
            b.iter(|| AblationCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("integrated-gradients", |b| {
            b.iter(|| {
                IntegratedGradients::new()
                    .attribute(&net, x.view(), &t)
                    .unwrap()
            })
        });
        g.bench_function("smoothgrad-10", |b| {
            b.iter(|| {
                NoiseTunnel::new(Gradient, NoiseKind::SmoothGrad)
                    .attribute(&net, x.view(), &t)
                    .unwrap()
            })
        });
        g.finish();
    }
}

fn resnet18(c: &mut Criterion) {
    let net = Arch::Resnet18.synthetic::<f32>(0, 1000).unwrap();
    let t = Target::TopPredicted;
    for batch in [1, 8] {
        let x = Array4::from_shape_fn((batch, 3, 224, 224), |(n, ch, i, j)| {
            ((n + ch * 3 + i * j) % 13) as f32 / 13.0 - 0.5
        });
        let mut g = c.benchmark_group(format!("methods/resnet18-224/batch{batch}"));
        g.sample_size(10);
        g.bench_function("grad-cam", |b| {
            b.iter(|| GradCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("saliency", |b| {
            b.iter(|| Saliency.attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("guided-backprop", |b| {
            b.iter(|| GuidedBackprop.attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("guided-grad-cam", |b| {
            b.iter(|| GuidedGradCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("grad-cam-plus-plus", |b| {
            b.iter(|| {
                GradCamPlusPlus::new()
                    .attribute(&net, x.view(), &t)
                    .unwrap()
            })
        });
        g.bench_function("xgrad-cam", |b| {
            b.iter(|| XGradCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("layer-cam", |b| {
            b.iter(|| LayerCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("hires-cam", |b| {
            b.iter(|| HiResCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("eigen-cam", |b| {
            b.iter(|| EigenCam::new().attribute(&net, x.view(), &t).unwrap())
        });
        g.bench_function("input-x-gradient", |b| {
            b.iter(|| InputXGradient.attribute(&net, x.view(), &t).unwrap())
        });
        if batch == 1 {
            g.bench_function("ablation-cam", |b| {
                b.iter(|| AblationCam::new().attribute(&net, x.view(), &t).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, resnet18, bench);
criterion_main!(benches);

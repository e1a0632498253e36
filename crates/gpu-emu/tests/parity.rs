//! The GPU executor and every CUDA kernel, run by the host emulation, against the CPU
//! backend: forward scores, input gradients under the three rectifier rules, taps'
//! activations and gradients, every built-in method, random networks (proptest) and
//! the model zoo. Relative error is `max |gpu - cpu| / max |cpu|`.

use std::sync::Arc;

use attrib_core::{BackwardRequest, LayerTap, Model, Rectifier, Target};
use attrib_dfdx::gpu::{GpuNetwork, KERNEL_NAMES};
use attrib_dfdx::{
    Arch, BatchNorm2d, Conv2d, Conv2dConfig, Linear, Network, NetworkBuilder, Padding, Pool2dConfig,
};
use attrib_gpu_emu::{registered_kernels, HostApi};
use attrib_methods::registry::{Params, BUILT_IN};
use attrib_testkit::strategies;
use ndarray::{Array, Array2, Array4, ArrayView4, Dimension};
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn rel<D: Dimension>(gpu: &Array<f32, D>, cpu: &Array<f32, D>) -> f32 {
    assert_eq!(gpu.shape(), cpu.shape());
    // NaN where the CPU has NaN (a caption's undefined outputs) is agreement; NaN or
    // infinity anywhere else is as far off as can be.
    let mut scale = 1e-20f32;
    let mut d = 0f32;
    for (a, b) in gpu.iter().zip(cpu) {
        if b.is_nan() && a.is_nan() {
            continue;
        }
        if !a.is_finite() {
            return f32::INFINITY;
        }
        scale = scale.max(b.abs());
        d = d.max((a - b).abs());
    }
    d / scale
}

fn on_gpu(net: Network<f32>) -> GpuNetwork<HostApi> {
    GpuNetwork::new(net, Arc::new(HostApi::default())).unwrap()
}

fn conv(o: usize, i: usize, k: [usize; 2], cfg: Conv2dConfig, seed: u64) -> Conv2d<f32> {
    let w = values(o * i * k[0] * k[1], seed);
    let b = values(o, seed + 1);
    Conv2d::from_vec(w, [o, i, k[0], k[1]], Some(b), cfg).unwrap()
}

fn bn(c: usize, seed: u64) -> BatchNorm2d<f32> {
    let g: Vec<f32> = values(c, seed).iter().map(|v| 1.0 + v).collect();
    let b = values(c, seed + 1);
    let m = values(c, seed + 2);
    let v: Vec<f32> = values(c, seed + 3).iter().map(|v| 1.0 + v).collect();
    BatchNorm2d::new(&g, &b, &m, &v, 1e-5).unwrap()
}

/// Every layer kind and geometry the executor handles: strided, dilated, grouped and
/// depthwise convolutions (with a channel multiplier), TensorFlow "same" padding,
/// batch norm after a conv (folded) and after a pool (not), ReLU and ReLU6, max pool
/// with ceil mode and padding, average pool with and without counting the padding,
/// adaptive pooling to a size that does not divide, a residual add feeding a ReLU,
/// flatten and two linear layers.
fn every_layer() -> Network<f32> {
    let cfg = |s: usize, d: usize, p: Padding, g: usize| Conv2dConfig {
        stride: [s, s],
        dilation: [d, d],
        padding: p,
        groups: g,
    };
    let mut b = NetworkBuilder::<f32>::new([3, 19, 17]);
    b.conv2d(
        "conv1",
        conv(8, 3, [3, 3], cfg(1, 1, Padding::symmetric(1), 1), 1),
    )
    .unwrap()
    .batch_norm("bn1", bn(8, 10))
    .unwrap()
    .relu("relu1")
    .unwrap()
    .max_pool(
        "pool1",
        Pool2dConfig {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            ceil_mode: true,
        },
    )
    .unwrap()
    .batch_norm("bn_pool", bn(8, 20))
    .unwrap();
    let skip = b.current();
    b.conv2d(
        "grouped",
        conv(8, 4, [3, 2], cfg(1, 2, Padding::Same, 2), 30),
    )
    .unwrap()
    .relu6("relu6")
    .unwrap()
    .conv2d(
        "dw",
        conv(16, 1, [3, 3], cfg(1, 1, Padding::symmetric(1), 8), 40),
    )
    .unwrap()
    .relu("relu_dw")
    .unwrap()
    .conv2d(
        "pw",
        conv(8, 16, [1, 1], cfg(1, 1, Padding::symmetric(0), 1), 50),
    )
    .unwrap()
    .add("add", skip)
    .unwrap()
    .relu("relu_add")
    .unwrap()
    .conv2d(
        "strided",
        conv(6, 8, [3, 3], cfg(2, 1, Padding::Same, 1), 60),
    )
    .unwrap()
    .relu("relu_s")
    .unwrap()
    .avg_pool(
        "avg",
        Pool2dConfig {
            kernel: [2, 2],
            stride: [1, 1],
            padding: [1, 1],
            ceil_mode: false,
        },
    )
    .unwrap()
    .adaptive_avg_pool("adaptive", [2, 3])
    .unwrap()
    .flatten("flat")
    .unwrap();
    let hidden = Linear::from_vec(values(10 * 36, 70), [10, 36], Some(values(10, 71))).unwrap();
    let fc = Linear::from_vec(values(5 * 10, 80), [5, 10], None).unwrap();
    b.linear("fc1", hidden)
        .unwrap()
        .relu("relu_fc")
        .unwrap()
        .linear("fc2", fc)
        .unwrap();
    b.build().unwrap()
}

fn input(n: usize, [c, h, w]: [usize; 3], seed: u64) -> Array4<f32> {
    Array4::from_shape_vec((n, c, h, w), values(n * c * h * w, seed))
        .unwrap()
        .mapv(|v| v * 4.0)
}

/// Compares one backward pass on both: scores, input gradient, taps.
fn check_backward(
    cpu: &Network<f32>,
    gpu: &GpuNetwork<HostApi>,
    x: ArrayView4<f32>,
    taps: &[String],
    rule: Rectifier,
    input_grad: bool,
    target: &Target<f32>,
) {
    let tol = 1e-4;
    let req = BackwardRequest {
        input: x,
        target,
        taps: taps.to_vec(),
        input_grad,
        rectifier: rule,
    };
    let want = cpu.backward(&req).unwrap();
    let got = gpu.backward(&req).unwrap();
    let what = format!("rule {rule:?}, taps {taps:?}, input_grad {input_grad}");
    assert!(rel(&got.scores, &want.scores) < tol, "scores, {what}");
    assert_eq!(got.target.classes, want.target.classes, "{what}");
    match (&got.input_grad, &want.input_grad) {
        (Some(g), Some(w)) => {
            let e = rel(g, w);
            assert!(e < tol, "input gradient {e}, {what}");
        }
        (None, None) => {}
        _ => panic!("input gradient presence differs, {what}"),
    }
    assert_eq!(got.taps.len(), want.taps.len());
    for (g, w) in got.taps.iter().zip(&want.taps) {
        assert_eq!(g.name, w.name);
        let (ea, eg) = (
            rel(&g.activation, &w.activation),
            rel(&g.gradient, &w.gradient),
        );
        assert!(
            ea < tol && eg < tol,
            "tap {}: activation {ea}, gradient {eg}, {what}",
            g.name
        );
    }
}

#[test]
fn every_kernel_is_registered() {
    assert_eq!(registered_kernels(), KERNEL_NAMES.len());
}

#[test]
fn every_layer_kind_matches_the_cpu() {
    let cpu = every_layer();
    let gpu = on_gpu(every_layer());
    let x = input(3, [3, 19, 17], 5);
    let e = rel(
        &gpu.forward(x.view()).unwrap(),
        &cpu.forward(x.view()).unwrap(),
    );
    assert!(e < 1e-5, "forward {e}");
    let all_taps: Vec<String> = cpu.layers().into_iter().map(|l| l.name).collect();
    let seed = Target::Seed(Array2::from_shape_vec((3, 5), values(15, 9)).unwrap());
    for rule in [Rectifier::Gradient, Rectifier::Guided, Rectifier::Deconvnet] {
        for target in [
            Target::TopPredicted,
            Target::PerSample(vec![0, 3, 4]),
            seed.clone(),
        ] {
            // The input gradient alone (every rectifier fused where the CPU fuses).
            check_backward(&cpu, &gpu, x.view(), &[], rule, true, &target);
            // One tap, recording from it; the conv under it and its batch norm fold.
            for tap in ["relu1", "add", "dw", "bn1", "conv1", "pool1", "flat", "fc1"] {
                check_backward(&cpu, &gpu, x.view(), &[tap.into()], rule, false, &target);
            }
        }
        // Every layer tapped at once, with the input gradient: nothing folds or fuses.
        check_backward(
            &cpu,
            &gpu,
            x.view(),
            &all_taps,
            rule,
            true,
            &Target::Class(2),
        );
    }
    let (s, acts) = gpu.activations(x.view(), &all_taps).unwrap();
    let (ws, wacts) = cpu.activations(x.view(), &all_taps).unwrap();
    assert!(rel(&s, &ws) < 1e-5);
    for ((a, w), name) in acts.iter().zip(&wacts).zip(&all_taps) {
        assert!(rel(a, w) < 1e-5, "activation of {name}");
    }
}

#[test]
fn batch_rows_are_single_rows() {
    let gpu = on_gpu(every_layer());
    let x = input(4, [3, 19, 17], 11);
    let class = Target::Class(1);
    let req = |x| BackwardRequest {
        input: x,
        target: &class,
        taps: vec!["add".into()],
        input_grad: true,
        rectifier: Rectifier::Guided,
    };
    let batch = gpu.backward(&req(x.view())).unwrap();
    for i in 0..4 {
        let one = x.slice(ndarray::s![i..i + 1, .., .., ..]);
        let single = gpu.backward(&req(one)).unwrap();
        let g = batch.input_grad.as_ref().unwrap();
        let row = g.slice(ndarray::s![i..i + 1, .., .., ..]).to_owned();
        assert!(
            rel(&row, single.input_grad.as_ref().unwrap()) < 1e-5,
            "row {i}"
        );
        let tg = batch.taps[0]
            .gradient
            .slice(ndarray::s![i..i + 1, .., .., ..])
            .to_owned();
        assert!(rel(&tg, &single.taps[0].gradient) < 1e-5, "tap row {i}");
    }
}

#[test]
fn errors_are_the_cpus() {
    let gpu = on_gpu(every_layer());
    let mut x = input(1, [3, 19, 17], 3);
    x[[0, 1, 2, 3]] = f32::NAN;
    let err = gpu.forward(x.view()).unwrap_err().to_string();
    assert!(err.contains("NaN") || err.contains("finite"), "{err}");
    let wrong = input(1, [2, 19, 17], 3);
    assert!(gpu.forward(wrong.view()).is_err());
    let (x, zero, big) = (
        input(1, [3, 19, 17], 3),
        Target::Class(0),
        Target::Class(99),
    );
    let req = BackwardRequest {
        input: x.view(),
        target: &zero,
        taps: vec!["no_such_layer".into()],
        input_grad: false,
        rectifier: Rectifier::Gradient,
    };
    let err = gpu.backward(&req).unwrap_err().to_string();
    assert!(err.contains("no_such_layer"), "{err}");
    let req = BackwardRequest {
        taps: vec![],
        target: &big,
        ..req
    };
    assert!(gpu.backward(&req).is_err(), "class out of range");
}

/// Every built-in method gives the CPU's map on the GPU executor: the methods do not
/// change, they see a `LayerTap`.
#[test]
fn every_method_matches_the_cpu() {
    let cpu = every_layer();
    let gpu = on_gpu(every_layer());
    let x = input(2, [3, 19, 17], 21);
    let target = Target::PerSample(vec![1, 4]);
    for info in BUILT_IN.iter() {
        if info.needs_linear_head {
            continue; // this network's head is not GAP + linear (CAM is checked on ResNet)
        }
        let m = info
            .build(&Params::new().with_layer(Some("relu_add")))
            .unwrap();
        let want = attrib_core::Attribution::<f32, _>::attribute(&m, &cpu, x.view(), &target)
            .unwrap_or_else(|e| panic!("{} on the CPU: {e}", info.name));
        let got = attrib_core::Attribution::<f32, _>::attribute(&m, &gpu, x.view(), &target)
            .unwrap_or_else(|e| panic!("{} on the GPU: {e}", info.name));
        let e = rel(&got.values, &want.values);
        assert!(e < 1e-4, "{}: {e}", info.name);
    }
}

/// The zoo at a reduced input size, random weights: ResNet (bottlenecks, downsampling
/// shortcuts, CAM's head), MobileNetV2 and EfficientNet-Lite0 (depthwise, ReLU6), VGG.
#[test]
fn zoo_networks_match_the_cpu() {
    for (arch, size) in [
        (Arch::Resnet18, 64),
        (Arch::Resnet50, 32),
        (Arch::MobilenetV2, 64),
        (Arch::EfficientnetLite0, 64),
        (Arch::Vgg16Bn, 32),
    ] {
        let cpu = arch.synthetic::<f32>(7, 10).unwrap();
        let gpu = on_gpu(arch.synthetic::<f32>(7, 10).unwrap());
        let x = input(2, [3, size, size], 13);
        let layer = cpu.default_layer();
        for rule in [Rectifier::Gradient, Rectifier::Guided] {
            check_backward(
                &cpu,
                &gpu,
                x.view(),
                std::slice::from_ref(&layer),
                rule,
                true,
                &Target::TopPredicted,
            );
        }
        if cpu.linear_head().is_some() {
            let cam = BUILT_IN.iter().find(|m| m.name == "cam").unwrap();
            let m = cam.build(&Params::new()).unwrap();
            let t = Target::Class(3);
            let want =
                attrib_core::Attribution::<f32, _>::attribute(&m, &cpu, x.view(), &t).unwrap();
            let got =
                attrib_core::Attribution::<f32, _>::attribute(&m, &gpu, x.view(), &t).unwrap();
            assert!(rel(&got.values, &want.values) < 1e-4, "{arch:?} cam");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random small networks (batch norm, ReLU or ReLU6, max pool, residual block),
    /// batches and targets: the input gradient under every rule and the last conv
    /// tap agree with the CPU.
    #[test]
    fn random_networks_match_the_cpu(case in strategies::case(3)) {
        let cpu = case.spec.build::<f32>().unwrap();
        let gpu = on_gpu(case.spec.build::<f32>().unwrap());
        let x = case.input.mapv(|v| v as f32);
        let target: Target<f32> = match &case.target {
            Target::Seed(s) => Target::Seed(s.mapv(|v| v as f32)),
            Target::Class(c) => Target::Class(*c),
            Target::PerSample(v) => Target::PerSample(v.clone()),
            _ => Target::TopPredicted,
        };
        let layer = cpu.default_layer();
        for rule in [Rectifier::Gradient, Rectifier::Guided, Rectifier::Deconvnet] {
            check_backward(&cpu, &gpu, x.view(), &[], rule, true, &target);
            check_backward(&cpu, &gpu, x.view(), std::slice::from_ref(&layer), rule, false, &target);
        }
    }
}

fn asset(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/models")
        .join(p)
}

const ALL: [&str; 5] = [
    "gradient",
    "guided-backprop",
    "deconvnet",
    "grad-cam",
    "guided-grad-cam",
];

/// Compares every gradient method on a conditioned model (a head over a network) with
/// its trunk on the CPU and on the GPU executor (the head on the CPU in both).
fn check_headed<M1: LayerTap<f32>, M2: LayerTap<f32>>(
    what: &str,
    cpu: &M1,
    gpu: &M2,
    x: &Array4<f32>,
    t: &Target<f32>,
    methods: &[&str],
) {
    let layer = cpu.default_layer();
    for &name in methods {
        let info = BUILT_IN.iter().find(|m| m.name == name).unwrap();
        let m = info.build(&Params::new().with_layer(Some(&layer))).unwrap();
        let want = attrib_core::Attribution::<f32, _>::attribute(&m, cpu, x.view(), t).unwrap();
        let got = attrib_core::Attribution::<f32, _>::attribute(&m, gpu, x.view(), t).unwrap();
        let e = rel(&got.values, &want.values);
        assert!(e < 1e-4, "{what} {name}: {e}");
    }
    let (s1, a1) = cpu
        .activations(x.view(), std::slice::from_ref(&layer))
        .unwrap();
    let (s2, a2) = gpu
        .activations(x.view(), std::slice::from_ref(&layer))
        .unwrap();
    assert!(
        rel(&s2, &s1) < 1e-5 && rel(&a2[0], &a1[0]) < 1e-5,
        "{what} activations"
    );
}

/// The captioner, the VQA model and DenseCap (the trained models in assets/): their
/// CNNs on the GPU executor, their LSTM, embedding and RoI heads on the CPU's tape,
/// give the CPU's scores and maps. DenseCap's rows repeat one image per region, so
/// this also checks that equal rows share the unrecorded part of the pass.
#[test]
fn conditioned_models_run_their_trunks_on_the_gpu() {
    use attrib_dfdx::zoo::densecap::DenseCap;
    use attrib_dfdx::zoo::show_and_tell::ShowAndTell;
    use attrib_dfdx::zoo::vqa::Vqa;

    let cap = ShowAndTell::<f32>::load(
        &asset("captioner/encoder.pth"),
        &asset("captioner/decoder.pth"),
    )
    .unwrap();
    let gpu = on_gpu(cap.encoder.clone());
    let tokens = vec![vec![1, 4, 9, 5, 2]; 2];
    // Below the nominal 224 (the trunks are fully convolutional): the emulator runs
    // every GPU thread one after another.
    let x = input(2, [3, 64, 64], 31);
    let seed = Target::Seed(Array2::from_shape_vec((2, 4), values(8, 3)).unwrap());
    let m = cap.conditioned(&tokens).unwrap();
    check_headed(
        "captioner",
        &m,
        &cap.conditioned(&tokens).unwrap().on(&gpu),
        &x,
        &seed,
        &ALL,
    );

    let vqa = Vqa::<f32>::load(&asset("vqa/vqa.pth")).unwrap();
    let gpu = on_gpu(vqa.cnn.clone());
    let questions = vec![vec![3, 4, 2], vec![5, 3]];
    let x = input(2, vqa.cnn.input_shape(), 32);
    let m = vqa.conditioned(&questions).unwrap();
    let t = Target::PerSample(vec![0, 1]);
    check_headed(
        "vqa",
        &m,
        &vqa.conditioned(&questions).unwrap().on(&gpu),
        &x,
        &t,
        &ALL,
    );

    let dc = DenseCap::<f32>::load(&asset("densecap/densecap.safetensors")).unwrap();
    let gpu = on_gpu(dc.trunk.clone());
    let regions = vec![
        ([4.0, 6.0, 50.0, 70.0], vec![1, 4, 5, 2]),
        ([30.0, 20.0, 90.0, 80.0], vec![1, 6, 2]),
        ([0.0, 0.0, 95.0, 95.0], vec![1, 5, 4, 7, 2]),
    ];
    let one = input(1, [3, 96, 96], 33);
    let x = ndarray::concatenate(ndarray::Axis(0), &[one.view(), one.view(), one.view()]).unwrap();
    // Each region's own words (a shorter caption's later outputs are undefined).
    let t = Target::Seed(Array2::from_shape_fn((3, 4), |(r, j)| {
        if j + 1 < regions[r].1.len() {
            1.0
        } else {
            0.0
        }
    }));
    let m = dc.conditioned(&regions).unwrap();
    check_headed(
        "densecap",
        &m,
        &dc.conditioned(&regions).unwrap().on(&gpu),
        &x,
        &t,
        &ALL,
    );
}

//! Parity with the reference implementations (Captum, pytorch-grad-cam) on fixtures
//! written by `tools/reference/generate.py`, `edge_cases.py` and `baselines.py`:
//! relative error `max|a - b| / max|b|` at most 1e-4 in f32 for every method (1e-3
//! for pytorch-grad-cam's normalised, upsampled maps and for Score-CAM and
//! Ablation-CAM, whose weights are differences of nearly equal scores).

use std::path::{Path, PathBuf};

use attrib_core::{Attribution, LayerTap, Model, Target};
use attrib_dfdx::{
    imagenet, Arch, Conv2d, Conv2dConfig, Linear, Network, NetworkBuilder, Padding, Pool2dConfig,
    WeightMap,
};
use attrib_methods::{
    AblationCam, Deconvnet, EigenCam, GradCam, GradCamPlusPlus, Gradient, GuidedBackprop,
    GuidedGradCam, HiResCam, InputXGradient, IntegratedGradients, Integration, Interpolation,
    LayerCam, MultiLayer, NoiseKind, NoiseTunnel, Occlusion, Saliency, ScoreCam, XGradCam,
};
use ndarray::{ArrayD, ArrayView4, Axis, Ix4};
use ndarray_npy::read_npy;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> ArrayD<f32> {
    let p = root()
        .join("fixtures/reference")
        .join(format!("{name}.npy"));
    read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rel_err(got: &ArrayD<f32>, expected: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), expected.shape(), "shape");
    let d = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let s = expected.iter().map(|b| b.abs() as f64).fold(0.0, f64::max);
    assert!(s > 0.0, "all-zero reference");
    d / s
}

/// Runs every method and compares with `<prefix>.<method>.npy`.
fn check_all(
    prefix: &str,
    net: &Network<f32>,
    x: ArrayView4<f32>,
    target: &Target<f32>,
    occlusion: Occlusion,
) {
    let scores = net.forward(x).unwrap().into_dyn();
    let e = rel_err(&scores, &fixture(&format!("{prefix}.scores")));
    assert!(e <= 1e-4, "{prefix} scores: relative error {e:e}");
    let gc = GradCam::new();
    let ggc = GuidedGradCam::new();
    let methods: Vec<(&str, &dyn Attribution<f32, Network<f32>>)> = vec![
        ("gradient", &Gradient),
        ("saliency", &Saliency),
        ("guided-backprop", &GuidedBackprop),
        ("deconvnet", &Deconvnet),
        ("grad-cam", &gc),
        ("guided-grad-cam", &ggc),
        ("occlusion", &occlusion),
    ];
    let mut report = Vec::new();
    for (name, m) in methods {
        let got = m.attribute(net, x, target).unwrap().values;
        let e = rel_err(&got, &fixture(&format!("{prefix}.{name}")));
        report.push(format!("{name} {e:.1e}"));
        assert!(e <= 1e-4, "{prefix} {name}: relative error {e:e}");
    }
    let cam = gc.attribute(net, x, target).unwrap();
    let (_, _, h, w) = x.dim();
    let shown = attrib_viz::upsample_normalized(cam.spatial().unwrap(), h, w).into_dyn();
    let e = rel_err(&shown, &fixture(&format!("{prefix}.pytorch-grad-cam")));
    report.push(format!("pytorch-grad-cam {e:.1e}"));
    assert!(e <= 1e-3, "{prefix} pytorch-grad-cam: relative error {e:e}");
    eprintln!("{prefix}: {}", report.join(", "));
}

fn input(name: &str) -> ndarray::Array4<f32> {
    fixture(name).into_dimensionality::<Ix4>().unwrap()
}

#[test]
fn resnet18_synthetic_weights_batch_of_two() {
    let net = Arch::Resnet18.synthetic::<f32>(0, 10).unwrap();
    assert_eq!(net.default_layer(), "layer4");
    let x = input("resnet18.input");
    check_all(
        "resnet18",
        &net,
        x.view(),
        &Target::PerSample(vec![3, 7]),
        Occlusion::new(16, 8),
    );
}

fn tiny_vgg(map: &WeightMap) -> Network<f32> {
    let t = |k: &str| map.get(k).unwrap().to_vec::<f32>().unwrap();
    let same = Conv2dConfig {
        padding: Padding::symmetric(1),
        ..Conv2dConfig::default()
    };
    let mut b = NetworkBuilder::new([3, 32, 32]);
    b.alias("input").unwrap();
    b.scope("features", |b| {
        b.conv2d(
            "0",
            Conv2d::from_vec(
                t("features.0.weight"),
                [8, 3, 3, 3],
                Some(t("features.0.bias")),
                same,
            )?,
        )?;
        b.relu("1")?.max_pool("2", Pool2dConfig::new(2, 2, 0))?;
        b.conv2d(
            "3",
            Conv2d::from_vec(
                t("features.3.weight"),
                [16, 8, 3, 3],
                Some(t("features.3.bias")),
                same,
            )?,
        )?;
        b.relu("4")?.max_pool("5", Pool2dConfig::new(2, 2, 0))?;
        b.conv2d(
            "6",
            Conv2d::from_vec(
                t("features.6.weight"),
                [16, 16, 3, 3],
                Some(t("features.6.bias")),
                same,
            )?,
        )?;
        b.relu("7")?;
        Ok(())
    })
    .unwrap();
    b.flatten("flatten").unwrap();
    b.linear(
        "classifier",
        Linear::from_vec(
            t("classifier.weight"),
            [5, 1024],
            Some(t("classifier.bias")),
        )
        .unwrap(),
    )
    .unwrap();
    b.build().unwrap()
}

#[test]
fn tiny_vgg_with_max_pool_from_safetensors_and_pth() {
    let map = WeightMap::load(&root().join("fixtures/reference/tiny_vgg.safetensors")).unwrap();
    for f in ["tiny_vgg_zip.pth", "tiny_vgg_legacy.pth"] {
        assert_eq!(
            WeightMap::load(&root().join("fixtures/pth").join(f)).unwrap(),
            map,
            "{f}"
        );
    }
    let net = tiny_vgg(&map);
    // The last rectified map is `features.7`, also the output of `features`: the outer name wins.
    assert_eq!(net.default_layer(), "features");
    let x = input("tiny_vgg.input");
    check_all(
        "tiny_vgg",
        &net,
        x.view(),
        &Target::PerSample(vec![1, 4]),
        Occlusion::new(8, 4),
    );
}

/// The edges of the claims, against `tools/reference/edge_cases.py`: Captum's
/// occlusion where the stride does not tile the input (the last window cropped), a
/// window spanning a whole axis with a larger stride there, a non-zero baseline;
/// Grad-CAM at the network input and at a 1x1 layer.
#[test]
fn edge_cases_match_captum() {
    let map = WeightMap::load(&root().join("fixtures/reference/tiny_vgg.safetensors")).unwrap();
    let net = tiny_vgg(&map);
    let x = input("tiny_vgg.input");
    let target = Target::PerSample(vec![1, 4]);
    let cases = [
        ("7x5-s3x4", [7, 5], [3, 4], 0.0),
        ("32x6-s40x5-b0.5", [32, 6], [40, 5], 0.5),
        ("3x3-s2", [3, 3], [2, 2], 0.0),
    ];
    for (name, [wh, ww], [sh, sw], base) in cases {
        let occ = Occlusion::new(1, 1)
            .window(wh, ww)
            .stride(sh, sw)
            .baseline(base)
            .attribute(&net, x.view(), &target)
            .unwrap();
        let e = rel_err(&occ.values, &fixture(&format!("tiny_vgg.occlusion-{name}")));
        eprintln!("occlusion {name}: relative error {e:.1e}");
        assert!(e <= 1e-4, "occlusion {name}: relative error {e:e}");
    }
    let gc = GradCam::new()
        .layer("input")
        .attribute(&net, x.view(), &target)
        .unwrap();
    let e = rel_err(&gc.values, &fixture("tiny_vgg.grad-cam-input"));
    eprintln!("grad-cam at the input: relative error {e:.1e}");
    assert!(e <= 1e-4, "grad-cam at the input: relative error {e:e}");
    let r18 = Arch::Resnet18.synthetic::<f32>(0, 10).unwrap();
    let xr = input("resnet18.input");
    let gc = GradCam::new()
        .layer("avgpool")
        .attribute(&r18, xr.view(), &Target::PerSample(vec![3, 7]))
        .unwrap();
    assert_eq!(gc.values.shape(), &[2, 1, 1]);
    let e = rel_err(&gc.values, &fixture("resnet18.grad-cam-avgpool"));
    eprintln!("grad-cam at avgpool (1x1): relative error {e:.1e}");
    assert!(e <= 1e-4, "grad-cam at avgpool: relative error {e:e}");
}

/// A pretrained network `scripts/fetch-weights` caches (`file` under the cache's
/// `weights/`). CI sets `ATTRIB_REQUIRE_WEIGHTS=1`, so there a missing file fails
/// instead of skipping.
fn pretrained(arch: Arch, file: &str) -> Option<Network<f32>> {
    let cache = std::env::var_os("ATTRIB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache"));
    let path = cache.join("weights").join(file);
    if !path.exists() {
        assert!(
            std::env::var_os("ATTRIB_REQUIRE_WEIGHTS").is_none(),
            "{} is missing: run scripts/fetch-weights",
            path.display()
        );
        eprintln!(
            "skipping: {} not found (run scripts/fetch-weights)",
            path.display()
        );
        return None;
    }
    Some(arch.load(&path).unwrap())
}

fn lite0() -> Option<Network<f32>> {
    pretrained(Arch::EfficientnetLite0, "efficientnet-lite0.safetensors")
}

fn mobilenet_v2() -> Option<Network<f32>> {
    pretrained(Arch::MobilenetV2, "mobilenet_v2.safetensors")
}

/// The photos' logits at 224 match PyTorch's (`<prefix>.<photo>.logits224`) and
/// the top classes are the expected ones.
fn classifies_like_pytorch(net: &Network<f32>, prefix: &str) {
    for (photo, class) in [("chelsea", 285), ("coffee", 967)] {
        let x =
            imagenet::load_image(&root().join("assets").join(format!("{photo}.png")), 224).unwrap();
        let logits = net.forward(x.view()).unwrap();
        let e = rel_err(
            &logits.clone().into_dyn(),
            &fixture(&format!("{prefix}.{photo}.logits224")),
        );
        eprintln!("{prefix} {photo}: logits relative error {e:.1e}");
        assert!(e <= 1e-4, "{prefix} {photo}: logits relative error {e:e}");
        let top = Target::<f32>::TopPredicted
            .resolve(logits.view())
            .unwrap()
            .classes[0];
        assert_eq!(
            top,
            Some(class),
            "{photo} is {}",
            imagenet::class_name(class)
        );
    }
}

#[test]
fn efficientnet_lite0_classifies_the_photos_like_pytorch() {
    let Some(net) = lite0() else { return };
    classifies_like_pytorch(&net, "lite0");
}

#[test]
fn efficientnet_lite0_methods_match_the_references() {
    let Some(net) = lite0() else { return };
    assert_eq!(net.default_layer(), "_swish1");
    let x = input("lite0.input");
    check_all(
        "lite0",
        &net,
        x.view(),
        &Target::Class(285),
        Occlusion::new(16, 8),
    );
}

#[test]
fn mobilenet_v2_classifies_the_photos_like_torchvision() {
    let Some(net) = mobilenet_v2() else { return };
    classifies_like_pytorch(&net, "mobilenet_v2");
}

#[test]
fn mobilenet_v2_methods_match_the_references() {
    let Some(net) = mobilenet_v2() else { return };
    // pytorch-grad-cam's layer for MobileNetV2: model.features[-1].
    assert_eq!(net.default_layer(), "features.18");
    let x = input("mobilenet_v2.input");
    check_all(
        "mobilenet_v2",
        &net,
        x.view(),
        &Target::Class(285),
        Occlusion::new(16, 8),
    );
}

type Method = dyn Attribution<f32, Network<f32>>;

/// The baselines of `tools/reference/baselines.py` on one network: pytorch-grad-cam's
/// CAM variants (raw maps) and multi-layer Grad-CAM, Captum's integrated gradients,
/// input x gradient, Guided Grad-CAM with nearest upsampling and per-channel
/// Grad-CAM.
fn check_baselines(
    prefix: &str,
    net: &Network<f32>,
    x: ArrayView4<f32>,
    layers: [&str; 2],
) -> Vec<String> {
    let target = match prefix {
        "resnet18" => Target::PerSample(vec![3, 7]),
        _ => Target::PerSample(vec![1, 4]),
    };
    let (gpp, xg, lc, hr, sc, ab, ec) = (
        GradCamPlusPlus::new(),
        XGradCam::new(),
        LayerCam::new(),
        HiResCam::new(),
        ScoreCam::new(),
        AblationCam::new(),
        EigenCam::new(),
    );
    let ig = IntegratedGradients::new();
    let ggc = GuidedGradCam::new().interpolate(Interpolation::Nearest);
    let pc = GradCam::new().per_channel();
    let ml = MultiLayer::new(GradCam::new(), layers.map(String::from).to_vec());
    let methods: Vec<(&str, &Method, f64)> = vec![
        ("grad-cam-plus-plus", &gpp, 1e-4),
        ("xgrad-cam", &xg, 1e-4),
        ("layer-cam", &lc, 1e-4),
        ("hires-cam", &hr, 1e-4),
        ("score-cam", &sc, 1e-3),
        ("ablation-cam", &ab, 1e-3),
        ("eigen-cam", &ec, 1e-4),
        ("integrated-gradients", &ig, 1e-4),
        ("input-x-gradient", &InputXGradient, 1e-4),
        ("guided-grad-cam-nearest", &ggc, 1e-4),
        ("grad-cam-per-channel", &pc, 1e-4),
        ("multi-layer-grad-cam", &ml, 1e-3),
    ];
    let mut report = Vec::new();
    for (name, m, tol) in methods {
        if prefix == "resnet18" && name == "integrated-gradients" {
            continue; // in f64: see integrated_gradients_on_resnet18_in_f64
        }
        let got = m.attribute(net, x, &target).unwrap().values;
        let e = rel_err(&got, &fixture(&format!("{prefix}.{name}")));
        report.push(format!("{name} {e:.1e}"));
        assert!(e <= tol, "{prefix} {name}: relative error {e:e}");
    }
    // Eigen-CAM against pytorch-grad-cam's own projection, whatever sign its SVD
    // chose: the map is ReLU of it or of its negation, item by item.
    let got = ec.attribute(net, x, &target).unwrap().values;
    let raw = fixture(&format!("{prefix}.eigen-cam-projection"));
    for (b, (g, r)) in got.outer_iter().zip(raw.outer_iter()).enumerate() {
        let pos = r.mapv(|v| v.max(0.0));
        let neg = r.mapv(|v| (-v).max(0.0));
        let e = rel_err(&g.to_owned(), &pos).min(rel_err(&g.to_owned(), &neg));
        assert!(e <= 1e-4, "{prefix} eigen-cam item {b} up to sign: {e:e}");
    }
    report
}

#[test]
fn baselines_match_pytorch_grad_cam_and_captum() {
    let r18 = Arch::Resnet18.synthetic::<f32>(0, 10).unwrap();
    let x = input("resnet18.input");
    let report = check_baselines("resnet18", &r18, x.view(), ["layer3", "layer4"]);
    eprintln!("resnet18: {}", report.join(", "));
    let map = WeightMap::load(&root().join("fixtures/reference/tiny_vgg.safetensors")).unwrap();
    let net = tiny_vgg(&map);
    let x = input("tiny_vgg.input");
    let report = check_baselines("tiny_vgg", &net, x.view(), ["features.4", "features"]);
    eprintln!("tiny_vgg: {}", report.join(", "));
}

/// One of the 50 Gauss-Legendre points on ResNet-18's path lies within float32
/// rounding of a ReLU's kink, where float32 implementations disagree by which side
/// they land on (attrib's f32 map differs from Captum's f32 map by 1.05e-4 of its
/// range, all of it from that one point's gradient); in float64 both are
/// unambiguous, and Captum's float64 map is the reference.
#[test]
fn integrated_gradients_on_resnet18_in_f64() {
    let net = Arch::Resnet18.synthetic::<f64>(0, 10).unwrap();
    let x = input("resnet18.input").mapv(f64::from);
    let got = IntegratedGradients::new()
        .attribute(&net, x.view(), &Target::PerSample(vec![3, 7]))
        .unwrap()
        .values
        .mapv(|v| v as f32);
    let e = rel_err(&got, &fixture("resnet18.integrated-gradients"));
    eprintln!("resnet18 integrated gradients (f64): relative error {e:.1e}");
    assert!(e <= 1e-6, "relative error {e:e}");
}

/// Captum's Riemann sums, at 7 steps from a baseline of 0.5.
#[test]
fn integrated_gradients_riemann_sums_match_captum() {
    let map = WeightMap::load(&root().join("fixtures/reference/tiny_vgg.safetensors")).unwrap();
    let net = tiny_vgg(&map);
    let x = input("tiny_vgg.input");
    let target = Target::PerSample(vec![1, 4]);
    for m in [
        Integration::RiemannLeft,
        Integration::RiemannRight,
        Integration::RiemannMiddle,
        Integration::RiemannTrapezoid,
    ] {
        let got = IntegratedGradients::new()
            .method(m)
            .steps(7)
            .baseline(0.5)
            .attribute(&net, x.view(), &target)
            .unwrap()
            .values;
        let name = m.name().replace('_', "-");
        let e = rel_err(
            &got,
            &fixture(&format!("tiny_vgg.integrated-gradients-{name}")),
        );
        eprintln!("{name}: relative error {e:.1e}");
        assert!(e <= 1e-4, "{name}: relative error {e:e}");
    }
}

/// Captum's `NoiseTunnel` with the very noise it drew (saved by `baselines.py`):
/// SmoothGrad and VarGrad over the gradient (`Saliency(abs=False)`), SmoothGrad-squared
/// over input x gradient; 4 samples of standard deviation 0.2.
#[test]
fn noise_tunnels_match_captum_given_its_noise() {
    let map = WeightMap::load(&root().join("fixtures/reference/tiny_vgg.safetensors")).unwrap();
    let net = tiny_vgg(&map);
    let x = input("tiny_vgg.input");
    let target = Target::PerSample(vec![1, 4]);
    let noise = fixture("tiny_vgg.noise")
        .mapv(f64::from)
        .into_dimensionality::<Ix4>()
        .unwrap();
    assert_eq!(noise.len_of(Axis(0)), 8);
    let cases = [
        (NoiseKind::SmoothGrad, "gradient"),
        (NoiseKind::SmoothGradSq, "input-x-gradient"),
        (NoiseKind::VarGrad, "gradient"),
    ];
    for (kind, inner) in cases {
        // Small batches too: the tunnel explains its rows in chunks.
        for max_batch in [32, 3] {
            let got = match inner {
                "gradient" => NoiseTunnel::new(Gradient, kind)
                    .samples(4)
                    .std(0.2)
                    .max_batch(max_batch)
                    .with_noise(noise.clone())
                    .attribute(&net, x.view(), &target),
                _ => NoiseTunnel::new(InputXGradient, kind)
                    .samples(4)
                    .std(0.2)
                    .max_batch(max_batch)
                    .with_noise(noise.clone())
                    .attribute(&net, x.view(), &target),
            }
            .unwrap()
            .values;
            let name = format!("{}.{inner}", kind.name());
            let e = rel_err(&got, &fixture(&format!("tiny_vgg.{name}")));
            eprintln!("{name} (max batch {max_batch}): relative error {e:.1e}");
            assert!(e <= 1e-4, "{name}: relative error {e:e}");
        }
    }
}

//! What a method author writes: the whole property kit in one call, parity with the
//! reference implementation, and the command offering the method.

use attrib_core::{Attribution, Target};
use attrib_custom_method::GradCamElementWise;
use attrib_testkit::{Kit, Property};
use ndarray::{ArrayD, Ix4};

#[test]
fn the_property_kit_in_one_call() {
    let report = Kit::new().run("grad-cam-elementwise", &GradCamElementWise::new());
    println!("{}", report.markdown());
    report.assert_holds(&[
        Property::BatchEqualsItems,
        Property::OneHotSeedIsClass,
        Property::Deterministic,
        Property::ImplementationInvariance,
        Property::InputInvariance,
        Property::ModelRandomisation,
    ]);
    // Rectified per position, it is not linear in the seed; the kit says so.
    assert!(!report.failures(&[Property::LinearInSeed]).is_empty());
}

fn fixture(name: &str) -> ArrayD<f32> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference")
        .join(format!("{name}.npy"));
    ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// pytorch-grad-cam's `GradCAMElementWise` raw map on the synthetic ResNet-18 (from
/// `tools/reference/baselines.py`).
#[test]
fn matches_pytorch_grad_cam() {
    let net = attrib_dfdx::Arch::Resnet18.synthetic::<f32>(0, 10).unwrap();
    let x = fixture("resnet18.input")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let got = GradCamElementWise::new()
        .attribute(&net, x.view(), &Target::PerSample(vec![3, 7]))
        .unwrap()
        .values;
    let expected = fixture("resnet18.grad-cam-elementwise");
    let d = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let s = expected.iter().map(|b| b.abs()).fold(0.0f32, f32::max);
    assert!(s > 0.0 && d / s <= 1e-4, "relative error {}", d / s);
}

#[test]
fn the_command_offers_it() {
    let bin = env!("CARGO_BIN_EXE_attrib-custom");
    let out = std::process::Command::new(bin)
        .arg("methods")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("grad-cam-elementwise") && l.contains("cams")),
        "{text}"
    );
    // And runs it like any method, in its group too.
    let dir = std::env::temp_dir().join(format!("attrib-custom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("r18.safetensors");
    attrib_dfdx::Arch::Resnet18
        .synthetic_weights(0, 10)
        .unwrap()
        .save_safetensors(&weights)
        .unwrap();
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/chelsea.png");
    let out = std::process::Command::new(bin)
        .args(["explain", "--arch", "resnet18", "--weights"])
        .arg(&weights)
        .arg("--image")
        .arg(&image)
        .args([
            "--size",
            "64",
            "--method",
            "grad-cam-elementwise,grad-cam",
            "--npy",
            "--quiet",
            "--out",
        ])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map: ArrayD<f32> =
        ndarray_npy::read_npy(dir.join("out/chelsea.grad-cam-elementwise.npy")).unwrap();
    assert_eq!(map.shape(), &[1, 2, 2]);
}

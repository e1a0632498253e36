//! The model zoo: PyTorch key names and shapes, tap names and default layers, strict
//! loading errors, and the checkpoint readers.

use std::path::{Path, PathBuf};

use attrib_core::{Error, LayerTap, Model};
use attrib_dfdx::weights::{DType, RawTensor};
use attrib_dfdx::{Arch, ParamKind, Synthetic, WeightMap};
use ndarray::Array4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// PyTorch's own state dicts (names and shapes), from `tools/reference/generate.py`.
fn torch_state_dict(arch: Arch) -> Vec<(String, Vec<usize>)> {
    let text = std::fs::read_to_string(root().join("fixtures/reference/state_dicts.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[arch.name()]
        .as_array()
        .unwrap_or_else(|| panic!("{arch} missing from the fixture"))
        .iter()
        .map(|e| {
            let key = e[0].as_str().unwrap().to_string();
            let shape = e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (key, shape)
        })
        .collect()
}

/// A state dict with PyTorch's exact keys and shapes and synthetic float values
/// (integer `num_batches_tracked` as PyTorch stores it).
fn fake_weights(arch: Arch) -> WeightMap {
    let synth = Synthetic::new(3, 1000);
    let mut map = WeightMap::new();
    for (key, shape) in torch_state_dict(arch) {
        let t = if key.ends_with("num_batches_tracked") {
            RawTensor {
                dtype: DType::I64,
                shape,
                bytes: 0i64.to_le_bytes().to_vec(),
            }
        } else {
            let kind = if key.ends_with("running_var") {
                ParamKind::BnVar
            } else {
                ParamKind::Weight
            };
            let v: Vec<f32> = synth
                .values(&key, &shape, kind)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            RawTensor::from_f32(shape, &v)
        };
        map.insert(key, t);
    }
    map
}

#[test]
fn every_architecture_loads_pytorch_state_dicts_strictly() {
    for arch in Arch::ALL {
        let net = arch
            .from_weights::<f32>(fake_weights(arch))
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(net.num_outputs(), 1000, "{arch}");
        let expected = match arch {
            Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => "layer4",
            Arch::Vgg16 => "features.29",
            Arch::Vgg16Bn => "features.42",
            Arch::Alexnet => "features.11",
            Arch::EfficientnetLite0 => "_swish1",
            Arch::MobilenetV2 => "features.18",
        };
        assert_eq!(net.default_layer(), expected, "{arch}");
        let info = net.check_layer(expected).unwrap();
        assert!(info.rectified, "{arch}: the default layer is rectified");
        let spatial = match arch {
            Arch::Alexnet => [256, 13, 13],
            Arch::Vgg16 | Arch::Vgg16Bn => [512, 14, 14],
            Arch::Resnet50 => [2048, 7, 7],
            Arch::Resnet18 | Arch::Resnet34 => [512, 7, 7],
            Arch::EfficientnetLite0 | Arch::MobilenetV2 => [1280, 7, 7],
        };
        assert_eq!(info.shape, spatial, "{arch}");
        // Guided Grad-CAM shares one pass exactly when nothing above the default
        // layer rectifies: true for the GAP + linear heads, not for VGG's and
        // AlexNet's classifiers with their ReLUs.
        assert_eq!(
            net.rectifiers_above(expected).unwrap(),
            matches!(arch, Arch::Vgg16 | Arch::Vgg16Bn | Arch::Alexnet),
            "{arch}"
        );
        let first = net.layers()[0].name.clone();
        assert!(net.rectifiers_above(&first).unwrap(), "{arch}: {first}");
        assert!(net.rectifiers_above("no.such.layer").is_err(), "{arch}");
        let has_cam_head = net.linear_head().is_some();
        assert_eq!(
            has_cam_head,
            matches!(
                arch,
                Arch::Resnet18
                    | Arch::Resnet34
                    | Arch::Resnet50
                    | Arch::EfficientnetLite0
                    | Arch::MobilenetV2
            ),
            "{arch}"
        );
    }
}

#[test]
fn tap_names_follow_module_paths() {
    let net = Arch::Resnet18.synthetic::<f32>(0, 10).unwrap();
    let names: Vec<String> = net.layers().into_iter().map(|l| l.name).collect();
    for n in [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1.0.conv1",
        "layer1.0.relu1",
        "layer1.0.relu",
        "layer1.0",
        "layer2.0.downsample.0",
        "layer2.0.downsample.1",
        "layer4",
        "avgpool",
        "fc",
    ] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
    let net = Arch::EfficientnetLite0.synthetic::<f32>(0, 10).unwrap();
    let names: Vec<String> = net.layers().into_iter().map(|l| l.name).collect();
    for n in [
        "_conv_stem",
        "_bn0",
        "_swish0",
        "_blocks.0._depthwise_conv",
        "_blocks.1._expand_conv",
        "_blocks.15",
        "_conv_head",
        "_bn1",
        "_swish1",
        "_fc",
    ] {
        assert!(names.contains(&n.to_string()), "{n} missing");
    }
    // Blocks with stride 1 and equal channels have the skip connection.
    assert!(names.contains(&"_blocks.2.add".to_string()));
    assert!(!names.contains(&"_blocks.1.add".to_string()));
}

#[test]
fn synthetic_networks_run_at_other_input_sizes() {
    for arch in [
        Arch::Resnet18,
        Arch::Resnet50,
        Arch::EfficientnetLite0,
        Arch::Alexnet,
    ] {
        let net = arch.synthetic::<f32>(1, 7).unwrap();
        let x = Array4::from_shape_fn((2, 3, 96, 96), |(n, c, i, j)| {
            ((n + c * 7 + i * 3 + j) % 11) as f32 / 11.0 - 0.5
        });
        let s = net.forward(x.view()).unwrap();
        assert_eq!(s.dim(), (2, 7), "{arch}");
        assert!(s.iter().all(|v| v.is_finite()), "{arch}");
    }
}

#[test]
fn weights_that_do_not_fit_are_errors_naming_the_key() {
    let mut map = fake_weights(Arch::Resnet18);
    let w = map.get("layer2.0.conv1.weight").unwrap().clone();
    map.insert(
        "layer2.0.conv1.weight",
        RawTensor::from_f32(vec![128, 64, 1, 3], &vec![0.0; 128 * 64 * 3]),
    );
    let e = Arch::Resnet18.from_weights::<f32>(map.clone()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "weights: tensor `layer2.0.conv1.weight` has shape [128, 64, 1, 3], the architecture expects [128, 64, 3, 3]"
    );
    map.insert("layer2.0.conv1.weight", w);
    map.insert("extra.weight", RawTensor::from_f32(vec![2], &[1.0, 2.0]));
    let e = Arch::Resnet18.from_weights::<f32>(map).unwrap_err();
    assert_eq!(
        e.to_string(),
        "weights: unexpected tensors not used by the architecture: `extra.weight` [2]"
    );
    let e = Arch::Vgg16
        .from_weights::<f32>(fake_weights(Arch::Resnet18))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "weights: missing tensor `classifier.6.weight` (the classifier weight)"
    );
    let mut map = fake_weights(Arch::Alexnet);
    let full = map.get("features.0.bias").unwrap().clone();
    map.insert(
        "features.0.bias",
        RawTensor {
            bytes: full.bytes[..10].to_vec(),
            ..full
        },
    );
    let e = Arch::Alexnet.from_weights::<f32>(map).unwrap_err();
    assert_eq!(
        e.to_string(),
        "weights: tensor `features.0.bias` is truncated"
    );
    let e: Error = "resnet9".parse::<Arch>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid architecture: unknown `resnet9`; valid: resnet18, resnet34, resnet50, vgg16, vgg16_bn, alexnet, efficientnet-lite0, mobilenet_v2"
    );
}

#[test]
fn safetensors_round_trip_and_damaged_files() {
    let map = fake_weights(Arch::Alexnet);
    let bytes = map.to_safetensors().unwrap();
    assert_eq!(WeightMap::from_bytes(&bytes).unwrap(), map);
    let e = WeightMap::from_bytes(&bytes[..bytes.len() - 100]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("weights: not a valid safetensors file"),
        "{e}"
    );
    for f in ["tiny_vgg_zip.pth", "tiny_vgg_legacy.pth"] {
        let data = std::fs::read(root().join("fixtures/pth").join(f)).unwrap();
        let e = WeightMap::from_bytes(&data[..data.len() / 2]).unwrap_err();
        assert!(matches!(e, Error::Weights(_)), "{f}: {e}");
        assert!(
            e.to_string().contains("truncated") || e.to_string().contains("zip"),
            "{f}: {e}"
        );
    }
    let e = WeightMap::load(Path::new("/nonexistent/w.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
}

#[test]
fn pth_views_and_dtypes() {
    for f in ["views_zip.pth", "views_legacy.pth"] {
        let map = WeightMap::load(&root().join("fixtures/pth").join(f)).unwrap();
        let get = |k: &str| map.get(k).unwrap();
        // base = arange(12); transposed = base[:6].view(2,3).t(); offset = base[5:9]
        assert_eq!(get("transposed").shape, vec![3, 2]);
        assert_eq!(
            get("transposed").to_vec::<f32>().unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0],
            "{f}"
        );
        assert_eq!(
            get("offset").to_vec::<f64>().unwrap(),
            vec![5.0, 6.0, 7.0, 8.0],
            "{f}"
        );
        assert_eq!(
            get("float64").to_vec::<f64>().unwrap(),
            vec![0.5, -1.25],
            "{f}"
        );
        assert_eq!(
            get("float16").to_vec::<f32>().unwrap(),
            vec![1.5, -2.0, 0.099975586],
            "{f}"
        );
        assert_eq!(get("int64").dtype, DType::I64);
        let e = get("int64").to_vec::<f32>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "weights: expected a floating-point tensor, found I64"
        );
    }
}

#[path = "../../io/tests/common/hostile.rs"]
mod hostile;

#[test]
fn every_architecture_round_trips_through_pth_and_safetensors() {
    // state dict -> .pth (zip, and legacy) -> safetensors -> network, for every zoo
    // architecture at full size: the same network as from the state dict directly.
    let x = Array4::from_shape_fn((1, 3, 64, 64), |(_, c, i, j)| {
        ((c * 7 + i * 3 + j) % 13) as f32 / 13.0 - 0.5
    });
    for arch in Arch::ALL {
        let direct = arch.synthetic::<f32>(5, 10).unwrap();
        let expected = direct.forward(x.view()).unwrap();
        drop(direct);
        let map = arch.synthetic_weights(5, 10).unwrap();
        let formats = if arch == Arch::Vgg16 {
            // The largest (138M parameters): the zip format only, to keep memory down.
            vec![map.to_pth().unwrap()]
        } else {
            vec![map.to_pth().unwrap(), map.to_pth_legacy().unwrap()]
        };
        drop(map);
        for pth in formats {
            let st = WeightMap::from_bytes(&pth)
                .unwrap()
                .to_safetensors()
                .unwrap();
            drop(pth);
            let net = arch
                .from_weights::<f32>(WeightMap::from_bytes(&st).unwrap())
                .unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert_eq!(net.forward(x.view()).unwrap(), expected, "{arch}");
        }
        // Safetensors as Python writes them (header from safetensors.torch, zero
        // data): recognised and accepted by the architecture.
        let head = std::fs::read(root().join(format!(
            "fixtures/formats/{}.safetensors-header",
            arch.name()
        )))
        .unwrap();
        let mut map = WeightMap::from_bytes(&hostile::complete_safetensors(&head)).unwrap();
        // Zero variances are not a valid batch norm: give them ones.
        let vars: Vec<String> = map
            .names()
            .into_iter()
            .filter(|k| k.ends_with("running_var"))
            .collect();
        for k in vars {
            let t = map.get(&k).unwrap().clone();
            let n = t.shape.iter().product::<usize>();
            map.insert(k, RawTensor::from_f32(t.shape, &vec![1.0; n]));
        }
        arch.from_weights::<f32>(map)
            .unwrap_or_else(|e| panic!("{arch} from Python's safetensors: {e}"));
    }
}

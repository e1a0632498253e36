//! The readers on files a stranger could send: every case gives a typed error naming
//! the problem (or the correct result), never a panic, and never allocates on a
//! file's say-so. Memory and time bounds are checked end to end, under an
//! address-space limit, in the CLI's tests (`crates/cli/tests/hostile.rs`).

#[path = "common/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};

use attrib_core::Error;
use attrib_io::{DType, Format, Limits, RawTensor, WeightMap};
use hostile::{deep_nesting, legacy_pth, memo_bomb, one_tensor, png, zip_pth, Storage, P};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap()
}

fn weights_err(data: &[u8]) -> String {
    match WeightMap::from_bytes(data) {
        Err(Error::Weights(m)) => m,
        other => panic!("expected a weights error, got {other:?}"),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("attrib-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn formats_are_recognised_by_their_full_signatures() {
    // ResNet-50's safetensors header is 28800 = 0x7080 bytes long: its first byte is
    // 0x80, a pickle's first byte. Python wrote this header.
    let head = fixture("fixtures/formats/resnet50.safetensors-header");
    assert_eq!(head[0], 0x80);
    assert_eq!(Format::detect(&head), Some(Format::Safetensors));
    for f in ["tiny_vgg_zip.pth", "views_zip.pth"] {
        assert_eq!(
            Format::detect(&fixture(&format!("fixtures/pth/{f}"))),
            Some(Format::Zip)
        );
    }
    for f in ["tiny_vgg_legacy.pth", "views_legacy.pth"] {
        assert_eq!(
            Format::detect(&fixture(&format!("fixtures/pth/{f}"))),
            Some(Format::Legacy)
        );
    }
    assert_eq!(
        Format::detect(&fixture("fixtures/reference/tiny_vgg.safetensors")),
        Some(Format::Safetensors)
    );
    // A pickle that is not the legacy format's magic number, a length beyond the
    // file, a length not followed by `{`, too short to say.
    assert_eq!(Format::detect(&P::new().int(7).stop()), None);
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(b"{}");
    assert_eq!(Format::detect(&long), None);
    let mut not_json = 2u64.to_le_bytes().to_vec();
    not_json.extend_from_slice(b"[]");
    assert_eq!(Format::detect(&not_json), None);
    assert_eq!(Format::detect(b"PK\x03"), None);
    assert_eq!(Format::detect(b""), None);
    assert_eq!(
        weights_err(b"\x80\x02K\x01."),
        "unrecognised format: not safetensors, nor a PyTorch checkpoint (zip or legacy); the file starts with [80 02 4b 01 2e]"
    );
}

#[test]
fn python_written_safetensors_of_every_zoo_architecture_read() {
    for arch in [
        "resnet18",
        "resnet34",
        "resnet50",
        "vgg16",
        "vgg16_bn",
        "alexnet",
        "efficientnet-lite0",
    ] {
        let head = fixture(&format!("fixtures/formats/{arch}.safetensors-header"));
        let map = WeightMap::from_bytes(&hostile::complete_safetensors(&head))
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        let expected = match arch {
            "resnet50" => 320,
            "resnet18" => 122,
            _ => map.len(),
        };
        assert_eq!(map.len(), expected, "{arch}");
        // And back through both checkpoint formats.
        for pth in [map.to_pth().unwrap(), map.to_pth_legacy().unwrap()] {
            assert_eq!(WeightMap::from_bytes(&pth).unwrap(), map, "{arch}");
        }
    }
}

#[test]
fn pth_written_here_round_trips() {
    let mut m = WeightMap::new();
    m.insert(
        "a.weight",
        RawTensor::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]),
    );
    m.insert(
        "scalar",
        RawTensor {
            dtype: DType::I64,
            shape: vec![],
            bytes: 7i64.to_le_bytes().to_vec(),
        },
    );
    m.insert(
        "empty",
        RawTensor {
            dtype: DType::F64,
            shape: vec![0, 4],
            bytes: vec![],
        },
    );
    for bytes in [m.to_pth().unwrap(), m.to_pth_legacy().unwrap()] {
        assert_eq!(WeightMap::from_bytes(&bytes).unwrap(), m);
    }
    let bad = RawTensor {
        dtype: DType::F32,
        shape: vec![3],
        bytes: vec![0; 8],
    };
    let mut m2 = WeightMap::new();
    m2.insert("bad", bad);
    assert!(m2.to_pth().is_err());
}

#[test]
fn expanded_views_are_refused_before_allocating() {
    // torch.save({'w': torch.zeros(1).expand(2**33)}): one stored float, a view of
    // 2^33 elements; copying it would take 32 GiB.
    for f in ["expanded_zip.pth", "expanded_legacy.pth"] {
        let m = weights_err(&fixture(&format!("fixtures/formats/{f}")));
        assert!(
            m.starts_with("`w` would take 32.0 GiB (shape [8589934592], from 1 stored elements): beyond what is left of the reader's budget"),
            "{f}: {m}"
        );
    }
    // A small expanded view is within budget and reads correctly.
    for legacy in [false, true] {
        let pickle = one_tensor("w", "0", 1, 0, &[3, 2], &[0, 0], legacy);
        let bytes = 2.5f32.to_le_bytes().to_vec();
        let data = if legacy {
            legacy_pth(&pickle, &[("0", 1, bytes)])
        } else {
            zip_pth(&pickle, vec![("0", Storage::Bytes(bytes))])
        };
        let m = WeightMap::from_bytes(&data).unwrap();
        assert_eq!(m.get("w").unwrap().to_vec::<f32>().unwrap(), vec![2.5; 6]);
    }
}

#[test]
fn pickle_memory_bombs_stay_the_size_of_the_pickle() {
    let bomb = memo_bomb();
    assert!(bomb.len() < 512, "{}", bomb.len());
    for data in [zip_pth(&bomb, vec![]), legacy_pth(&bomb, &[])] {
        let m = weights_err(&data);
        assert!(m.contains("not a state dict"), "{m}");
    }
    // DUP of a value pushes the same value again, within the stack budget.
    let mut dup = P::new().op(b"]");
    dup.0.extend(std::iter::repeat_n(b'2', 1 << 20));
    let m = weights_err(&zip_pth(&dup.stop(), vec![]));
    assert!(m.contains("not a state dict"), "{m}");
    let tight = Limits {
        max_pickle_items: 1000,
        ..Limits::default()
    };
    let mut dup = P::new().op(b"]");
    dup.0.extend(std::iter::repeat_n(b'2', 5000));
    match WeightMap::from_bytes_with(&zip_pth(&dup.stop(), vec![]), &tight) {
        Err(Error::Weights(m)) => assert!(
            m.contains("exceeds the reader's limit of 1000 stack entries"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for kind in ['t', 'l', 'd'] {
        let p = deep_nesting(kind, 200_000);
        for data in [zip_pth(&p, vec![]), legacy_pth(&p, &[])] {
            let m = weights_err(&data);
            assert!(
                m.contains("exceeds the reader's limit of 256 levels of nesting"),
                "{kind}: {m}"
            );
        }
        // Within the limit it is merely not a state dict.
        let m = weights_err(&zip_pth(&deep_nesting(kind, 200), vec![]));
        assert!(
            m.contains("not a state dict") || m.contains("key is not a string"),
            "{kind}: {m}"
        );
    }
}

#[test]
fn sizes_and_offsets_that_overflow_are_errors() {
    let four = vec![0u8; 16];
    for legacy in [false, true] {
        let wrap = |pickle: Vec<u8>| {
            if legacy {
                legacy_pth(&pickle, &[("0", 4, four.clone())])
            } else {
                zip_pth(&pickle, vec![("0", Storage::Bytes(four.clone()))])
            }
        };
        // An offset near 2^62 (wrapped around in a release build before).
        let m = weights_err(&wrap(one_tensor("w", "0", 4, 1 << 62, &[2], &[1], legacy)));
        assert!(m.contains("`w`"), "{m}");
        assert!(m.contains("overflows") || m.contains("truncated"), "{m}");
        // Sizes whose product overflows.
        let m = weights_err(&wrap(one_tensor(
            "w",
            "0",
            4,
            0,
            &[1 << 40, 1 << 40],
            &[1, 1],
            legacy,
        )));
        assert!(m.contains("would take") || m.contains("truncated"), "{m}");
        // Strides reaching beyond the storage.
        let m = weights_err(&wrap(one_tensor("w", "0", 4, 0, &[2], &[1 << 20], legacy)));
        assert!(m.contains("truncated") || m.contains("reaches"), "{m}");
        // Negative sizes, rank beyond any tensor.
        let m = weights_err(&wrap(one_tensor("w", "0", 4, 0, &[-1], &[1], legacy)));
        assert!(m.contains("negative size -1"), "{m}");
        let m = weights_err(&wrap(one_tensor(
            "w", "0", 4, 0, &[1; 65], &[1; 65], legacy,
        )));
        assert!(m.contains("rank 65"), "{m}");
        // And a plain tensor reads.
        let m =
            WeightMap::from_bytes(&wrap(one_tensor("w", "0", 4, 1, &[3], &[1], legacy))).unwrap();
        assert_eq!(m.get("w").unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    }
    // A legacy storage whose element count overflows the file.
    let m = weights_err(&legacy_pth(
        &one_tensor("w", "0", 4, 0, &[2], &[1], true),
        &[("0", u64::MAX / 2, vec![0; 16])],
    ));
    assert!(m.contains("storage `0` is truncated"), "{m}");
}

#[test]
fn a_deflated_storage_is_read_only_as_far_as_its_tensors_reach() {
    // 64 MiB of zeros deflated to some 64 KiB; the tensor needs 8 bytes of it.
    let pickle = one_tensor("w", "0", 2, 0, &[2], &[1], false);
    let data = zip_pth(&pickle, vec![("0", Storage::DeflatedZeros(64 << 20))]);
    assert!(data.len() < 1 << 20, "{}", data.len());
    let m = WeightMap::from_bytes(&data).unwrap();
    assert_eq!(m.get("w").unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    // A tensor that needs the whole inflated entry is charged for it: refused when
    // it is beyond the budget.
    let big = one_tensor("w", "0", 16 << 20, 0, &[16 << 20], &[1], false);
    let data = zip_pth(&big, vec![("0", Storage::DeflatedZeros(64 << 20))]);
    let tight = Limits {
        tensor_bytes_slack: 1 << 20,
        ..Limits::default()
    };
    match WeightMap::from_bytes_with(&data, &tight) {
        Err(Error::Weights(m)) => assert!(m.contains("inflating zip entry archive/data/0"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refused_callables_and_malformed_pickles() {
    let os = P::new()
        .global("os", "system")
        .op(b"(")
        .str("echo hi")
        .op(b"tR")
        .stop();
    assert_eq!(
        weights_err(&zip_pth(&os, vec![])),
        "not a readable PyTorch checkpoint: refusing to call os.system"
    );
    for (p, needle) in [
        (P::new().op(b"a").stop(), "pickle stack underflow"),
        (
            P::new().op(b"K\x01K\x02a").stop(),
            "APPEND to the integer 1, which is not a list",
        ),
        (
            P::new().op(b"]K\x01K\x02s").stop(),
            "SETITEM on a list of 0, which is not a dict",
        ),
        (P::new().op(b"h\x07").stop(), "unknown memo entry 7"),
        (P::new().op(b"X\xff\xff\xff\xff").stop(), "truncated pickle"),
        (P::new().op(b"(").stop(), "unexpected mark"),
        (
            P::new().op(b"\xff").stop(),
            "unsupported pickle opcode 0xff at byte 2",
        ),
        (
            P::new().op(b"}(K\x01").op(b"u").stop(),
            "odd number of items for a dict",
        ),
    ] {
        let m = weights_err(&zip_pth(&p, vec![]));
        assert!(m.contains(needle), "{needle}: {m}");
    }
}

#[test]
fn every_truncation_and_byte_flip_of_the_fixtures_is_handled() {
    for f in [
        "fixtures/pth/views_zip.pth",
        "fixtures/pth/views_legacy.pth",
        "fixtures/pth/tiny_vgg_legacy.pth",
        "fixtures/formats/expanded_legacy.pth",
        "fixtures/reference/tiny_vgg.safetensors",
    ] {
        let data = fixture(f);
        let step = (data.len() / 2000).max(1);
        for n in (0..data.len()).step_by(step) {
            assert!(WeightMap::from_bytes(&data[..n]).is_err(), "{f}: {n} bytes");
        }
        for i in (0..data.len()).step_by(step) {
            for v in [0x00u8, 0xff, data[i] ^ 0x01, b'(', b'.'] {
                let mut d = data.clone();
                d[i] = v;
                // Either outcome is fine; a panic or an abort is not.
                let _ = WeightMap::from_bytes(&d);
            }
        }
    }
}

#[test]
fn npy_headers_are_checked_against_the_file() {
    let dir = tmp("npy");
    let p = dir.join("huge.npy");
    std::fs::write(&p, hostile::npy_header("(1, 3, 100000, 100000)")).unwrap();
    let e = attrib_io::npy::read_f32(&p).unwrap_err().to_string();
    assert!(
        e.ends_with("not a readable .npy array: shape [1, 3, 100000, 100000] has more than the 268435456 elements allowed (attrib_io::Limits)"),
        "{e}"
    );
    std::fs::write(&p, hostile::npy_header("(1, 3, 100, 100)")).unwrap();
    let e = attrib_io::npy::read_f32(&p).unwrap_err().to_string();
    assert!(
        e.ends_with(
            "the header claims shape [1, 3, 100, 100] (120000 bytes of data), the file holds 0"
        ),
        "{e}"
    );
    for (header, needle) in [
        ("(2 ** 70,)", "is not a tuple of sizes"),
        ("(-1,)", "is not a tuple of sizes"),
        ("[1, 2]", "is not a tuple"),
    ] {
        std::fs::write(&p, hostile::npy_header(header)).unwrap();
        let e = attrib_io::npy::read_f32(&p).unwrap_err().to_string();
        assert!(e.contains(needle), "{header}: {e}");
    }
    std::fs::write(&p, b"\x93NUMPY\x01\x00\xff\xff").unwrap();
    assert!(attrib_io::npy::read_f32(&p).is_err());
    // Well-formed files: C and Fortran order, float64 and big-endian.
    let mut f = hostile::npy_header("(2, 3)");
    for v in 0..6 {
        f.extend_from_slice(&(v as f32).to_le_bytes());
    }
    std::fs::write(&p, &f).unwrap();
    let a = attrib_io::npy::read_f32(&p).unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.as_slice().unwrap(), &[0., 1., 2., 3., 4., 5.]);
    let fortran = String::from_utf8(f.clone())
        .unwrap_or_default()
        .replace("False", "True ");
    if !fortran.is_empty() {
        std::fs::write(&p, fortran.as_bytes()).unwrap();
    } else {
        let mut g = f.clone();
        let at = g.windows(5).position(|w| w == b"False").unwrap();
        g[at..at + 5].copy_from_slice(b"True ");
        std::fs::write(&p, &g).unwrap();
    }
    let a = attrib_io::npy::read_f32(&p).unwrap();
    assert_eq!(a.as_slice().unwrap(), &[0., 2., 4., 1., 3., 5.]);
    let mut g = f.clone();
    let at = g.windows(3).position(|w| w == b"<f4").unwrap();
    g[at..at + 3].copy_from_slice(b">f8");
    g.truncate(g.len() - 24);
    for v in 0..6 {
        g.extend_from_slice(&(v as f64 * 0.5).to_be_bytes());
    }
    std::fs::write(&p, &g).unwrap();
    let a = attrib_io::npy::read_f32(&p).unwrap();
    assert_eq!(a.as_slice().unwrap(), &[0., 0.5, 1., 1.5, 2., 2.5]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn images_are_bounded_and_decoder_panics_become_errors() {
    let dir = tmp("png");
    let p = dir.join("a.png");
    // A palette image whose PLTE chunk is 4 bytes, not a multiple of 3.
    std::fs::write(&p, png(1, 1, 3, Some(&[1, 2, 3, 4]), &[vec![0]])).unwrap();
    let e = attrib_io::image::read_rgb8(&p).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("cannot read the image"), "{e}");
    // 16000 x 16000 declared in a few hundred bytes: refused before decoding.
    std::fs::write(&p, png(16000, 16000, 2, None, &[vec![0; 3]])).unwrap();
    let e = attrib_io::image::read_rgb8(&p).unwrap_err().to_string();
    assert!(
        e.ends_with("cannot read the image: 16000x16000 is 256000000 pixels, more than the 40000000 allowed (attrib_io::Limits)"),
        "{e}"
    );
    // A proper 2x1 RGB image decodes.
    std::fs::write(&p, png(2, 1, 2, None, &[vec![255, 0, 0, 0, 0, 255]])).unwrap();
    let img = attrib_io::image::read_rgb8(&p).unwrap();
    assert_eq!(img.as_raw(), &vec![255, 0, 0, 0, 0, 255]);
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Files a stranger could send, through the `attrib` binary under an address-space
//! limit of 1 GiB and a CPU limit of 60 s: each gives one clear error line and exit
//! status 1 (or a correct result), never a panic, an abort or a kill. The time each
//! case takes is printed (`cargo test -p attrib-cli --test hostile -- --nocapture`).

#[path = "../../io/tests/common/hostile.rs"]
mod hostile;

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{root, tmp};
use std::time::Instant;

use attrib_dfdx::{Arch, WeightMap};
use hostile::{deep_nesting, legacy_pth, memo_bomb, one_tensor, png, zip_pth, Storage};

const MEMORY_KB: u64 = 1 << 20;

/// Runs `attrib args` under `ulimit -v 1 GiB -t 60`.
fn limited(what: &str, args: &[&str]) -> Output {
    let t = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_KB} && ulimit -t 60 && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_attrib"))
        .args(args)
        .output()
        .unwrap();
    eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    out
}

/// Exit status 1 and exactly one stderr line containing `needle`.
fn clean_error(what: &str, out: Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: {:?}: {err}",
        out.status
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: one line expected: {err}"
    );
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(err.contains(needle), "{what}: `{needle}` not in: {err}");
}

fn convert(what: &str, dir: &Path, data: &[u8], needle: &str) {
    let input = dir.join(format!("{what}.pth"));
    std::fs::write(&input, data).unwrap();
    let output = dir.join(format!("{what}.safetensors"));
    let out = limited(
        what,
        &["convert", input.to_str().unwrap(), output.to_str().unwrap()],
    );
    clean_error(what, out, needle);
    assert!(!output.exists(), "{what}: no output after a failure");
}

#[test]
fn hostile_checkpoints_give_one_line_within_bounds() {
    let dir = tmp("pth");
    let bomb = memo_bomb();
    convert(
        "memo-bomb-zip",
        &dir,
        &zip_pth(&bomb, vec![]),
        "not a state dict",
    );
    convert(
        "memo-bomb-legacy",
        &dir,
        &legacy_pth(&bomb, &[]),
        "not a state dict",
    );
    for kind in ['t', 'l', 'd'] {
        let p = deep_nesting(kind, 200_000);
        convert(
            &format!("deep-{kind}"),
            &dir,
            &legacy_pth(&p, &[]),
            "levels of nesting",
        );
    }
    for legacy in [false, true] {
        let p = one_tensor("w", "0", 4, 1 << 62, &[2], &[1], legacy);
        let data = if legacy {
            legacy_pth(&p, &[("0", 4, vec![0; 16])])
        } else {
            zip_pth(&p, vec![("0", Storage::Bytes(vec![0; 16]))])
        };
        convert(&format!("offset-2^62-legacy-{legacy}"), &dir, &data, "`w`");
    }
    for f in ["expanded_zip.pth", "expanded_legacy.pth"] {
        let data = std::fs::read(root().join("fixtures/formats").join(f)).unwrap();
        convert(f, &dir, &data, "`w` would take 32.0 GiB");
    }
    // A data.pkl that inflates to 2 GiB: refused on its declared size.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    w.start_file("archive/data.pkl", opts).unwrap();
    let mb = vec![b'N'; 1 << 20];
    for _ in 0..2048 {
        std::io::Write::write_all(&mut w, &mb).unwrap();
    }
    let data = w.finish().unwrap().into_inner();
    convert(
        "pickle-bomb",
        &dir,
        &data,
        "limit of 67108864 bytes of pickle",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_deflate_bomb_is_read_only_as_far_as_needed() {
    // 2 GiB of zeros deflated to about 2 MB behind one tensor of two floats: the
    // result is correct and memory stays under the limit.
    let dir = tmp("deflate");
    let pickle = one_tensor("w", "0", 2, 0, &[2], &[1], false);
    let data = zip_pth(&pickle, vec![("0", Storage::DeflatedZeros(2 << 30))]);
    assert!(data.len() < 32 << 20, "{}", data.len());
    let input = dir.join("bomb.pth");
    std::fs::write(&input, &data).unwrap();
    let output = dir.join("bomb.safetensors");
    let out = limited(
        "deflate bomb, 2 GiB",
        &["convert", input.to_str().unwrap(), output.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = WeightMap::load(&output).unwrap();
    assert_eq!(m.get("w").unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    // The same entry behind a tensor that needs all of it: beyond the budget.
    let big = one_tensor("w", "0", 1 << 29, 0, &[1 << 29], &[1], false);
    let data = zip_pth(&big, vec![("0", Storage::DeflatedZeros(2 << 30))]);
    convert(
        "deflate bomb, whole entry",
        &dir,
        &data,
        "inflating zip entry archive/data/0",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_readme_recipe_works_for_resnet50() {
    // torch.save(resnet50.state_dict()) -> attrib convert -> attrib predict: the
    // safetensors header of ResNet-50 starts with 0x80, which was taken for a pickle.
    let dir = tmp("recipe");
    let pth = dir.join("r50.pth");
    std::fs::write(
        &pth,
        Arch::Resnet50
            .synthetic_weights(1, 1000)
            .unwrap()
            .to_pth()
            .unwrap(),
    )
    .unwrap();
    let st = dir.join("r50.safetensors");
    let out = limited(
        "convert resnet50",
        &["convert", pth.to_str().unwrap(), st.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the safetensors file as Python writes it (its header, zero data).
    let py = dir.join("r50-python.safetensors");
    let head = std::fs::read(root().join("fixtures/formats/resnet50.safetensors-header")).unwrap();
    std::fs::write(&py, hostile::complete_safetensors(&head)).unwrap();
    assert_eq!(std::fs::read(&py).unwrap()[0], 0x80);
    for w in [&st, &pth, &py] {
        let out = limited(
            "predict resnet50",
            &[
                "predict",
                "--arch",
                "resnet50",
                "--weights",
                w.to_str().unwrap(),
                "--image",
                root().join("assets/chelsea.png").to_str().unwrap(),
                "--size",
                "64",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_inputs_and_arguments_give_one_line() {
    let dir = tmp("inputs");
    let weights = dir.join("r18.safetensors");
    Arch::Resnet18
        .synthetic_weights(0, 10)
        .unwrap()
        .save_safetensors(&weights)
        .unwrap();
    let w = weights.to_str().unwrap();
    let out_dir = dir.join("out");
    let o = out_dir.to_str().unwrap();
    let explain = |what: &str, extra: &[&str], needle: &str| {
        let mut args = vec![
            "explain",
            "--arch",
            "resnet18",
            "--weights",
            w,
            "--out",
            o,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        clean_error(what, limited(what, &args), needle);
    };
    let npy = dir.join("huge.npy");
    std::fs::write(&npy, hostile::npy_header("(1, 3, 100000, 100000)")).unwrap();
    explain(
        "npy claiming 3e10 values",
        &["--input", npy.to_str().unwrap()],
        "has more than the 268435456 elements allowed",
    );
    let zero = dir.join("zero.npy");
    std::fs::write(&zero, hostile::npy_header("(1, 0, 8, 8)")).unwrap();
    explain(
        "npy with 0 channels",
        &["--input", zero.to_str().unwrap()],
        "expected (N, 3, H, W) with H, W > 0, got (1, 0, 8, 8)",
    );
    let plte = dir.join("plte.png");
    std::fs::write(&plte, png(1, 1, 3, Some(&[1, 2, 3, 4]), &[vec![0]])).unwrap();
    explain(
        "PNG with a 4-byte palette",
        &["--image", plte.to_str().unwrap()],
        "cannot read the image: the image decoder failed on malformed data",
    );
    let big = dir.join("big.png");
    std::fs::write(&big, png(16000, 16000, 2, None, &[vec![0; 3]])).unwrap();
    explain(
        "PNG of 16000x16000",
        &["--image", big.to_str().unwrap()],
        "16000x16000 is 256000000 pixels, more than the 40000000 allowed",
    );
    let cat = root().join("assets/chelsea.png");
    for size in ["100000", "4000000000", "0"] {
        explain(
            &format!("--size {size}"),
            &["--image", cat.to_str().unwrap(), "--size", size],
            &format!("invalid --size: {size} is outside 1..=4096"),
        );
    }
    assert!(!out_dir.exists(), "no output after failures");
    std::fs::remove_dir_all(&dir).unwrap();
}

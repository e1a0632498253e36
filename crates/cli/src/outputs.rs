//! Output files, staged in memory and committed together into one folder: all of a
//! run's files appear or none do, an earlier run's files survive a failed one, and
//! two runs writing into one folder take turns (see `attrib_io::fs::commit_files`).

use std::path::{Path, PathBuf};

use attrib_core::Result;
use attrib_io::fs::{commit_files, Writer};
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

    /// Writes everything into `dir` (created if needed), all or nothing. Returns the
    /// paths written.
    pub fn commit(self, dir: &Path) -> Result<Vec<PathBuf>> {
        let writers: Vec<(String, Writer<'_>)> = self
            .files
            .iter()
            .map(|(name, content)| {
                let w: Writer<'_> = match content {
                    Content::Png(img) => Box::new(move |f| attrib_viz::io::encode_png(img, f)),
                    Content::Npy(a) => Box::new(move |f| attrib_viz::io::encode_npy(a, f)),
                    Content::Text(t) => Box::new(move |f| {
                        use std::io::Write;
                        f.write_all(t.as_bytes())
                    }),
                };
                (name.clone(), w)
            })
            .collect();
        commit_files(dir, writers, || {
            eprintln!(
                "waiting for another attrib run to finish writing into {}",
                dir.display()
            )
        })
    }
}

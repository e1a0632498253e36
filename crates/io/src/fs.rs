//! Writing files so that a reader never sees half of one, and a crash never loses
//! the previous version.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use attrib_core::{Error, Result};

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A hidden sibling of `path` for this process: `.<name>.<tag>-<pid>`.
pub fn sibling(path: &Path, tag: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{tag}-{}", std::process::id()));
    path.with_file_name(name)
}

/// Flushes a folder's entries (renames, creations) to disk. Where folders cannot be
/// opened for syncing (not Unix), renames are as durable as the platform makes them.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(d, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `path` through `write` into a temporary sibling, synced, then renamed over
/// `path`, then the folder synced. On any failure the temporary file is removed and
/// `path` is as it was.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<()> {
    let tmp = sibling(path, "partial");
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        })
        .and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes one file's content into an open file.
pub type Writer<'a> = Box<dyn FnOnce(&mut fs::File) -> io::Result<()> + 'a>;

/// The lock file that serialises writers of one folder.
pub const LOCK_NAME: &str = ".attrib.lock";

/// An exclusive lock on a folder's lock file, released when dropped (and by the
/// system if the process dies).
#[derive(Debug)]
pub struct DirLock {
    file: fs::File,
}

impl DirLock {
    /// Takes the lock on `dir` (which must exist), calling `on_wait` first if another
    /// process holds it, then waiting for it.
    pub fn acquire(dir: &Path, on_wait: impl FnOnce()) -> Result<DirLock> {
        let path = dir.join(LOCK_NAME);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(|e| io_err(&path, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path, e)),
        }
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// What happened to one target while installing a group of files.
struct Installed {
    target: PathBuf,
    backup: Option<PathBuf>,
}

/// Writes a group of files into `dir` all or nothing, under the folder's lock.
///
/// Every file is first written in full under a temporary name and synced; then each
/// earlier file of the same name is moved aside and the new one renamed into place.
/// If any step fails, the new files are removed and the earlier ones put back: the
/// folder is as it was (apart from its lock file), and the error is returned. On
/// success the earlier versions are deleted and the folder synced. A second process
/// committing into the same folder waits for the lock (`on_wait` is called first), so
/// two runs never interleave their files. Returns the paths written, in order.
pub fn commit_files(
    dir: &Path,
    files: Vec<(String, Writer<'_>)>,
    on_wait: impl FnOnce(),
) -> Result<Vec<PathBuf>> {
    for (name, _) in &files {
        let plain = Path::new(name).file_name().map(|n| n == name.as_str()) == Some(true);
        if !plain || name == LOCK_NAME {
            return Err(Error::param(
                "output file name",
                format!("`{name}` is not a plain file name"),
            ));
        }
    }
    let created = !dir.exists();
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let lock = DirLock::acquire(dir, on_wait)?;
    let result = stage_and_install(dir, files);
    if result.is_err() && created {
        drop(lock);
        let _ = fs::remove_file(dir.join(LOCK_NAME));
        let _ = fs::remove_dir(dir);
    }
    result
}

fn stage_and_install(dir: &Path, files: Vec<(String, Writer<'_>)>) -> Result<Vec<PathBuf>> {
    // Stage: every file whole under a temporary name.
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let mut stage_err = None;
    for (name, write) in files {
        let target = dir.join(&name);
        let tmp = sibling(&target, "partial");
        let r = fs::File::create(&tmp).and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        });
        staged.push((tmp.clone(), target.clone()));
        if let Err(e) = r {
            stage_err = Some(io_err(&target, e));
            break;
        }
    }
    if let Some(e) = stage_err {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
        return Err(e);
    }
    // Install: move each earlier file aside, then the new one into place.
    let mut done: Vec<Installed> = Vec::with_capacity(staged.len());
    let mut failure = None;
    for (tmp, target) in &staged {
        match install_one(tmp, target) {
            Ok(step) => done.push(step),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        for step in done.iter().rev() {
            let _ = fs::remove_file(&step.target);
            if let Some(b) = &step.backup {
                let _ = fs::rename(b, &step.target);
            }
        }
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
        let _ = sync_dir(dir);
        return Err(e);
    }
    sync_dir(dir)?;
    for step in &done {
        if let Some(b) = &step.backup {
            let _ = fs::remove_file(b);
        }
    }
    sync_dir(dir)?;
    Ok(done.into_iter().map(|s| s.target).collect())
}

fn install_one(tmp: &Path, target: &Path) -> Result<Installed> {
    let backup = match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            return Err(io_err(
                target,
                "a folder of that name is in the way of the output file",
            ))
        }
        Ok(_) => {
            let b = sibling(target, "previous");
            fs::rename(target, &b).map_err(|e| io_err(target, e))?;
            Some(b)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(target, e)),
    };
    if let Err(e) = fs::rename(tmp, target) {
        if let Some(b) = &backup {
            let _ = fs::rename(b, target);
        }
        return Err(io_err(target, e));
    }
    Ok(Installed {
        target: target.to_path_buf(),
        backup,
    })
}

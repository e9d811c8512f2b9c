//! Test hooks (compiled only in this crate's tests and with the `test-hooks` feature).
//!
//! [`copy_before_meta_write`] makes the next durable commit of a file copy it between
//! writing its nodes back and writing its meta slot: the file a crash at that moment
//! leaves (the meta write may then be torn or lost).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static COPY: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// The next durable commit of `file` copies it to `to` before writing its meta.
pub fn copy_before_meta_write(file: &Path, to: &Path) {
    COPY.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((file.to_path_buf(), to.to_path_buf()));
}

pub(crate) fn before_meta_write(file: &Path) {
    let mut armed = COPY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = armed.iter().position(|(f, _)| f == file) {
        let (_, to) = armed.remove(i);
        if let Err(e) = std::fs::copy(file, &to) {
            eprintln!("test hook: copying {} failed: {e}", file.display());
        }
    }
}

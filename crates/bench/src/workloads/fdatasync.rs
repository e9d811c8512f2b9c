//! fdatasync: the latency of `write + fdatasync` rounds on a directory's filesystem, the
//! cost every WAL append of etcd or Skiff waits for. The compare script runs it on the
//! data-dir filesystem before anything else, because on a shared machine it explains
//! most of the put latency. Only the fdatasync call is timed.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::FdatasyncOpts;
use crate::report::Report;
use crate::stats::{summarize, Recorder};

pub fn run(o: &FdatasyncOpts) -> Result<Report> {
    let path = o
        .dir
        .join(format!(".skiff-bench-fdatasync-{}", std::process::id()));
    let result = measure(o, &path);
    let _ = std::fs::remove_file(&path);
    result
}

fn measure(o: &FdatasyncOpts, path: &std::path::Path) -> Result<Report> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = crate::keys::value(o.block_size);
    let mut rec = Recorder::new();
    let start = Instant::now();
    for _ in 0..o.count {
        f.write_all(&block).context("writing the scratch file")?;
        let t0 = Instant::now();
        f.sync_data().context("fdatasync")?;
        rec.ok(t0.elapsed());
    }
    Ok(Report {
        workload: "fdatasync".to_string(),
        unit: "fdatasync".to_string(),
        summary: summarize(rec, start.elapsed()),
        by_kind: Default::default(),
    })
}

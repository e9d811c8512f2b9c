//! Progress bar on stderr while a run is going, only when stderr is a terminal (so logs,
//! CI output and the compare script's captured output stay clean).
//!
//! Workers bump a shared atomic counter; a separate task copies it into the bar a few
//! times a second, so drawing never sits on the measured path.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

pub struct Progress {
    done: Arc<AtomicU64>,
    bar: Option<(ProgressBar, JoinHandle<()>)>,
}

impl Progress {
    /// A bar for `total` units, drawn only if stderr is a terminal.
    pub fn new(total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            Self::with_bar(total)
        } else {
            Self::hidden()
        }
    }

    pub fn hidden() -> Self {
        Self {
            done: Arc::new(AtomicU64::new(0)),
            bar: None,
        }
    }

    fn with_bar(total: u64) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style);
        }
        let (b, d) = (bar.clone(), done.clone());
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(d.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            done,
            bar: Some((bar, ticker)),
        }
    }

    /// The counter workers increment once per completed unit.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    /// Stops drawing and clears the bar.
    pub fn finish(self) {
        if let Some((bar, ticker)) = self.bar {
            ticker.abort();
            bar.finish_and_clear();
        }
    }
}

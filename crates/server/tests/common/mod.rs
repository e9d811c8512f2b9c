//! Helpers for tests that run real processes: a `skiff` or `etcd` member on given
//! ports, killed when dropped, with its data in a temporary directory.

#![allow(dead_code)]

pub mod pki;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Skiff,
    Etcd,
}

/// A running member.
pub struct Proc {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub kind: Kind,
    pub name: String,
    keep_dir: bool,
}

/// Whether `bin` can be run.
///
/// Under CI (`CI` set) a missing tool fails the test instead of skipping it: `.ci/run`
/// installs everything the tests need, so a skip there would hide a broken setup.
pub fn have(bin: &str) -> bool {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "{bin} is required under CI (.ci/run installs Debian's etcd-server and etcd-client)"
    );
    ok
}

impl Proc {
    /// Starts a member named `name` on `client_port` / `peer_port`, data under a
    /// fresh temporary directory (or `dir` when restarting).
    pub fn start(
        kind: Kind,
        name: &str,
        client_port: u16,
        peer_port: u16,
        dir: Option<PathBuf>,
    ) -> Proc {
        Proc::start_with(kind, name, client_port, peer_port, dir, &[])
    }

    /// [`Proc::start`] with extra flags.
    pub fn start_with(
        kind: Kind,
        name: &str,
        client_port: u16,
        peer_port: u16,
        dir: Option<PathBuf>,
        extra: &[&str],
    ) -> Proc {
        let p = Proc::spawn(kind, name, client_port, peer_port, dir, extra, "http");
        p.wait_serving();
        p
    }

    /// A member whose client URL is `https` (`tls` holds its TLS flags, e.g.
    /// `--cert-file=...`), ready once `curl` with `curl_tls` (e.g. `--cacert`, `--cert`,
    /// `--key`) gets a healthy answer from `/health`.
    pub fn start_https(
        kind: Kind,
        name: &str,
        client_port: u16,
        peer_port: u16,
        tls: &[&str],
        curl_tls: &[&str],
    ) -> Proc {
        let mut p = Proc::spawn(kind, name, client_port, peer_port, None, tls, "https");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "2"])
                .args(curl_tls)
                .arg(format!("https://127.0.0.1:{client_port}/health"))
                .output()
                .expect("run curl");
            if String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"") {
                return p;
            }
            if let Some(Ok(Some(status))) = p.child.as_mut().map(|c| c.try_wait()) {
                panic!("{kind:?} on {client_port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} on https port {client_port} did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the process (client URL with `scheme`) without waiting for it.
    fn spawn(
        kind: Kind,
        name: &str,
        client_port: u16,
        peer_port: u16,
        dir: Option<PathBuf>,
        extra: &[&str],
        scheme: &str,
    ) -> Proc {
        let dir = dir.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!(
                "skiff-test-{}-{}-{}",
                name,
                client_port,
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&d);
            d
        });
        let bin = match kind {
            Kind::Skiff => env!("CARGO_BIN_EXE_skiff").to_string(),
            Kind::Etcd => "etcd".to_string(),
        };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("skiff-test-{name}-{client_port}.log")),
        )
        .expect("log file");
        cmd.args([
            "--name",
            name,
            "--data-dir",
            dir.to_str().expect("utf-8 dir"),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("{name}={peer}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().expect("spawn server");
        Proc {
            child: Some(child),
            dir,
            client_port,
            peer_port,
            kind,
            name: name.to_string(),
            keep_dir: false,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Waits until `/health` answers true.
    pub fn wait_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((200, _)) = http_get(self.client_port, "/health") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} on {} did not become healthy",
                self.kind,
                self.client_port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit; `None` if it did not exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().ok()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM (what an operator does before working on a stopped member's files),
    /// keeping the data directory; panics if it does not exit within 30 s.
    pub fn stop(mut self) -> PathBuf {
        let status = self.terminate(Duration::from_secs(30));
        assert!(
            status.is_some(),
            "{:?} on port {} did not stop within 30 s of SIGTERM",
            self.kind,
            self.client_port
        );
        self.keep_dir = true;
        self.dir.clone()
    }

    /// SIGKILL, keeping the data directory for a restart.
    pub fn kill9(mut self) -> PathBuf {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.keep_dir = true;
        self.dir.clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Asserts that two masked transcripts, etcd's and Skiff's, are identical. Both are
/// first written to the temp dir as `<stem>-etcd.txt` and `<stem>-skiff.txt`; a
/// difference panics listing every differing line.
pub fn assert_same_transcript(stem: &str, etcd: &str, skiff: &str) {
    let out_dir = std::env::temp_dir();
    std::fs::write(out_dir.join(format!("{stem}-etcd.txt")), etcd).ok();
    std::fs::write(out_dir.join(format!("{stem}-skiff.txt")), skiff).ok();
    if etcd != skiff {
        let mut report = String::new();
        for (i, (x, y)) in etcd.lines().zip(skiff.lines()).enumerate() {
            if x != y {
                report.push_str(&format!("line {}:\n  etcd:  {x}\n  skiff: {y}\n", i + 1));
            }
        }
        let (la, lb) = (etcd.lines().count(), skiff.lines().count());
        if la != lb {
            report.push_str(&format!("line counts differ: etcd {la}, skiff {lb}\n"));
        }
        panic!(
            "masked transcripts differ (full texts in {}):\n{report}",
            out_dir.display()
        );
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// One member of a multi-member cluster of any server binary taking etcd's flags, on
/// loopback, restartable on the same data directory. Stopped gracefully by SIGTERM to its
/// PID ([`Member::terminate`]); killed (SIGKILL, by PID) when dropped. Its stdout and
/// stderr are appended to `log_path` across restarts.
pub struct Member {
    pub bin: PathBuf,
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Every flag the member is started with.
    pub args: Vec<String>,
    /// Environment variables set for the member (on top of the test's, minus `ETCD_*`).
    pub env: Vec<(String, String)>,
    /// `http`, or `https` for [`cluster_members_https`].
    scheme: &'static str,
    child: Option<Child>,
}

/// Lays out members `m0..m{n-1}` of one cluster of `bin` (nothing is started): member i
/// on client port `base_port + 2i` and peer port `base_port + 2i + 1`, data and log under
/// `dir`, with etcd's flags for a new cluster (default cluster token) plus `extra`.
pub fn cluster_members(
    bin: &std::path::Path,
    n: usize,
    base_port: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> Vec<Member> {
    layout("http", bin, n, base_port, dir, extra)
}

/// [`cluster_members`] with `https` client and peer URLs (the TLS flags go in `extra`
/// or each member's `args`; [`Member::wait_serving`] asks plain HTTP, so wait with a
/// TLS client instead).
pub fn cluster_members_https(
    bin: &std::path::Path,
    n: usize,
    base_port: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> Vec<Member> {
    layout("https", bin, n, base_port, dir, extra)
}

fn layout(
    scheme: &'static str,
    bin: &std::path::Path,
    n: usize,
    base_port: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> Vec<Member> {
    let peer = |i: usize| format!("{scheme}://127.0.0.1:{}", base_port + 2 * i as u16 + 1);
    let initial: Vec<String> = (0..n).map(|i| format!("m{i}={}", peer(i))).collect();
    (0..n)
        .map(|i| {
            let name = format!("m{i}");
            let client_port = base_port + 2 * i as u16;
            let client = format!("{scheme}://127.0.0.1:{client_port}");
            let data_dir = dir.join(format!("{name}.data"));
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--initial-advertise-peer-urls",
                &peer(i),
                "--listen-peer-urls",
                &peer(i),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--data-dir",
                data_dir.to_str().expect("utf-8 data dir"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            Member {
                bin: bin.to_path_buf(),
                log_path: dir.join(format!("{name}.log")),
                name,
                client_port,
                peer_port: client_port + 1,
                data_dir,
                args,
                env: Vec::new(),
                scheme,
                child: None,
            }
        })
        .collect()
}

impl Member {
    /// `127.0.0.1:port`, the endpoint form without a scheme.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (again); does not wait for it to serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open member log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", self.bin.display());
        }));
    }

    /// Waits until `/health` answers 200; panics with the log tail if the process exits
    /// or `within` passes first.
    pub fn wait_serving(&mut self, within: Duration) {
        self.wait_healthy("/health", within);
    }

    /// [`Member::wait_serving`] asking `path` (e.g. `/health?serializable=true`, which
    /// commits nothing).
    pub fn wait_healthy(&mut self, path: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some((200, _)) = http_get(self.client_port, path) {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited ({status}) before serving; log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become healthy within {within:?}; log tail:\n{}",
                self.name,
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited (reaped; the member is then stopped).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGTERM to the PID, then waits for the exit; panics (with the log tail) if the
    /// process is still running after `within`.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.pid().expect("terminate a running member").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.wait_exit(within)
    }

    /// Waits up to `within` for the process to exit (on its own, or after a signal); its
    /// status. Panics with the member's log tail if it is still running then.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}; log tail:\n{}",
                self.name,
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` lines of the member's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs each of `steps` with `sh -c`, `vars` set (etcdctl speaking v3, no `ETCDCTL_*`
/// setting inherited from the caller's environment, stdin empty): the transcript of
/// every step, its stdout, stderr and exit code.
pub fn sh_transcript(steps: &[&str], vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    for step in steps {
        let result = Command::new("sh")
            .arg("-c")
            .arg(step)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("ETCDCTL_WRITE_OUT")
            .env_remove("ETCDCTL_USER")
            .env_remove("ETCDCTL_PASSWORD")
            .env_remove("ETCDCTL_CACERT")
            .env_remove("ETCDCTL_CERT")
            .env_remove("ETCDCTL_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run sh");
        out.push_str(&format!("$ {step}\n"));
        out.push_str(&String::from_utf8_lossy(&result.stdout));
        out.push_str(&String::from_utf8_lossy(&result.stderr));
        out.push_str(&format!("[exit {}]\n", result.status.code().unwrap_or(-1)));
    }
    out
}

/// `skiffctl`, next to the `skiff` binary these tests were built with (`cargo test
/// --workspace` builds both; `cargo build -p skiff-ctl` when running one file alone).
/// The index of the newest snapshot a Skiff member's log says it saved (after which it
/// released its log up to the catch-up entries behind it).
pub fn newest_saved_snapshot(log: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains("saved snapshot"))
        .filter_map(|l| l.split("index=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .max()
}

pub fn skiffctl() -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_skiff")).with_file_name("skiffctl");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` builds it, or run `cargo build -p skiff-ctl`",
        bin.display()
    );
    bin
}

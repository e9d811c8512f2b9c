//! Reading passwords as etcdctl 3.4 reads them.
//!
//! - [`ask`] is the `speakeasy` package's prompt: the prompt on stdout, `/bin/stty
//!   -echo` run on the same stdin/stdout/stderr (so on a terminal the password is not
//!   echoed; without one, stty's own complaint appears on stderr exactly as under
//!   etcdctl), one line read from stdin, `/bin/stty echo`, a newline on stdout; the
//!   answer is trimmed of surrounding white space.
//! - [`scan_word`] is Go's `fmt.Scanf("%s", &p)` on stdin: the first word of the first
//!   line, empty when the line is empty or stdin is at its end.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The `stty` etcdctl's prompt runs.
const STTY: &str = "/bin/stty";

fn stty(arg: &str) -> Result<(), String> {
    // Run as Go's `ForkExec` runs it: argv[0] is `stty`, so its messages match.
    match Command::new(STTY).arg0("stty").arg(arg).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("fork/exec {STTY}: no such file or directory"))
        }
        Err(e) => Err(format!("fork/exec {STTY}: {e}")),
    }
}

/// One line of stdin without its `\n` (and a `\r` before it), read a byte at a time so
/// nothing after it is consumed.
fn read_line() -> Result<String, String> {
    let mut line = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Prompts with `prompt` and reads a password (see the module docs).
pub fn ask(prompt: &str) -> Result<String, String> {
    let mut out = std::io::stdout();
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    let answer = stty("-echo").and_then(|()| {
        let line = read_line().map_err(|e| format!("failed during password entry: {e}"));
        let _ = stty("echo");
        line
    });
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    answer.map(|l| l.trim().to_string())
}

/// Go's `fmt.Scanf("%s")` on stdin (see the module docs).
pub fn scan_word() -> String {
    match read_line() {
        Ok(line) if !line.is_empty() => line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

//! `skiffctl` without a server: argument errors, exit codes and the error line are
//! etcdctl's. (The comparisons against etcdctl with a server are in
//! `crates/server/tests/skiffctl_transcript.rs`, which runs the binary this package's
//! integration tests make cargo build.)

use std::process::Command;

fn skiffctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skiffctl"))
        .args(args)
        .env_remove("ETCDCTL_ENDPOINTS")
        .env_remove("ETCDCTL_WRITE_OUT")
        .output()
        .expect("run skiffctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn argument_errors_use_etcdctls_codes_and_messages() {
    let (code, _, err) = skiffctl(&["get"]);
    assert_eq!(code, 128);
    assert_eq!(
        err,
        "Error: get command needs one argument as key and an optional argument as range_end\n"
    );
    let (code, _, err) = skiffctl(&["-w", "yaml", "get", "k"]);
    assert_eq!(
        (code, err.as_str()),
        (4, "Error: unsupported output format\n")
    );
    let (code, _, err) = skiffctl(&["lease", "revoke", "xyz"]);
    assert_eq!(code, 128);
    assert_eq!(
        err,
        "Error: bad lease ID arg (strconv.ParseInt: parsing \"xyz\": invalid syntax), expecting ID in Hex\n"
    );
}

#[test]
fn version_and_unreachable_endpoint() {
    let (code, out, _) = skiffctl(&["version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("skiffctl version: "), "{out}");
    assert!(out.ends_with("API version: 3.4\n"), "{out}");
    // Nothing listens on port 1: the call fails, naming the cause, exit code 1.
    let (code, _, err) = skiffctl(&[
        "--endpoints=127.0.0.1:1",
        "--command-timeout=2s",
        "get",
        "k",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("Error: "), "{err}");
}

#[test]
fn auth_verbs_check_their_arguments_before_dialling() {
    for (args, msg) in [
        (
            &["user", "add"][..],
            "user add command requires user name as its argument",
        ),
        (
            &["user", "add", ":pw"][..],
            "empty user name is not allowed",
        ),
        (
            &["user", "grant-role", "u"][..],
            "user grant command requires user name and role name as its argument",
        ),
        (
            &["role", "grant-permission", "r", "bogus", "k"][..],
            "invalid permission type: bogus",
        ),
        (
            &[
                "role",
                "grant-permission",
                "r",
                "read",
                "a",
                "c",
                "--prefix",
            ][..],
            "unexpected endkey argument with --prefix flag",
        ),
        (
            &[
                "role",
                "revoke-permission",
                "r",
                "a",
                "--prefix",
                "--from-key",
            ][..],
            "--from-key and --prefix flags are mutually exclusive",
        ),
        (
            &["auth", "enable", "x"][..],
            "auth enable command does not accept any arguments",
        ),
    ] {
        let (code, _, err) = skiffctl(args);
        assert_eq!((code, err), (128, format!("Error: {msg}\n")), "{args:?}");
    }
}

#[test]
fn tls_flags_that_cannot_work_are_refused_before_dialling() {
    let (code, _, err) = skiffctl(&["--cert=/nonexistent/c.pem", "get", "k"]);
    assert_eq!(code, 128, "{err}");
    assert_eq!(
        err,
        "Error: KeyFile and CertFile must both be present[key: , cert: /nonexistent/c.pem]\n"
    );
    let (code, _, err) = skiffctl(&["--cacert=/nonexistent/ca.pem", "get", "k"]);
    assert_eq!(
        (code, err.as_str()),
        (
            128,
            "Error: open /nonexistent/ca.pem: no such file or directory\n"
        )
    );
}

/// `completion bash` is a script bash loads, and its function completes skiffctl's
/// verbs and flags (asked as bash asks it, through `COMP_WORDS`); zsh and fish get
/// their own formats.
#[test]
fn completion_scripts_complete_verbs_and_flags() {
    let (code, bash, err) = skiffctl(&["completion", "bash"]);
    assert_eq!(code, 0, "{err}");
    let dir = std::env::temp_dir().join(format!("skiffctl-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("skiffctl.bash");
    std::fs::write(&script, &bash).expect("write script");
    let ask =
        |line: &str| {
            let words: Vec<&str> = line.split(' ').collect();
            let program =
                format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _skiffctl skiffctl '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
            let out = Command::new("bash")
                .args(["-c", &program])
                .output()
                .expect("run bash");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
    let verbs = ask("skiffctl sn");
    assert_eq!(verbs.trim(), "snapshot", "{verbs}");
    let sub = ask("skiffctl snapshot re");
    assert_eq!(sub.trim(), "restore", "{sub}");
    let flags = ask("skiffctl snapshot restore --initial-c");
    assert!(flags.contains("--initial-cluster"), "{flags}");
    assert!(flags.contains("--initial-cluster-token"), "{flags}");
    let _ = std::fs::remove_dir_all(&dir);

    let (code, zsh, _) = skiffctl(&["completion", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef skiffctl"), "{zsh}");
    assert!(zsh.contains("elect"));
    let (code, fish, _) = skiffctl(&["completion", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c skiffctl"), "{fish}");
    let (code, _, err) = skiffctl(&["completion", "tcsh"]);
    assert_ne!(code, 0, "{err}");
}

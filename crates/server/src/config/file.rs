//! `--config-file`: etcd's YAML configuration file (the shape of etcd's
//! `etcd.conf.yml.sample`): the flag names as keys, TLS settings under
//! `client-transport-security` / `peer-transport-security`, URL lists as
//! comma-separated strings, `log-outputs` as a YAML list.
//!
//! Guarantees: when a config file is given, command line flags and `ETCD_*`
//! environment variables are ignored, as etcd does; every key is checked exactly as
//! the flag of the same name (same parsers, same errors); an empty value (`data-dir:`)
//! means the flag's default; durations may be written as etcd's JSON does
//! (nanoseconds, an integer) or as Go duration strings (`5s`); a key that names no
//! flag is reported as a warning (etcd ignores it silently).

use std::path::Path;

use clap::{CommandFactory, FromArgMatches};
use serde_yaml::Value;

use super::{ConfigError, Flags};

/// Keys whose YAML integer is a Go `time.Duration` (nanoseconds) in etcd's file.
const DURATION_KEYS: &[&str] = &[
    "backend-batch-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-corrupt-check-time",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
];

/// Keys of `client-transport-security` / `peer-transport-security` to flag names.
const CLIENT_TLS: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
    ("crl-file", "client-crl-file"),
    ("allowed-hostname", "client-cert-allowed-hostname"),
];
const PEER_TLS: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
    ("crl-file", "peer-crl-file"),
    ("allowed-cn", "peer-cert-allowed-cn"),
    ("allowed-hostname", "peer-cert-allowed-hostname"),
];

/// The flags a config file sets, and warnings about keys that name no flag.
pub struct FromFile {
    pub flags: Flags,
    pub warnings: Vec<String>,
}

/// Reads `path` and parses it as the flags it sets (environment ignored).
pub fn load(path: &Path) -> Result<FromFile, ConfigError> {
    let err = |reason: String| ConfigError::ConfigFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

/// Parses the text of a config file.
pub fn parse(text: &str) -> Result<FromFile, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let map = match doc {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => return Err("the file is not a YAML mapping of flag names to values".to_string()),
    };
    let command = env_free_command();
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let mut args = vec!["skiff".to_string()];
    let mut warnings = Vec::new();
    for (key, value) in &map {
        let Some(key) = key.as_str() else {
            return Err(format!("key {key:?} is not a string"));
        };
        let nested = match key {
            "client-transport-security" => Some(CLIENT_TLS),
            "peer-transport-security" => Some(PEER_TLS),
            _ => None,
        };
        if let Some(table) = nested {
            let Value::Mapping(inner) = value else {
                if value.is_null() {
                    continue;
                }
                return Err(format!("{key} must be a mapping"));
            };
            for (k, v) in inner {
                let k = k.as_str().unwrap_or_default();
                match table.iter().find(|(yaml, _)| *yaml == k) {
                    Some((_, flag)) => push_arg(&mut args, flag, v)?,
                    None => warnings.push(format!("config file: unknown key {key}.{k} ignored")),
                }
            }
            continue;
        }
        if key == "config-file" || !known.iter().any(|k| k == key) {
            warnings.push(format!("config file: unknown key {key:?} ignored"));
            continue;
        }
        push_arg(&mut args, key, value)?;
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|e| super::values::flag_error_message(&e))?;
    let flags = Flags::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    Ok(FromFile { flags, warnings })
}

/// The flags' command with no environment variables: a config file replaces both.
fn env_free_command() -> clap::Command {
    let mut command = Flags::command();
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .filter(|a| a.get_env().is_some())
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |a| a.env(None));
    }
    command
}

/// Appends `--key=value` for one YAML value (nothing for an empty one).
fn push_arg(args: &mut Vec<String>, key: &str, value: &Value) -> Result<(), String> {
    let text = match value {
        Value::Null => return Ok(()),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if DURATION_KEYS.contains(&key) => {
            let nanos = n
                .as_u64()
                .ok_or_else(|| format!("{key}: {n} is not a duration in nanoseconds"))?;
            format!("{nanos}ns")
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => return Ok(()),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => parts.push(s.clone()),
                    Value::Number(n) => parts.push(n.to_string()),
                    _ => return Err(format!("{key}: list items must be strings")),
                }
            }
            parts.join(",")
        }
        _ => return Err(format!("{key}: unsupported value")),
    };
    args.push(format!("--{key}={text}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LogOutput, Logger};
    use std::time::Duration;

    #[test]
    fn keys_are_flags_and_empty_means_default() {
        let f = parse(
            "name: 'n1'\ndata-dir:\nsnapshot-count: 10000\nheartbeat-interval: 100\n\
             listen-client-urls: http://127.0.0.1:1\nadvertise-client-urls: http://127.0.0.1:1\n\
             initial-cluster:\nlog-outputs: [stdout]\nlogger: zap\nenable-v2: true\n\
             grpc-keepalive-min-time: 3000000000\n\
             experimental-watch-progress-notify-interval: 2s\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n\
             bogus-key: 1\n",
        )
        .unwrap();
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        let c = Config::from_flags(f.flags).unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.data_dir, std::path::PathBuf::from("n1.skiff"));
        assert_eq!(c.snapshot_count, 10000);
        assert_eq!(c.logger, Logger::Zap);
        assert_eq!(c.log_outputs, vec![LogOutput::Stdout]);
        assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(3));
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(2));
        assert_eq!(c.initial_cluster["n1"][0].as_str(), "http://localhost:2380");
        assert_eq!(c.warnings.len(), 1, "enable-v2: {:?}", c.warnings);
    }

    #[test]
    fn environment_is_ignored_and_errors_name_the_key() {
        // ETCD_NAME is never set by the test harness for this process; the command
        // used for files has no environment variables at all.
        assert!(env_free_command()
            .get_arguments()
            .all(|a| a.get_env().is_none()));
        let err = parse("max-wals: -1\n").err().unwrap();
        assert_eq!(err, "invalid value \"-1\" for flag -max-wals: parse error");
        assert!(parse("- a\n- b\n").is_err());
    }
}

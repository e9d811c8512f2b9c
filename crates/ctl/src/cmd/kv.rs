//! `get`, `put`, `del`, `compaction`: arguments and flags as etcdctl 3.4 reads them,
//! turned into the same requests its client library sends.

use bytes::Bytes;
use clap::Args;
use skiff_client::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use tokio::io::AsyncReadExt;

use crate::cmd::err1;
use crate::exit::{fail, strconv_err, BAD_ARGS, BAD_FEATURE, ERROR};
use crate::globals::Cli;
use crate::output::Format;

/// `get [options] <key> [range_end]`
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long = "sort-by", default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long = "from-key")]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long = "keys-only")]
    pub keys_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long = "print-value-only")]
    pub print_value_only: bool,
    /// <key> [range_end]
    pub args: Vec<String>,
}

/// `--prefix` / `--from-key` on `key` as the etcd client applies them: the key (an
/// empty one becomes `\0`) and the range end.
fn range_of(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> (Bytes, Bytes) {
    let mut k = Bytes::copy_from_slice(key.as_bytes());
    let mut e = end
        .map(|e| Bytes::copy_from_slice(e.as_bytes()))
        .unwrap_or_default();
    if prefix {
        if k.is_empty() {
            k = Bytes::from_static(b"\0");
            e = Bytes::from_static(b"\0");
        } else {
            e = skiff_client::prefix_end(&k).into();
        }
    }
    if from_key {
        if k.is_empty() {
            k = Bytes::from_static(b"\0");
        }
        e = Bytes::from_static(b"\0");
    }
    (k, e)
}

impl GetArgs {
    /// The range request etcdctl sends for these arguments.
    pub fn request(&self) -> anyhow::Result<RangeRequest> {
        if self.args.is_empty() {
            return Err(fail(
                BAD_ARGS,
                "get command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(fail(
                BAD_ARGS,
                "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            ));
        }
        let serializable = match self.consistency.as_str() {
            "s" => true,
            "l" => false,
            other => {
                return Err(fail(
                    BAD_FEATURE,
                    format!(
                        "unknown consistency flag {}",
                        crate::output::go::quote(other.as_bytes())
                    ),
                ))
            }
        };
        if self.args.len() > 1 && (self.prefix || self.from_key) {
            return Err(fail(
                BAD_ARGS,
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        let order = match self.order.to_uppercase().as_str() {
            "" => 0,
            "ASCEND" => 1,
            "DESCEND" => 2,
            _ => return Err(fail(BAD_FEATURE, format!("bad sort order {}", self.order))),
        };
        let target = match self.sort_by.to_uppercase().as_str() {
            "" | "KEY" => 0,
            "VERSION" => 1,
            "CREATE" => 2,
            "MODIFY" => 3,
            "VALUE" => 4,
            _ => {
                return Err(fail(
                    BAD_FEATURE,
                    format!("bad sort target {}", self.sort_by),
                ))
            }
        };
        // The etcd client drops ASCEND on KEY: the server's natural order.
        let order = if target == 0 && order == 1 { 0 } else { order };
        let (key, range_end) = range_of(
            &self.args[0],
            self.args.get(1).map(String::as_str),
            self.prefix,
            self.from_key,
        );
        Ok(RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.rev.max(0),
            sort_order: order,
            sort_target: target,
            serializable,
            keys_only: self.keys_only,
            ..Default::default()
        })
    }
}

/// `get`.
pub async fn get(cli: &Cli, a: &GetArgs) -> anyhow::Result<()> {
    let req = a.request()?;
    let client = cli.client().await?;
    let resp = client.range(req).await.map_err(err1)?;
    let mut p = cli.printer()?;
    if a.print_value_only {
        if p.format != Format::Simple {
            return Err(fail(
                BAD_ARGS,
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        p.value_only = true;
    }
    p.get(&resp)
}

/// `put [options] <key> <value>`
#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long = "prev-kv")]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long = "ignore-value")]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long = "ignore-lease")]
    pub ignore_lease: bool,
    /// <key> <value>
    pub args: Vec<String>,
}

const PUT_ARGS: &str = "put command needs 1 argument and input from stdin or 2 arguments";

impl PutArgs {
    /// The put request (`stdin`: the value when it is not an argument).
    pub fn request(&self, stdin: Option<Vec<u8>>) -> anyhow::Result<PutRequest> {
        if self.args.is_empty() {
            return Err(fail(BAD_ARGS, PUT_ARGS));
        }
        if self.ignore_value && self.args.len() > 1 {
            return Err(fail(
                BAD_ARGS,
                "put command needs only 1 argument when 'ignore-value' is set",
            ));
        }
        let value: Bytes = if self.ignore_value {
            Bytes::new()
        } else if let Some(v) = self.args.get(1) {
            Bytes::copy_from_slice(v.as_bytes())
        } else {
            match stdin {
                Some(v) if !v.is_empty() => v.into(),
                _ => return Err(fail(BAD_ARGS, PUT_ARGS)),
            }
        };
        let lease = i64::from_str_radix(&self.lease, 16).map_err(|_| {
            fail(
                BAD_ARGS,
                format!(
                    "bad lease ID ({}), expecting ID in Hex",
                    strconv_err("ParseInt", &self.lease)
                ),
            )
        })?;
        Ok(PutRequest {
            key: Bytes::copy_from_slice(self.args[0].as_bytes()),
            value,
            lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        })
    }

    /// Whether the value must come from stdin.
    pub fn needs_stdin(&self) -> bool {
        !self.ignore_value && self.args.len() == 1
    }
}

/// Reads all of stdin.
pub async fn read_stdin() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut buf).await;
    buf
}

/// `put`.
pub async fn put(cli: &Cli, a: &PutArgs) -> anyhow::Result<()> {
    let stdin = if a.needs_stdin() {
        Some(read_stdin().await)
    } else {
        None
    };
    let req = a.request(stdin)?;
    let client = cli.client().await?;
    let resp = client.put_request(req).await.map_err(err1)?;
    cli.printer()?.put(&resp)
}

/// `del [options] <key> [range_end]`
#[derive(Args, Debug, Clone)]
pub struct DelArgs {
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long = "prev-kv")]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long = "from-key")]
    pub from_key: bool,
    /// <key> [range_end]
    pub args: Vec<String>,
}

impl DelArgs {
    /// The delete request etcdctl sends.
    pub fn request(&self) -> anyhow::Result<DeleteRangeRequest> {
        if self.args.is_empty() || self.args.len() > 2 {
            return Err(fail(
                BAD_ARGS,
                "del command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(fail(
                BAD_ARGS,
                "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            ));
        }
        if self.args.len() > 1 && (self.prefix || self.from_key) {
            return Err(fail(
                BAD_ARGS,
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        let (key, range_end) = range_of(
            &self.args[0],
            self.args.get(1).map(String::as_str),
            self.prefix,
            self.from_key,
        );
        Ok(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        })
    }
}

/// `del`.
pub async fn del(cli: &Cli, a: &DelArgs) -> anyhow::Result<()> {
    let req = a.request()?;
    let client = cli.client().await?;
    let resp = client.delete_range(req).await.map_err(err1)?;
    cli.printer()?.del(&resp)
}

/// `compaction [options] <revision>`
#[derive(Args, Debug, Clone)]
pub struct CompactionArgs {
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long)]
    pub physical: bool,
    /// <revision>
    pub args: Vec<String>,
}

/// `compaction`.
pub async fn compaction(cli: &Cli, a: &CompactionArgs) -> anyhow::Result<()> {
    if a.args.len() != 1 {
        return Err(fail(BAD_ARGS, "compaction command needs 1 argument"));
    }
    let rev: i64 = a.args[0]
        .parse()
        .map_err(|_| fail(ERROR, strconv_err("ParseInt", &a.args[0])))?;
    let client = cli.client().await?;
    client.compact(rev, a.physical).await.map_err(err1)?;
    println!("compacted revision {rev}");
    Ok(())
}

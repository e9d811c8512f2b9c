//! `txn`: reads etcdctl's transaction format from stdin (compares, a blank line,
//! success ops, a blank line, failure ops, a blank line), with `-i` printing etcdctl's
//! prompts. Ops are `get`/`put`/`del` lines with their flags, split into words as
//! etcdctl's `argify` does (double-quoted strings are Go-unquoted).

use bytes::Bytes;
use clap::{Args, Parser};
use skiff_client::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use skiff_client::proto::etcdserverpb::request_op::Request;
use skiff_client::proto::etcdserverpb::{Compare, RequestOp, TxnRequest};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cmd::err1;
use crate::cmd::kv::{DelArgs, GetArgs, PutArgs};
use crate::exit::{fail, BAD_ARGS, INVALID_INPUT};
use crate::globals::Cli;

/// `txn [options]`
#[derive(Args, Debug, Clone)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// (none accepted)
    pub args: Vec<String>,
}

/// One op line, parsed with the verbs' own flags.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
enum OpLine {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

/// `txn`.
pub async fn txn(cli: &Cli, a: &TxnArgs) -> anyhow::Result<()> {
    if !a.args.is_empty() {
        return Err(fail(BAD_ARGS, "txn command does not accept argument"));
    }
    let client = cli.client().await?;
    let mut printer = cli.printer()?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let prompt = |s: &str| {
        if a.interactive {
            println!("{s}");
        }
    };
    prompt("compares:");
    let mut compare = Vec::new();
    while let Some(line) = next_line(&mut lines).await? {
        compare.push(parse_compare(&line)?);
    }
    prompt("success requests (get, put, del):");
    let mut success = Vec::new();
    while let Some(line) = next_line(&mut lines).await? {
        success.push(parse_op(&line)?);
    }
    prompt("failure requests (get, put, del):");
    let mut failure = Vec::new();
    while let Some(line) = next_line(&mut lines).await? {
        failure.push(parse_op(&line)?);
    }
    let resp = client
        .txn(TxnRequest {
            compare,
            success,
            failure,
        })
        .await
        .map_err(err1)?;
    printer.txn(&resp)
}

/// The next line of a section, `None` at the blank line that ends it; end of input
/// before it is etcdctl's `EOF` error. Each line is parsed before the next is read, so
/// errors come in etcdctl's order.
async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<Option<String>> {
    match lines.next_line().await {
        Ok(Some(l)) => {
            let l = l.trim().to_string();
            Ok((!l.is_empty()).then_some(l))
        }
        Ok(None) => Err(fail(INVALID_INPUT, "EOF")),
        Err(e) => Err(fail(INVALID_INPUT, e)),
    }
}

/// Parses a Go quoted string (`"..."` with escapes, or a `` `raw` `` string) at the
/// start of `s`: the string and the rest.
fn go_unquote_prefix(s: &str) -> Option<(Vec<u8>, &str)> {
    let b = s.as_bytes();
    match b.first()? {
        b'`' => {
            let end = s[1..].find('`')? + 1;
            Some((s.as_bytes()[1..end].to_vec(), &s[end + 1..]))
        }
        b'"' => {
            let mut out = Vec::new();
            let mut i = 1;
            while i < b.len() {
                match b[i] {
                    b'"' => return Some((out, &s[i + 1..])),
                    b'\\' => {
                        i += 1;
                        let c = *b.get(i)?;
                        match c {
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            b'r' => out.push(b'\r'),
                            b'a' => out.push(7),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'v' => out.push(11),
                            b'\\' => out.push(b'\\'),
                            b'"' => out.push(b'"'),
                            b'\'' => out.push(b'\''),
                            b'x' => {
                                let h = s.get(i + 1..i + 3)?;
                                out.push(u8::from_str_radix(h, 16).ok()?);
                                i += 2;
                            }
                            b'u' | b'U' => {
                                let n = if c == b'u' { 4 } else { 8 };
                                let h = s.get(i + 1..i + 1 + n)?;
                                let ch = char::from_u32(u32::from_str_radix(h, 16).ok()?)?;
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                                i += n;
                            }
                            b'0'..=b'7' => {
                                let o = s.get(i..i + 3)?;
                                out.push(u8::from_str_radix(o, 8).ok()?);
                                i += 2;
                            }
                            _ => return None,
                        }
                        i += 1;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            None
        }
        _ => None,
    }
}

/// etcdctl's `argify`: words, `"quoted"` (Go-unquoted) and `'single-quoted'` strings.
pub fn argify(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (v, r) =
                go_unquote_prefix(rest).ok_or_else(|| fail(INVALID_INPUT, "invalid syntax"))?;
            out.push(String::from_utf8_lossy(&v).into_owned());
            rest = r;
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'').unwrap_or(r.len());
            out.push(r[..end].to_string());
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

fn parse_op(line: &str) -> anyhow::Result<RequestOp> {
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(fail(
            INVALID_INPUT,
            format!("invalid txn compare request: {line}"),
        ));
    }
    let invalid = || fail(INVALID_INPUT, format!("invalid txn request: {line}"));
    let op = OpLine::try_parse_from(&args).map_err(|_| invalid())?;
    let request = match op {
        OpLine::Get(g) => Request::RequestRange(g.request()?),
        OpLine::Put(p) => {
            let stdin = None;
            Request::RequestPut(p.request(stdin)?)
        }
        OpLine::Del(d) => Request::RequestDeleteRange(d.request()?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    let malformed = |why: String| fail(INVALID_INPUT, why);
    let Some((target, rest)) = line.split_once('(') else {
        return Err(malformed(format!("malformed comparison: {line}")));
    };
    let scan = || -> Option<(Vec<u8>, String, Vec<u8>)> {
        let (key, r) = go_unquote_prefix(rest)?;
        let r = r.strip_prefix(')')?;
        let r = r.trim_start();
        let op_end = r.find(char::is_whitespace)?;
        let op = r[..op_end].to_string();
        let (val, _) = go_unquote_prefix(r[op_end..].trim_start())?;
        Some((key, op, val))
    };
    let Some((key, op, val)) = scan() else {
        return Err(malformed(format!("malformed comparison: {line}")));
    };
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => {
            return Err(malformed(format!(
                "malformed comparison: {line} (unknown op {op})"
            )))
        }
    };
    let int = || -> anyhow::Result<i64> {
        String::from_utf8_lossy(&val).parse::<i64>().map_err(|_| {
            fail(
                INVALID_INPUT,
                format!("invalid txn compare request: {line}"),
            )
        })
    };
    let (t, u) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(int()?)),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(int()?)),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(int()?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(Bytes::from(val))),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(int()?)),
        _ => {
            return Err(malformed(format!(
                "malformed comparison: {line} (unknown target {target})"
            )))
        }
    };
    Ok(Compare {
        result: result as i32,
        target: t as i32,
        key: Bytes::from(key),
        range_end: Bytes::new(),
        target_union: Some(u),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argify_splits_like_etcdctl() {
        assert_eq!(
            argify(r#"put "a b" 'c d' e\x"#).unwrap(),
            vec!["put", "a b", "c d", "e\\x"]
        );
        assert_eq!(argify(r#"put k "v\n""#).unwrap(), vec!["put", "k", "v\n"]);
    }

    #[test]
    fn compares_parse() {
        let c = parse_compare(r#"value("zoo") = "z""#).unwrap();
        assert_eq!(c.target, CompareTarget::Value as i32);
        assert_eq!(&c.key[..], b"zoo");
        let c = parse_compare(r#"mod("zoo") < "3""#).unwrap();
        assert_eq!(c.result, CompareResult::Less as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(3)));
        assert!(parse_compare("nonsense").is_err());
    }
}

//! `skiffctl` in etcdctl's place (issue 16): the same script is run once with etcdctl
//! 3.4 and once with `skiffctl`, each against a fresh server on the same ports (so IDs
//! and revisions are the same), and the masked transcripts (stdout, stderr, exit code
//! of every step) must be identical. Done against a single Skiff, a single etcd 3.4 and
//! a 3-member Skiff cluster (through a follower). Two more sections run the same way:
//! authentication ([`AUTH_SCRIPT`]: users, roles, grants, calls in and out of a user's
//! permissions, wrong passwords, the password prompt) and TLS ([`TLS_SCRIPT`]: an
//! `https` member requiring client certificates). Ports 29700-29729 belong to this file.
//!
//! `skiffctl` is the binary next to `skiff` in the target directory: `cargo test
//! --workspace` builds it; alone, run `cargo build -p skiff-ctl` first. Needs `etcd`
//! and `etcdctl` (Debian's etcd-server / etcd-client, installed by .ci/run), and `curl`
//! for the TLS section.

use crate::common;
use crate::common::skiffctl;

use std::path::{Path, PathBuf};

use common::pki::Pki;
use common::{have, Kind, Proc};
use regex::Regex;

/// The script. `$E` is the CLI aimed at the server (`host:port`), `$U` the same with
/// the endpoint as a URL, `$BIG` a file of 2,000,000 bytes. Every verb skiffctl has
/// and every output format appears at least once.
const SCRIPT: &[&str] = &[
    "$E put foo bar",
    "$E put foo1 bar1",
    "$E put foo2 bar2",
    "$E put zoo z",
    "$E put foo bar-again --prev-kv",
    "$E put foo bar-again --prev-kv -w json",
    "$E put foo bar-again --prev-kv -w fields",
    "$E get foo",
    "$E get foo --prefix",
    "$E get foo1 --from-key",
    "$E get foo --prefix --limit 2",
    "$E get foo --prefix --sort-by=MODIFY --order=DESCEND",
    "$E get foo --prefix --sort-by=VALUE --order=ASCEND --keys-only",
    "$E get foo --prefix --sort-by=CREATE",
    "$E get foo --prefix --sort-by=KEY --order=DESCEND -w json",
    "$E get foo --prefix --keys-only",
    "$E get foo foo2",
    "$E get foo --rev 2",
    "$E get foo -w json",
    "$E get foo --hex",
    "$E get foo --prefix -w fields",
    "$E get foo -w table",
    "$E get foo -w protobuf | od -An -tx1",
    "$E get foo -w yaml",
    "$E get nothing-here",
    "$E get",
    "$E get foo --prefix --from-key",
    "$E get foo --order=SIDEWAYS",
    "$E get foo -w json --print-value-only",
    "$E del foo1 --prev-kv",
    "$E del nothing-here",
    "$E del foo --prefix --prev-kv -w json",
    "$E put foo again",
    "$E del foo -w fields --prev-kv",
    "$E del",
    "printf 'value(\"zoo\") = \"z\"\\n\\nput zoo z2\\nput x y\\n\\nput zoo never\\n\\n' | $E txn --interactive",
    "printf 'mod(\"zoo\") < \"3\"\\n\\nput a 1\\n\\nget zoo\\n\\n' | $E txn -w json",
    "printf 'ver(\"zoo\") > \"1\"\\n\\nget zoo\\ndel a --prev-kv\\n\\n\\n' | $E txn -w fields",
    "printf 'c(\"x\") != \"0\"\\n\\nput \"x y\" \"1 2\"\\n\\n\\n' | $E txn",
    "printf 'bogus\\n\\n\\n\\n' | $E txn",
    "printf 'value(\"zoo\") = \"z2\"\\n\\nput zoo\\n' | $E txn",
    "$E compact 4",
    "$E get zoo --rev 3",
    "$E get zoo --rev 100",
    "timeout 2 $E watch zoo --rev 4; echo \"[watch exit $?]\"",
    "timeout 2 $E watch --prefix '' --rev 9 --prev-kv; echo \"[watch exit $?]\"",
    "timeout 2 $E watch zoo --rev 5 -w json; echo \"[watch exit $?]\"",
    "timeout 2 $E watch x --rev 5 -w fields; echo \"[watch exit $?]\"",
    "timeout 2 $E watch zoo --rev 2; echo \"[watch exit $?]\"",
    "L=$($E lease grant 100 | cut -d' ' -f2); $E put lk lv --lease=$L && $E lease timetolive $L --keys && $E lease list && $E lease keep-alive --once $L && $E lease revoke $L && $E get lk && $E lease timetolive $L",
    "L=$($E lease grant 100 | cut -d' ' -f2); $E lease timetolive $L -w json | sed 's/\"ttl\":[0-9]*/\"ttl\":N/' && $E lease timetolive $L -w fields | grep -v '\"TTL\"' && $E lease keep-alive --once $L -w json && $E lease list -w fields && $E lease revoke $L -w json",
    "$E lease grant 100 -w json | sed 's/\"ID\":[0-9]*/\"ID\":N/'",
    "$E lease grant 100 -w fields | grep -v '\"ID\"'",
    "$E lease grant nope",
    "$E lease revoke xyz",
    // A TTL below the minimum is raised to it (2 s); revoked at once so that timing
    // never decides what later steps see.
    "L=$($E lease grant 1 | cut -d' ' -f2); $E lease timetolive $L && $E lease revoke $L",
    "$E lease revoke 1234",
    "$E lease keep-alive --once 1234",
    "$E lease timetolive 1234",
    "$E put big < $BIG",
    "$E put lonely --lease=zz",
    "$E member list",
    "$E member list -w json",
    "$E member list -w fields",
    "$E member list -w table",
    // Refusals (the endpoint given leads a single member and follows in a cluster of
    // three, where etcdctl finds no leader among the endpoints); a real transfer runs in
    // the three-member test.
    "$E move-leader",
    "$E move-leader zz",
    "$E move-leader 1",
    "$E endpoint status",
    "$E endpoint health",
    "$E endpoint health -w json | sed 's/\"took\":\"[^\"]*\"/\"took\":\"T\"/'",
    "$E endpoint hashkv",
    "$E endpoint hashkv -w json",
    "$E endpoint hashkv -w table",
    "$E endpoint status --cluster",
    "$E endpoint hashkv --cluster -w fields",
    "$E alarm list",
    "$E alarm list -w json",
    "$E alarm disarm",
    "$E alarm disarm -w json",
    // The same per-endpoint calls with the endpoint written as a URL, as etcd's docs
    // write it.
    "$U endpoint status",
    "$U endpoint health",
    "$U endpoint hashkv",
    "$U endpoint status -w json",
    "$U endpoint status -w table",
    "$U endpoint status -w fields",
    "$U alarm list",
    "$U get '' --prefix --keys-only",
    "$E get '' --prefix --keys-only",
    "$E put zoo --ignore-value",
    "$E put nokey --ignore-value",
    "$E put zoo z3 --ignore-lease",
    "$E get zoo --print-value-only",
    "$E get foo2 --from-key --limit 1 -w json",
    "$E get zoo --consistency=s -w json",
    "$E get zoo --consistency=x",
    "$E compaction --physical 11",
    "$E compaction 11",
    "$E compaction abc",
    "$E del '' --from-key",
    "$E get '' --from-key -w json",
    "$E endpoint status -w json",
    "$E lease list -w json",
    "$E version | sed 's/^[a-z]*ctl version: .*/CTL version: X/'",
    "$E defrag",
    "$E defrag --cluster",
    "rm -f $SNAP; $E snapshot save $SNAP 2>/dev/null; echo \"[save exit $?]\"; test -s $SNAP && echo saved-nonempty; rm -f $SNAP",
    "$E snapshot save",
    "$C --endpoints=$EP,$EP snapshot save $SNAP 2>&1 | grep -v '\"level\"'",
    // Membership: a learner (not counted for quorum), promoted too early, updated, removed.
    "$E member add newm --learner --peer-urls=http://127.0.0.1:29719",
    "ID=$($E member list | grep unstarted | cut -d, -f1); $E member promote $ID; $E member update $ID --peer-urls=http://127.0.0.1:29718 && $E member remove $ID",
    "$E member list",
    "$E member remove zz",
    "$E member add",
    "ETCDCTL_ENDPOINTS=$EP $C get zoo -w json",
    "ETCDCTL_WRITE_OUT=fields $E get zoo",
    "$C --endpoints=$EP --command-timeout=5s --dial-timeout=2s -w simple get zoo --rev=0",
    // Locks last: each leaves its session lease behind for its TTL, as etcdctl does.
    "$E lock mylock -- sh -c 'echo key=${ETCD_LOCK_KEY%/*} rev=$ETCD_LOCK_REV'",
    "$E lock mylock false",
    "$E lock",
    "timeout 2 $E lock held | sed 's|/[0-9a-f]*$|/LEASE|'",
    "$E get mylock --prefix --keys-only; $E get held --prefix --keys-only",
    // `watch -i`: lines on stdin, events as they come, `progress`, etcdctl's
    // complaints; the end of stdin ends it (exit 3). Sleeps order the output.
    "(printf 'watch wi\\n\\nbogus\\nwatch\\nwatch --prefix wi wj\\nwatch wi wj wk\\n'; sleep 0.5; $E put wi v1 >/dev/null; sleep 0.5; printf 'progress\\n'; sleep 0.5) | $E watch -i",
    "(printf 'watch wi --prefix --prev-kv -w json\\n'; sleep 0.3) | $E watch -i",
    "(printf 'watch --prefix\\n'; sleep 0.3) | $E watch -i",
    "(printf 'watch wi --\\n'; sleep 0.3) | $E watch -i",
    "(printf 'watch wi --bogus\\n'; sleep 0.3) | $E watch -i",
    "(printf 'watch wi --rev x\\n'; sleep 0.3) | $E watch -i",
    "(printf '%s\\n' 'watch wi -- sh -c \"echo got $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_EVENT_TYPE\"'; sleep 0.5; $E put wi v2 >/dev/null; sleep 0.5) | $E watch -i",
    "(printf 'watch wi -- false\\n'; sleep 0.5; $E put wi v3 >/dev/null; sleep 0.5) | $E watch -i",
    "(printf 'watch wi --prefix --prev-kv\\n'; sleep 0.5; $E del wi >/dev/null; sleep 0.5) | $E -w json watch -i",
    // `watch <key> -- <command>`: the events, then the command once per event with
    // etcdctl's variables; a failing command ends it (exit 1); argument errors.
    "timeout 2 $E watch wx -- sh -c 'echo got $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY=$ETCD_WATCH_VALUE' & sleep 0.5; $E put wx 1 >/dev/null; sleep 0.3; $E del wx >/dev/null; wait $!; echo \"[watch exit $?]\"",
    "timeout 2 $E watch --prefix w -w json -- echo hi & sleep 0.5; $E put wy 2 >/dev/null; wait $!; echo \"[watch exit $?]\"",
    "timeout 2 $E watch wx -- false & sleep 0.5; $E put wx 3 >/dev/null; wait $!; echo \"[watch exit $?]\"",
    "timeout 1 $E watch wx wy wz; echo \"[watch exit $?]\"",
    "$E watch wx --",
    "$E watch -- echo hi",
    "$E watch --prefix wx wy -- echo hi",
    // `elect`: argument errors; an observer sees two leaders in turn (each campaign
    // ends by SIGTERM, resigning); an observer started later sees the current one.
    "$E elect",
    "$E elect e",
    "$E elect -l e p",
    "(timeout 3 $E elect -l e1 | sed 's|/[0-9a-f]*$|/LEASE|'; echo '[observer done]') & sleep 0.5; timeout 1 $E elect e1 v1 | sed 's|/[0-9a-f]*$|/LEASE|'; timeout 1 $E elect e1 v2 | sed 's|/[0-9a-f]*$|/LEASE|'; wait",
    "(timeout 2 $E elect e2 first > /dev/null &); sleep 0.5; timeout 1 $E elect -l e2 | sed 's|/[0-9a-f]*$|/LEASE|'; sleep 1",
];

/// The auth section: `$E` is the CLI without a user, `$R` the same as `root`. Every
/// `user`, `role` and `auth` verb, each output format they have (and those they refuse,
/// after the call), the argument errors, and calls as users in and out of their
/// permissions.
const AUTH_SCRIPT: &[&str] = &[
    "$E user add root:rootpw",
    "$E user add root:again",
    "$E user add :nameless",
    "$E user add",
    "$E role add ''",
    "$E auth enable x",
    "$E auth enable",
    "$E auth enable",
    "$E user list",
    "$R user add alice:apw",
    "$R user add bob --new-user-password=bpw",
    "echo cpw | $R user add carol --interactive=false",
    "$R user add nopw --no-password",
    "$R user add u1:pw -w json",
    "$R user add u2:pw -w fields",
    "$R user add u3:pw -w protobuf | od -An -tx1",
    "$R user add u4:pw -w table",
    "$R role add reader",
    "$R role add writer -w json",
    "$R role add r2 -w fields",
    "$R role add r3 -w protobuf | od -An -tx1",
    "$R role add r4 -w table",
    "$R role add writer",
    "$R role add",
    "$R role grant-permission reader read k",
    "$R role grant-permission reader read p --prefix",
    "$R role grant-permission writer readwrite p --prefix -w json",
    "$R role grant-permission writer write w --from-key -w fields",
    "$R role grant-permission writer WRITE a c -w protobuf | od -An -tx1",
    "$R role grant-permission writer write a c -w table",
    "$R role grant-permission writer write a c --prefix",
    "$R role grant-permission writer bogus a",
    "$R role grant-permission writer read",
    "$R role grant-permission r2 read '' --prefix",
    "$R role grant-permission r3 read ''",
    "$R role grant-permission r2 read a --prefix --from-key",
    "$R role grant-permission nobody read x",
    "$R role get reader",
    "$R role get writer",
    "$R role get r2 | od -c",
    "$R role get writer -w json",
    "$R role get writer -w fields",
    "$R role get writer -w protobuf | od -An -tx1",
    "$R role get writer -w table",
    "$R role get nobody",
    "$R role get",
    "$R role list",
    "$R role list -w json",
    "$R role list -w fields",
    "$R role list -w protobuf | od -An -tx1",
    "$R role list -w table",
    "$R role list x",
    "$R user grant-role alice reader",
    "$R user grant-role alice reader",
    "$R user grant-role bob writer -w json",
    "$R user grant-role bob r2 -w fields",
    "$R user grant-role bob r3 -w protobuf | od -An -tx1",
    "$R user grant-role bob r4 -w table",
    "$R user grant-role bob ghost",
    "$R user grant-role ghost writer",
    "$R user grant-role bob",
    "$R user get alice",
    "$R user get bob --detail",
    "$R user get bob -w json",
    "$R user get bob --detail -w json",
    "$R user get bob --detail -w fields",
    "$R user get bob --detail -w table",
    "$R user get bob -w fields",
    "$R user get bob -w protobuf | od -An -tx1",
    "$R user get bob -w table",
    "$R user get ghost",
    "$R user get",
    "$R user list",
    "$R user list -w json",
    "$R user list -w fields",
    "$R user list -w protobuf | od -An -tx1",
    "$R user list x",
    "$R put k kv",
    "$R put p1 pv",
    // Calls as users, in and out of their permissions.
    "$E get k",
    "$E --user alice:wrong get k",
    "$E --user ghost:x get k",
    "$E --user alice:apw get k",
    "$E --user alice --password apw get k",
    "ETCDCTL_USER=alice ETCDCTL_PASSWORD=apw $E get p1",
    "$E --user alice:apw get '' --prefix",
    "$E --user alice:apw put k v",
    "$E --user bob:bpw put p2 v2",
    "$E --user bob:bpw put p2 v3 --prev-kv -w json",
    "$E --user bob:bpw put x v",
    "$E --user bob:bpw get wz",
    "$E --user bob:bpw put wz v",
    "$E --user bob:bpw del p --prefix",
    "printf 'value(\"p1\") = \"pv\"\\n\\nput p3 v\\n\\nput p4 v\\n\\n' | $E --user bob:bpw txn",
    "$E --user carol:cpw get k",
    "$E --user nopw:x get k",
    "$E --user alice: get k",
    "echo apw | $E --user alice get k",
    "$R role revoke-permission reader p --prefix",
    "$R role revoke-permission reader p --prefix",
    "$R role revoke-permission writer w --from-key -w json",
    "$R role revoke-permission writer a c -w fields",
    "$R role revoke-permission writer p --prefix -w protobuf | od -An -tx1",
    "$R role revoke-permission r3 '' -w table",
    "$R role revoke-permission r2 '' --from-key",
    "$R role revoke-permission reader zz",
    "$R role revoke-permission reader",
    "$R role revoke-permission ghost zz",
    "$R role revoke-permission reader a c --prefix",
    "$R role revoke-permission reader a c --from-key",
    "$E --user alice:apw get p1",
    "echo newpw | $R user passwd alice --interactive=false",
    "printf 'x\\ny\\n' | $R user passwd alice",
    "$R user passwd u1 --interactive=false -w json < /dev/null",
    "$R user passwd u2 --interactive=false -w fields < /dev/null",
    "$R user passwd u3 --interactive=false -w protobuf < /dev/null | od -An -tx1",
    "$R user passwd",
    "$R user passwd ghost --interactive=false < /dev/null",
    "$E --user alice:apw get k",
    "$E --user alice:newpw get k",
    "$R user revoke-role alice reader",
    "$R user revoke-role alice reader",
    "$R user revoke-role bob writer -w json",
    "$R user revoke-role bob r2 -w fields",
    "$R user revoke-role bob r3 -w protobuf | od -An -tx1",
    "$R user revoke-role alice",
    "$E --user alice:newpw get k",
    "$R user delete u1 -w json",
    "$R user delete u2 -w fields",
    "$R user delete u3 -w protobuf | od -An -tx1",
    "$R user delete u4 -w table",
    "$R user delete ghost",
    "$R user delete",
    "$R role delete r2 -w json",
    "$R role delete r3 -w fields",
    "$R role delete r4 -w protobuf | od -An -tx1",
    "$R role delete writer -w table",
    "$R role delete ghost",
    "$R role delete",
    "$R user delete root",
    "$R role delete root",
    "$E auth disable",
    "$E --user alice:newpw auth disable",
    "$R auth disable x",
    "$R auth disable -w json",
    "$E get k",
    "$E --user alice:newpw get k",
    "$E --user alice:wrong get k",
    "$E user list",
    "$E role list",
    "$E user add z < /dev/null",
    "printf 'a\\nb\\n' | $E user add z",
    "printf 'a\\na\\n' | $E user add z",
    "$E user get z",
    "$E auth enable",
];

/// The TLS section, against a member whose client URL is `https` and which requires
/// client certificates: `$T` is the CLI with `https://` endpoints and no TLS flags,
/// `$H` the same with `host:port`, `$P` the directory of the test PKI (`test-ca.pem`
/// signs the server and `client`; `rogue-ca.pem` is another CA).
const TLS_SCRIPT: &[&str] = &[
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key put foo bar",
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key get foo",
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key get foo -w json",
    "$H --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key get foo",
    "ETCDCTL_CACERT=$P/test-ca.pem ETCDCTL_CERT=$P/client.pem ETCDCTL_KEY=$P/client.key $T get foo",
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key endpoint health",
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key endpoint status | cut -d, -f1,2",
    // etcdctl 3.4 skips verification only when it has TLS options at all (a client
    // certificate, a CA, or --insecure-transport=false); without, https:// is verified
    // against the system's CAs, which do not know the test CA.
    "$T --insecure-skip-tls-verify --insecure-transport=false --cert=$P/client.pem --key=$P/client.key get foo",
    "$T --insecure-skip-tls-verify --cert=$P/client.pem --key=$P/client.key get foo",
    "$T --insecure-skip-tls-verify put foo never",
    // Refused: a CA that did not sign the server's certificate, the system's CAs, no
    // client certificate, plain text.
    "$T --cacert=$P/rogue-ca.pem --cert=$P/client.pem --key=$P/client.key get foo",
    "$T --cacert=$P/rogue-ca.pem --cert=$P/client.pem --key=$P/client.key put foo never",
    "$T --cert=$P/client.pem --key=$P/client.key get foo",
    "$T --cacert=$P/test-ca.pem get foo",
    "$H get foo",
    // Flags that cannot work.
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem get foo",
    "$T --cacert=$P/test-ca.pem --key=$P/client.key get foo",
    "$T --cacert=$P/missing.pem get foo",
    "$T --cacert=$P/test-ca.pem --cert=$P/missing.pem --key=$P/client.key get foo",
    "$T --cacert=$P/test-ca.pem --cert=$P/client.pem --key=$P/client.key get foo --print-value-only",
];

/// Runs the script with `ctl` (a command line up to the global flags) against
/// `endpoint` (`127.0.0.1:port`).
fn run_script(ctl: &str, endpoint: &str, big: &Path) -> String {
    // One file per endpoint: the tests of this file run side by side in one process.
    let snap = std::env::temp_dir().join(format!(
        "skiffctl-snap-{}-{}.db",
        endpoint.replace([':', '.'], "_"),
        std::process::id()
    ));
    let vars = [
        (
            "E",
            format!("{ctl} --endpoints={endpoint} --command-timeout=5s"),
        ),
        (
            "U",
            format!("{ctl} --endpoints=http://{endpoint} --command-timeout=5s"),
        ),
        ("C", ctl.to_string()),
        ("EP", endpoint.to_string()),
        ("BIG", big.display().to_string()),
        ("SNAP", snap.display().to_string()),
    ];
    common::sh_transcript(SCRIPT, &vars)
}

/// Masks what legitimately differs between two runs on the same ports: timings, db
/// sizes, raft indices, versions, hashes; and etcdctl's retry warnings (JSON log lines).
fn mask(transcript: &str) -> String {
    let rules: &[(&str, &str)] = &[
        (r#"(?m)^\{"level":"warn".*\n"#, ""),
        (r"took = \S+", "took = T"),
        (
            r"(?m)^((?:http://)?127\.0\.0\.1:\d+, [0-9a-f]+), [^,]+, [^,]+, (true|false), (true|false), (\d+), \d+, \d+, ",
            "$1, VERSION, DBSIZE, $2, $3, $4, INDEX, INDEX, ",
        ),
        (r"(?m)^((?:http://)?127\.0\.0\.1:\d+), \d+$", "$1, HASH"),
        (
            r#""(dbSize|raftIndex|raftAppliedIndex|dbSizeInUse|hash)":\d+"#,
            "\"$1\":X",
        ),
        (
            r#""(DBSize|RaftIndex|RaftAppliedIndex|Hash)" : \d+"#,
            "\"$1\" : X",
        ),
        (r#""version":"[^"]*""#, "\"version\":X"),
        (r#""Version" : "[^"]*""#, "\"Version\" : X"),
        (r"remaining\(\d+s\)", "remaining(Ns)"),
        // A new member's ID is random.
        (
            r"Member +[0-9a-f]+ (added to|removed from|updated in|promoted in) cluster",
            "Member NEWID $1 cluster",
        ),
        // Lease IDs: etcd derives them from the time.
        (r"lease [0-9a-f]{16}\b", "lease LEASE"),
        (r"(?m)^[0-9a-f]{16}$", "LEASE"),
        (r#""ID" : \d+"#, "\"ID\" : N"),
        (r#"(?m)^(\{.*"(?:TTL|ttl|leases)".*)$"#, "LEASE-LINE $1"),
        // Table cells: version, db size, raft index, applied index; hashes.
        (
            r"(?m)^(\| (?:http://)?127\.0\.0\.1:\d+ \| +[0-9a-f]+ \|) +[^|]+\| +[^|]+\|( +(?:true|false) \| +(?:true|false) \| +\d+ \|) +\d+ \| +\d+ \|",
            "$1 VERSION | DBSIZE |$2 INDEX | INDEX |",
        ),
        (
            r"(?m)^(\| (?:http://)?127\.0\.0\.1:\d+ \|) +\d+ \|$",
            "$1 HASH |",
        ),
    ];
    let mut s = transcript.to_string();
    for (re, with) in rules {
        s = Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    // Lease IDs in the JSON of lease verbs (marked above).
    let id = Regex::new(r#""(id|ID)":\d+"#).expect("valid regex");
    let s: String = s
        .lines()
        .map(|l| match l.strip_prefix("LEASE-LINE ") {
            Some(rest) => format!("{}\n", id.replace_all(rest, "\"$1\":N")),
            None => format!("{l}\n"),
        })
        .collect();
    // `member add` lists the members in ID order, and the new member's ID is random.
    let s: String = s
        .lines()
        .map(|l| match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            Some(rest) => {
                let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                parts.sort_unstable();
                format!("ETCD_INITIAL_CLUSTER=\"{}\" (sorted)\n", parts.join(","))
            }
            None => format!("{l}\n"),
        })
        .collect();
    // The status and hash tables' borders and headers follow the width of their
    // masked cells (version, db size, hash: keys carry time-derived lease IDs): mask
    // the rules and headers of those tables only.
    let lines: Vec<&str> = s.lines().collect();
    let mut out = String::new();
    let mut in_table = false;
    for (i, l) in lines.iter().enumerate() {
        let next = lines.get(i + 1).copied().unwrap_or("");
        if l.starts_with('+') && (next.contains("RAFT TERM") || next.contains(" HASH ")) {
            in_table = true;
        }
        if in_table && (l.starts_with('+') || l.contains("ENDPOINT")) {
            out.push_str("MASKED-TABLE-RULE\n");
            if l.starts_with('+') && !next.starts_with('|') {
                in_table = false;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    sort_two_watchers_block(&out)
}

/// The first `watch -i` step opens two watchers on `wi`; etcdctl prints each watcher's
/// events from its own goroutine, a line at a time, so its lines interleave differently
/// from run to run (`PUT PUT wi v1 wi v1` or `PUT wi v1 PUT wi v1`). That step's output
/// is compared as a sorted list of lines.
fn sort_two_watchers_block(s: &str) -> String {
    let mut out = String::new();
    let mut block: Option<Vec<&str>> = None;
    for l in s.lines() {
        if l.starts_with("$ ") {
            if let Some(mut b) = block.take() {
                b.sort_unstable();
                for x in b {
                    out.push_str(x);
                    out.push('\n');
                }
            }
            if l.starts_with("$ (printf 'watch wi\\n") && l.ends_with("| $E watch -i") {
                block = Some(Vec::new());
            }
            out.push_str(l);
            out.push('\n');
        } else if let Some(b) = block.as_mut() {
            b.push(l);
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if let Some(mut b) = block {
        b.sort_unstable();
        for x in b {
            out.push_str(x);
            out.push('\n');
        }
    }
    out
}

/// Line-by-line differences of two masked transcripts (empty when identical).
fn diff(a: &str, b: &str) -> String {
    let mut report = String::new();
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            report.push_str(&format!(
                "line {}:\n  etcdctl:  {x}\n  skiffctl: {y}\n",
                i + 1
            ));
        }
    }
    let (la, lb) = (a.lines().count(), b.lines().count());
    if la != lb {
        report.push_str(&format!(
            "line counts differ: etcdctl {la}, skiffctl {lb}\n"
        ));
    }
    report
}

/// Runs the script with both CLIs against fresh single members of `kind` on
/// `client`/`peer` ports and compares.
fn compare_single(kind: Kind, client: u16, peer: u16, label: &str) {
    let big = std::env::temp_dir().join(format!("skiffctl-2mb-{label}-{}", std::process::id()));
    std::fs::write(&big, vec![b'x'; 2_000_000]).expect("write big value");
    let ctl = skiffctl();
    let server = Proc::start(kind, "t", client, peer, None);
    let with_etcdctl = run_script("etcdctl", &server.endpoint(), &big);
    drop(server);
    let server = Proc::start(kind, "t", client, peer, None);
    let with_skiffctl = run_script(ctl.to_str().expect("utf-8 path"), &server.endpoint(), &big);
    drop(server);
    let _ = std::fs::remove_file(&big);
    check(&with_etcdctl, &with_skiffctl, label, str::to_string);
}

/// Writes both masked transcripts to the temp dir and asserts they are identical.
fn assert_identical(a: &str, b: &str, label: &str) {
    let dir = std::env::temp_dir();
    std::fs::write(
        dir.join(format!("skiffctl-transcript-{label}-etcdctl.txt")),
        a,
    )
    .ok();
    std::fs::write(
        dir.join(format!("skiffctl-transcript-{label}-skiffctl.txt")),
        b,
    )
    .ok();
    let report = diff(a, b);
    assert!(
        report.is_empty(),
        "{label}: masked transcripts differ (full texts in {}):\n{report}",
        dir.display()
    );
}

/// Compares the transcripts after [`mask`] and then `extra`.
fn check(with_etcdctl: &str, with_skiffctl: &str, label: &str, extra: fn(&str) -> String) {
    let (a, b) = (extra(&mask(with_etcdctl)), extra(&mask(with_skiffctl)));
    assert_identical(&a, &b, label);
    // The comparison is only meaningful if the script really ran.
    assert!(a.contains("bar-again"), "script did not run:\n{a}");
    assert!(
        a.contains("compacted revision 4"),
        "script did not run:\n{a}"
    );
    eprintln!(
        "{label}: {} steps, {} masked lines, identical",
        SCRIPT.len(),
        a.lines().count()
    );
}

#[test]
fn skiffctl_matches_etcdctl_against_skiff() {
    if !have("etcdctl") {
        eprintln!("note: etcdctl not installed; comparison skipped");
        return;
    }
    compare_single(Kind::Skiff, 29700, 29701, "skiff");
}

#[test]
fn skiffctl_matches_etcdctl_against_etcd() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; comparison skipped");
        return;
    }
    compare_single(Kind::Etcd, 29702, 29703, "etcd");
}

/// What differs between two fresh 3-member clusters: which member leads, and terms.
fn mask_three(s: &str) -> String {
    let rules: &[(&str, &str)] = &[
        (r#""(raft_term|raftTerm|leader)":\d+"#, "\"$1\":N"),
        (r#""RaftTerm" : \d+"#, "\"RaftTerm\" : N"),
        (r#""Leader" : \d+"#, "\"Leader\" : N"),
        // Which of the other two members led before the transfer.
        (
            r"Leadership transferred from [0-9a-f]+ to",
            "Leadership transferred from L to",
        ),
        // `get -w protobuf | od`: the header's revision (field 3, tag 18) is followed by
        // the raft term (field 4, tag 20).
        (r"18 ([0-9a-f]{2}) 20 [0-9a-f]{2}", "18 $1 20 TT"),
        (
            r"(?m)^(.*VERSION, DBSIZE, )(true|false), (true|false), \d+, ",
            "${1}LEADER?, $3, TERM, ",
        ),
        (
            r"(?m)^(\|.*\| VERSION \| DBSIZE \|) +(true|false) \| +(true|false) \| +\d+ \|",
            "$1 LEADER? | $3 | TERM |",
        ),
    ];
    let mut s = s.to_string();
    for (re, with) in rules {
        s = Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

/// Makes member 0 of a running cluster a follower (moving leadership to member 1 if
/// it leads), so every run goes through the same member: its ID and port appear in the
/// output.
async fn member0_follower(endpoints: &[String]) {
    use skiff_client::{Client, ClientOptions};
    let client = Client::connect(endpoints, ClientOptions::default()).expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m0 = client.pinned(0).expect("in range");
        if let Ok(s) = m0.status().await {
            let me = s.header.map(|h| h.member_id).unwrap_or(0);
            if s.leader != 0 && s.leader != me {
                return;
            }
            if s.leader == me {
                let m1 = client.pinned(1).expect("in range");
                if let Ok(s1) = m1.status().await {
                    let target = s1.header.map(|h| h.member_id).unwrap_or(0);
                    let _ = m0.move_leader(target).await;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "member 0 stays leader"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs the script with `ctl` through a follower of a fresh 3-member Skiff cluster.
async fn three_member_run(ctl: &str, big: &Path) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    // Same ports (and default token) for both runs: the same member IDs.
    let mut members = common::cluster_members(&bin, 3, 29704, dir.path(), &[]);
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(std::time::Duration::from_secs(30));
    }
    let endpoints: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    member0_follower(&endpoints).await;
    let endpoint = endpoints[0].clone();
    let to = {
        use skiff_client::{Client, ClientOptions};
        let client = Client::connect(&endpoints, ClientOptions::default()).expect("client");
        let s = client.pinned(0).expect("in range").status().await;
        format!("{:x}", s.expect("status").header.expect("header").member_id)
    };
    let all = endpoints.join(",");
    let ctl = ctl.to_string();
    let big = big.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut out = run_script(&ctl, &endpoint, &big);
        // Leadership to member 0 (a follower), found through all three endpoints,
        // then to the member that leads by then (itself).
        let vars = [("C", ctl.clone()), ("ALL", all), ("TO", to)];
        out.push_str(&common::sh_transcript(
            &[
                "$C --endpoints=$ALL move-leader $TO",
                "$C --endpoints=$ALL move-leader $TO",
            ],
            &vars,
        ));
        out
    })
    .await
    .expect("script");
    drop(members);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiffctl_matches_etcdctl_against_three_skiff_members() {
    if !have("etcdctl") {
        eprintln!("note: etcdctl not installed; comparison skipped");
        return;
    }
    let big = std::env::temp_dir().join(format!("skiffctl-2mb-3m-{}", std::process::id()));
    std::fs::write(&big, vec![b'x'; 2_000_000]).expect("write big value");
    let ctl = skiffctl();
    let with_etcdctl = three_member_run("etcdctl", &big).await;
    let with_skiffctl = three_member_run(ctl.to_str().expect("utf-8 path"), &big).await;
    let _ = std::fs::remove_file(&big);
    check(&with_etcdctl, &with_skiffctl, "skiff-3m", mask_three);
    assert!(
        with_skiffctl.contains("move-leader $TO\nLeadership transferred from "),
        "no leadership transfer:\n{with_skiffctl}"
    );
    assert!(
        with_etcdctl.matches(", started, m").count() >= 3,
        "member list shows three members:\n{with_etcdctl}"
    );
}

/// Compares two section transcripts after [`mask`]; each of `shows` must appear in
/// the masked transcript (the comparison cannot pass on two runs that did nothing).
fn check_section(with_etcdctl: &str, with_skiffctl: &str, label: &str, shows: &[&str]) {
    let (a, b) = (mask(with_etcdctl), mask(with_skiffctl));
    assert_identical(&a, &b, label);
    for s in shows {
        assert!(a.contains(s), "{label}: expected {s:?} in:\n{a}");
    }
    eprintln!("{label}: {} masked lines, identical", a.lines().count());
}

/// The auth section with `ctl` against a fresh member of `kind`.
fn auth_run(kind: Kind, ctl: &str, client: u16) -> String {
    // Every `--user` call is a login: the cheapest bcrypt cost keeps a debug build's
    // password checks fast, and the dial timeout (which bounds the login) gets room
    // on a loaded machine.
    let server = Proc::start_with(kind, "t", client, client + 1, None, &["--bcrypt-cost", "4"]);
    let e = format!(
        "{ctl} --endpoints={} --command-timeout=5s --dial-timeout=10s",
        server.endpoint()
    );
    let vars = [("R", format!("{e} --user root:rootpw")), ("E", e)];
    let out = common::sh_transcript(AUTH_SCRIPT, &vars);
    drop(server);
    out
}

fn compare_auth(kind: Kind, client: u16, label: &str) {
    let ctl = skiffctl();
    let with_etcdctl = auth_run(kind, "etcdctl", client);
    let with_skiffctl = auth_run(kind, ctl.to_str().expect("utf-8 path"), client);
    check_section(
        &with_etcdctl,
        &with_skiffctl,
        label,
        &[
            "$ $E --user alice:apw get k\nk\nkv\n[exit 0]",
            "$ $E --user alice:apw put k v\nError: etcdserver: permission denied\n[exit 1]",
            "$ $E --user alice:wrong get k\nError: etcdserver: authentication failed, invalid user ID or password\n[exit 2]",
            "Authentication Enabled",
            "Authentication Disabled",
            "\tk\n\t[p, q) (prefix p)\n",
            "Password: \n",
        ],
    );
}

#[test]
fn skiffctl_auth_matches_etcdctl_against_skiff() {
    if !have("etcdctl") {
        eprintln!("note: etcdctl not installed; comparison skipped");
        return;
    }
    compare_auth(Kind::Skiff, 29720, "auth-skiff");
}

#[test]
fn skiffctl_auth_matches_etcdctl_against_etcd() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; comparison skipped");
        return;
    }
    compare_auth(Kind::Etcd, 29722, "auth-etcd");
}

/// The TLS section with `ctl` against a fresh member of `kind` serving `https` with
/// client certificates required (certificates in `pki_dir`).
fn tls_run(kind: Kind, ctl: &str, client: u16, pki_dir: &Path) -> String {
    let p = |f: &str| pki_dir.join(f).to_str().expect("utf-8 path").to_string();
    let tls = [
        format!("--cert-file={}", p("server.pem")),
        format!("--key-file={}", p("server.key")),
        format!("--trusted-ca-file={}", p("test-ca.pem")),
        "--client-cert-auth".to_string(),
    ];
    let curl = [
        "--cacert".to_string(),
        p("test-ca.pem"),
        "--cert".to_string(),
        p("client.pem"),
        "--key".to_string(),
        p("client.key"),
    ];
    let extra: Vec<&str> = tls.iter().map(String::as_str).collect();
    let curl: Vec<&str> = curl.iter().map(String::as_str).collect();
    let server = Proc::start_https(kind, "t", client, client + 1, &extra, &curl);
    let flags = "--dial-timeout=1s --command-timeout=3s";
    let vars = [
        (
            "T",
            format!("{ctl} --endpoints=https://127.0.0.1:{client} {flags}"),
        ),
        ("H", format!("{ctl} --endpoints=127.0.0.1:{client} {flags}")),
        ("P", pki_dir.to_str().expect("utf-8 path").to_string()),
    ];
    let out = common::sh_transcript(TLS_SCRIPT, &vars);
    drop(server);
    out
}

fn compare_tls(kind: Kind, client: u16, label: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "test");
    let _rogue = Pki::new(dir.path(), "rogue");
    pki.issue("server", "server");
    pki.issue("client", "client");
    let ctl = skiffctl();
    let with_etcdctl = tls_run(kind, "etcdctl", client, dir.path());
    let with_skiffctl = tls_run(kind, ctl.to_str().expect("utf-8 path"), client, dir.path());
    check_section(
        &with_etcdctl,
        &with_skiffctl,
        label,
        &[
            "--key=$P/client.key get foo\nfoo\nbar\n[exit 0]",
            "https://127.0.0.1:",
            "Error: context deadline exceeded\n[exit 1]",
        ],
    );
    // The writes refused at the handshake never happened.
    assert!(
        with_skiffctl.ends_with("get foo --print-value-only\nbar\n[exit 0]\n"),
        "{label}: a refused put was applied:\n{with_skiffctl}"
    );
}

#[test]
fn skiffctl_tls_matches_etcdctl_against_skiff() {
    if !have("etcdctl") || !have("curl") {
        eprintln!("note: etcdctl/curl not installed; comparison skipped");
        return;
    }
    compare_tls(Kind::Skiff, 29724, "tls-skiff");
}

#[test]
fn skiffctl_tls_matches_etcdctl_against_etcd() {
    if !have("etcd") || !have("etcdctl") || !have("curl") {
        eprintln!("note: etcd/etcdctl/curl not installed; comparison skipped");
        return;
    }
    compare_tls(Kind::Etcd, 29726, "tls-etcd");
}

/// The verbs (with their subcommands) skiffctl's `--help` lists, each run by a script
/// of these comparisons with etcdctl (`skiffctl_*.rs`), and every output format: a verb
/// added to skiffctl without a comparison fails here.
#[test]
fn every_verb_and_output_format_is_compared_with_etcdctl() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(skiffctl())
            .args(args)
            .arg("--help")
            .output()
            .expect("run skiffctl --help");
        String::from_utf8(out.stdout).expect("utf-8 help")
    };
    // `Commands:` sections: `  name  Description`.
    let commands = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect()
    };
    // Script lines: string literals that run the CLI through a `$VAR`.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut scripts = String::new();
    for entry in std::fs::read_dir(&dir).expect("read tests/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("skiffctl_") && name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("read test file");
            for line in text.lines().filter(|l| l.trim_start().starts_with('"')) {
                scripts.push_str(line);
                scripts.push('\n');
            }
        }
    }
    let runs = |verb: &str| {
        Regex::new(&format!(
            r#"\$[A-Z]+ (--?\S+ )*{}( |\\|$|")"#,
            regex::escape(verb)
        ))
        .expect("regex")
        .is_match(&scripts)
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for cmd in commands(&help(&[])) {
        // skiffctl's own (etcdctl 3.4 has none); make-mirror runs as a child process
        // in skiffctl_mirror.rs, its arguments built in code.
        if cmd == "completion" {
            continue;
        }
        if cmd == "make-mirror" {
            let mirror = std::fs::read_to_string(dir.join("skiffctl_mirror.rs")).expect("read");
            assert!(
                mirror.contains("\"make-mirror\""),
                "make-mirror is not compared"
            );
            checked += 1;
            continue;
        }
        let subs = commands(&help(&[cmd.as_str()]));
        if subs.is_empty() {
            checked += 1;
            if !runs(&cmd) {
                missing.push(cmd.clone());
            }
        }
        for sub in subs {
            checked += 1;
            let verb = format!("{cmd} {sub}");
            if !runs(&verb) {
                missing.push(verb);
            }
        }
    }
    for format in ["simple", "json", "table", "fields", "protobuf"] {
        if !Regex::new(&format!(r"(-w |--write-out[= ]){format}\b"))
            .expect("regex")
            .is_match(&scripts)
        {
            missing.push(format!("-w {format}"));
        }
    }
    assert!(
        checked > 40,
        "only {checked} verbs found in skiffctl --help"
    );
    assert!(
        missing.is_empty(),
        "run by no comparison with etcdctl: {missing:?}"
    );
    eprintln!("{checked} verbs and 5 output formats, each compared with etcdctl");
}

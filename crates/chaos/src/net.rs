//! Network namespaces for partitions: one namespace per member, each with a veth pair whose
//! outer end sits on a bridge owned by the run. The harness (in the root namespace) reaches
//! every member through the bridge's address.
//!
//! Addresses are `10.77.<n>.<member+1>/24`, the bridge `10.77.<n>.254`, with `n` derived from
//! the run's base port, so concurrent runs on distinct ports use distinct subnets. Traffic
//! only ever goes to addresses inside these namespaces.
//!
//! Faults: [`Net::isolate`] puts blackhole routes between one member and its peers (clients
//! still reach it: the minority member keeps serving what it can), and [`Net::link_down`]
//! cuts the member's link altogether. [`Net::heal`] undoes both. No iptables or netem.
//!
//! Guarantee: [`Net::teardown`] (also run when the cluster is dropped) deletes every
//! namespace and the bridge; setup first removes leftovers of the same names.

use std::collections::BTreeSet;
use std::process::Command;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("the partition fault needs root to create network namespaces (running as uid {0}); run as root or leave partition out of --faults")]
    NotRoot(u32),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
}

/// The namespaces, veths and bridge of one run.
pub struct Net {
    tag: u16,
    subnet: u8,
    members: usize,
    /// Blackholed (from, to) member pairs.
    cut: BTreeSet<(usize, usize)>,
    down: BTreeSet<usize>,
}

fn run(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| NetError::Command {
            cmd: args.join(" "),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Net {
    /// Creates the bridge and one namespace per member.
    pub fn setup(base_port: u16, members: usize) -> Result<Net, NetError> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(NetError::NotRoot(uid.as_raw()));
        }
        let net = Net {
            tag: base_port,
            subnet: ((base_port % 1000) / 4) as u8,
            members,
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
        };
        net.remove_all();
        let br = net.bridge();
        let br_ip = format!("{}/24", net.ip(253));
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&["ip", "addr", "add", &br_ip, "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 0..members {
            let ns = net.namespace(i);
            let (outer, inner) = (net.outer(i), net.inner(i));
            let addr = format!("{}/24", net.member_ip(i));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &outer, "master", &br])?;
            run(&["ip", "link", "set", &outer, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inner,
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ])?;
        }
        tracing::info!(subnet = %net.ip(0), members, "network namespaces ready");
        Ok(net)
    }

    fn ip(&self, host_minus_one: usize) -> String {
        format!("10.77.{}.{}", self.subnet, host_minus_one + 1)
    }
    pub fn member_ip(&self, i: usize) -> String {
        self.ip(i)
    }
    pub fn namespace(&self, i: usize) -> String {
        format!("skchaos-{}-{i}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("skc{}br", self.tag)
    }
    fn outer(&self, i: usize) -> String {
        format!("skc{}v{i}", self.tag)
    }
    fn inner(&self, i: usize) -> String {
        format!("skc{}p{i}", self.tag)
    }

    fn blackhole(&mut self, from: usize, to: usize) -> Result<(), NetError> {
        if self.cut.insert((from, to)) {
            let dst = format!("{}/32", self.member_ip(to));
            let ns = self.namespace(from);
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "add",
                "blackhole",
                &dst,
            ])?;
        }
        Ok(())
    }

    /// Cuts member `i` off from every other member (both directions); clients still reach it.
    pub fn isolate(&mut self, i: usize) -> Result<(), NetError> {
        for j in (0..self.members).filter(|j| *j != i) {
            self.blackhole(i, j)?;
            self.blackhole(j, i)?;
        }
        tracing::info!(member = i, "isolated from peers");
        Ok(())
    }

    /// Takes member `i`'s link down: no peer and no client reaches it.
    pub fn link_down(&mut self, i: usize) -> Result<(), NetError> {
        if self.down.insert(i) {
            run(&["ip", "link", "set", &self.outer(i), "down"])?;
        }
        tracing::info!(member = i, "link down");
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), NetError> {
        for (from, to) in std::mem::take(&mut self.cut) {
            let dst = format!("{}/32", self.member_ip(to));
            let ns = self.namespace(from);
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "del",
                "blackhole",
                &dst,
            ])?;
        }
        for i in std::mem::take(&mut self.down) {
            run(&["ip", "link", "set", &self.outer(i), "up"])?;
        }
        Ok(())
    }

    pub fn is_cut(&self) -> bool {
        !self.cut.is_empty() || !self.down.is_empty()
    }

    /// Best-effort removal of everything of this tag (leftovers of a crashed run too).
    fn remove_all(&self) {
        for i in 0..self.members {
            let _ = run(&["ip", "netns", "del", &self.namespace(i)]);
            let _ = run(&["ip", "link", "del", &self.outer(i)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }

    /// Deletes the namespaces (their veths go with them) and the bridge.
    pub fn teardown(self) {
        self.remove_all();
        tracing::info!("network namespaces removed");
    }
}

//! A testbed of network namespaces: one "host" per node, each with its own
//! address, joined by a bridge, with faults the kernel really injects.
//!
//! [`Testbed::create`] makes, for a run with `n` nodes:
//!
//! * a bridge in the root namespace with address `10.99.S.254/24`, so the
//!   test process (clients, the nemesis) reaches every node;
//! * `n` namespaces, each with a veth pair: the host side enslaved to the
//!   bridge, the namespace side named `eth0` with address `10.99.S.(i+1)/24`
//!   and loopback up;
//! * in each namespace an nftables table `inet chorus` with an `input` chain
//!   dropping `ip saddr @blocked_in` and an `output` chain dropping
//!   `ip daddr @blocked_out`.
//!
//! Partitions are sets of blocked directed links `(from, to)`: traffic from
//! node `from` to node `to` is dropped on `from`'s way out and on `to`'s way
//! in. [`Testbed::partition`], [`Testbed::isolate`], [`Testbed::bridge`] and
//! [`Testbed::one_way`] add such links; [`Testbed::heal`] removes them all.
//! The test process at `.254` is never blocked: an isolated node still
//! answers its clients, it just cannot reach its peers (as in Jepsen's
//! partition nemeses).
//!
//! Names carry the test process's pid and a per-process run number, and the
//! subnet `S` is the first one from a pid-derived start that no address on
//! the machine uses yet, so parallel runs do not collide. On
//! creation, leftovers of runs whose process is gone (a crashed or killed
//! test) are removed first. [`Drop`] removes everything this testbed made:
//! host-side veths first, then the namespaces (their nft tables and
//! interfaces die with them), then the bridge; processes started inside
//! the namespaces are the caller's to kill first ([`crate::real`]).
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); [`available`] says why
//! not when they are missing.
//!
//! # Delay
//!
//! `tc … netem` is not in every kernel (nor is nftables' `queue`
//! statement), so [`Testbed::delay`] holds packets in user space: in each of
//! the two namespaces, an `iptables` rule sends packets for the other node
//! to NFQUEUE 0 (`--queue-bypass`: they pass untouched while nothing
//! listens), and [`DELAYER`], a Python program with no dependencies beyond
//! the standard library, binds that queue over netlink and accepts each
//! packet a fixed time after it arrived, in arrival order. Needs `iptables`
//! (its xtables `NFQUEUE` target) and `python3`; [`delay_available`] says
//! why not.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// The prefix of every namespace a testbed makes: `chorus-<pid>-<run>-n<i>`.
const NS_PREFIX: &str = "chorus-";

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can host a testbed: `Err` says what is missing
/// (not root, no `ip netns`, no `nft`). A test that needs the testbed
/// prints `SKIPPED: <reason>` and returns when this fails.
pub fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run `id -u`: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("network namespaces need root".into());
    }
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(netns, Ok(s) if s.success()) {
        return Err("`ip netns` does not work (install iproute2)".into());
    }
    let nft = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(nft, Ok(s) if s.success()) {
        return Err("`nft` is missing (install nftables; scripts/deps.sh does)".into());
    }
    Ok(())
}

/// Whether [`Testbed::delay`] can run here (beyond [`available`]).
pub fn delay_available() -> Result<(), String> {
    for (program, package) in [("python3", "python3"), ("iptables", "iptables")] {
        let found = Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(found, Ok(s) if s.success()) {
            return Err(format!("`{program}` is missing (install {package})"));
        }
    }
    Ok(())
}

/// The packet delayer: binds NFQUEUE 0 of its network namespace over
/// netlink (copy mode "meta", fail-open when the queue is full) and
/// accepts every packet `argv[1]` milliseconds after it was queued. Prints
/// `bound` once it listens.
pub const DELAYER: &str = r#"import socket, struct, sys, threading, time, collections
delay = int(sys.argv[1]) / 1000.0
queue = 0
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((0, 0))
def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)
def send(msg, body, flags=1):
    body = struct.pack("!BBH", 0, 0, queue) + body
    s.send(struct.pack("=IHHII", 16 + len(body), (3 << 8) | msg, flags, 0, 0) + body)
send(2, attr(1, struct.pack("!BBH", 1, 0, 0)), 5)
send(2, attr(2, struct.pack("!IB", 0, 1)) + attr(3, struct.pack("!I", 65536))
     + attr(4, struct.pack("!I", 1)) + attr(5, struct.pack("!I", 1)), 5)
held = collections.deque()
ready = threading.Condition()
def release():
    while True:
        with ready:
            while not held:
                ready.wait()
            due, pid = held[0]
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        with ready:
            held.popleft()
        send(1, attr(2, struct.pack("!II", 1, pid)), 1)
threading.Thread(target=release, daemon=True).start()
print("bound", flush=True)
while True:
    try:
        data = s.recv(1 << 20)
    except OSError:
        continue
    off = 0
    while off + 16 <= len(data):
        n, kind = struct.unpack_from("=IH", data, off)
        if n < 16:
            break
        if kind == (3 << 8):
            a = off + 20
            while a + 4 <= off + n:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if atype & 0x7fff == 1:
                    pid = struct.unpack_from("!I", data, a + 4)[0]
                    with ready:
                        held.append((time.monotonic() + delay, pid))
                        ready.notify()
                a += (alen + 3) & ~3
        off += (n + 3) & ~3
"#;

/// Runs a command; fails with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command and ignores whether it worked (cleanup of what may not
/// exist).
fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `nft -f -` inside namespace `ns` with `script` on stdin.
fn nft_in(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Names of one run's links and namespaces.
#[derive(Debug, Clone)]
struct Names {
    pid: u32,
    run: u32,
}

impl Names {
    fn namespace(&self, i: usize) -> String {
        format!("{NS_PREFIX}{}-{}-n{i}", self.pid, self.run)
    }

    /// Interface names are at most 15 bytes: `chb` + pid (≤ 7 digits) +
    /// `r` + run.
    fn bridge(&self) -> String {
        format!("chb{}r{}", self.pid, self.run % 100)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("chv{}r{}n{i}", self.pid, self.run % 100)
    }

    /// The third octet of a subnet for this run, from 1 to 250: the first,
    /// from a start derived from the pid and run, that no address of the
    /// root namespace is in.
    fn free_subnet(&self) -> u8 {
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let start = self.pid.wrapping_mul(31).wrapping_add(self.run);
        (0..250)
            .map(|k| ((start.wrapping_add(k)) % 250 + 1) as u8)
            .find(|s| !used.contains(&format!(" 10.99.{s}.")))
            .unwrap_or(((start % 250) + 1) as u8)
    }
}

/// Namespaces, veths, a bridge and nft tables for `n` nodes; removed on
/// drop. See the [module docs](self).
#[derive(Debug)]
pub struct Testbed {
    names: Names,
    nodes: usize,
    /// The third octet of the run's addresses.
    subnet: u8,
    /// Directed links `(from, to)` whose packets are dropped.
    blocked: BTreeSet<(usize, usize)>,
    /// Delayer processes, by the node whose namespace they run in.
    delayers: Vec<(usize, Child)>,
}

impl Testbed {
    /// Makes a testbed for `nodes` nodes. Fails (having removed what it
    /// made) when a command fails.
    pub fn create(nodes: usize) -> anyhow::Result<Testbed> {
        if nodes == 0 || nodes > 200 {
            bail!("a testbed has 1 to 200 nodes, not {nodes}");
        }
        remove_stale();
        let names = Names {
            pid: std::process::id(),
            run: RUNS.fetch_add(1, Ordering::Relaxed),
        };
        let subnet = names.free_subnet();
        let mut testbed = Testbed {
            names,
            subnet,
            nodes,
            blocked: BTreeSet::new(),
            delayers: Vec::new(),
        };
        testbed.remove_all();
        testbed.build()?;
        Ok(testbed)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let bridge = self.names.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let bridge_addr = format!("{}/24", self.gateway());
        run("ip", &["addr", "add", &bridge_addr, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..self.nodes {
            let ns = self.names.namespace(i);
            let veth = self.names.host_veth(i);
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge])?;
            run("ip", &["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", self.address(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            nft_in(
                &ns,
                "table inet chorus {\n\
                 \tset blocked_in { type ipv4_addr; }\n\
                 \tset blocked_out { type ipv4_addr; }\n\
                 \tchain input { type filter hook input priority 0; policy accept; ip saddr @blocked_in drop; }\n\
                 \tchain output { type filter hook output priority 0; policy accept; ip daddr @blocked_out drop; }\n\
                 }\n",
            )?;
        }
        Ok(())
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The namespace of node `i`, for `ip netns exec`.
    pub fn namespace(&self, i: usize) -> String {
        self.names.namespace(i)
    }

    /// The address of node `i`: `10.99.S.(i+1)`.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.subnet, (i + 1) as u8)
    }

    /// The bridge's address in the root namespace: `10.99.S.254`.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.subnet, 254)
    }

    /// The directed links currently cut.
    pub fn blocked(&self) -> &BTreeSet<(usize, usize)> {
        &self.blocked
    }

    /// Cuts every link between nodes of different `groups` (both ways).
    /// Nodes in no group are each a group of their own.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..self.nodes {
            for b in 0..self.nodes {
                let apart = match (group_of(a), group_of(b)) {
                    (Some(x), Some(y)) => x != y,
                    _ => a != b,
                };
                if apart {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.apply()
    }

    /// Cuts node `i` off from every other node (both ways); the test
    /// process still reaches it.
    pub fn isolate(&mut self, i: usize) -> anyhow::Result<()> {
        for other in (0..self.nodes).filter(|&o| o != i) {
            self.blocked.insert((i, other));
            self.blocked.insert((other, i));
        }
        self.apply()
    }

    /// A bridge partition: `left` and `right` cannot reach each other, and
    /// every other node reaches both sides.
    pub fn bridge(&mut self, left: &[usize], right: &[usize]) -> anyhow::Result<()> {
        for &a in left {
            for &b in right {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
        self.apply()
    }

    /// Drops packets from `from` to `to` only; `to` still reaches `from`.
    pub fn one_way(&mut self, from: usize, to: usize) -> anyhow::Result<()> {
        self.blocked.insert((from, to));
        self.apply()
    }

    /// Delays every packet between nodes `a` and `b` (both ways) by
    /// `delay`; see [Delay](self#delay). Returns once both delayers listen.
    pub fn delay(&mut self, a: usize, b: usize, delay: Duration) -> anyhow::Result<()> {
        let ms = delay.as_millis().to_string();
        for (here, there) in [(a, b), (b, a)] {
            let ns = self.names.namespace(here);
            let mut child = Command::new("ip")
                .args(["netns", "exec", &ns, "python3", "-u", "-c", DELAYER, &ms])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the delayer")?;
            let mut line = String::new();
            let stdout = child.stdout.take().expect("piped stdout");
            std::io::BufReader::new(stdout).read_line(&mut line)?;
            self.delayers.push((here, child));
            if line.trim() != "bound" {
                bail!("the delayer in {ns} did not start: {line:?}");
            }
            let to = self.address(there).to_string();
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-d",
                    &to,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    "0",
                    "--queue-bypass",
                ],
            )?;
        }
        Ok(())
    }

    /// Removes every cut and every delay.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.blocked.clear();
        self.stop_delayers()?;
        self.apply()
    }

    /// Removes the delay rules, then stops the delayers.
    fn stop_delayers(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for (node, mut child) in std::mem::take(&mut self.delayers) {
            let ns = self.names.namespace(node);
            if let Err(error) = run("ip", &["netns", "exec", &ns, "iptables", "-F", "OUTPUT"]) {
                result = Err(error);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        result
    }

    /// Writes the blocked sets of every namespace.
    fn apply(&self) -> anyhow::Result<()> {
        for i in 0..self.nodes {
            let addresses = |set: Vec<usize>| -> String {
                set.iter()
                    .map(|&j| self.address(j).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let outgoing: Vec<usize> = self
                .blocked
                .iter()
                .filter(|(from, _)| *from == i)
                .map(|&(_, to)| to)
                .collect();
            let incoming: Vec<usize> = self
                .blocked
                .iter()
                .filter(|(_, to)| *to == i)
                .map(|&(from, _)| from)
                .collect();
            let mut script = String::from(
                "flush set inet chorus blocked_in\nflush set inet chorus blocked_out\n",
            );
            if !incoming.is_empty() {
                script += &format!(
                    "add element inet chorus blocked_in {{ {} }}\n",
                    addresses(incoming)
                );
            }
            if !outgoing.is_empty() {
                script += &format!(
                    "add element inet chorus blocked_out {{ {} }}\n",
                    addresses(outgoing)
                );
            }
            nft_in(&self.names.namespace(i), &script)?;
        }
        Ok(())
    }

    /// Removes this run's links and namespaces, whatever exists of them.
    fn remove_all(&self) {
        remove_run(&self.names, self.nodes);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.stop_delayers();
        self.remove_all();
    }
}

/// Removes the links and namespaces of run `names` with nodes `0..nodes`:
/// kills what still runs inside, then host-side veths, namespaces, bridge.
fn remove_run(names: &Names, nodes: usize) {
    for i in 0..nodes {
        kill_inside(&names.namespace(i));
    }
    for i in 0..nodes {
        run_quiet("ip", &["link", "del", &names.host_veth(i)]);
    }
    for i in 0..nodes {
        run_quiet("ip", &["netns", "del", &names.namespace(i)]);
    }
    run_quiet("ip", &["link", "del", &names.bridge()]);
}

/// SIGKILLs every process left in namespace `ns` (a crashed run's nodes),
/// so that the namespace really goes away.
fn kill_inside(ns: &str) {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        run_quiet("kill", &["-CONT", pid]);
        run_quiet("kill", &["-KILL", pid]);
    }
}

/// Whether process `pid` exists and is not a zombie (a killed test whose
/// parent has not reaped it yet is gone for our purposes).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// Removes the testbeds of processes that no longer exist.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&output.stdout);
    let mut stale: BTreeSet<(u32, u32, usize)> = BTreeSet::new();
    for line in listing.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('-').collect();
        let [pid, run, node] = parts[..] else {
            continue;
        };
        let (Ok(pid), Ok(run), Some(Ok(node))) = (
            pid.parse::<u32>(),
            run.parse::<u32>(),
            node.strip_prefix('n').map(str::parse::<usize>),
        ) else {
            continue;
        };
        if !process_alive(pid) {
            stale.insert((pid, run, node));
        }
    }
    for (pid, run, node) in stale {
        let names = Names { pid, run };
        kill_inside(&names.namespace(node));
        run_quiet("ip", &["link", "del", &names.host_veth(node)]);
        run_quiet("ip", &["netns", "del", &names.namespace(node)]);
        run_quiet("ip", &["link", "del", &names.bridge()]);
    }
}

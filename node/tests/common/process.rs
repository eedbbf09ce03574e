//! `chorus node start` processes for the end-to-end tests: certificates
//! made with the `chorus cert` commands, and a node process killed (and its
//! log's tail printed, if the test failed) when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::free_udp_port;

/// The `chorus` binary under test.
pub const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");

/// A TCP port free on loopback now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free TCP port")
        .port()
}

/// Runs `chorus ARGS` and checks it succeeded.
pub fn run_chorus(args: &[&str]) {
    let status = Command::new(CHORUS)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run chorus");
    assert!(status.success(), "chorus {args:?} failed");
}

/// One node process; killed when dropped.
pub struct NodeProcess {
    pub name: String,
    pub dir: PathBuf,
    pub tls: PathBuf,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub child: Option<Child>,
}

impl NodeProcess {
    pub fn new(root: &Path, name: &str, tls: PathBuf, seeds: Vec<SocketAddr>) -> NodeProcess {
        NodeProcess {
            name: name.to_string(),
            dir: root.join(name),
            tls,
            quic: SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            http: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            seeds,
            child: None,
        }
    }

    pub fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("node dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("log file");
        let seeds: Vec<String> = self.seeds.iter().map(ToString::to_string).collect();
        let mut command = Command::new(CHORUS);
        command
            .env("RUST_LOG", "info")
            .args(["node", "start", "--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--quic-listen", &self.quic.to_string()])
            .args(["--http-listen", &self.http.to_string()])
            .args(["--replicas", "3", "--initial-members", "3"])
            // Two shard threads whatever the machine's cores: the kills
            // and faults of these tests land on a node whose shards run
            // side by side.
            .args(["--shards", "2"])
            .arg("--tls-ca")
            .arg(self.tls.join("ca.pem"))
            .arg("--tls-cert")
            .arg(self.tls.join("node.pem"))
            .arg("--tls-key")
            .arg(self.tls.join("node.key"))
            .stdout(Stdio::null())
            .stderr(log);
        if !seeds.is_empty() {
            command.args(["--seed", &seeds.join(",")]);
        }
        self.child = Some(command.spawn().expect("start a node"));
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of {} ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A cluster CA under `root/ca` and a node certificate for each of `names`
/// (in `root/<name>-tls`), made by `chorus cert`; returns the certificate
/// directories in order.
pub fn node_certificates(root: &Path, names: &[&str]) -> Vec<PathBuf> {
    let ca = root.join("ca");
    run_chorus(&["cert", "ca", "--dir", ca.to_str().unwrap()]);
    names
        .iter()
        .map(|name| {
            let out = root.join(format!("{name}-tls"));
            run_chorus(&[
                "cert",
                "node",
                "--ca-dir",
                ca.to_str().unwrap(),
                "--name",
                name,
                "--out",
                out.to_str().unwrap(),
            ]);
            out
        })
        .collect()
}

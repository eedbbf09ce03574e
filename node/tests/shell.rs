//! `chorus shell` and the one-shot commands, as a user runs them: the
//! `chorus` binary as a child process against a 3-node cluster in this
//! process. Scripts (`-f`) are compared with their exact output
//! (timestamps, ids, addresses and generations masked); completion and
//! history go through a pseudo-terminal; the one-shot commands' exit codes
//! are checked one by one, the last with a node stopped.

// Tests of real processes: they bind ports, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use chorus_node::api::BearerToken;
use chorus_node::runtime::{self, RunningNode};
use chorus_node::transport::tls::ClusterCa;
use expectrl::Session;

const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");

async fn start_cluster(dir: &Path, ca: &ClusterCa, token: Option<&str>) -> Vec<RunningNode> {
    common::start_nodes(dir, ca, 3, |_, options| {
        options.http = runtime::HttpOptions {
            token: token.map(|t| BearerToken::new(t).expect("a valid token")),
            ..Default::default()
        };
    })
    .await
}

/// A cluster on its own runtime, for one test; its nodes are shut down
/// when it is dropped. (A cluster kept for the life of the test process
/// would still run RocksDB's background threads while the process exits
/// and its static destructors run, which can abort the process.)
struct Cluster {
    runtime: tokio::runtime::Runtime,
    nodes: Vec<RunningNode>,
    ca: ClusterCa,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes; with `token`, every request must carry it.
    fn start(token: Option<&str>) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let ca = ClusterCa::generate("shell").expect("a CA");
        let nodes = runtime.block_on(async {
            let nodes = start_cluster(dir.path(), &ca, token).await;
            // STATUS output is compared: wait until node1 sees every
            // member up (readiness comes before the last join settles).
            let mut client =
                chorus_client::Client::builder().endpoint(format!("http://{}", nodes[0].http_addr));
            if let Some(token) = token {
                client = client.bearer_token(token);
            }
            let client = client.build().expect("a client");
            for _ in 0..600 {
                let status = client.status().await.expect("a status");
                let settled = status.members.len() == 3
                    && status
                        .members
                        .iter()
                        .all(|m| m.status == "up" && m.liveness == "up");
                if settled {
                    return nodes;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("node1 never saw all three members up");
        });
        Cluster {
            runtime,
            nodes,
            ca,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.nodes[0].http_addr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        self.runtime.block_on(async {
            for node in nodes {
                node.shutdown().await;
            }
        });
    }
}

/// A cluster without a token, for the script and terminal tests.
fn shared() -> Cluster {
    Cluster::start(None)
}

fn chorus(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(CHORUS)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chorus runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.unwrap_or_default()).expect("stdin");
    drop(input);
    child.wait_with_output().expect("chorus ends")
}

/// Timestamps, ids, addresses and generations replaced by placeholders.
fn mask(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\+\d+", "<time>"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<id>",
        ),
        (r"127\.0\.0\.1:\d+", "<addr>"),
        (r"\b\d{13}\b", "<generation>"),
        (r#""context":"[A-Za-z0-9_-]+""#, r#""context":"<context>""#),
        (r"\b\d+\.\d%", "<pct>"),
        (r"hash [0-9a-f]{16}", "hash <hash>"),
        // Partition counts in the ring table depend on the random ids.
        (r"\b\d+( +<pct>)", "<n>$1"),
    ];
    let mut text = text.to_string();
    for (pattern, with) in rules {
        text = regex::Regex::new(pattern)
            .expect("a valid pattern")
            .replace_all(&text, with)
            .into_owned();
    }
    // Column widths follow the masked cells' original widths.
    regex::Regex::new(r"(\S) {2,}")
        .expect("a valid pattern")
        .replace_all(&text, "$1  ")
        .into_owned()
}

fn script(cluster: &Cluster, name: &str, text: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("the script is written");
    let url = cluster.url();
    let mut args = vec!["shell", "--url", &url, "-f", path.to_str().expect("UTF-8")];
    args.extend(extra);
    chorus(&args, None)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_script_puts_reads_makes_siblings_and_resolves_them() {
    let cluster = shared();
    let output = script(
        &cluster,
        "tour.chorus",
        "\
use tour
PUT ada hello
GET ada
# A second blind write: the two are siblings.
PUT ada 'hello again'; get ada
RESOLVE ada 2
GET tour/ada
PUT ada left; PUT ada right
RESOLVE ada \"both, merged\" r=all
GET ada
DEL ada; GET ada
PUT typed '{\"a\":1}' type=application/json; GET typed
PUT typed plain type=text/plain; GET typed
",
        &[],
    );
    assert_eq!(stderr(&output), "");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        mask(&stdout(&output)),
        "\
OK
hello
  (timestamp <time>, content-type application/octet-stream)
OK
2 siblings (RESOLVE ada N keeps one, RESOLVE ada VALUE replaces them):
  1) hello
     (timestamp <time>, content-type application/octet-stream)
  2) hello again
     (timestamp <time>, content-type application/octet-stream)
OK
hello again
  (timestamp <time>, content-type application/octet-stream)
OK
OK
OK
both, merged
  (timestamp <time>, content-type application/octet-stream)
deleted
(not found)
OK
{\"a\":1}
  (timestamp <time>, content-type application/json)
OK
2 siblings (RESOLVE typed N keeps one, RESOLVE typed VALUE replaces them):
  1) {\"a\":1}
     (timestamp <time>, content-type application/json)
  2) plain
     (timestamp <time>, content-type text/plain)
"
    );
}

#[test]
fn a_script_prints_json_and_raw_output() {
    let cluster = shared();
    let output = script(
        &cluster,
        "json.chorus",
        "PUT out/k v1; GET out/k; DEL out/k; GET out/k",
        &["--output", "json"],
    );
    assert_eq!(stderr(&output), "");
    assert_eq!(
        mask(&stdout(&output)),
        r#"{"bucket":"out","context":"<context>","key":"k"}
{"bucket":"out","context":"<context>","found":true,"key":"k","siblings":[{"content_type":"application/octet-stream","timestamp":"<time>","value":"djE="}]}
{"bucket":"out","context":"<context>","deleted":true,"key":"k"}
{"bucket":"out","context":"<context>","found":false,"key":"k","siblings":[]}
"#
    );
    let raw = script(
        &cluster,
        "raw.chorus",
        "PUT out/r 'raw bytes'; GET out/r",
        &["-o", "raw"],
    );
    assert_eq!(stdout(&raw), "raw bytes");
}

#[test]
fn a_script_shows_status_ring_and_consistency() {
    let cluster = shared();
    let output = script(
        &cluster,
        "status.chorus",
        "CONSISTENCY\nCONSISTENCY w=all timeout=500\nconsistency one\nSTATUS\nRING\n",
        &[],
    );
    assert_eq!(stderr(&output), "");
    assert_eq!(
        mask(&stdout(&output)),
        "\
r=quorum w=quorum pr=0 pw=0 timeout=10000 sync=false sloppy=true
r=quorum w=all pr=0 pw=0 timeout=500 sync=false sloppy=true
r=one w=one pr=0 pw=0 timeout=500 sync=false sloppy=true
NAME  ID  HTTP  QUIC  STATUS  GENERATION  LIVENESS  OWNS
node1*  <id>  <addr>  <addr>  up  <generation>  up  <pct>
node2  <id>  <addr>  <addr>  up  <generation>  up  <pct>
node3  <id>  <addr>  <addr>  up  <generation>  up  <pct>
(* = the node answering: node1. STATUS: what each member published,
 joining, up, leaving or left; LIVENESS: what node1's failure detector sees)
ring version 1, hash <hash>, N=3, 256 partitions
NAME  ID  ZONE  WEIGHT  OWNER OF  OWNS  PRIMARY OF  EFFECTIVE
node1  <id>  -  100  <n>  <pct>  <n>  <pct>
node2  <id>  -  100  <n>  <pct>  <n>  <pct>
node3  <id>  -  100  <n>  <pct>  <n>  <pct>
"
    );
}

#[test]
fn a_script_stops_at_the_first_error_with_its_code_unless_told_to_keep_going() {
    let cluster = shared();
    let text = "USE errs; PUT k v w=most; PUT k v w=5; GET nobucket\nGET k";
    let output = script(&cluster, "errors.chorus", text, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        "line 1: error: invalid_quorum: w=\"most\" is neither a whole number nor one of one, quorum, all\n"
    );
    let output = script(&cluster, "errors.chorus", text, &["--keep-going"]);
    assert_eq!(output.status.code(), Some(2), "the first failure's code");
    assert_eq!(
        stderr(&output),
        "\
line 1: error: invalid_quorum: w=\"most\" is neither a whole number nor one of one, quorum, all
line 1: error: quorum_above_n: w=5 exceeds the 3 replicas of the key
"
    );
    assert_eq!(stdout(&output), "(not found)\n(not found)\n");
}

/// A script from a file or standard input names the line of each error
/// (the line its statement starts on); the rest of the message and the
/// exit code are those of any error. These fail before sending anything,
/// so no node is needed.
#[test]
fn a_script_names_the_line_of_an_error() {
    let nowhere = "http://127.0.0.1:9";
    let text = "USE a\n\n# a comment\nCONSISTENCY w=most\nNOPE 1; GET 'x\n\n";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("lines.chorus");
    std::fs::write(&path, text).expect("the script is written");
    let path = path.to_str().expect("UTF-8");
    let quorum =
        "error: invalid_quorum: w=\"most\" is neither a whole number nor one of one, quorum, all";
    for (args, stdin) in [
        (vec!["shell", "--url", nowhere, "-f", path], None),
        (
            vec!["shell", "--url", nowhere, "-f", "-"],
            Some(text.as_bytes()),
        ),
        (vec!["shell", "--url", nowhere], Some(text.as_bytes())),
    ] {
        // An unterminated quote stops the script before it runs, on the
        // line the quote opens on.
        let output = chorus(&args, stdin);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&output),
            "line 5: error: syntax: unterminated 'quote'\n",
            "{args:?}"
        );
    }
    let text = text.replace("'x", "x");
    std::fs::write(path, &text).expect("the script is written");
    let output = chorus(
        &["shell", "--url", nowhere, "-f", path, "--keep-going"],
        None,
    );
    assert_eq!(output.status.code(), Some(2), "the first failure's code");
    let errors = stderr(&output);
    let errors: Vec<&str> = errors.lines().collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0], format!("line 4: {quorum}"));
    assert_eq!(
        errors[1],
        "line 5: error: syntax: unknown command \"NOPE\" (HELP lists the commands)"
    );
    assert!(
        errors[2].starts_with("line 5: error: transport: "),
        "{}",
        errors[2]
    );
    // With -e the commands are one line: no number.
    let output = chorus(
        &["shell", "--url", nowhere, "-e", "CONSISTENCY w=most"],
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output), format!("{quorum}\n"));
}

/// `HELP NOPE` fails as `NOPE` does, with the same code and exit code.
#[test]
fn help_for_a_command_that_does_not_exist_fails_as_that_command() {
    let nowhere = "http://127.0.0.1:9";
    let unknown = chorus(&["shell", "--url", nowhere, "-e", "NOPE"], None);
    let help = chorus(&["shell", "--url", nowhere, "-e", "HELP NOPE"], None);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(help.status.code(), Some(2));
    assert_eq!(stdout(&help), "");
    assert_eq!(
        stderr(&help),
        "error: syntax: unknown command \"NOPE\" (HELP lists the commands)\n"
    );
    assert_eq!(stderr(&help), stderr(&unknown));
    let known = chorus(&["shell", "--url", nowhere, "-e", "HELP get"], None);
    assert_eq!(known.status.code(), Some(0));
    assert!(
        stdout(&known).starts_with("GET [BUCKET/]KEY"),
        "{}",
        stdout(&known)
    );
}

fn terminal(data_home: &Path, url: &str) -> Session {
    let mut command = Command::new(CHORUS);
    command
        .args(["shell", "--url", url])
        .env("XDG_DATA_HOME", data_home)
        .env("HOME", data_home)
        .env("TERM", "xterm");
    let mut session = Session::spawn(command).expect("chorus shell in a terminal");
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session.expect("chorus> ").expect("a prompt");
    session
}

#[test]
fn tab_completes_commands_and_buckets_in_a_terminal() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let cluster = shared();
    let mut shell = terminal(home.path(), &cluster.url());
    shell.send("CONS\t").unwrap();
    shell.expect("CONSISTENCY").expect("CONS<TAB> completes");
    shell.send("\r").unwrap();
    shell
        .expect("r=quorum w=quorum")
        .expect("the completed command runs");
    shell.expect("chorus> ").unwrap();
    shell.send_line("USE completion_bucket").unwrap();
    shell.expect("chorus:completion_bucket> ").unwrap();
    shell.send("GET compl\t").unwrap();
    shell
        .expect("completion_bucket/")
        .expect("a bucket seen completes");
    shell.send("k\r").unwrap();
    shell.expect("(not found)").unwrap();
    shell.expect("chorus:completion_bucket> ").unwrap();
    shell.send_line("EXIT").unwrap();
    shell.expect(expectrl::Eof).unwrap();
}

/// Lines that reach the terminal together (pasted, or typed while a
/// command runs) all run, in order: the line editor keeps what it read
/// past the first line for the next one.
#[test]
fn lines_that_arrive_together_all_run_in_a_terminal() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let cluster = shared();
    let mut shell = terminal(home.path(), &cluster.url());
    shell
        .send("PUT typeahead/a first\rPUT typeahead/b second\rGET typeahead/a\rGET typeahead/b\r")
        .unwrap();
    shell.expect("\nfirst").expect("the third line runs");
    shell.expect("\nsecond").expect("and the fourth");
    shell.expect("chorus> ").unwrap();
    shell.send_line("EXIT").unwrap();
    shell.expect(expectrl::Eof).unwrap();
}

#[test]
fn history_is_recalled_after_a_restart() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let cluster = shared();
    let mut first = terminal(home.path(), &cluster.url());
    first.send_line("PUT history/k remembered").unwrap();
    first.expect("OK").unwrap();
    first.expect("chorus> ").unwrap();
    first.send_line("GET history/k").unwrap();
    first.expect("\nremembered").unwrap();
    first.expect("chorus> ").unwrap();
    // Ctrl-D leaves, so the GET is the last line of the history.
    first.send([4u8]).unwrap();
    first.expect(expectrl::Eof).unwrap();
    assert!(home.path().join("chorus/history").exists());

    let mut second = terminal(home.path(), &cluster.url());
    // Up arrow, then Enter: the previous session's last command again.
    second.send("\x1b[A").unwrap();
    second.expect("GET history/k").expect("Up recalls it");
    second.send("\r").unwrap();
    second.expect("\nremembered").expect("and it runs");
    second.expect("chorus> ").unwrap();
    second.send_line("QUIT").unwrap();
    second.expect(expectrl::Eof).unwrap();
}

/// `.` and `..` would be dropped from the request's URL (dot segments):
/// refused before anything is sent, so no node is needed.
#[test]
fn dot_segment_names_are_refused_before_sending() {
    let nowhere = "http://127.0.0.1:9";
    for args in [
        &["get", "b", ".", "--url", nowhere][..],
        &["put", "b", "..", "v", "--url", nowhere],
        &["del", "..", "k", "--url", nowhere],
        &["shell", "--url", nowhere, "-e", "USE ."],
    ] {
        let output = chorus(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let error = stderr(&output);
        assert!(
            error.starts_with("error: invalid_key: invalid ") && error.contains("dot segment"),
            "{args:?}: {error}"
        );
    }
}

#[test]
fn one_shot_commands_exit_with_documented_codes() {
    // Its own cluster, which asks for a bearer token: a node is stopped at
    // the end.
    let mut cluster = Cluster::start(Some("s3cret"));
    let url = cluster.url();
    let code = |args: &[&str], stdin: Option<&[u8]>| {
        let mut all = args.to_vec();
        all.extend(["--url", &url, "--token", "s3cret"]);
        let output = chorus(&all, stdin);
        (output.status.code(), stdout(&output), stderr(&output))
    };

    // 0: written, found; the value from standard input.
    assert_eq!(code(&["put", "b", "k", "v1"], None).0, Some(0));
    assert_eq!(
        code(&["put", "b", "s", "-"], Some(b"from stdin")).0,
        Some(0)
    );
    assert_eq!(
        code(&["get", "b", "s", "-o", "raw"], None),
        (Some(0), "from stdin".into(), String::new())
    );
    assert_eq!(code(&["admin", "status"], None).0, Some(0));
    let (exit, preflist, _) = code(&["admin", "preflist", "b", "k"], None);
    assert_eq!(exit, Some(0));
    let primary_up = regex::Regex::new(r"^primary +node[123] +\S+ +127\.0\.0\.1:\d+ +up +-$")
        .expect("a valid pattern");
    let lines: Vec<&str> = preflist.lines().collect();
    assert!(lines[0].starts_with("b/k: hash "), "{preflist}");
    assert_eq!(lines.len(), 5, "{preflist}");
    assert!(
        lines[2..].iter().all(|l| primary_up.is_match(l)),
        "{preflist}"
    );
    // 1: not found, and nothing to delete.
    assert_eq!(code(&["get", "b", "absent"], None).0, Some(1));
    assert_eq!(code(&["del", "b", "absent"], None).0, Some(1));
    assert_eq!(code(&["del", "b", "k"], None).0, Some(0));
    // 2: usage, on the command line or in an option.
    assert_eq!(code(&["get", "b"], None).0, Some(2));
    let (exit, _, error) = code(&["get", "b", "k", "-c", "r=many"], None);
    assert_eq!(exit, Some(2));
    assert!(error.starts_with("error: invalid_quorum: "), "{error}");
    // A value on standard input past the limit is refused without
    // claiming a size it never read.
    let max = chorus_client::limits::DEFAULT_MAX_VALUE_BYTES;
    let too_large = vec![b'x'; max + 1];
    let (exit, _, error) = code(&["put", "b", "big", "-"], Some(&too_large));
    assert_eq!(
        (exit, error),
        (
            Some(2),
            format!("error: value_too_large: the value on standard input is more than {max} bytes, the limit\n")
        )
    );
    // 4: another server error (w above N), or no answer at all.
    let (exit, _, error) = code(&["put", "b", "k", "v", "-c", "w=4"], None);
    assert_eq!(
        (exit, error.as_str()),
        (
            Some(4),
            "error: quorum_above_n: w=4 exceeds the 3 replicas of the key\n"
        )
    );
    let no_token = chorus(&["get", "b", "s", "--url", &url], None);
    assert_eq!(no_token.status.code(), Some(4));
    assert!(
        stderr(&no_token).starts_with("error: unauthorized: "),
        "{}",
        stderr(&no_token)
    );
    let from_env = Command::new(CHORUS)
        .args(["get", "b", "s", "-o", "raw", "--url", &url])
        .env("CHORUS_HTTP_TOKEN", "s3cret")
        .output()
        .expect("chorus runs");
    assert_eq!(String::from_utf8_lossy(&from_env.stdout), "from stdin");
    let unreachable = chorus(&["get", "b", "k", "--url", "http://127.0.0.1:9"], None);
    assert_eq!(unreachable.status.code(), Some(4));
    assert!(stderr(&unreachable).starts_with("error: transport: "));

    // 3: with a node stopped and seen down by node1, a strict w=all
    // cannot be met: quorum_not_reached (503).
    let stopped = cluster.nodes.pop().expect("three nodes");
    let stopped_id = stopped.id.to_string();
    cluster.runtime.block_on(stopped.shutdown());
    let seen_down = (0..600).any(|_| {
        let (_, status, _) = code(&["admin", "status", "-o", "json"], None);
        let status: serde_json::Value = serde_json::from_str(&status).expect("JSON status");
        let members = status["members"].as_array().expect("members");
        let down = members
            .iter()
            .any(|m| m["id"] == stopped_id.as_str() && m["liveness"] != "up");
        if !down {
            std::thread::sleep(Duration::from_millis(100));
        }
        down
    });
    assert!(seen_down, "node1 never saw the stopped node down");
    let (_, preflist, _) = code(&["admin", "preflist", "b", "k"], None);
    let down: Vec<&str> = preflist.lines().filter(|l| l.contains(" down ")).collect();
    assert_eq!(down.len(), 1, "{preflist}");
    assert!(down[0].contains(&stopped_id), "{preflist}");
    let (exit, _, error) = code(&["put", "b", "k", "v", "-c", "w=all sloppy=false"], None);
    assert_eq!(exit, Some(3), "{error}");
    // Out of reach of the two nodes up, so refused before either applied it.
    assert_eq!(
        error,
        "error: quorum_not_reached: 0 of 3 replicas answered (w=3)\n"
    );
}

#[test]
fn chorus_dev_opens_the_shell_in_a_terminal_and_exit_stops_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut dev, http_port) = spawn_dev(dir.path(), 1);
    dev.expect(format!("shell attached to node1 (http://127.0.0.1:{http_port})").as_str())
        .expect("the shell is attached");
    dev.expect("chorus> ").expect("a prompt");
    dev.send_line("PUT dev/k attached").unwrap();
    dev.expect("OK").unwrap();
    dev.expect("chorus> ").unwrap();
    dev.send_line("EXIT").unwrap();
    dev.expect("shutting down").expect("EXIT stops the cluster");
    dev.expect(expectrl::Eof).unwrap();
}

/// A first port of `count` consecutive ports free on loopback now, for
/// TCP (`udp` false) or UDP.
fn free_port_run(count: u16, udp: bool) -> u16 {
    let free = |port: u16| {
        if udp {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        } else {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        }
    };
    for _ in 0..100 {
        let first = if udp {
            common::free_udp_port()
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free TCP port")
                .port()
        };
        if first.checked_add(count).is_some() && (1..count).all(|i| free(first + i)) {
            return first;
        }
    }
    panic!("no run of {count} free ports");
}

/// `chorus dev --nodes NODES` in a terminal, on free ports, with its data
/// and shell history under `dir`; also returns node1's HTTP port.
fn spawn_dev(dir: &Path, nodes: u16) -> (Session, String) {
    let http_port = free_port_run(nodes, false).to_string();
    let quic_port = free_port_run(nodes, true).to_string();
    let mut command = Command::new(CHORUS);
    command
        .args([
            "dev",
            "--nodes",
            &nodes.to_string(),
            "--http-port",
            &http_port,
        ])
        .args(["--quic-port", &quic_port, "--data-dir"])
        .arg(dir.join("data"))
        .env("XDG_DATA_HOME", dir)
        .env("HOME", dir)
        .env("TERM", "xterm");
    let mut dev = Session::spawn(command).expect("chorus dev in a terminal");
    dev.set_expect_timeout(Some(Duration::from_secs(60)));
    (dev, http_port)
}

/// "cluster ready" means what the README's tour shows next: every member
/// `up`, as it published and as node1's failure detector sees it — not
/// `joining`, as a node just past its first ring still says for a moment.
#[test]
fn chorus_dev_is_ready_once_every_member_is_up() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut dev, _) = spawn_dev(dir.path(), 3);
    dev.expect("cluster ready: 3 nodes")
        .expect("the cluster forms");
    dev.expect("chorus> ").expect("a prompt");
    dev.send_line("STATUS").unwrap();
    let shown = dev.expect("chorus> ").expect("the status and a prompt");
    let shown = String::from_utf8_lossy(shown.before()).into_owned();
    let members: Vec<&str> = shown
        .lines()
        .filter(|line| line.starts_with("node"))
        .collect();
    assert_eq!(members.len(), 3, "{shown}");
    for member in members {
        let columns: Vec<&str> = member.split_whitespace().collect();
        // NAME ID HTTP QUIC STATUS GENERATION LIVENESS OWNS
        assert_eq!(columns.len(), 8, "{member}");
        assert_eq!((columns[4], columns[6]), ("up", "up"), "{shown}");
    }
    dev.send_line("EXIT").unwrap();
    dev.expect("shutting down").expect("EXIT stops the cluster");
    dev.expect(expectrl::Eof).unwrap();
}

/// SIGTERM while `chorus dev` is still starting its nodes (after the
/// first is up, before "cluster ready") stops the nodes started so far
/// cleanly: the process exits 0 instead of dying by the signal, and the
/// next start in the same directory finds no sign of an unclean stop.
#[test]
fn sigterm_before_the_cluster_is_ready_stops_chorus_dev_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = |terminate_after: &str| -> (std::process::ExitStatus, String, String) {
        let mut dev = Command::new(CHORUS)
            .args(["dev", "--nodes", "3", "--http-port"])
            .arg(free_port_run(3, false).to_string())
            .arg("--quic-port")
            .arg(free_port_run(3, true).to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chorus dev");
        let mut stdout = BufReader::new(dev.stdout.take().expect("its output"));
        let mut shown = String::new();
        while !shown.lines().any(|line| line.starts_with(terminate_after)) {
            let read = stdout.read_line(&mut shown).expect("chorus dev's output");
            assert_ne!(read, 0, "chorus dev ended early: {shown}");
        }
        let kill = Command::new("kill")
            .args(["-TERM", &dev.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest of its output");
        shown.push_str(&rest);
        let output = dev.wait_with_output().expect("chorus dev ends");
        (
            output.status,
            shown,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (status, shown, errors) = run("node1 ");
    assert!(
        !shown.contains("cluster ready"),
        "the signal came after the cluster was ready, which this test is not about: {shown}"
    );
    assert_eq!(status.code(), Some(0), "{status}; {shown}; {errors}");
    assert!(errors.contains("shutting down"), "{errors}");

    let (status, shown, errors) = run("cluster ready");
    assert_eq!(status.code(), Some(0), "{status}; {shown}; {errors}");
    assert!(
        !errors.contains("did not stop cleanly"),
        "the stop before the cluster was ready was not clean: {errors}"
    );
}

#[test]
fn one_shot_commands_speak_quic_with_a_client_certificate() {
    let cluster = shared();
    let dir = tempfile::tempdir().unwrap();
    let write = |ca: &ClusterCa, name: &str| {
        let identity = ca.issue_client(name).expect("a client certificate");
        let files = dir.path().join(name);
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("ca.pem"), identity.ca_pem).unwrap();
        std::fs::write(files.join("client.pem"), identity.cert_pem).unwrap();
        std::fs::write(files.join("client.key"), identity.key_pem).unwrap();
        files
    };
    let quic = cluster.nodes[0].quic_addr.to_string();
    let flags = |files: &Path| {
        let path = |file: &str| files.join(file).display().to_string();
        vec![
            "--quic".to_owned(),
            quic.clone(),
            "--tls-ca".to_owned(),
            path("ca.pem"),
            "--tls-cert".to_owned(),
            path("client.pem"),
            "--tls-key".to_owned(),
            path("client.key"),
        ]
    };
    let ours = flags(&write(&cluster.ca, "alice"));
    let with = |args: &[&str], flags: &[String]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        chorus(&all, None)
    };
    let put = with(&["put", "quic", "k", "over quic"], &ours);
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let get = with(&["get", "quic", "k", "-o", "raw"], &ours);
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    assert_eq!(stdout(&get), "over quic");
    let missing = with(&["get", "quic", "nothing"], &ours);
    assert_eq!(missing.status.code(), Some(1));

    // A certificate from another CA is refused: no answer, exit 4.
    let other = ClusterCa::generate("other").expect("a CA");
    let theirs = flags(&write(&other, "mallory"));
    let refused = with(&["get", "quic", "k"], &theirs);
    assert_eq!(refused.status.code(), Some(4), "{}", stdout(&refused));
    let said = stderr(&refused);
    assert!(said.contains("transport"), "{said}");
    assert!(said.contains("TLS handshake failed"), "{said}");
    // A read never "may have applied", and a refused handshake sent nothing.
    assert!(!said.contains("may have applied"), "{said}");
    let refused = with(&["put", "quic", "k", "v"], &theirs);
    assert!(
        !stderr(&refused).contains("may have applied"),
        "{}",
        stderr(&refused)
    );

    // A key that does not belong to the certificate is named as such.
    let mut mixed = ours.clone();
    let last = mixed.len() - 1;
    mixed[last] = theirs[theirs.len() - 1].clone();
    let mismatch = with(&["get", "quic", "k"], &mixed);
    assert_eq!(mismatch.status.code(), Some(2));
    assert!(
        stderr(&mismatch).contains("does not belong to the client certificate"),
        "{}",
        stderr(&mismatch)
    );

    // --quic without its certificate files is a usage error.
    let usage = chorus(&["get", "quic", "k", "--quic", &quic], None);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn bench_refuses_what_cannot_work_before_running_and_fails_when_nothing_succeeded() {
    let refused = [
        (
            vec!["--target", "http://127.0.0.1:1", "--duration", "1s"],
            "did not answer a first read",
        ),
        (vec!["--target", "https://127.0.0.1:1"], "plain HTTP"),
        (vec!["--target", "etcd+ftp://127.0.0.1:1"], "--target must"),
        (vec!["--records", "0"], "--records"),
        (vec!["--concurrency", "0"], "--concurrency"),
        (vec!["--value-size", "1..100000000"], "at most"),
        (vec!["--duration", "0s"], "--duration must be positive"),
        (vec!["--target", "store:"], "names a directory"),
        (
            vec!["--target", "store:x", "--target", "http://127.0.0.1:1"],
            "only --target",
        ),
    ];
    for (args, message) in refused {
        let output = chorus(&[&["bench"], args.as_slice()].concat(), None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} ran");
    }

    // The node's storage engine alone, in a node's data directory layout;
    // options that need a node are noted, not applied.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let target = format!("store:{}", dir.path().display());
    let args = [
        "bench",
        "--target",
        &target,
        "--workload",
        "write",
        "--records",
        "20",
        "--operations",
        "200",
        "--write",
        "w=all,sync=true",
        "--json",
    ];
    let output = chorus(&args, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    assert!(stderr(&output).contains("note: "), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["driver"], "store");
    assert_eq!(report["run"]["ops"]["update"]["ok"], 200);
    assert_eq!(report["run"]["errors"], 0);
    assert!(dir.path().join("db").is_dir());

    // Reachable, but every write is refused (w above N): the report is
    // printed and the exit says so.
    let cluster = shared();
    let url = cluster.url();
    let args = [
        "bench",
        "--target",
        &url,
        "--workload",
        "write",
        "--write",
        "w=9",
        "--no-load",
        "--operations",
        "20",
    ];
    let output = chorus(&args, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("quorum_above_n x20"), "{stdout}");
    assert!(
        stderr.contains("every operation of the run phase failed"),
        "{stderr}"
    );

    // When the load phase fails throughout, the run does not start.
    let args = [
        "bench",
        "--target",
        &url,
        "--write",
        "w=9",
        "--records",
        "10",
        "--duration",
        "30s",
    ];
    let started = std::time::Instant::now();
    let output = chorus(&args, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("every operation of the load phase failed"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the 30 s run ran"
    );
}

/// `--shards` or `--io-threads` outside 1..=256, `--object-cache-mib`
/// outside 0..=65536, or not a number, is a usage error (exit 2) that
/// names the flag, before anything starts.
#[test]
fn node_start_refuses_a_thread_count_out_of_range_as_usage() {
    for (flag, values) in [
        ("--shards", &["0", "257", "two"][..]),
        ("--io-threads", &["0", "257", "two"][..]),
        ("--object-cache-mib", &["65537", "1.5", "two"][..]),
    ] {
        for &value in values {
            let output = chorus(&["node", "start", flag, value], None);
            assert_eq!(output.status.code(), Some(2), "{flag} {value}");
            let text = stderr(&output);
            assert!(
                text.contains(&format!("invalid value '{value}' for '{flag}")),
                "{text}"
            );
        }
    }
}

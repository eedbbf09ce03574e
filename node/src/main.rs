//! The `chorus` binary.

// The binary is the impure edge: it starts nodes, waits for them and reads
// the clock, which the workspace's clippy.toml refuses in the library's core.
#![allow(clippy::disallowed_methods)]

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use chorus_client::shell::ClientCommand;
use chorus_node::bench_store::StoreDriver;
use chorus_node::config::HttpSection;
use chorus_node::config::{NodeFile, TlsPaths};
use chorus_node::runtime::{self, NodeOptions, RunningNode};
use chorus_node::transport::tls::{
    generate_context_key, read_context_key, write_context_key, ClusterCa, NodeIdentity, CA_FILE,
    CLIENT_CERT_FILE, CLIENT_KEY_FILE, CONTEXT_KEY_FILE,
};
use clap::{Parser, Subcommand, ValueEnum};

/// Rust allocations go to mimalloc rather than glibc's malloc, which took a
/// fifth of a node's CPU time under load (docs/benchmarks.md, "Where the
/// time goes"). RocksDB's C++ keeps the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Chorus: a leaderless, eventually consistent key-value store.
#[derive(Debug, Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus: a leaderless, eventually consistent key-value store",
    long_about = None
)]
struct Cli {
    /// Log format on standard error (the level comes from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

// Parsed once at start; the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local cluster in this process, for development; opens the shell
    /// on the first node when standard input is a terminal.
    Dev(DevArgs),
    /// Run one node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Create TLS material for a cluster.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    #[command(flatten)]
    Client(ClientCommand),
    /// Measure a store: YCSB workloads against Chorus, Redis or etcd.
    Bench(chorus_client::bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// Where the nodes keep their data (one directory per node).
    #[arg(long, default_value = "chorus-data")]
    data_dir: PathBuf,
    /// HTTP port of the first node; the others follow.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// QUIC port of the first node; the others follow.
    #[arg(long, default_value_t = 7070)]
    quic_port: u16,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// A file holding the bearer token every node's HTTP API then requires
    /// (all routes but /livez and /readyz). Without it, the token is taken
    /// from the environment variable CHORUS_HTTP_TOKEN, if set.
    #[arg(long)]
    http_token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Start a node from a configuration file and/or flags.
    Start(NodeStartArgs),
}

#[derive(Debug, clap::Args)]
struct NodeStartArgs {
    /// A TOML configuration file; flags override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the QUIC endpoint (internode traffic).
    #[arg(long)]
    quic_listen: Option<SocketAddr>,
    /// Address of the HTTP API.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// QUIC addresses of seed nodes (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',')]
    seed: Vec<SocketAddr>,
    #[arg(long)]
    zone: Option<String>,
    /// Replicas of every key (N).
    #[arg(long)]
    replicas: Option<usize>,
    /// Partitions of the ring (P), a power of two.
    #[arg(long)]
    partitions: Option<u32>,
    /// Members that must be up before the first ring is built.
    #[arg(long)]
    initial_members: Option<usize>,
    /// Shards splitting the node's partitions, each with the request state
    /// of its own and a thread of its own: 1 to 256, default one per core.
    /// Each costs memory (its thread and its share of the event queue, at
    /// least 1024 events), so more shards than cores buys nothing.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    shards: Option<u16>,
    /// Worker threads of the async runtime that serves HTTP, client QUIC
    /// and internode QUIC: 1 to 256, default one per core. Nodes sharing a
    /// machine run best with their share of its cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    io_threads: Option<u16>,
    /// Run the shards on the async runtime's worker threads (the default)
    /// instead of a thread each: a request, a peer's frame and the shard's
    /// work then meet on one thread without waking another. Less CPU per
    /// request; the fsync of a `sync=true` write runs on a blocking thread
    /// while the worker serves the rest, but a RocksDB write stall holds
    /// up that worker's networking too.
    /// `--shards-on-io-threads=false` gives each shard a thread of its own
    /// (`chorus-shard<i>`), whatever the configuration file says.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    shards_on_io_threads: Option<bool>,
    /// MiB of decoded objects the store keeps in memory for the keys read
    /// and written last, so a write's read and a hot key's get skip
    /// RocksDB: 0 (off) to 65536, default 32.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=65536))]
    object_cache_mib: Option<u32>,
    /// The cluster CA certificate (PEM).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the cluster CA.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The cluster's context-token secret (`context.key` from `chorus cert`);
    /// defaults to `context.key` beside the CA certificate.
    #[arg(long)]
    tls_context_key: Option<PathBuf>,
    /// A file holding the bearer token the HTTP API then requires (all
    /// routes but /livez and /readyz); overrides `[http]` in the config
    /// file and the environment variable CHORUS_HTTP_TOKEN, which is used
    /// when neither this flag nor the file names a token.
    #[arg(long)]
    http_token_file: Option<PathBuf>,
    /// At shutdown, announce that this node leaves the cluster for good.
    #[arg(long)]
    leave_on_shutdown: bool,
    /// UNSAFE, hidden: write without RocksDB's write-ahead log, so a crash
    /// loses acknowledged writes. Exists only so that fault-injection tests
    /// can prove their checkers catch data loss; never use it otherwise.
    #[arg(long, hide = true)]
    unsafe_disable_wal: bool,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Create a new cluster CA and its context-token secret (ca.pem, ca.key,
    /// context.key) in a directory.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "chorus")]
        cluster: String,
    },
    /// Issue a node certificate (ca.pem, node.pem, node.key, context.key)
    /// from a cluster CA.
    Node {
        /// The directory holding ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// Where to write the node's files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a client certificate for the QUIC client protocol (ca.pem,
    /// client.pem, client.key) from a cluster CA. It is good for
    /// clientAuth only: nodes accept it from clients, never from a peer
    /// node (it cannot join the cluster).
    Client {
        /// Who the client is (1 to 64 visible ASCII characters), as the
        /// certificate's common name.
        #[arg(long)]
        name: String,
        /// The directory holding ca.pem, ca.key and context.key (the one
        /// `chorus dev` uses by default).
        #[arg(long, default_value = "chorus-data/tls")]
        ca_dir: PathBuf,
        /// Where to write the client's files [default: ./client-NAME].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs the command; an error is printed as its chain of causes (never as
/// a backtrace, whatever `RUST_BACKTRACE` says: these are a user's errors)
/// and exits 1.
fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // Not eprintln!: it panics when standard error is closed.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Dev(args) => tokio_runtime()?.block_on(dev(args)),
        Command::Bench(args) => {
            if let Err(error) = chorus_client::bench::check_args(&args) {
                // A usage error, as the argument parser's own are (exit 2).
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "error: {error}");
                return Ok(ExitCode::from(2));
            }
            tokio_runtime()?.block_on(bench(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node {
            command: NodeCommand::Start(mut args),
        } => {
            let file = node_file(&mut args)?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(file.io_threads()?)
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(node_start(file, args))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Cert { command } => cert(command).map(|()| ExitCode::SUCCESS),
        Command::Client(command) => {
            Ok(tokio_runtime()?.block_on(chorus_client::shell::run(command)))
        }
    }
}

/// `chorus bench`. A `store:DIR` target is the node's storage engine
/// alone ([`StoreDriver`]), which this binary links and the client crate
/// does not; every other target is the client crate's.
async fn bench(args: chorus_client::bench::BenchArgs) -> anyhow::Result<()> {
    use chorus_client::bench::{self, STORE_SCHEME};
    let Some(store) = args.targets.iter().find(|t| t.starts_with(STORE_SCHEME)) else {
        return Ok(bench::main(args).await?);
    };
    if args.targets.len() != 1 || args.quic.is_some() {
        bail!("a store: target is the only --target of a run (and takes no --quic)");
    }
    let dir = Path::new(&store[STORE_SCHEME.len()..]);
    if dir.as_os_str().is_empty() {
        bail!("--target store:DIR names a directory (a node's data directory layout)");
    }
    let write = bench::parse_options(&args.write)?;
    let only_sync = chorus_client::RequestOptions {
        sync: write.sync,
        ..Default::default()
    };
    if !args.read.is_empty() || args.retries > 0 || write != only_sync {
        eprintln!(
            "note: --read, --retries and --write options other than sync apply to a node only; \
             store: runs without them"
        );
    }
    let durability = chorus_storage::store::Durability::from_sync(write.sync);
    let (dir, bucket) = (dir.to_owned(), args.bucket.clone());
    let driver = tokio::task::spawn_blocking(move || StoreDriver::open(&dir, &bucket, durability))
        .await
        .expect("opening the store does not panic")
        .with_context(|| format!("opening the store in {}", &store[STORE_SCHEME.len()..]))?;
    Ok(bench::main_with(&args, "store", std::sync::Arc::new(driver)).await?)
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn cert(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Ca { dir, cluster } => {
            let ca = ClusterCa::generate(&cluster)?;
            write_ca(&dir, &ca)?;
            println!(
                "wrote {}, {} and {}",
                dir.join("ca.pem").display(),
                dir.join("ca.key").display(),
                dir.join(CONTEXT_KEY_FILE).display()
            );
        }
        CertCommand::Node { ca_dir, name, out } => {
            let ca = read_ca(&ca_dir)?;
            let identity = ca.issue(&name)?;
            identity.write_to_dir(&out)?;
            println!("wrote the certificate of {name} to {}", out.display());
        }
        CertCommand::Client { name, ca_dir, out } => {
            let ca = read_ca(&ca_dir)?;
            let identity = ca.issue_client(&name)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("client-{name}")));
            identity.write_to_dir(&out)?;
            println!(
                "wrote the client certificate of {name} to {}: {CA_FILE}, {CLIENT_CERT_FILE}, {CLIENT_KEY_FILE}",
                out.display()
            );
        }
    }
    Ok(())
}

fn write_ca(dir: &Path, ca: &ClusterCa) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key) = ca.to_pem();
    std::fs::write(dir.join("ca.pem"), cert)?;
    write_private(&dir.join("ca.key"), key.as_bytes())?;
    write_context_key(&dir.join(CONTEXT_KEY_FILE), ca.context_key())?;
    Ok(())
}

fn read_ca(dir: &Path) -> anyhow::Result<ClusterCa> {
    let cert = std::fs::read_to_string(dir.join("ca.pem"))
        .with_context(|| format!("reading {}", dir.join("ca.pem").display()))?;
    let key = std::fs::read_to_string(dir.join("ca.key"))
        .with_context(|| format!("reading {}", dir.join("ca.key").display()))?;
    let context_key = read_context_key(&dir.join(CONTEXT_KEY_FILE)).with_context(|| {
        format!(
            "reading the cluster's context-token secret in {} (`chorus cert ca` writes it)",
            dir.display()
        )
    })?;
    Ok(ClusterCa::from_pem(&cert, &key, context_key)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// The configuration file (if any) with the flags of `args` laid over it;
/// takes the flags it uses out of `args`.
fn node_file(args: &mut NodeStartArgs) -> anyhow::Result<NodeFile> {
    let mut file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    file.name = args.name.take().or(file.name);
    file.data_dir = args.data_dir.take().or(file.data_dir);
    file.quic_listen = args.quic_listen.or(file.quic_listen);
    file.http_listen = args.http_listen.or(file.http_listen);
    if !args.seed.is_empty() {
        file.seeds = std::mem::take(&mut args.seed);
    }
    file.zone = args.zone.take().or(file.zone);
    file.replicas = args.replicas.or(file.replicas);
    file.partitions = args.partitions.or(file.partitions);
    file.initial_members = args.initial_members.or(file.initial_members);
    file.shards = args.shards.map(usize::from).or(file.shards);
    file.io_threads = args.io_threads.map(usize::from).or(file.io_threads);
    file.shards_on_io_threads = args.shards_on_io_threads.or(file.shards_on_io_threads);
    file.object_cache_mib = args
        .object_cache_mib
        .map(u64::from)
        .or(file.object_cache_mib);
    if let (Some(ca), Some(cert), Some(key)) = (
        args.tls_ca.take(),
        args.tls_cert.take(),
        args.tls_key.take(),
    ) {
        file.tls = Some(TlsPaths {
            ca,
            cert,
            key,
            context_key: args.tls_context_key.take(),
        });
    }
    Ok(file)
}

async fn node_start(file: NodeFile, args: NodeStartArgs) -> anyhow::Result<()> {
    let mut signals = StopSignals::catch();
    let http = http_options(file.http.clone(), args.http_token_file)?;
    let engine = file.engine_config()?;
    let gossip_interval = engine.gossip.gossip_interval;
    let data_dir = file
        .data_dir
        .clone()
        .context("no data directory: give --data-dir or data_dir")?;
    let Some(tls) = &file.tls else {
        bail!("no TLS material: give --tls-ca, --tls-cert and --tls-key (create them with `chorus cert`)");
    };
    let identity =
        NodeIdentity::load_from_paths(&tls.ca, &tls.cert, &tls.key, &tls.context_key_path())?;
    let options = NodeOptions {
        engine,
        data_dir,
        quic_listen: file
            .quic_listen
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7070)),
        http_listen: file
            .http_listen
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080)),
        identity,
        unsafe_disable_wal: args.unsafe_disable_wal,
        object_cache_bytes: file.object_cache_bytes()?,
        shards_on_io_threads: file.shards_on_io_threads.unwrap_or(true),
        http,
    };
    if args.unsafe_disable_wal {
        eprintln!("UNSAFE: the write-ahead log is off; a crash loses acknowledged writes");
    }
    let mut node = runtime::start(options).await?;
    println!(
        "chorus node {} ({}) http=http://{} quic={}",
        file.name.as_deref().unwrap_or("chorus"),
        node.id,
        node.http_addr,
        node.quic_addr
    );
    tokio::select! {
        _ = signals.recv() => {}
        halt = node.halted() => {
            node.shutdown().await;
            bail!(halt);
        }
    }
    if args.leave_on_shutdown {
        eprintln!("leaving the cluster, then shutting down");
        node.leave_and_shutdown(3 * gossip_interval).await;
    } else {
        eprintln!("shutting down");
        node.shutdown().await;
    }
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    // From here on Ctrl-C and SIGTERM stop the nodes started so far
    // cleanly, even before the cluster is ready.
    let mut signals = StopSignals::catch();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let tls_dir = args.data_dir.join("tls");
    let ca = if tls_dir.join("ca.pem").exists() {
        if !tls_dir.join(CONTEXT_KEY_FILE).exists() {
            // A data directory made before context tokens were authenticated.
            write_context_key(&tls_dir.join(CONTEXT_KEY_FILE), &generate_context_key()?)?;
        }
        read_ca(&tls_dir)?
    } else {
        let ca = ClusterCa::generate("chorus-dev")?;
        write_ca(&tls_dir, &ca)?;
        ca
    };
    // A client certificate for the QUIC client protocol.
    let client_dir = tls_dir.join("client");
    if !client_dir.join(CLIENT_KEY_FILE).exists() {
        ca.issue_client("dev")?.write_to_dir(&client_dir)?;
    }
    let quic_addrs: Vec<SocketAddr> = (0..args.nodes)
        .map(|i| Ok(SocketAddr::new(localhost, dev_port(args.quic_port, i)?)))
        .collect::<anyhow::Result<_>>()?;
    let replicas = args.nodes.min(3);
    let http = http_options(HttpSection::default(), args.http_token_file.clone())?;
    let mut nodes: Vec<RunningNode> = Vec::new();
    let starting = start_dev_nodes(&args, &ca, &quic_addrs, replicas, &http, &mut nodes);
    let started = tokio::select! {
        started = starting => Some(started),
        _ = signals.recv() => None,
    };
    let formed = match started {
        Some(Ok(formed)) => formed,
        Some(Err(e)) => {
            stop_all(nodes).await;
            return Err(e);
        }
        None => {
            eprintln!("shutting down");
            stop_all(nodes).await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if formed {
        println!(
            "cluster ready: {} nodes, N={replicas}; data in {}",
            args.nodes,
            args.data_dir.display()
        );
    }
    println!(
        "QUIC clients: --quic {} --tls-ca {} --tls-cert {} --tls-key {}",
        nodes
            .first()
            .map(|n| n.quic_addr.to_string())
            .unwrap_or_default(),
        client_dir.join(CA_FILE).display(),
        client_dir.join(CLIENT_CERT_FILE).display(),
        client_dir.join(CLIENT_KEY_FILE).display()
    );
    let mut code = ExitCode::SUCCESS;
    if std::io::stdin().is_terminal() {
        let url = format!("http://{}", nodes[0].http_addr);
        println!("shell attached to node1 ({url}); EXIT or Ctrl-D stops the cluster");
        tokio::select! {
            exit = chorus_client::shell::attach(&url) => code = exit,
            _ = signals.recv() => {
                // The shell's line editor is blocked on the terminal: stop
                // the nodes, then leave without waiting for it. The
                // prompt is on the line: start a new one.
                eprintln!("\nshutting down");
                stop_all(nodes).await;
                std::process::exit(0);
            }
        }
    } else {
        println!("press Ctrl-C to stop");
        signals.recv().await;
    }
    eprintln!("shutting down");
    stop_all(nodes).await;
    Ok(code)
}

/// The port of `chorus dev`'s node `i` (from 0) when node 0's is `first`.
fn dev_port(first: u16, i: usize) -> anyhow::Result<u16> {
    u16::try_from(usize::from(first) + i).context("port out of range")
}

/// Starts `chorus dev`'s nodes one by one into `nodes` (so that a caller
/// that stops waiting still holds every node started so far, to stop
/// cleanly), then waits up to 60 s for the cluster to form: true once
/// every node sees every member up.
async fn start_dev_nodes(
    args: &DevArgs,
    ca: &ClusterCa,
    quic_addrs: &[SocketAddr],
    replicas: usize,
    http: &runtime::HttpOptions,
    nodes: &mut Vec<RunningNode>,
) -> anyhow::Result<bool> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for i in 0..args.nodes {
        let name = format!("node{}", i + 1);
        let mut engine = chorus_node::engine::EngineConfig {
            name: name.clone(),
            replicas,
            initial_members: args.nodes,
            ..Default::default()
        };
        engine.gossip.seeds = quic_addrs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, addr)| *addr)
            .collect();
        let options = NodeOptions {
            engine,
            data_dir: args.data_dir.join(&name),
            quic_listen: quic_addrs[i],
            http_listen: SocketAddr::new(localhost, dev_port(args.http_port, i)?),
            identity: ca.issue(&name)?,
            unsafe_disable_wal: false,
            object_cache_bytes: chorus_storage::store::DEFAULT_OBJECT_CACHE_BYTES,
            shards_on_io_threads: true,
            http: http.clone(),
        };
        let node = runtime::start(options)
            .await
            .with_context(|| format!("starting {name}"))?;
        println!(
            "{name}  http=http://{}  quic={}  id={}",
            node.http_addr, node.quic_addr, node.id
        );
        nodes.push(node);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if runtime::all_members_up(nodes).await {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "warning: the cluster did not form within 60 s (a ring, and every node seeing \
                 every member up); still waiting"
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_all(nodes: Vec<RunningNode>) {
    let mut stopping = tokio::task::JoinSet::new();
    for node in nodes {
        stopping.spawn(node.shutdown());
    }
    while stopping.join_next().await.is_some() {}
}

/// The environment variable that gives the HTTP bearer token when no flag
/// or config file does.
const HTTP_TOKEN_ENV: &str = "CHORUS_HTTP_TOKEN";

/// The HTTP settings from the config file's `[http]`, with the token from
/// `--http-token-file` (first), the file's `token`/`token_file`, or
/// `CHORUS_HTTP_TOKEN` (last).
fn http_options(
    mut section: HttpSection,
    token_file: Option<PathBuf>,
) -> anyhow::Result<runtime::HttpOptions> {
    if let Some(path) = token_file {
        section.token = None;
        section.token_file = Some(path);
    } else if section.token.is_none() && section.token_file.is_none() {
        match std::env::var(HTTP_TOKEN_ENV) {
            Ok(token) => section.token = Some(token),
            Err(std::env::VarError::NotPresent) => {}
            Err(e) => bail!("{HTTP_TOKEN_ENV}: {e}"),
        }
    }
    Ok(section.options()?)
}

/// Ctrl-C (SIGINT) and SIGTERM, caught from the moment [`StopSignals::catch`]
/// returns: one that arrives before [`StopSignals::recv`] is awaited waits
/// for it instead of ending the process.
struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Installs the handlers. Must be called within a tokio runtime.
    fn catch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.interrupt) => {}
                _ = next(&mut self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

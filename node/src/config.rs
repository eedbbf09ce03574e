//! Node configuration: a TOML file, overridden by command-line flags.
//!
//! ```toml
//! name = "node1"
//! data_dir = "/var/lib/chorus"
//! quic_listen = "0.0.0.0:7070"
//! http_listen = "0.0.0.0:8080"
//! seeds = ["10.0.0.2:7070", "10.0.0.3:7070"]
//! zone = "rack-1"
//! replicas = 3            # N, fixed when the cluster is created
//! partitions = 256        # P, a power of two, fixed when the cluster is created
//! initial_members = 3     # members up before the first ring is built
//!
//! [tls]
//! ca = "/etc/chorus/ca.pem"
//! cert = "/etc/chorus/node.pem"
//! key = "/etc/chorus/node.key"
//! # context_key = "/etc/chorus/context.key"   (the default: beside `ca`)
//!
//! [http]
//! token_file = "/etc/chorus/http.token"  # or token = "…"; none: the API is open
//! max_concurrent_requests = 1024
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::BearerToken;
use crate::engine::EngineConfig;
use crate::runtime::HttpOptions;

/// Settings of the HTTP API (`[http]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// The bearer token clients must present (RFC 6750's `token68`
    /// characters). Prefer `token_file`, which keeps it out of the config.
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace trimmed).
    pub token_file: Option<PathBuf>,
    /// The most requests served at once; more are refused with
    /// `503 overloaded` and `Retry-After` rather than queued.
    #[serde(default, deserialize_with = "whole_number")]
    pub max_concurrent_requests: Option<usize>,
}

impl HttpSection {
    /// The HTTP settings this section asks for, on top of the defaults;
    /// reads `token_file`.
    pub fn options(&self) -> Result<HttpOptions, ConfigError> {
        let mut options = HttpOptions::default();
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give [http] token or token_file, not both".into(),
                ))
            }
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            (None, None) => None,
        };
        if let Some(token) = token {
            options.token =
                Some(BearerToken::new(&token).map_err(|e| ConfigError::Invalid(e.to_string()))?);
        }
        if let Some(max) = self.max_concurrent_requests {
            if max == 0 {
                return Err(ConfigError::Invalid(
                    "[http] max_concurrent_requests must be at least 1".into(),
                ));
            }
            options.max_concurrent_requests = max;
        }
        Ok(options)
    }
}

/// Paths of a node's TLS material.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate, signed by the cluster CA.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The cluster's context-token secret; `context.key` beside `ca` when
    /// not given.
    #[serde(default)]
    pub context_key: Option<PathBuf>,
}

impl TlsPaths {
    /// Where the context-token secret is read from.
    pub fn context_key_path(&self) -> PathBuf {
        self.context_key.clone().unwrap_or_else(|| {
            self.ca
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(crate::transport::tls::CONTEXT_KEY_FILE)
        })
    }
}

/// A node's configuration file. Every field is optional in the file; the
/// flags of `chorus node start` fill in or override them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub quic_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    pub zone: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    pub replicas: Option<usize>,
    #[serde(default, deserialize_with = "whole_number")]
    pub partitions: Option<u32>,
    #[serde(default, deserialize_with = "whole_number")]
    pub initial_members: Option<usize>,
    /// Shards the engine splits the node's partitions between
    /// ([`EngineConfig::shards`]), each on a thread of its own; one per
    /// core ([`default_shards`]) when not given.
    #[serde(default, deserialize_with = "whole_number")]
    pub shards: Option<usize>,
    /// Worker threads of the async runtime that serves HTTP, client QUIC
    /// and internode QUIC ([`NodeFile::io_threads`]); one per core when not
    /// given.
    #[serde(default, deserialize_with = "whole_number")]
    pub io_threads: Option<usize>,
    /// Run the shards as tasks on the async runtime's worker threads
    /// ([`NodeOptions::shards_on_io_threads`](crate::runtime::NodeOptions::shards_on_io_threads));
    /// true when not given; false gives each shard a thread of its own.
    pub shards_on_io_threads: Option<bool>,
    /// MiB of the store's object cache ([`NodeFile::object_cache_bytes`]);
    /// 32 when not given, 0 turns it off.
    #[serde(default, deserialize_with = "whole_number")]
    pub object_cache_mib: Option<u64>,
    pub tls: Option<TlsPaths>,
    #[serde(default)]
    pub http: HttpSection,
}

/// An optional count in the file (`replicas`, `shards`, …): a whole
/// number that fits the field, or an error that says so in those words
/// rather than naming the field's Rust type.
fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct Count<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<u64>> serde::de::Visitor<'_> for Count<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "{v} is negative; expected a whole number"
                ))),
            }
        }
    }
    deserializer
        .deserialize_u64(Count(std::marker::PhantomData))
        .map(Some)
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl NodeFile {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: NodeFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // A value out of range is the file's own error: say which file.
        file.check_fields().map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(file)
    }

    /// Checks each setting that is valid or not on its own (ranges), so an
    /// error can name where the value came from; settings checked against
    /// each other wait until the command line is laid over the file.
    fn check_fields(&self) -> Result<(), ConfigError> {
        if self.replicas == Some(0) {
            return Err(ConfigError::Invalid("replicas must be at least 1".into()));
        }
        if let Some(shards) = self.shards.filter(|&s| s == 0 || s > 256) {
            return Err(ConfigError::Invalid(format!(
                "shards ({shards}) must be between 1 and 256"
            )));
        }
        self.io_threads()?;
        self.object_cache_bytes()?;
        Ok(())
    }

    /// The engine settings this file asks for, on top of the defaults.
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        let mut config = EngineConfig::default();
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        if let Some(zone) = &self.zone {
            config.zone = zone.clone();
        }
        if let Some(replicas) = self.replicas {
            config.replicas = replicas;
        }
        if let Some(partitions) = self.partitions {
            config.partitions = partitions;
        }
        config.initial_members = self.initial_members.unwrap_or(config.replicas);
        if config.replicas == 0 {
            return Err(ConfigError::Invalid("replicas must be at least 1".into()));
        }
        if config.initial_members < config.replicas {
            return Err(ConfigError::Invalid(format!(
                "initial_members ({}) must be at least replicas ({})",
                config.initial_members, config.replicas
            )));
        }
        let shards = self.shards.unwrap_or_else(default_shards);
        if shards == 0 || shards > 256 {
            return Err(ConfigError::Invalid(format!(
                "shards ({shards}) must be between 1 and 256"
            )));
        }
        config.shards = shards;
        config.gossip.seeds = self.seeds.clone();
        Ok(config)
    }

    /// Worker threads for the node's async runtime: `io_threads`, or one
    /// per core ([`default_shards`]). Nodes that share a machine run best
    /// with their share of its cores, as with `shards`: more runtime
    /// threads than cores only switch more.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless it is between 1 and 256.
    pub fn io_threads(&self) -> Result<usize, ConfigError> {
        let threads = self.io_threads.unwrap_or_else(default_shards);
        if threads == 0 || threads > 256 {
            return Err(ConfigError::Invalid(format!(
                "io_threads ({threads}) must be between 1 and 256"
            )));
        }
        Ok(threads)
    }

    /// Bytes of the store's object cache
    /// ([`StoreConfig::object_cache_bytes`](chorus_storage::store::StoreConfig::object_cache_bytes)):
    /// `object_cache_mib` MiB, or
    /// [`DEFAULT_OBJECT_CACHE_BYTES`](chorus_storage::store::DEFAULT_OBJECT_CACHE_BYTES).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] above 65536 MiB.
    pub fn object_cache_bytes(&self) -> Result<u64, ConfigError> {
        match self.object_cache_mib {
            None => Ok(chorus_storage::store::DEFAULT_OBJECT_CACHE_BYTES),
            Some(mib) if mib <= MAX_OBJECT_CACHE_MIB => Ok(mib << 20),
            Some(mib) => Err(ConfigError::Invalid(format!(
                "object_cache_mib ({mib}) must be at most {MAX_OBJECT_CACHE_MIB}"
            ))),
        }
    }
}

/// The largest object cache a node takes, in MiB (64 GiB).
pub const MAX_OBJECT_CACHE_MIB: u64 = 65536;

/// How many shards a node runs unless told: one per core the process may
/// use ([`std::thread::available_parallelism`]; 1 when unknown), at most
/// 256.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_whole_numbers_and_zero_shards_are_refused() {
        let file: NodeFile = toml::from_str("shards = 2").expect("parses");
        assert_eq!(file.engine_config().expect("valid").shards, 2);
        assert_eq!(
            NodeFile::default().engine_config().expect("valid").shards,
            default_shards(),
            "one per core unless told"
        );
        for (text, says) in [
            (
                "shards = \"two\"",
                "invalid type: string \"two\", expected a whole number",
            ),
            ("replicas = -1", "-1 is negative; expected a whole number"),
            ("partitions = 5000000000", "5000000000 is too large"),
            (
                "shards = 2.5",
                "invalid type: floating point `2.5`, expected a whole number",
            ),
        ] {
            let error = toml::from_str::<NodeFile>(text)
                .expect_err(text)
                .to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(
                !error.contains("usize") && !error.contains("u32"),
                "{error}"
            );
        }
        let file: NodeFile = toml::from_str("shards = 0").expect("parses");
        assert!(matches!(file.engine_config(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn io_threads_are_one_per_core_unless_told_and_zero_is_refused() {
        let file: NodeFile = toml::from_str("io_threads = 1").expect("parses");
        assert_eq!(file.io_threads().expect("valid"), 1);
        assert_eq!(
            NodeFile::default().io_threads().expect("valid"),
            default_shards()
        );
        for text in ["io_threads = 0", "io_threads = 257"] {
            let file: NodeFile = toml::from_str(text).expect("parses");
            let error = file.io_threads().expect_err(text).to_string();
            assert!(error.contains("io_threads"), "{text}: {error}");
        }
        let error = toml::from_str::<NodeFile>("io_threads = -2")
            .expect_err("negative")
            .to_string();
        assert!(error.contains("-2 is negative"), "{error}");
    }

    #[test]
    fn a_value_out_of_range_in_a_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        for text in [
            "io_threads = 0",
            "shards = 300",
            "replicas = 0",
            "object_cache_mib = 70000",
        ] {
            std::fs::write(&path, text).unwrap();
            let error = NodeFile::load(&path).expect_err(text).to_string();
            let field = text.split(' ').next().unwrap();
            assert!(
                error.starts_with(&path.display().to_string()),
                "{text}: {error}"
            );
            assert!(error.contains(field), "{text}: {error}");
        }
        std::fs::write(&path, "io_threads = 2\nshards = 2\nreplicas = 3").unwrap();
        let file = NodeFile::load(&path).expect("valid");
        assert_eq!(file.io_threads().expect("valid"), 2);
    }

    #[test]
    fn shards_run_on_threads_of_their_own_unless_told() {
        assert_eq!(NodeFile::default().shards_on_io_threads, None);
        let file: NodeFile = toml::from_str("shards_on_io_threads = true").expect("parses");
        assert_eq!(file.shards_on_io_threads, Some(true));
        let error = toml::from_str::<NodeFile>("shards_on_io_threads = 1")
            .expect_err("not a boolean")
            .to_string();
        assert!(error.contains("shards_on_io_threads"), "{error}");
    }

    #[test]
    fn the_object_cache_is_32_mib_unless_told_and_bounded() {
        assert_eq!(
            NodeFile::default().object_cache_bytes().expect("valid"),
            32 << 20
        );
        for (text, bytes) in [
            ("object_cache_mib = 0", 0),
            ("object_cache_mib = 65536", 64 << 30),
        ] {
            let file: NodeFile = toml::from_str(text).expect("parses");
            assert_eq!(file.object_cache_bytes().expect(text), bytes, "{text}");
        }
        let file: NodeFile = toml::from_str("object_cache_mib = 65537").expect("parses");
        let error = file
            .object_cache_bytes()
            .expect_err("too large")
            .to_string();
        assert!(error.contains("object_cache_mib (65537)"), "{error}");
    }

    #[test]
    fn a_full_file_parses() {
        let file: NodeFile = toml::from_str(
            r#"
            name = "n1"
            data_dir = "/tmp/x"
            quic_listen = "127.0.0.1:7070"
            http_listen = "127.0.0.1:8080"
            seeds = ["127.0.0.1:7071"]
            replicas = 3
            partitions = 64
            initial_members = 4
            [tls]
            ca = "ca.pem"
            cert = "node.pem"
            key = "node.key"
            [http]
            token = "t0ken"
            max_concurrent_requests = 7
            "#,
        )
        .unwrap();
        let http = file.http.options().unwrap();
        assert!(http.token.unwrap().matches(b"t0ken"));
        assert_eq!(http.max_concurrent_requests, 7);
        let config = file.engine_config().unwrap();
        assert_eq!(config.name, "n1");
        assert_eq!(config.partitions, 64);
        assert_eq!(config.initial_members, 4);
        assert_eq!(config.gossip.seeds.len(), 1);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(toml::from_str::<NodeFile>("nmae = \"x\"").is_err());
        let file: NodeFile = toml::from_str("replicas = 3\ninitial_members = 2").unwrap();
        assert!(matches!(file.engine_config(), Err(ConfigError::Invalid(_))));
        for bad in [
            "[http]\ntoken = \"a\"\ntoken_file = \"f\"",
            "[http]\ntoken = \"a b\"",
            "[http]\nmax_concurrent_requests = 0",
        ] {
            let file: NodeFile = toml::from_str(bad).unwrap();
            assert!(
                matches!(file.http.options(), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(toml::from_str::<NodeFile>("[http]\ntokn = \"a\"").is_err());
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.token");
        std::fs::write(&path, "from-file\n").unwrap();
        let section = HttpSection {
            token_file: Some(path),
            ..HttpSection::default()
        };
        let token = section.options().unwrap().token.unwrap();
        assert!(token.matches(b"from-file"));
        assert!(section.options().unwrap().max_concurrent_requests > 0);
    }
}

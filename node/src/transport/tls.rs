//! The cluster's public-key infrastructure and the rustls configurations
//! built on it.
//!
//! A cluster has one certificate authority, the [`ClusterCa`]. It issues
//! every node a certificate ([`ClusterCa::issue`]) that is good for both ends
//! of a TLS connection: the node presents it as a server when a peer connects
//! to it and as a client when it connects to a peer. Both sides verify the
//! other against the cluster CA, so only members of the same cluster can talk
//! to each other.
//!
//! Every node certificate carries the DNS name [`SERVER_NAME`] besides the
//! node's own name, and a node always connects with that server name.
//!
//! # Node and client certificates
//!
//! The CA also issues client certificates ([`ClusterCa::issue_client`],
//! `chorus cert client`) for the QUIC client protocol. The two kinds are
//! not interchangeable, and the role is in the certificate:
//!
//! | kind   | extended key usage      | subject alternative names | subject |
//! |--------|-------------------------|---------------------------|---------|
//! | node   | serverAuth, clientAuth  | the node's name, [`SERVER_NAME`] | O=Chorus, CN=name |
//! | client | clientAuth only         | none                      | O=Chorus, OU=client, CN=name |
//!
//! A node certificate is one that verifies as a *server* certificate for
//! [`SERVER_NAME`] ([`NodeCertChecker`]): a client certificate cannot, so it
//! can neither serve nor, once a connecting peer's certificate is checked
//! the same way on the internode ALPN, join (see the transport). On the
//! client ALPN any certificate of the cluster CA is accepted, so operators'
//! tools may use a node certificate. Peers
//! are therefore addressed by bare IP addresses, and what the TLS handshake
//! proves is "this peer holds a certificate from our cluster CA", not "this
//! peer is node X". Which node sits at an address is the membership layer's
//! business.
//!
//! # What this module deliberately does not do
//!
//! * No revocation lists and no automatic renewal. A compromised node is shut
//!   out by rotating the CA: `ca.pem` may hold several CA certificates, every
//!   one of which is trusted, so a new CA can be rolled out before the old
//!   one is removed.
//! * No process-wide crypto provider: every configuration is built with the
//!   ring provider explicitly, so nothing depends on what else in the process
//!   installed a default.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_storage::context::{ContextKey, CONTEXT_KEY_LEN};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer};
use time::{Date, OffsetDateTime, UtcDateTime};

/// ALPN protocol of the node-to-node transport. The internode endpoint
/// accepts nothing else.
pub const ALPN_INTERNODE: &[u8] = b"chorus-internode/1";

/// ALPN protocol of the client-facing QUIC API, defined with the protocol
/// in `chorus_client::protocol`.
pub use chorus_client::protocol::ALPN_CLIENT;

/// The DNS name every node certificate carries and every node connects to.
pub const SERVER_NAME: &str = chorus_client::protocol::SERVER_NAME;

/// File name of the CA certificate bundle in an identity directory.
pub const CA_FILE: &str = "ca.pem";

/// The file holding the cluster's context-token secret ([`ContextKey`]),
/// in a CA directory and in every node's TLS directory: 64 hex digits.
pub const CONTEXT_KEY_FILE: &str = "context.key";

/// File name of the node certificate in an identity directory.
pub const CERT_FILE: &str = "node.pem";

/// File name of the node's private key in an identity directory.
pub const KEY_FILE: &str = "node.key";

/// File name of a client certificate in a client identity directory.
pub const CLIENT_CERT_FILE: &str = "client.pem";

/// File name of a client's private key in a client identity directory.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// The organizational unit of every client certificate's subject.
pub const CLIENT_UNIT: &str = "client";

/// The longest client name, in bytes.
pub const MAX_CLIENT_NAME_BYTES: usize = 64;

/// How long a new cluster CA is valid, in years.
const CA_VALIDITY_YEARS: i32 = 20;

/// How long a new node certificate is valid, in years.
const NODE_VALIDITY_YEARS: i32 = 10;

/// What went wrong while creating, loading or using the cluster PKI.
///
/// None of these leave anything behind except [`TlsError::Io`] from
/// [`NodeIdentity::write_to_dir`], which may have written some of the files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A name cannot go into a certificate: the cluster name is empty, or the
    /// node name is neither a valid DNS name nor an IP address.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// rcgen failed to generate a key or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM document could not be parsed, or holds the wrong number of
    /// items.
    #[error("malformed PEM in {what}: {reason}")]
    Pem {
        /// Which document: "CA certificate", "node key", and so on.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA certificate cannot be used to issue node certificates: it is not
    /// DER this module can read, or its subject cannot be reproduced.
    #[error("unusable CA certificate: {0}")]
    InvalidCa(&'static str),
    /// The private key does not belong to the certificate it came with.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// Reading or writing an identity file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// rustls rejected the certificates or keys while building a
    /// configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (for instance, no
    /// usable CA certificate).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The TLS handshake with a peer failed: one side did not trust the
    /// other's certificate, or they share no ALPN protocol.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake {
        /// The peer's address.
        peer: std::net::SocketAddr,
        /// The error as reported by QUIC.
        reason: String,
    },
}

/// The cluster certificate authority: its certificate and signing key.
pub struct ClusterCa {
    /// The certificate exactly as generated or loaded.
    cert_pem: String,
    /// The same certificate as rcgen needs it for signing. When loaded from
    /// PEM it is re-created from the original's subject and key, so the
    /// issuer name of every node certificate matches the original byte for
    /// byte (checked in [`ClusterCa::from_pem`]).
    signer: rcgen::Certificate,
    key: KeyPair,
    /// The secret that authenticates causal context tokens, created with
    /// the CA and handed to every node it issues a certificate for.
    context_key: ContextKey,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("subject", &self.signer.params().distinguished_name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256) for the cluster called
    /// `cluster_name`, valid from yesterday for 20 years.
    pub fn generate(cluster_name: &str) -> Result<ClusterCa, TlsError> {
        if cluster_name.trim().is_empty() {
            return Err(TlsError::InvalidName {
                name: cluster_name.to_owned(),
                reason: "the cluster name is empty",
            });
        }
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Chorus");
        name.push(DnType::CommonName, format!("{cluster_name} cluster CA"));
        let key = KeyPair::generate()?;
        let mut params = ca_params(name);
        set_validity(&mut params, CA_VALIDITY_YEARS);
        let signer = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: signer.pem(),
            signer,
            key,
            context_key: generate_context_key()?,
        })
    }

    /// The cluster's context-token secret.
    pub fn context_key(&self) -> &ContextKey {
        &self.context_key
    }

    /// The CA certificate and private key, both PEM, in that order. The key
    /// is secret: whoever holds it can admit nodes to the cluster.
    pub fn to_pem(&self) -> (String, String) {
        (self.cert_pem.clone(), self.key.serialize_pem())
    }

    /// The CA certificate, PEM: what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Loads a CA from its certificate and private key.
    ///
    /// The certificate must hold exactly one certificate, the key must be its
    /// key ([`TlsError::KeyMismatch`] otherwise), and the certificate's
    /// subject must be one this module can reproduce: a sequence of
    /// single-attribute names with UTF8String, PrintableString or IA5String
    /// values, which is what [`ClusterCa::generate`] writes.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        context_key: ContextKey,
    ) -> Result<ClusterCa, TlsError> {
        let certs = parse_certs(cert_pem, "CA certificate")?;
        let [cert] = certs.as_slice() else {
            return Err(TlsError::Pem {
                what: "CA certificate",
                reason: format!("expected one certificate, found {}", certs.len()),
            });
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem {
            what: "CA key",
            reason: e.to_string(),
        })?;
        let parsed = der::parse_certificate(cert).ok_or(TlsError::InvalidCa("malformed DER"))?;
        if parsed.spki != key.public_key_der().as_slice() {
            return Err(TlsError::KeyMismatch);
        }
        let name = der::parse_name(parsed.subject)
            .ok_or(TlsError::InvalidCa("subject has an unsupported form"))?;
        // Only the subject, the key and the key identifier method matter for
        // signing; the validity of this re-created certificate is never seen.
        let signer = ca_params(name).self_signed(&key)?;
        let recreated = der::parse_certificate(signer.der())
            .ok_or(TlsError::InvalidCa("re-created certificate is malformed"))?;
        if recreated.subject != parsed.subject {
            return Err(TlsError::InvalidCa("subject cannot be reproduced exactly"));
        }
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            signer,
            key,
            context_key,
        })
    }

    /// Issues a certificate for the node called `node_name` with a fresh key
    /// (ECDSA P-256), valid from yesterday for 10 years.
    ///
    /// The certificate names `node_name` (as a DNS name, or as an IP address
    /// if it parses as one) and [`SERVER_NAME`], and may be used for both
    /// server and client authentication.
    pub fn issue(&self, node_name: &str) -> Result<NodeIdentity, TlsError> {
        let node_san = match node_name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                if DnsName::try_from(node_name).is_err() {
                    return Err(TlsError::InvalidName {
                        name: node_name.to_owned(),
                        reason: "a node name must be a DNS name or an IP address",
                    });
                }
                SanType::DnsName(node_name.try_into()?)
            }
        };
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Chorus");
        name.push(DnType::CommonName, node_name);
        params.distinguished_name = name;
        params.subject_alt_names = vec![node_san, SanType::DnsName(SERVER_NAME.try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_YEARS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.signer, &self.key)?;
        Ok(NodeIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
            context_key: self.context_key.clone(),
        })
    }
}

impl ClusterCa {
    /// Issues a client certificate for the QUIC client protocol with a
    /// fresh key (ECDSA P-256), valid from yesterday for 10 years: subject
    /// `O=Chorus, OU=client, CN=<name>`, extended key usage clientAuth only
    /// and no subject alternative name, so that it cannot pass for a node
    /// (see the [module documentation](self)).
    ///
    /// `name` is 1 to [`MAX_CLIENT_NAME_BYTES`] bytes of visible ASCII
    /// (who the client is, for the operator: `alice`, `shell@laptop`).
    pub fn issue_client(&self, name: &str) -> Result<ClientIdentity, TlsError> {
        if name.is_empty()
            || name.len() > MAX_CLIENT_NAME_BYTES
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TlsError::InvalidName {
                name: name.to_owned(),
                reason: "a client name is 1 to 64 bytes of visible ASCII",
            });
        }
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, "Chorus");
        subject.push(DnType::OrganizationalUnitName, CLIENT_UNIT);
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY_YEARS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.signer, &self.key)?;
        Ok(ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

/// A client's credentials for the QUIC client protocol, all PEM: its
/// certificate and key, and the cluster CA certificate(s) it checks nodes
/// against. Holds no context-token secret: clients never open tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: String,
    /// Secret.
    pub key_pem: String,
    pub ca_pem: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

impl ClientIdentity {
    /// Writes `ca.pem`, `client.pem` and `client.key` (mode 0600 on Unix)
    /// into `dir`, creating it if needed.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write_file(&dir.join(CA_FILE), &self.ca_pem, false)?;
        write_file(&dir.join(CLIENT_CERT_FILE), &self.cert_pem, false)?;
        write_file(&dir.join(CLIENT_KEY_FILE), &self.key_pem, true)
    }
}

/// Tells node certificates from others: a node certificate verifies as a
/// server certificate for [`SERVER_NAME`] against the cluster CA, which a
/// client certificate (clientAuth only, no such name) cannot.
#[derive(Debug, Clone)]
pub struct NodeCertChecker {
    verifier: Arc<rustls::client::WebPkiServerVerifier>,
}

impl NodeCertChecker {
    /// A checker against the CA certificates `identity` trusts.
    pub fn new(identity: &NodeIdentity) -> Result<NodeCertChecker, TlsError> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(identity.roots()?),
            provider(),
        )
        .build()
        .map_err(|error| TlsError::Config(rustls::Error::General(error.to_string())))?;
        Ok(NodeCertChecker { verifier })
    }

    /// Checks that `chain` (end entity first, as a TLS peer presents it) is
    /// a node certificate of the cluster.
    pub fn check(&self, chain: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier as _;
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        let name = rustls_pki_types::ServerName::try_from(SERVER_NAME)
            .expect("SERVER_NAME is a valid DNS name");
        self.verifier
            .verify_server_cert(
                end_entity,
                intermediates,
                &name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .map(|_| ())
    }
}

/// The parameters of a CA certificate with subject `name`.
fn ca_params(name: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Makes `params` valid from yesterday (to absorb clock skew between the
/// issuing machine and the nodes) until the same day `years` later.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let today = i64::try_from(now_secs)
        .ok()
        .and_then(|secs| UtcDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(UtcDateTime::UNIX_EPOCH)
        .date();
    (params.not_before, params.not_after) = validity(today, years);
}

/// The validity of a certificate issued on `today`: from the start of the
/// day before until the start of the same day `years` later. The day of the
/// month is capped at 28 so that a certificate issued on 29 February has a
/// valid end date.
fn validity(today: Date, years: i32) -> (OffsetDateTime, OffsetDateTime) {
    let from = today.previous_day().unwrap_or(today);
    let (year, month, day) = from.to_calendar_date();
    let until = Date::from_calendar_date(year + years, month, day.min(28))
        .expect("every month has a 28th day");
    (from.midnight().assume_utc(), until.midnight().assume_utc())
}

/// A node's credentials: its certificate and key, and the CA certificates it
/// trusts. All three are PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node certificate (optionally followed by intermediates).
    pub cert_pem: String,
    /// The node's private key (PKCS#8). Secret.
    pub key_pem: String,
    /// The cluster CA certificate(s) every peer must be issued by.
    pub ca_pem: String,
    /// The cluster's secret for causal context tokens. Secret.
    pub context_key: ContextKey,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .field("context_key", &self.context_key)
            .finish()
    }
}

impl NodeIdentity {
    /// Writes `ca.pem`, `node.pem`, `node.key` and `context.key` into `dir`,
    /// creating it if needed. On Unix the secret files get mode 0600, also
    /// when they existed before with a looser mode.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write_file(&dir.join(CA_FILE), &self.ca_pem, false)?;
        write_file(&dir.join(CERT_FILE), &self.cert_pem, false)?;
        write_file(&dir.join(KEY_FILE), &self.key_pem, true)?;
        write_context_key(&dir.join(CONTEXT_KEY_FILE), &self.context_key)
    }

    /// Loads `ca.pem`, `node.pem`, `node.key` and `context.key` from `dir`.
    pub fn load_from_dir(dir: &Path) -> Result<NodeIdentity, TlsError> {
        NodeIdentity::load_from_paths(
            &dir.join(CA_FILE),
            &dir.join(CERT_FILE),
            &dir.join(KEY_FILE),
            &dir.join(CONTEXT_KEY_FILE),
        )
    }

    /// Loads an identity from its four files and checks that each parses.
    pub fn load_from_paths(
        ca: &Path,
        cert: &Path,
        key: &Path,
        context_key: &Path,
    ) -> Result<NodeIdentity, TlsError> {
        let identity = NodeIdentity {
            cert_pem: read_file(cert)?,
            key_pem: read_file(key)?,
            ca_pem: read_file(ca)?,
            context_key: read_context_key(context_key)?,
        };
        identity.roots()?;
        identity.cert_chain()?;
        identity.private_key()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = fs::metadata(key) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %key.display(), "node key is readable by group or others");
                }
            }
        }
        Ok(identity)
    }

    /// The trusted CA certificates as a rustls root store.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(&self.ca_pem, "CA certificate")? {
            roots.add(cert)?;
        }
        Ok(roots)
    }

    /// The node certificate and any intermediates, DER.
    fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        parse_certs(&self.cert_pem, "node certificate")
    }

    /// The node's private key, DER.
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "node key",
            reason: e.to_string(),
        })
    }
}

/// Builds the rustls server configuration of a node: TLS 1.3 only, the node
/// certificate, a client certificate REQUIRED and verified against the
/// identity's CA certificates, and `alpn` as the only application protocol.
pub fn server_config(
    identity: &NodeIdentity,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    server_config_for(identity, &[alpn])
}

/// As [`server_config`], offering each of `alpns` (the client's preference
/// decides among them). Which certificate suits which protocol is checked
/// after the handshake, by the protocol's handler.
pub fn server_config_for(
    identity: &NodeIdentity,
    alpns: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(identity.roots()?), provider.clone())
            .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain()?, identity.private_key()?)?;
    config.alpn_protocols = alpns.iter().map(|alpn| alpn.to_vec()).collect();
    Ok(config)
}

/// Builds the rustls client configuration of a node: TLS 1.3 only, the
/// server verified against the identity's CA certificates (under the name
/// [`SERVER_NAME`]), the node certificate presented for client
/// authentication, and `alpn` as the only application protocol offered.
pub fn client_config(
    identity: &NodeIdentity,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(identity.roots()?)
        .with_client_auth_cert(identity.cert_chain()?, identity.private_key()?)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The ring provider, chosen explicitly rather than taken from a process-wide
/// default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in `pem`; at least one.
fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no certificate found".to_owned(),
        });
    }
    Ok(certs)
}

/// A fresh context-token secret from the operating system's generator.
pub fn generate_context_key() -> Result<ContextKey, TlsError> {
    use ring::rand::SecureRandom as _;
    let mut secret = [0u8; CONTEXT_KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| TlsError::InvalidCa("the system's random generator failed"))?;
    Ok(ContextKey::new(secret))
}

/// Writes a context-token secret as 64 hex digits, mode 0600.
pub fn write_context_key(path: &Path, key: &ContextKey) -> Result<(), TlsError> {
    let hex: String = key.secret().iter().map(|b| format!("{b:02x}")).collect();
    write_file(path, &format!("{hex}\n"), true)
}

/// Reads a context-token secret written by [`write_context_key`].
pub fn read_context_key(path: &Path) -> Result<ContextKey, TlsError> {
    let text = read_file(path)?;
    let text = text.trim();
    let invalid = || TlsError::Pem {
        what: "context key",
        reason: format!(
            "{} must hold {} hex digits (written by `chorus cert ca`)",
            path.display(),
            2 * CONTEXT_KEY_LEN
        ),
    };
    if text.len() != 2 * CONTEXT_KEY_LEN || !text.is_ascii() {
        return Err(invalid());
    }
    let mut secret = [0u8; CONTEXT_KEY_LEN];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok(ContextKey::new(secret))
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path`, with mode 0600 on Unix when `secret`.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let io_error = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        // `mode` only applies to a file this call creates; tighten an
        // existing one before the secret goes into it.
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_error)?;
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Just enough DER to take a CA certificate apart: the raw subject and
/// public key of a certificate, and a subject as rcgen's
/// [`DistinguishedName`]. Every function returns `None` on anything it does
/// not understand; none of them panics on malformed input.
mod der {
    use super::{DistinguishedName, DnType, DnValue};

    const TAG_SEQUENCE: u8 = 0x30;
    const TAG_SET: u8 = 0x31;
    const TAG_INTEGER: u8 = 0x02;
    const TAG_OID: u8 = 0x06;
    const TAG_UTF8_STRING: u8 = 0x0c;
    const TAG_PRINTABLE_STRING: u8 = 0x13;
    const TAG_IA5_STRING: u8 = 0x16;
    const TAG_VERSION: u8 = 0xa0;

    /// The parts of a certificate the CA loader needs, as raw DER (tag and
    /// length included).
    pub(super) struct Parsed<'a> {
        pub(super) subject: &'a [u8],
        pub(super) spki: &'a [u8],
    }

    /// One TLV: its tag, its contents, the whole encoding, and what follows.
    struct Tlv<'a> {
        tag: u8,
        contents: &'a [u8],
        whole: &'a [u8],
        rest: &'a [u8],
    }

    fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
        let (&tag, after_tag) = input.split_first()?;
        // Multi-byte tags never occur in the structures read here.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, after_len) = after_tag.split_first()?;
        let (len, after_len) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_len.len() < count {
                return None;
            }
            let (bytes, after) = after_len.split_at(count);
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, after)
        };
        if after_len.len() < len {
            return None;
        }
        let (contents, rest) = after_len.split_at(len);
        let header_len = input.len() - after_len.len();
        Some(Tlv {
            tag,
            contents,
            whole: &input[..header_len + len],
            rest,
        })
    }

    fn expect(input: &[u8], tag: u8) -> Option<Tlv<'_>> {
        tlv(input).filter(|t| t.tag == tag)
    }

    pub(super) fn parse_certificate(der: &[u8]) -> Option<Parsed<'_>> {
        let certificate = expect(der, TAG_SEQUENCE)?;
        let tbs = expect(certificate.contents, TAG_SEQUENCE)?;
        let mut fields = tbs.contents;
        if let Some(version) = expect(fields, TAG_VERSION) {
            fields = version.rest;
        }
        let serial = expect(fields, TAG_INTEGER)?;
        let signature = expect(serial.rest, TAG_SEQUENCE)?;
        let issuer = expect(signature.rest, TAG_SEQUENCE)?;
        let validity = expect(issuer.rest, TAG_SEQUENCE)?;
        let subject = expect(validity.rest, TAG_SEQUENCE)?;
        let spki = expect(subject.rest, TAG_SEQUENCE)?;
        Some(Parsed {
            subject: subject.whole,
            spki: spki.whole,
        })
    }

    /// A Name as rcgen's [`DistinguishedName`]. Only single-attribute RDNs
    /// with a string type rcgen can write back are accepted, and no
    /// attribute type may repeat (rcgen keeps one value per type).
    pub(super) fn parse_name(der: &[u8]) -> Option<DistinguishedName> {
        let name = expect(der, TAG_SEQUENCE)?;
        let mut name_out = DistinguishedName::new();
        let mut rdns = name.contents;
        while !rdns.is_empty() {
            let rdn = expect(rdns, TAG_SET)?;
            rdns = rdn.rest;
            let attribute = expect(rdn.contents, TAG_SEQUENCE)?;
            if !attribute.rest.is_empty() {
                return None;
            }
            let oid = expect(attribute.contents, TAG_OID)?;
            let value = tlv(oid.rest)?;
            if !value.rest.is_empty() {
                return None;
            }
            let text = String::from_utf8(value.contents.to_vec()).ok()?;
            let value = match value.tag {
                TAG_UTF8_STRING => DnValue::Utf8String(text),
                TAG_PRINTABLE_STRING => DnValue::PrintableString(text.try_into().ok()?),
                TAG_IA5_STRING => DnValue::Ia5String(text.try_into().ok()?),
                _ => return None,
            };
            let dn_type = DnType::from_oid(&parse_oid(oid.contents)?);
            if name_out.get(&dn_type).is_some() {
                return None;
            }
            name_out.push(dn_type, value);
        }
        Some(name_out)
    }

    fn parse_oid(contents: &[u8]) -> Option<Vec<u64>> {
        let mut arcs = Vec::new();
        let mut value: u64 = 0;
        let mut in_arc = false;
        for &byte in contents {
            if value > (u64::MAX >> 7) {
                return None;
            }
            value = (value << 7) | u64::from(byte & 0x7f);
            in_arc = byte & 0x80 != 0;
            if !in_arc {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        (!in_arc && !arcs.is_empty()).then_some(arcs)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn oid_of_common_name() {
            assert_eq!(parse_oid(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
            assert_eq!(
                parse_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
                Some(vec![1, 2, 840, 113_549])
            );
            assert_eq!(parse_oid(&[0x86]), None, "unterminated arc");
            assert_eq!(parse_oid(&[]), None);
        }

        #[test]
        fn garbage_is_rejected_without_panicking() {
            for input in [
                &[][..],
                &[0x30],
                &[0x30, 0x85, 0, 0, 0, 0, 1],
                &[0x30, 0x82, 0xff],
                &[0x30, 0x03, 0x30, 0x01],
                &[0x1f, 0x00],
            ] {
                assert!(parse_certificate(input).is_none(), "{input:?}");
                assert!(parse_name(input).is_none(), "{input:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::client::WebPkiServerVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    /// Checks `node` both ways against the CA certificates in `ca_pem`: as a
    /// client certificate and as a server certificate for [`SERVER_NAME`].
    fn verify(node: &NodeIdentity, ca_pem: &str) -> Result<(), rustls::Error> {
        let trusting = NodeIdentity {
            ca_pem: ca_pem.to_owned(),
            ..node.clone()
        };
        let roots = Arc::new(trusting.roots().expect("roots"));
        let chain = node.cert_chain().expect("chain");
        let (end_entity, intermediates) = chain.split_first().expect("one cert");
        let now = UnixTime::now();
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .expect("client verifier")
            .verify_client_cert(end_entity, intermediates, now)?;
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .expect("server verifier")
            .verify_server_cert(
                end_entity,
                intermediates,
                &ServerName::try_from(SERVER_NAME).expect("name"),
                &[],
                now,
            )?;
        Ok(())
    }

    #[test]
    fn issued_certificates_verify_as_client_and_server() {
        let ca = ClusterCa::generate("test").expect("ca");
        let node = ca.issue("node-1").expect("issue");
        assert_eq!(node.ca_pem, ca.cert_pem());
        verify(&node, ca.cert_pem()).expect("trusted by its own CA");
        server_config(&node, ALPN_INTERNODE).expect("server config");
        client_config(&node, ALPN_INTERNODE).expect("client config");
    }

    #[test]
    fn certificates_from_another_ca_do_not_verify() {
        let ours = ClusterCa::generate("ours").expect("ca");
        let theirs = ClusterCa::generate("theirs").expect("ca");
        let stranger = theirs.issue("node-1").expect("issue");
        assert!(verify(&stranger, ours.cert_pem()).is_err());
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_the_original_trusts() {
        let ca = ClusterCa::generate("reload").expect("ca");
        let (cert_pem, key_pem) = ca.to_pem();
        let reloaded =
            ClusterCa::from_pem(&cert_pem, &key_pem, ca.context_key().clone()).expect("from_pem");
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        let node = reloaded.issue("10.0.0.7").expect("issue");
        verify(&node, ca.cert_pem()).expect("trusted by the original CA");
    }

    #[test]
    fn the_context_key_goes_from_the_ca_to_every_node_and_round_trips() {
        let ca = ClusterCa::generate("keys").expect("ca");
        let other = ClusterCa::generate("keys").expect("ca");
        assert_ne!(ca.context_key(), other.context_key(), "fresh per cluster");
        let node = ca.issue("n1").expect("issue");
        assert_eq!(&node.context_key, ca.context_key());
        let dir = tempfile::tempdir().expect("tempdir");
        node.write_to_dir(dir.path()).expect("write");
        let loaded = NodeIdentity::load_from_dir(dir.path()).expect("load");
        assert_eq!(loaded, node);
        std::fs::write(dir.path().join(CONTEXT_KEY_FILE), "abc").expect("write");
        assert!(NodeIdentity::load_from_dir(dir.path()).is_err());
    }

    #[test]
    fn a_ca_with_the_wrong_key_is_refused() {
        let ca = ClusterCa::generate("a").expect("ca");
        let other = ClusterCa::generate("b").expect("ca");
        let (cert_pem, _) = ca.to_pem();
        let (_, other_key) = other.to_pem();
        assert!(matches!(
            ClusterCa::from_pem(&cert_pem, &other_key, ca.context_key().clone()),
            Err(TlsError::KeyMismatch)
        ));
        assert!(matches!(
            ClusterCa::from_pem("not pem", &other_key, ca.context_key().clone()),
            Err(TlsError::Pem { .. })
        ));
    }

    #[test]
    fn a_bundle_of_two_cas_trusts_both() {
        let old = ClusterCa::generate("old").expect("ca");
        let new = ClusterCa::generate("new").expect("ca");
        let bundle = format!("{}{}", old.cert_pem(), new.cert_pem());
        verify(&old.issue("a").expect("issue"), &bundle).expect("old CA trusted");
        verify(&new.issue("b").expect("issue"), &bundle).expect("new CA trusted");
    }

    #[test]
    fn names_that_cannot_go_into_a_certificate_are_refused() {
        assert!(matches!(
            ClusterCa::generate(" "),
            Err(TlsError::InvalidName { .. })
        ));
        let ca = ClusterCa::generate("names").expect("ca");
        for name in ["", "node 1", "node_1/x", "ünïcode"] {
            assert!(
                matches!(ca.issue(name), Err(TlsError::InvalidName { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn identity_round_trips_through_a_directory() {
        let ca = ClusterCa::generate("dir").expect("ca");
        let node = ca.issue("node-1").expect("issue");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity");
        node.write_to_dir(&path).expect("write");
        // Writing over existing files works too.
        node.write_to_dir(&path).expect("rewrite");
        let loaded = NodeIdentity::load_from_dir(&path).expect("load");
        assert_eq!(loaded, node);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(path.join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn loading_reports_the_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        match NodeIdentity::load_from_dir(dir.path()) {
            Err(TlsError::Io { path, .. }) => assert!(path.starts_with(dir.path())),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let ca = ClusterCa::generate("secret").expect("ca");
        let node = ca.issue("node-1").expect("issue");
        assert!(!format!("{node:?}").contains("PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn client_certificates_verify_as_clients_but_not_as_nodes() {
        let ca = ClusterCa::generate("roles").expect("ca");
        let node = ca.issue("node-1").expect("node");
        let client = ca.issue_client("alice@laptop").expect("client");
        let checker = NodeCertChecker::new(&node).expect("checker");
        let chain = |pem: &str| parse_certs(pem, "test").expect("certs");
        checker
            .check(&chain(&node.cert_pem))
            .expect("a node is a node");
        assert!(checker.check(&chain(&client.cert_pem)).is_err());
        // Still a valid client certificate of the cluster.
        WebPkiClientVerifier::builder_with_provider(Arc::new(node.roots().unwrap()), provider())
            .build()
            .unwrap()
            .verify_client_cert(&chain(&client.cert_pem)[0], &[], UnixTime::now())
            .expect("trusted as a client");
        // A node of another cluster is not a node of this one.
        let stranger = ClusterCa::generate("other").unwrap().issue("n").unwrap();
        assert!(checker.check(&chain(&stranger.cert_pem)).is_err());
        for bad in ["", "a b", &"x".repeat(MAX_CLIENT_NAME_BYTES + 1)] {
            assert!(ca.issue_client(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{client:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn validity_runs_from_yesterday_to_the_same_day_years_later() {
        let date = |y, m: u8, d| Date::from_calendar_date(y, m.try_into().unwrap(), d).unwrap();
        let at = |y, m, d| date(y, m, d).midnight().assume_utc();
        // The end's day of the month is capped at 28.
        assert_eq!(
            validity(date(2026, 1, 1), 10),
            (at(2025, 12, 31), at(2035, 12, 28))
        );
        assert_eq!(
            validity(date(1970, 1, 2), 1),
            (at(1970, 1, 1), at(1971, 1, 1))
        );
        // Issued the day after a leap day: valid until 28 February.
        assert_eq!(
            validity(date(2024, 3, 1), 2),
            (at(2024, 2, 29), at(2026, 2, 28))
        );
    }
}

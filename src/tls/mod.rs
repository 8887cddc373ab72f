//! The TLS frontend: OpenSSL acceptors for the mTLS and public listeners, the handshake with its
//! client-certificate check (and the record of every refusal), and reloading of certificates,
//! trust anchors and CRLs.

pub mod peer;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_http::Protocol;
use arc_swap::ArcSwap;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    AlpnError, Ssl, SslAcceptor, SslAcceptorBuilder, SslMethod, SslOptions, SslVerifyMode,
    SslVersion, select_next_proto,
};
use openssl::stack::Stack;
use openssl::x509::store::{X509Lookup, X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509StoreContextRef};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::config::TlsSettings;
use crate::registry::CertFacts;
pub use peer::{CertTrust, OperatorRole, PeerIdentity, Thumbprint, VerifiedClientCert};

/// TLS 1.2 suites allowed by FAPI 1.0 Advanced §8.5 and BCP 195.
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
pub const TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
const ALPN: &[u8] = b"\x02h2\x08http/1.1";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type TlsIo = SslStream<TcpStream>;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

fn file_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A refused handshake, for the audit log and metrics.
#[derive(Debug, Clone)]
pub struct HandshakeFailure {
    pub peer: Option<SocketAddr>,
    /// Short machine reason, e.g. `no_certificate`, `certificate_expired`, `untrusted_issuer`.
    pub reason: &'static str,
    pub detail: String,
    pub cert: CertFacts,
    /// True when the client certificate check failed (as opposed to, say, a protocol version).
    pub certificate_check: bool,
}

pub type FailureSink = Arc<dyn Fn(HandshakeFailure) + Send + Sync>;

/// The two TLS listeners (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Client certificate required at the handshake: TPPs and operators.
    Mtls,
    /// No client certificate requested: discovery and browsers.
    Public,
}

/// What the mTLS listener trusts, swapped whole on reload. A handshake reads it once, when the
/// connection arrives: the context its client certificate is verified with and the generation
/// the connection is tagged with are one value, so a handshake that straddles a reload is tagged
/// with the trust it was actually checked against. Session tickets are keyed per context, so a
/// session issued before a reload cannot be resumed after it.
struct MtlsTrust {
    acceptor: SslAcceptor,
    /// The same anchors and CRLs as the acceptor's: a resumed session's certificate is
    /// verified against them again (OpenSSL keeps no chain for it).
    verify_store: X509Store,
    operator_anchors: HashSet<Thumbprint>,
    generation: u64,
}

/// Both listeners' OpenSSL contexts, swapped atomically on reload.
pub struct TlsFrontend {
    mtls: ArcSwap<MtlsTrust>,
    public: ArcSwap<SslAcceptor>,
    self_signed: Arc<ArcSwap<HashSet<Thumbprint>>>,
    /// The newest trust generation; connections verified under an older one are refused.
    live_generation: Arc<AtomicU64>,
    /// Where each mTLS connection keeps the trust its handshake used.
    handshake_trust: Index<Ssl, Arc<MtlsTrust>>,
    /// Serialises reloads, so generations are published in the order they were made.
    reloading: Mutex<()>,
    on_failure: FailureSink,
}

impl TlsFrontend {
    pub fn new(settings: &TlsSettings, on_failure: FailureSink) -> Result<Self, TlsError> {
        Ok(Self {
            mtls: ArcSwap::from_pointee(MtlsTrust {
                acceptor: mtls_acceptor(settings)?,
                verify_store: verify_store(settings)?,
                operator_anchors: operator_anchors(settings)?,
                generation: 0,
            }),
            public: ArcSwap::from_pointee(public_acceptor(settings)?),
            self_signed: Arc::new(ArcSwap::from_pointee(HashSet::new())),
            live_generation: Arc::new(AtomicU64::new(0)),
            handshake_trust: Ssl::new_ex_index()?,
            reloading: Mutex::new(()),
            on_failure,
        })
    }

    /// Re-reads certificates, trust anchors and CRLs. On error the old contexts stay in force.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        let acceptor = mtls_acceptor(settings)?;
        let verify_store = verify_store(settings)?;
        let public = public_acceptor(settings)?;
        let operator_anchors = operator_anchors(settings)?;
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The live generation moves first: a connection verified under the old trust is refused
        // from now on, even one whose handshake completes after the new trust is in place.
        let generation = self.live_generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.mtls.store(Arc::new(MtlsTrust {
            acceptor,
            verify_store,
            operator_anchors,
            generation,
        }));
        self.public.store(Arc::new(public));
        Ok(())
    }

    /// Thumbprints of the certificates registered for `self_signed_tls_client_auth` clients;
    /// such a certificate passes the handshake although no trust anchor issued it.
    pub fn set_self_signed(&self, thumbprints: HashSet<Thumbprint>) {
        self.self_signed.store(Arc::new(thumbprints));
    }

    /// Who is on the other end of an established connection, judged by the trust its own
    /// handshake used.
    pub fn identify(&self, ssl: &openssl::ssl::SslRef) -> PeerIdentity {
        let Some(trust) = ssl.ex_data(self.handshake_trust) else {
            // Only the public listener's connections carry no trust: they have no certificate.
            return match ssl.peer_certificate() {
                None => PeerIdentity::Absent,
                Some(_) => {
                    PeerIdentity::Rejected("the connection's handshake left no trust record")
                }
            };
        };
        PeerIdentity::from_session(
            ssl,
            &trust.verify_store,
            &trust.operator_anchors,
            &self.self_signed.load(),
            trust.generation,
            &self.live_generation,
        )
    }

    /// The handshake of a connection that arrived on `listener`.
    pub async fn accept(
        &self,
        listener: Listener,
        tcp: TcpStream,
    ) -> Option<(TlsIo, Protocol, Option<SocketAddr>)> {
        match listener {
            Listener::Mtls => self.accept_mtls(tcp).await,
            Listener::Public => self.accept_public(tcp).await,
        }
    }

    /// The mTLS handshake: a client certificate is required and must verify.
    async fn accept_mtls(&self, tcp: TcpStream) -> Option<(TlsIo, Protocol, Option<SocketAddr>)> {
        let peer = tcp.peer_addr().ok();
        let trust = self.mtls.load_full();
        let rejection: Arc<Mutex<Option<Rejection>>> = Arc::default();
        let mut ssl = Ssl::new(trust.acceptor.context()).ok()?;
        ssl.set_ex_data(self.handshake_trust, trust);
        {
            let rejection = Arc::clone(&rejection);
            let registered = Arc::clone(&self.self_signed);
            ssl.set_verify_callback(
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
                move |ok, ctx| verify_client(ok, ctx, &registered, &rejection),
            );
        }
        match handshake(ssl, tcp).await {
            Ok(io) => Some(with_protocol(io, peer)),
            Err(err) => {
                let recorded = rejection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(failure) = classify(peer, recorded, &err) {
                    (self.on_failure)(failure);
                }
                None
            }
        }
    }

    /// The public handshake: no client certificate is requested.
    async fn accept_public(&self, tcp: TcpStream) -> Option<(TlsIo, Protocol, Option<SocketAddr>)> {
        let peer = tcp.peer_addr().ok();
        let acceptor = self.public.load_full();
        let ssl = Ssl::new(acceptor.context()).ok()?;
        handshake(ssl, tcp)
            .await
            .ok()
            .map(|io| with_protocol(io, peer))
    }
}

fn with_protocol(io: TlsIo, peer: Option<SocketAddr>) -> (TlsIo, Protocol, Option<SocketAddr>) {
    let proto = match io.ssl().selected_alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let _ = io.get_ref().set_nodelay(true);
    (io, proto, peer)
}

enum HandshakeError {
    Ssl(openssl::ssl::Error),
    Setup,
    Timeout,
}

async fn handshake(ssl: Ssl, tcp: TcpStream) -> Result<TlsIo, HandshakeError> {
    let mut stream = SslStream::new(ssl, tcp).map_err(|_| HandshakeError::Setup)?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(HandshakeError::Ssl(e)),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

struct Rejection {
    reason: &'static str,
    detail: String,
    cert: CertFacts,
}

fn verify_client(
    preverify_ok: bool,
    ctx: &mut X509StoreContextRef,
    registered: &ArcSwap<HashSet<Thumbprint>>,
    rejection: &Mutex<Option<Rejection>>,
) -> bool {
    if preverify_ok {
        return true;
    }
    let code = ctx.error().as_raw();
    // A registered self-signed leaf has no issuer to ask about it and so no CRL: OpenSSL 3.0
    // reports that too (3.6 stops at the self-signature). Its revocation is its removal from
    // the registry.
    let self_signed_leaf_error = code == openssl_sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        || code == openssl_sys::X509_V_ERR_UNABLE_TO_GET_CRL;
    if self_signed_leaf_error
        && ctx.error_depth() == 0
        && ctx.current_cert().is_some_and(peer::is_self_issued)
    {
        let is_registered = ctx
            .current_cert()
            .and_then(|c| Thumbprint::of(c).ok())
            .is_some_and(|t| registered.load().contains(&t));
        if is_registered {
            return true;
        }
    }
    let leaf = ctx
        .chain()
        .and_then(|chain| chain.get(0))
        .or_else(|| ctx.current_cert());
    let mut slot = rejection.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(Rejection {
            reason: verify_reason(code),
            detail: ctx.error().error_string().to_string(),
            cert: leaf.map(peer::facts_of).unwrap_or_default(),
        });
    }
    false
}

fn verify_reason(code: i32) -> &'static str {
    use openssl_sys as s;
    match code {
        s::X509_V_ERR_CERT_HAS_EXPIRED => "certificate_expired",
        s::X509_V_ERR_CERT_NOT_YET_VALID => "certificate_not_yet_valid",
        s::X509_V_ERR_CERT_REVOKED => "certificate_revoked",
        s::X509_V_ERR_INVALID_PURPOSE => "certificate_wrong_purpose",
        s::X509_V_ERR_UNABLE_TO_GET_CRL | s::X509_V_ERR_CRL_HAS_EXPIRED => "crl_unavailable",
        s::X509_V_ERR_CERT_SIGNATURE_FAILURE => "certificate_bad_signature",
        s::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | s::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | s::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | s::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | s::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT => "untrusted_issuer",
        _ => "certificate_invalid",
    }
}

fn classify(
    peer: Option<SocketAddr>,
    rejection: Option<Rejection>,
    err: &HandshakeError,
) -> Option<HandshakeFailure> {
    if let Some(r) = rejection {
        return Some(HandshakeFailure {
            peer,
            reason: r.reason,
            detail: r.detail,
            cert: r.cert,
            certificate_check: true,
        });
    }
    let detail = match err {
        HandshakeError::Ssl(e) => e
            .ssl_error()
            .and_then(|stack| stack.errors().first())
            .and_then(|e| e.reason())
            .map(str::to_string),
        HandshakeError::Timeout => Some("handshake timed out".to_string()),
        HandshakeError::Setup => None,
    }?;
    let lower = detail.to_ascii_lowercase();
    let (reason, certificate_check) = if lower.contains("did not return a certificate")
        || lower.contains("certificate required")
    {
        ("no_certificate", true)
    } else if lower.contains("version") || lower.contains("protocol") {
        ("protocol_version", false)
    } else if lower.contains("cipher") {
        ("no_shared_cipher", false)
    } else if lower.contains("timed out") {
        ("handshake_timeout", false)
    } else {
        ("handshake_failed", false)
    };
    Some(HandshakeFailure {
        peer,
        reason,
        detail,
        cert: CertFacts::default(),
        certificate_check,
    })
}

fn read_certs(path: &Path) -> Result<Vec<X509>, TlsError> {
    let pem = crate::pki::read(path).map_err(|e| file_err(path, e.to_string()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|_| file_err(path, "not a PEM certificate"))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in file"));
    }
    Ok(certs)
}

/// The certificates the configured CRLs list, as `(issuer DN, serial)` in the forms the client
/// registry records them, so registered certificates can be marked revoked with their tokens.
pub fn crl_listed(settings: &TlsSettings) -> Result<HashSet<(String, String)>, TlsError> {
    let mut listed = HashSet::new();
    for path in &settings.crl {
        let pem = crate::pki::read(path).map_err(|e| file_err(path, e.to_string()))?;
        let crl =
            openssl::x509::X509Crl::from_pem(&pem).map_err(|_| file_err(path, "not a PEM CRL"))?;
        let issuer = peer::dn_string(crl.issuer_name());
        for entry in crl.get_revoked().into_iter().flatten() {
            if let Some(serial) = entry
                .serial_number()
                .to_bn()
                .ok()
                .and_then(|bn| bn.to_hex_str().ok().map(|s| s.to_string()))
            {
                listed.insert((issuer.clone(), serial));
            }
        }
    }
    Ok(listed)
}

fn operator_anchors(settings: &TlsSettings) -> Result<HashSet<Thumbprint>, TlsError> {
    let mut anchors = HashSet::new();
    for path in &settings.operator_ca {
        for ca in read_certs(path)? {
            anchors.insert(Thumbprint::of(&ca)?);
        }
    }
    Ok(anchors)
}

fn base_acceptor(settings: &TlsSettings) -> Result<SslAcceptorBuilder, TlsError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    b.set_ciphersuites(TLS13_SUITES)?;
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);

    let pem =
        crate::pki::read(&settings.cert).map_err(|e| file_err(&settings.cert, e.to_string()))?;
    let mut chain = X509::stack_from_pem(&pem)
        .map_err(|_| file_err(&settings.cert, "not a PEM certificate chain"))?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| file_err(&settings.cert, "no certificate in file"))?;
    b.set_certificate(&leaf)?;
    for extra in chain {
        b.add_extra_chain_cert(extra)?;
    }
    let key_pem =
        crate::pki::read(&settings.key).map_err(|e| file_err(&settings.key, e.to_string()))?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|_| file_err(&settings.key, "not a PEM private key"))?;
    b.set_private_key(&key)?;
    b.check_private_key()
        .map_err(|_| file_err(&settings.key, "private key does not match tls.cert"))?;
    b.set_alpn_select_callback(|_, client| select_next_proto(ALPN, client).ok_or(AlpnError::NOACK));
    Ok(b)
}

/// The client-certificate trust store: the anchors, and the CRLs when configured.
fn verify_store(settings: &TlsSettings) -> Result<X509Store, TlsError> {
    let mut store = X509StoreBuilder::new()?;
    for path in &settings.client_ca {
        for ca in read_certs(path)? {
            store.add_cert(ca)?;
        }
    }
    if !settings.crl.is_empty() {
        let lookup = store.add_lookup(X509Lookup::file())?;
        for path in &settings.crl {
            if path.to_str().is_none() {
                return Err(file_err(path, "CRL path is not valid UTF-8"));
            }
            if !path.is_file() {
                return Err(file_err(path, "CRL file not found"));
            }
            lookup
                .load_crl_file(path, openssl::ssl::SslFiletype::PEM)
                .map_err(|_| file_err(path, "not a PEM CRL"))?;
        }
        // Every certificate in the chain below the anchor must be covered by a CRL, so a
        // revoked intermediate CA takes its whole subtree down with it.
        store.set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)?;
    }
    Ok(store.build())
}

fn mtls_acceptor(settings: &TlsSettings) -> Result<SslAcceptor, TlsError> {
    let mut b = base_acceptor(settings)?;
    let mut ca_names = Stack::new()?;
    for path in &settings.client_ca {
        for ca in read_certs(path)? {
            ca_names.push(ca.subject_name().to_owned()?)?;
        }
    }
    b.set_verify_cert_store(verify_store(settings)?)?;
    b.set_client_ca_list(ca_names);
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_session_id_context(b"obgate-mtls")?;
    // One TLS 1.3 ticket is enough to resume; OpenSSL's default of two doubles the per-handshake
    // ticket work (each carries the client certificate).
    b.set_num_tickets(1)?;
    Ok(b.build())
}

fn public_acceptor(settings: &TlsSettings) -> Result<SslAcceptor, TlsError> {
    let mut b = base_acceptor(settings)?;
    b.set_verify(SslVerifyMode::NONE);
    Ok(b.build())
}

/// Checks, outside any handshake, that `cert` chains to one of the configured trust anchors
/// and is within its validity period (as the mTLS listener will check it); returns the key of
/// the CA that issued it (see [`peer::key_id`]).
pub fn verify_with_trust_anchors(settings: &TlsSettings, cert: &X509) -> Result<String, String> {
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for path in &settings.client_ca {
        for ca in read_certs(path).map_err(|e| e.to_string())? {
            store.add_cert(ca).map_err(|e| e.to_string())?;
        }
    }
    store
        .set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)
        .map_err(|e| e.to_string())?;
    let store = store.build();
    let chain = Stack::new().map_err(|e| e.to_string())?;
    let mut ctx = openssl::x509::X509StoreContext::new().map_err(|e| e.to_string())?;
    let (result, issuer_key) = ctx
        .init(&store, cert, &chain, |c| {
            c.verify_cert()?;
            let issuer = c
                .chain()
                .and_then(|chain| chain.get(1).or_else(|| chain.get(0)))
                .and_then(peer::key_id);
            Ok((c.error(), issuer))
        })
        .map_err(|e| e.to_string())?;
    match (result == openssl::x509::X509VerifyResult::OK, issuer_key) {
        (true, Some(key)) => Ok(key),
        (true, None) => Err("the issuing CA's key could not be read".into()),
        (false, _) => Err(result.error_string().to_string()),
    }
}

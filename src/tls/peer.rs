//! The verified client certificate, captured from the TLS connection when it is established and
//! read by handlers through request extensions. Only this module can build one.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::HttpRequest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::SslRef;
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509, X509NameRef, X509Ref, X509StoreContext};

use crate::registry::{CertFacts, CertRecord};

/// SHA-256 of a certificate's DER encoding: the RFC 8705 §3.1 `x5t#S256` input.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    pub fn of(cert: &X509Ref) -> Result<Self, openssl::error::ErrorStack> {
        let digest = cert.digest(MessageDigest::sha256())?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        Ok(Self(out))
    }

    /// Parses the base64url (unpadded) form used in `cnf.x5t#S256`.
    pub fn from_b64url(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice()).ok().map(Self)
    }

    pub fn to_b64url(self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Constant-time comparison, so a forger learns nothing from timing.
    pub fn ct_eq(&self, other: &Thumbprint) -> bool {
        openssl::memcmp::eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({})", self.to_b64url())
    }
}

/// How the certificate earned our trust at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertTrust {
    /// Chains to a configured trust anchor (and passes the CRLs).
    Chain,
    /// Self-signed, accepted only because its thumbprint is registered for a client using
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2).
    SelfSignedRegistered,
}

/// A client certificate that OpenSSL verified during this connection's handshake.
#[derive(Clone, Debug)]
pub struct VerifiedClientCert(Arc<CertInfo>);

/// Operator roles (SPEC §1), carried as `OU` attributes of an operator certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorRole {
    Portal,
    Auditor,
}

impl OperatorRole {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "portal" => Some(Self::Portal),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct CertInfo {
    der: Vec<u8>,
    thumbprint: Thumbprint,
    thumbprint_b64: String,
    subject: String,
    issuer: String,
    serial: String,
    not_after: i64,
    trust: CertTrust,
    /// base64url SHA-256 of the issuing CA's public key (the certificate's own when it is
    /// self-signed); `None` when the chain could not be read.
    issuer_key: Option<String>,
    operator_roles: Vec<OperatorRole>,
    /// The trust configuration this connection was verified under, and the live one.
    generation: u64,
    live_generation: Arc<AtomicU64>,
}

/// What can be read of a presented certificate, whether or not it was accepted.
pub fn facts_of(cert: &X509Ref) -> CertFacts {
    CertFacts {
        thumbprint: Thumbprint::of(cert).ok().map(Thumbprint::to_b64url),
        subject: Some(dn_string(cert.subject_name())),
        serial: serial_hex(cert),
    }
}

/// What the client registry records about a certificate presented for registration.
pub fn registration_record(cert: &X509Ref) -> Option<CertRecord> {
    Some(CertRecord {
        thumbprint: Thumbprint::of(cert).ok()?.to_b64url(),
        subject: dn_string(cert.subject_name()),
        issuer: dn_string(cert.issuer_name()),
        serial: serial_hex(cert)?,
        not_after: not_after_unix(cert)?,
        issuer_key: None,
    })
}

/// base64url SHA-256 of a certificate's SubjectPublicKeyInfo: which key it is, whatever DN it
/// goes by.
pub fn key_id(cert: &X509Ref) -> Option<String> {
    let spki = cert.public_key().ok()?.public_key_to_der().ok()?;
    let digest = openssl::hash::hash(MessageDigest::sha256(), &spki).ok()?;
    Some(URL_SAFE_NO_PAD.encode(digest))
}

/// What the TLS layer needs of a verified chain (leaf first): the issuer's key, and the trust
/// anchor it ends at.
/// Hashing the anchor is only worth it (`want_anchor`) for the few connections whose subject
/// claims to be an operator's.
fn chain_facts(chain: &StackRef<X509>, want_anchor: bool) -> (Option<String>, Option<Thumbprint>) {
    let issuer = chain.get(1).or_else(|| chain.get(0)).and_then(key_id);
    let anchor = want_anchor
        .then(|| chain.iter().last().and_then(|a| Thumbprint::of(a).ok()))
        .flatten();
    (issuer, anchor)
}

/// The chain facts of this connection. A full handshake keeps the chain it verified; a resumed
/// session does not (OpenSSL keeps only the leaf), so its leaf is verified again against
/// `verify_store`, the anchors and CRLs of the handshake that created the session.
fn connection_chain_facts(
    ssl: &SslRef,
    verify_store: &X509StoreRef,
    cert: &X509Ref,
    want_anchor: bool,
) -> (Option<String>, Option<Thumbprint>) {
    if let Some(chain) = ssl.verified_chain() {
        return chain_facts(chain, want_anchor);
    }
    if !ssl.session_reused() {
        return (None, None);
    }
    let reverified = || -> Result<_, openssl::error::ErrorStack> {
        let untrusted = Stack::new()?;
        let mut ctx = X509StoreContext::new()?;
        ctx.init(verify_store, cert, &untrusted, |c| {
            Ok(if c.verify_cert()? {
                c.chain().map(|chain| chain_facts(chain, want_anchor))
            } else {
                None
            })
        })
    };
    reverified().ok().flatten().unwrap_or((None, None))
}

impl VerifiedClientCert {
    fn from_handshake(
        cert: &X509Ref,
        trust: CertTrust,
        issuer_key: Option<String>,
        operator_roles: Vec<OperatorRole>,
        generation: u64,
        live_generation: &Arc<AtomicU64>,
    ) -> Option<Self> {
        let thumbprint = Thumbprint::of(cert).ok()?;
        let not_after = not_after_unix(cert)?;
        let subject_name = cert.subject_name();
        Some(Self(Arc::new(CertInfo {
            der: cert.to_der().ok()?,
            thumbprint,
            thumbprint_b64: thumbprint.to_b64url(),
            subject: dn_string(subject_name),
            issuer: dn_string(cert.issuer_name()),
            serial: serial_hex(cert)?,
            not_after,
            trust,
            issuer_key,
            operator_roles,
            generation,
            live_generation: Arc::clone(live_generation),
        })))
    }

    pub fn der(&self) -> &[u8] {
        &self.0.der
    }
    pub fn thumbprint(&self) -> &Thumbprint {
        &self.0.thumbprint
    }
    /// base64url SHA-256 thumbprint, as in `cnf.x5t#S256`.
    pub fn thumbprint_b64(&self) -> &str {
        &self.0.thumbprint_b64
    }
    /// RFC 4514 string form of the subject DN.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }
    pub fn issuer(&self) -> &str {
        &self.0.issuer
    }
    /// base64url SHA-256 of the issuing CA's public key (see [`key_id`]).
    pub fn issuer_key(&self) -> Option<&str> {
        self.0.issuer_key.as_deref()
    }
    /// Serial number in upper-case hex.
    pub fn serial(&self) -> &str {
        &self.0.serial
    }
    /// Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.0.not_after
    }
    pub fn trust(&self) -> CertTrust {
        self.0.trust
    }
    /// Operator roles, when an operator trust anchor issued this certificate for an operator.
    pub fn operator_roles(&self) -> &[OperatorRole] {
        &self.0.operator_roles
    }

    /// Whether the handshake's verdict still stands for a request made `now`: the certificate
    /// has not expired since, and certificates, trust anchors and CRLs have not been reloaded
    /// since (a revocation must reach connections that are already open).
    pub fn still_valid(&self, now: i64) -> Result<(), &'static str> {
        if self.0.live_generation.load(Ordering::Acquire) != self.0.generation {
            return Err(
                "trust anchors or CRLs were reloaded after this connection was \
                        established; reconnect so the certificate is checked again",
            );
        }
        if now >= self.0.not_after {
            return Err("the client certificate has expired");
        }
        Ok(())
    }

    pub fn is_operator(&self) -> bool {
        !self.0.operator_roles.is_empty()
    }

    pub fn facts(&self) -> CertFacts {
        CertFacts {
            thumbprint: Some(self.0.thumbprint_b64.clone()),
            subject: Some(self.0.subject.clone()),
            serial: Some(self.0.serial.clone()),
        }
    }
}

/// Constant-time equality for secrets and thumbprints of possibly different lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// What the connection says about its client: a verified certificate, or why there is none.
#[derive(Clone, Debug)]
pub enum PeerIdentity {
    Verified(VerifiedClientCert),
    /// No certificate on this connection (only possible on the public listener).
    Absent,
    /// A certificate was present but the post-handshake double check refused it.
    Rejected(&'static str),
}

impl PeerIdentity {
    /// Reads the identity from an established TLS session, double-checking OpenSSL's verdict
    /// against the trust the handshake used (`generation`, checked later against
    /// `live_generation`). A certificate is an operator's only if its verified chain ends at
    /// one of `operator_anchors` and its subject says so; on a resumed session, where OpenSSL
    /// keeps no chain, the leaf is verified again against the listener's trust store to find
    /// its issuer and anchor (browsers resume, and an operator stays one).
    pub fn from_session(
        ssl: &SslRef,
        verify_store: &X509StoreRef,
        operator_anchors: &HashSet<Thumbprint>,
        self_signed: &HashSet<Thumbprint>,
        generation: u64,
        live_generation: &Arc<AtomicU64>,
    ) -> Self {
        let Some(cert) = ssl.peer_certificate() else {
            return Self::Absent;
        };
        let result = ssl.verify_result().as_raw();
        let registered_self_signed = || {
            is_self_issued(&cert) && Thumbprint::of(&cert).is_ok_and(|t| self_signed.contains(&t))
        };
        let trust = if result == openssl_sys::X509_V_OK {
            CertTrust::Chain
        } else if (result == openssl_sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            || result == openssl_sys::X509_V_ERR_UNABLE_TO_GET_CRL)
            && registered_self_signed()
        {
            // Only reachable when our verify callback accepted a registered self-signed leaf
            // (or a session it accepted is resumed); still registered now.
            CertTrust::SelfSignedRegistered
        } else {
            return Self::Rejected("certificate verification failed");
        };
        let mut roles = operator_roles(&cert);
        let (issuer_key, anchor) = match trust {
            CertTrust::Chain => connection_chain_facts(ssl, verify_store, &cert, !roles.is_empty()),
            CertTrust::SelfSignedRegistered => (key_id(&cert), None),
        };
        if !anchor.is_some_and(|t| operator_anchors.contains(&t)) {
            roles.clear();
        }
        match VerifiedClientCert::from_handshake(
            &cert,
            trust,
            issuer_key,
            roles,
            generation,
            live_generation,
        ) {
            Some(v) => Self::Verified(v),
            None => Self::Rejected("certificate could not be read"),
        }
    }

    /// The identity the TLS layer attached to this request's connection.
    pub fn of(req: &HttpRequest) -> PeerIdentity {
        req.conn_data::<PeerIdentity>()
            .cloned()
            .unwrap_or(PeerIdentity::Absent)
    }
}

/// Whether `cert` names itself as its issuer (RFC 5280 §3.2 "self-issued"; a leaf's key need
/// not be allowed to sign certificates, so OpenSSL's `X509_check_issued` would say no).
pub fn is_self_issued(cert: &X509Ref) -> bool {
    match (cert.subject_name().to_der(), cert.issuer_name().to_der()) {
        (Ok(subject), Ok(issuer)) => subject == issuer,
        _ => false,
    }
}

/// The roles of a certificate whose subject names the operators' organisation.
fn operator_roles(cert: &X509Ref) -> Vec<OperatorRole> {
    let name = cert.subject_name();
    let is_operator = name
        .entries_by_nid(Nid::ORGANIZATIONNAME)
        .any(|e| e.data().to_string().ok().as_deref() == Some(crate::pki::OPERATOR_ORG));
    if !is_operator {
        return Vec::new();
    }
    name.entries_by_nid(Nid::ORGANIZATIONALUNITNAME)
        .filter_map(|e| e.data().to_string().ok())
        .filter_map(|r| OperatorRole::parse(&r))
        .collect()
}

fn serial_hex(cert: &X509Ref) -> Option<String> {
    let bn = cert.serial_number().to_bn().ok()?;
    bn.to_hex_str().ok().map(|s| s.to_string())
}

fn not_after_unix(cert: &X509Ref) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// RFC 4514 string form: attributes in reverse ASN.1 order, special characters escaped.
pub fn dn_string(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            let nid = e.object().nid();
            let key = match nid {
                Nid::COMMONNAME => "CN".to_string(),
                Nid::ORGANIZATIONALUNITNAME => "OU".to_string(),
                Nid::ORGANIZATIONNAME => "O".to_string(),
                Nid::COUNTRYNAME => "C".to_string(),
                Nid::LOCALITYNAME => "L".to_string(),
                Nid::STATEORPROVINCENAME => "ST".to_string(),
                Nid::STREETADDRESS => "STREET".to_string(),
                Nid::DOMAINCOMPONENT => "DC".to_string(),
                Nid::USERID => "UID".to_string(),
                _ => e.object().to_string(),
            };
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={}", escape_dn_value(&value))
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let needs = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if needs {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_with_special_characters_are_escaped() {
        assert_eq!(escape_dn_value("Acme, Inc"), "Acme\\, Inc");
        assert_eq!(escape_dn_value(" lead"), "\\ lead");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("plain"), "plain");
    }

    #[test]
    fn thumbprint_round_trips_and_rejects_wrong_lengths() {
        let t = Thumbprint([7u8; 32]);
        assert_eq!(Thumbprint::from_b64url(&t.to_b64url()), Some(t));
        assert_eq!(Thumbprint::from_b64url("AAAA"), None);
        assert_eq!(Thumbprint::from_b64url("not base64!"), None);
    }
}

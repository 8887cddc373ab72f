//! The development PKI: a dev CA, a server certificate for `localhost`/`127.0.0.1`, TPP
//! certificates with UK Open Banking style subjects and operator certificates. Tests mint their
//! own per-test PKI with the same functions. A file that is present is never overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// Organisation name carried by operator certificates; TPP certificates may not use it.
pub const OPERATOR_ORG: &str = "obgate operators";
/// Operator roles a certificate can carry (as `OU` attributes).
pub const OPERATOR_ROLES: [&str; 2] = ["portal", "auditor"];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; obgate never overwrites key material")]
    Exists(PathBuf),
    #[error("{path}: not a PEM {what}")]
    BadPem { path: PathBuf, what: &'static str },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    #[default]
    #[value(name = "ec-p256")]
    EcP256,
    /// RSA 2048.
    #[value(name = "rsa2048")]
    Rsa2048,
}

/// What the certificate is for; decides key usage and extended key usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Ca,
    Server,
    Client,
    /// A certificate whose EKU allows only server authentication (for refusal tests and audits).
    ServerAuthOnly,
}

#[derive(Clone, Debug)]
pub struct CertSpec {
    /// Subject attributes in ASN.1 order (most significant first), e.g. `C`, `O`, `OU`, `CN`.
    pub subject: Vec<(Nid, String)>,
    pub usage: Usage,
    pub key_type: KeyType,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub dns: Vec<String>,
    pub ips: Vec<String>,
}

impl CertSpec {
    pub fn new(subject: Vec<(Nid, String)>, usage: Usage, now: i64, days: i64) -> Self {
        Self {
            subject,
            usage,
            key_type: KeyType::EcP256,
            not_before: now - 300,
            not_after: now + days * 86_400,
            dns: Vec::new(),
            ips: Vec::new(),
        }
    }

    /// `O=<org name>, OU=<org id>, CN=<software id>`, as Open Banking directory certificates.
    pub fn tpp(org_name: &str, org_id: &str, software_id: &str, now: i64) -> Self {
        Self::new(
            vec![
                (Nid::COUNTRYNAME, "GB".into()),
                (Nid::ORGANIZATIONNAME, org_name.into()),
                (Nid::ORGANIZATIONALUNITNAME, org_id.into()),
                (Nid::COMMONNAME, software_id.into()),
            ],
            Usage::Client,
            now,
            397,
        )
    }

    pub fn operator(name: &str, roles: &[String], now: i64) -> Self {
        let mut subject = vec![(Nid::ORGANIZATIONNAME, OPERATOR_ORG.to_string())];
        subject.extend(
            roles
                .iter()
                .map(|r| (Nid::ORGANIZATIONALUNITNAME, r.clone())),
        );
        subject.push((Nid::COMMONNAME, name.into()));
        Self::new(subject, Usage::Client, now, 397)
    }

    pub fn server(now: i64) -> Self {
        let mut spec = Self::new(
            vec![
                (Nid::ORGANIZATIONNAME, "obgate".into()),
                (Nid::COMMONNAME, "localhost".into()),
            ],
            Usage::Server,
            now,
            397,
        );
        spec.dns = vec!["localhost".into()];
        spec.ips = vec!["127.0.0.1".into(), "::1".into()];
        spec
    }

    pub fn ca(common_name: &str, now: i64) -> Self {
        Self::new(
            vec![
                (Nid::ORGANIZATIONNAME, "obgate dev".into()),
                (Nid::COMMONNAME, common_name.into()),
            ],
            Usage::Ca,
            now,
            3650,
        )
    }
}

/// A certificate with its private key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Issued {
    pub fn cert_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.cert.to_pem()?)
    }

    pub fn key_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert = X509::from_pem(&read(cert_path)?).map_err(|_| PkiError::BadPem {
            path: cert_path.to_path_buf(),
            what: "certificate",
        })?;
        let key = PKey::private_key_from_pem(&read(key_path)?).map_err(|_| PkiError::BadPem {
            path: key_path.to_path_buf(),
            what: "private key",
        })?;
        Ok(Self { cert, key })
    }

    /// Writes `dir/name.pem` and `dir/name.key` (mode 0600); refuses if either exists.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::Exists(p.clone()));
            }
        }
        write_new(&key_path, &self.key_pem()?, 0o600)?;
        write_new(&cert_path, &self.cert_pem()?, 0o644)?;
        Ok((cert_path, key_path))
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists(path.to_path_buf())
            } else {
                io(e)
            }
        })?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

pub fn generate_key(key_type: KeyType) -> Result<PKey<Private>, PkiError> {
    Ok(match key_type {
        KeyType::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
    })
}

/// Issues a certificate for `spec`, signed by `issuer`, or self-signed when `issuer` is `None`.
pub fn issue(spec: &CertSpec, issuer: Option<&Issued>) -> Result<Issued, PkiError> {
    let key = generate_key(spec.key_type)?;
    let mut name = X509NameBuilder::new()?;
    for (nid, value) in &spec.subject {
        name.append_entry_by_nid(*nid, value)?;
    }
    let name = name.build();

    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))?;
    b.set_pubkey(&key)?;
    let not_before = Asn1Time::from_unix(spec.not_before)?;
    let not_after = Asn1Time::from_unix(spec.not_after)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;

    let rsa = spec.key_type == KeyType::Rsa2048;
    match spec.usage {
        Usage::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
        }
        Usage::Server | Usage::ServerAuthOnly | Usage::Client => {
            b.append_extension(BasicConstraints::new().critical().build()?)?;
            let mut ku = KeyUsage::new();
            ku.critical().digital_signature();
            if rsa {
                ku.key_encipherment();
            }
            b.append_extension(ku.build()?)?;
            let mut eku = ExtendedKeyUsage::new();
            if spec.usage == Usage::Client {
                eku.client_auth();
            } else {
                eku.server_auth();
            }
            b.append_extension(eku.build()?)?;
        }
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    if let Some(issuer) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&issuer.cert), None))?;
        b.append_extension(aki)?;
    }
    if !spec.dns.is_empty() || !spec.ips.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for d in &spec.dns {
            san.dns(d);
        }
        for ip in &spec.ips {
            san.ip(ip);
        }
        let san = san.build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))?;
        b.append_extension(san)?;
    }
    let signer = issuer.map_or(&key, |i| &i.key);
    b.sign(signer, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// The files of the dev PKI in `<data-dir>/pki/`.
pub struct DevPki {
    pub dir: PathBuf,
}

impl DevPki {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pki"),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Creates whatever of the dev PKI is missing; what is present is kept.
    /// Returns the names of the files it created.
    pub fn init(&self, now: i64) -> Result<Vec<String>, PkiError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| PkiError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut created = Vec::new();
        let ca = match self.load_pair("ca")? {
            Some(ca) => ca,
            None => {
                let ca = issue(&CertSpec::ca("obgate dev CA", now), None)?;
                ca.write(&self.dir, "ca")?;
                created.push("ca".to_string());
                ca
            }
        };
        let wanted = [
            ("server", CertSpec::server(now)),
            (
                "demo-tpp",
                CertSpec::tpp("Demo TPP Ltd", "0015800001DEMOTPP", "demo-tpp", now),
            ),
            (
                "operator",
                CertSpec::operator("operator", &OPERATOR_ROLES.map(str::to_string), now),
            ),
        ];
        for (name, spec) in wanted {
            if self.load_pair(name)?.is_none() {
                issue(&spec, Some(&ca))?.write(&self.dir, name)?;
                created.push(name.to_string());
            }
        }
        Ok(created)
    }

    /// `Some` when both files exist, `None` when neither does, an error when only one does.
    fn load_pair(&self, name: &str) -> Result<Option<Issued>, PkiError> {
        let cert = self.path(&format!("{name}.pem"));
        let key = self.path(&format!("{name}.key"));
        match (cert.exists(), key.exists()) {
            (true, true) => Issued::load(&cert, &key).map(Some),
            (false, false) => Ok(None),
            (true, false) => Err(PkiError::Invalid(format!(
                "{} exists without its key {}; move it away or restore the key",
                cert.display(),
                key.display()
            ))),
            (false, true) => Err(PkiError::Invalid(format!(
                "{} exists without its certificate {}; move it away or restore the certificate",
                key.display(),
                cert.display()
            ))),
        }
    }

    pub fn ca(&self) -> Result<Issued, PkiError> {
        Issued::load(&self.path("ca.pem"), &self.path("ca.key"))
    }
}

/// A certificate's subject CN (the client id a TPP certificate stands for by default).
pub fn common_name(cert: &openssl::x509::X509Ref) -> Option<String> {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_everything_once_and_never_overwrites() -> Result<(), PkiError> {
        let dir = tempfile::tempdir().map_err(|e| PkiError::Invalid(e.to_string()))?;
        let pki = DevPki::new(dir.path());
        let first = pki.init(1_800_000_000)?;
        assert_eq!(first, ["ca", "server", "demo-tpp", "operator"]);
        let before = read(&pki.path("demo-tpp.pem"))?;
        assert!(pki.init(1_800_000_000)?.is_empty());
        assert_eq!(read(&pki.path("demo-tpp.pem"))?, before);
        let again = issue(&CertSpec::server(1_800_000_000), Some(&pki.ca()?))?;
        assert!(matches!(
            again.write(&pki.dir, "server"),
            Err(PkiError::Exists(_))
        ));
        Ok(())
    }

    #[test]
    fn tpp_certificate_carries_open_banking_subject_and_client_auth() -> Result<(), PkiError> {
        let ca = issue(&CertSpec::ca("t", 1_800_000_000), None)?;
        let tpp = issue(
            &CertSpec::tpp("Acme Ltd", "0015800001ACME", "acme-app", 1_800_000_000),
            Some(&ca),
        )?;
        let subject: Vec<String> = tpp
            .cert
            .subject_name()
            .entries()
            .filter_map(|e| e.data().to_string().ok())
            .collect();
        assert_eq!(subject, ["GB", "Acme Ltd", "0015800001ACME", "acme-app"]);
        assert!(tpp.cert.verify(&ca.key)?);
        Ok(())
    }
}

//! Token-signing keys and the JWKS. ES256 by default, PS256 configurable (both FAPI-approved).
//! The active key is `es256.pem` or `ps256.pem` in the keys directory; every other `*.pem` there
//! is published too, so rotating is: rename the active file (a new key is made at the next
//! reload), and delete the old file once the tokens it signed have expired.
//!
//! Instances that share the directory share the keys: each re-reads it every few seconds, on
//! SIGHUP, and when a token names a key it does not know (at most once a second), so a token
//! signed by another instance's new key verifies everywhere, with no restart. The instance that
//! makes the new key signs with it at once; the others publish it in their JWKS at their next
//! read (within 10 s), which is why the old key stays published. An operator installing a key
//! of their own copies the active file to a rotated name, then renames the new key over the
//! active name: no instance reads half a file or finds the active key missing meanwhile.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use openssl::bn::BigNumContext;
use openssl::ec::EcGroup;
use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde_json::{Value, json};

use crate::pki::{self, KeyType, PkiError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error("oauth.signing_alg: {0}")]
    Alg(String),
    #[error("jwt: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    Es256,
    Ps256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "ES256",
            SigningAlg::Ps256 => "PS256",
        }
    }
    pub fn jwt(self) -> Algorithm {
        match self {
            SigningAlg::Es256 => Algorithm::ES256,
            SigningAlg::Ps256 => Algorithm::PS256,
        }
    }
    fn file_name(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "es256.pem",
            SigningAlg::Ps256 => "ps256.pem",
        }
    }
}

impl FromStr for SigningAlg {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Self::Es256),
            "PS256" => Ok(Self::Ps256),
            other => Err(KeyError::Alg(format!(
                "{other:?} is not supported; use ES256 or PS256"
            ))),
        }
    }
}

pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    jwk: Value,
}

pub struct KeyRing {
    active: SigningKey,
    others: Vec<SigningKey>,
    jwks: String,
}

/// The shortest time between two reads of the keys directory prompted by unknown key ids, so
/// made-up `kid`s cannot keep the gateway reading files.
const MIN_PROMPTED_GAP: Duration = Duration::from_secs(1);

/// The key ring in force, re-read from the keys directory on demand.
pub struct SigningKeys {
    dir: PathBuf,
    alg: SigningAlg,
    ring: ArcSwap<KeyRing>,
    /// Held while the directory is read, so rings are put in force in the order they were read.
    loading: Mutex<()>,
    /// When an unknown key id last prompted a read.
    last_prompted: Mutex<Option<Instant>>,
}

impl SigningKeys {
    /// Loads the keys in `dir`, creating the key for `alg` if it is missing.
    pub fn load(dir: &Path, alg: SigningAlg) -> Result<Self, KeyError> {
        let ring = KeyRing::load_or_create(dir, alg)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            alg,
            ring: ArcSwap::from_pointee(ring),
            loading: Mutex::new(()),
            last_prompted: Mutex::new(None),
        })
    }

    /// The ring in force.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Re-reads the directory (making the active key if it was rotated away). On error the
    /// ring in force stays.
    pub fn reload(&self) -> Result<(), KeyError> {
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let ring = KeyRing::load(&self.dir, self.alg, Load::Reload)?;
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// For a token naming a key the ring in force lacks: re-reads the directory (a few small
    /// files), unless an unknown key id prompted that within the last second, and returns the
    /// ring then in force.
    pub fn ring_after_unknown_kid(&self) -> Arc<KeyRing> {
        let due = {
            let mut last = self.last_prompted.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= MIN_PROMPTED_GAP);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        // Not due: the ring in force, without waiting on a read under way (made-up key ids
        // must not be able to park every worker on a slow keys directory).
        if due && let Err(e) = self.reload() {
            tracing::error!(error = %e, "signing keys could not be re-read; the previous keys stay");
        }
        self.ring()
    }
}

/// Why the keys directory is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// At start: the directory and active key are made if missing, and every file must load.
    Start,
    /// While serving: the active key is made only if other keys are there (the active one was
    /// rotated away, not the directory lost), and a file that is not a key is skipped.
    Reload,
}

impl KeyRing {
    /// Loads the keys in `dir`, creating the key for `alg` if it is missing.
    pub fn load_or_create(dir: &Path, alg: SigningAlg) -> Result<Self, KeyError> {
        Self::load(dir, alg, Load::Start)
    }

    fn load(dir: &Path, alg: SigningAlg, why: Load) -> Result<Self, KeyError> {
        super::jose::install();
        let bad_dir = |message: String| KeyError::Bad {
            path: dir.to_path_buf(),
            message,
        };
        if why == Load::Start {
            std::fs::create_dir_all(dir).map_err(|e| bad_dir(e.to_string()))?;
        }
        let active_path = dir.join(alg.file_name());
        let list = || -> Result<Vec<PathBuf>, KeyError> {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| bad_dir(e.to_string()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pem") && *p != active_path)
                .collect();
            paths.sort();
            Ok(paths)
        };
        if !active_path.exists() {
            // An empty or vanished directory while serving is storage gone missing (a volume
            // not mounted), not a rotation: a new key made there would sign tokens the other
            // instances cannot verify.
            if why == Load::Reload && list()?.is_empty() {
                return Err(bad_dir(format!(
                    "holds no keys; not making a new {} key while serving (restart to make one)",
                    alg.as_str()
                )));
            }
            let key_type = match alg {
                SigningAlg::Es256 => KeyType::EcP256,
                SigningAlg::Ps256 => KeyType::Rsa2048,
            };
            let key = pki::generate_key(key_type)?;
            let pem = key.private_key_to_pem_pkcs8()?;
            publish_private(&active_path, &pem)?;
        }
        let active = load_key(&active_path, Some(alg))?;
        // Every other key file is a key rotated out (or the other algorithm's): it signs
        // nothing but stays published until the operator deletes it.
        let mut others = Vec::new();
        for path in list()? {
            match load_key(&path, None) {
                Ok(key) => others.push(key),
                Err(e) if why == Load::Reload => {
                    tracing::error!(error = %e, "not a signing key; left out of the JWKS");
                }
                Err(e) => return Err(e),
            }
        }
        let keys: Vec<&Value> = std::iter::once(&active)
            .chain(&others)
            .map(|k| &k.jwk)
            .collect();
        let jwks = json!({ "keys": keys }).to_string();
        let ring = Self {
            active,
            others,
            jwks,
        };
        ring.self_test()?;
        Ok(ring)
    }

    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.active)
            .chain(&self.others)
            .find(|k| k.kid == kid)
    }

    /// The published JWK Set (RFC 7517 §5), as served.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Signs and verifies once, so a crypto backend that is missing fails at start, not at the
    /// first customer request.
    fn self_test(&self) -> Result<(), KeyError> {
        let k = &self.active;
        let mut header = jsonwebtoken::Header::new(k.alg.jwt());
        header.kid = Some(k.kid.clone());
        let token = jsonwebtoken::encode(&header, &json!({"self": "test"}), &k.encoding)?;
        let mut v = jsonwebtoken::Validation::new(k.alg.jwt());
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        jsonwebtoken::decode::<Value>(&token, &k.decoding, &v)?;
        Ok(())
    }
}

/// Publishes a new key at `path` atomically: written and synced under a temporary name, then
/// hard-linked into place, which fails if the name exists. Instances starting together on
/// shared storage thus agree on one key: whoever links first wins, the others load it.
fn publish_private(path: &Path, pem: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |e: std::io::Error| KeyError::Bad {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let tmp = path.with_extension(format!("pem.tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(bad)?;
    f.write_all(pem).map_err(bad)?;
    f.sync_all().map_err(bad)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(bad(e)),
    }
}

/// Loads a signing key; its algorithm is `alg`, or follows from the key type when `None`.
fn load_key(path: &Path, alg: Option<SigningAlg>) -> Result<SigningKey, KeyError> {
    let bad = |message: &str| KeyError::Bad {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let pem = pki::read(path)?;
    let key: PKey<Private> =
        PKey::private_key_from_pem(&pem).map_err(|_| bad("not a PEM private key"))?;
    let alg = match (alg, key.id()) {
        (Some(alg), _) => alg,
        (None, openssl::pkey::Id::EC) => SigningAlg::Es256,
        (None, openssl::pkey::Id::RSA) => SigningAlg::Ps256,
        (None, _) => return Err(bad("not an EC P-256 or RSA key")),
    };
    let pkcs8 = key.private_key_to_pkcs8()?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let (thumb_input, mut jwk, decoding, encoding) = match alg {
        SigningAlg::Es256 => {
            let ec = key.ec_key().map_err(|_| bad("ES256 needs an EC key"))?;
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                return Err(bad("ES256 needs a P-256 key"));
            }
            let mut ctx = BigNumContext::new()?;
            let mut x = openssl::bn::BigNum::new()?;
            let mut y = openssl::bn::BigNum::new()?;
            ec.public_key()
                .affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
            let (x, y) = (b64(&x.to_vec_padded(32)?), b64(&y.to_vec_padded(32)?));
            // RFC 7638 §3.2: members in lexicographic order, no whitespace.
            let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            let decoding = DecodingKey::from_ec_components(&x, &y)?;
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
            (thumb, jwk, decoding, EncodingKey::from_ec_der(&pkcs8))
        }
        SigningAlg::Ps256 => {
            let rsa = key.rsa().map_err(|_| bad("PS256 needs an RSA key"))?;
            if rsa.size() < 256 {
                return Err(bad("PS256 needs an RSA key of at least 2048 bits"));
            }
            let (n, e) = (b64(&rsa.n().to_vec()), b64(&rsa.e().to_vec()));
            let thumb = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            let decoding = DecodingKey::from_rsa_components(&n, &e)?;
            let jwk = json!({"kty": "RSA", "n": n, "e": e});
            (thumb, jwk, decoding, EncodingKey::from_rsa_der(&pkcs8))
        }
    };
    let kid = b64(&hash(MessageDigest::sha256(), thumb_input.as_bytes())?);
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), json!(kid));
        obj.insert("use".into(), json!("sig"));
        obj.insert("alg".into(), json!(alg.as_str()));
    }
    Ok(SigningKey {
        kid,
        alg,
        encoding,
        decoding,
        jwk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ring_creates_once_and_publishes_previous_algorithms_key() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::Alg(e.to_string()))?;
        let first = KeyRing::load_or_create(dir.path(), SigningAlg::Es256)?;
        let again = KeyRing::load_or_create(dir.path(), SigningAlg::Es256)?;
        assert_eq!(first.active().kid, again.active().kid);
        let rotated = KeyRing::load_or_create(dir.path(), SigningAlg::Ps256)?;
        assert_eq!(rotated.active().alg, SigningAlg::Ps256);
        assert!(rotated.find(&first.active().kid).is_some());
        assert_eq!(published(&rotated), 2);

        // Rotation within an algorithm: the old key file is renamed, a new one is made, and
        // tokens signed by the old one still verify until it is deleted.
        std::fs::rename(
            dir.path().join("es256.pem"),
            dir.path().join("es256-2026-11.pem"),
        )
        .map_err(|e| KeyError::Alg(e.to_string()))?;
        let renewed = KeyRing::load_or_create(dir.path(), SigningAlg::Es256)?;
        assert_ne!(renewed.active().kid, first.active().kid);
        assert!(renewed.find(&first.active().kid).is_some());
        assert_eq!(published(&renewed), 3);
        Ok(())
    }

    fn published(ring: &KeyRing) -> usize {
        serde_json::from_str::<Value>(ring.jwks())
            .ok()
            .and_then(|j| j["keys"].as_array().map(Vec::len))
            .unwrap_or_default()
    }

    #[test]
    fn a_key_rotated_on_shared_storage_reaches_the_other_instances() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::Alg(e.to_string()))?;
        let a = SigningKeys::load(dir.path(), SigningAlg::Es256)?;
        let b = SigningKeys::load(dir.path(), SigningAlg::Es256)?;
        let old = a.ring().active().kid.clone();
        assert_eq!(b.ring().active().kid, old);

        std::fs::rename(
            dir.path().join("es256.pem"),
            dir.path().join("es256-old.pem"),
        )
        .map_err(|e| KeyError::Alg(e.to_string()))?;
        a.reload()?;
        let new = a.ring().active().kid.clone();
        assert_ne!(new, old, "a new key signs after the rotation");
        assert!(a.ring().find(&old).is_some(), "the old key still verifies");

        // b meets a token under the new key: the first unknown kid prompts a read.
        assert!(b.ring().find(&new).is_none());
        assert_eq!(b.ring_after_unknown_kid().active().kid, new);
        assert!(b.ring().find(&old).is_some());
        assert_eq!(published(&b.ring()), 2);

        // Another rotation: b meets the newest key within the second, so waits its turn.
        std::fs::rename(
            dir.path().join("es256.pem"),
            dir.path().join("es256-new.pem"),
        )
        .map_err(|e| KeyError::Alg(e.to_string()))?;
        a.reload()?;
        let newest = a.ring().active().kid.clone();
        assert!(
            b.ring_after_unknown_kid().find(&newest).is_none(),
            "at most one prompted read a second"
        );
        std::thread::sleep(MIN_PROMPTED_GAP);
        assert!(b.ring_after_unknown_kid().find(&newest).is_some());
        Ok(())
    }

    #[test]
    fn a_reload_keeps_serving_through_a_bad_file_and_a_lost_directory() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::Alg(e.to_string()))?;
        let keys_dir = dir.path().join("keys");
        let keys = SigningKeys::load(&keys_dir, SigningAlg::Es256)?;
        let kid = keys.ring().active().kid.clone();

        // A file that is not a key is left out; the keys that are stay in force.
        std::fs::write(keys_dir.join("junk.pem"), "not a key")
            .map_err(|e| KeyError::Alg(e.to_string()))?;
        keys.reload()?;
        assert_eq!(keys.ring().active().kid, kid);
        assert_eq!(published(&keys.ring()), 1);
        assert!(
            KeyRing::load_or_create(&keys_dir, SigningAlg::Es256).is_err(),
            "at start every file must be a key"
        );

        // The active key itself unreadable: the reload fails and the ring in force stays.
        std::fs::remove_file(keys_dir.join("junk.pem"))
            .map_err(|e| KeyError::Alg(e.to_string()))?;
        std::fs::write(keys_dir.join("es256.pem"), "not a key")
            .map_err(|e| KeyError::Alg(e.to_string()))?;
        assert!(keys.reload().is_err());
        assert_eq!(keys.ring().active().kid, kid);

        // The directory gone (a volume not mounted) or emptied: no new key is made.
        std::fs::remove_dir_all(&keys_dir).map_err(|e| KeyError::Alg(e.to_string()))?;
        assert!(keys.reload().is_err());
        std::fs::create_dir(&keys_dir).map_err(|e| KeyError::Alg(e.to_string()))?;
        assert!(keys.reload().is_err());
        assert_eq!(
            std::fs::read_dir(&keys_dir).map(|d| d.count()).unwrap_or(1),
            0,
            "nothing written"
        );
        assert_eq!(keys.ring().active().kid, kid);
        Ok(())
    }

    #[test]
    fn instances_starting_together_agree_on_one_signing_key() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::Bad {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let path = dir.path().to_path_buf();
        let kids: Vec<Option<String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    scope.spawn(move || {
                        KeyRing::load_or_create(&path, SigningAlg::Es256)
                            .ok()
                            .map(|r| r.active().kid.clone())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        assert!(
            kids.iter().all(|k| k.is_some() && *k == kids[0]),
            "{kids:?}"
        );
        let files = std::fs::read_dir(&path)
            .map(|d| d.count())
            .unwrap_or_default();
        assert_eq!(files, 1, "no temporary files left behind");
        Ok(())
    }
}

//! JWS signatures for `jsonwebtoken` computed by OpenSSL, the one crypto stack obgate already
//! runs for TLS. `jsonwebtoken` keeps the JWT logic (encoding, claims, header); this provider
//! does ES256 and PS256 and refuses every other algorithm. It replaces the RustCrypto backend,
//! whose P-256 verification cost ~0.5 ms per request here against ~0.05 ms with OpenSSL.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer as OsslSigner, Verifier as OsslVerifier};
use signature::{Error, Signer, Verifier};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes OpenSSL `jsonwebtoken`'s crypto for this process. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider was installed before us; the key ring's self-test then tells
        // whether signing still works.
        let _ = PROVIDER.install_default();
    });
}

/// ES256 signatures are the raw `r || s` pair, 32 bytes each (RFC 7518 §3.4).
const ES256_HALF: usize = 32;

fn invalid(kind: ErrorKind) -> jsonwebtoken::errors::Error {
    kind.into()
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let pkey = PKey::private_key_from_pkcs8(key.as_bytes())
        .map_err(|_| invalid(ErrorKind::InvalidKeyFormat))?;
    match alg {
        Algorithm::ES256 => {
            let ec = pkey
                .ec_key()
                .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?;
            if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                return Err(invalid(ErrorKind::InvalidEcdsaKey));
            }
            Ok(Box::new(Es256Signer(ec)))
        }
        Algorithm::PS256 => {
            pkey.rsa()
                .map_err(|_| invalid(ErrorKind::InvalidRsaKey("PS256 needs an RSA key".into())))?;
            Ok(Box::new(Ps256Signer(pkey)))
        }
        _ => Err(invalid(ErrorKind::InvalidAlgorithm)),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match (alg, key.kind()) {
        (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?;
            let mut ctx = BigNumContext::new().map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?;
            let point = EcPoint::from_bytes(&group, point, &mut ctx)
                .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?;
            let ec = EcKey::from_public_key(&group, &point)
                .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?;
            Ok(Box::new(Es256Verifier(ec)))
        }
        (Algorithm::PS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            let rsa = BigNum::from_slice(n)
                .and_then(|n| Ok((n, BigNum::from_slice(e)?)))
                .and_then(|(n, e)| Rsa::from_public_components(n, e))
                .and_then(PKey::from_rsa)
                .map_err(|_| invalid(ErrorKind::InvalidRsaKey("bad PS256 public key".into())))?;
            Ok(Box::new(Ps256Verifier(rsa)))
        }
        _ => Err(invalid(ErrorKind::InvalidAlgorithm)),
    }
}

struct Es256Signer(EcKey<Private>);

impl Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, Error> {
        let digest = hash(MessageDigest::sha256(), msg).map_err(Error::from_source)?;
        let sig = EcdsaSig::sign(&digest, &self.0).map_err(Error::from_source)?;
        let mut raw = sig
            .r()
            .to_vec_padded(ES256_HALF as i32)
            .map_err(Error::from_source)?;
        raw.extend(
            sig.s()
                .to_vec_padded(ES256_HALF as i32)
                .map_err(Error::from_source)?,
        );
        Ok(raw)
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct Es256Verifier(EcKey<Public>);

impl Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), Error> {
        if signature.len() != 2 * ES256_HALF {
            return Err(Error::new());
        }
        let (r, s) = signature.split_at(ES256_HALF);
        let sig = BigNum::from_slice(r)
            .and_then(|r| Ok((r, BigNum::from_slice(s)?)))
            .and_then(|(r, s)| EcdsaSig::from_private_components(r, s))
            .map_err(Error::from_source)?;
        let digest = hash(MessageDigest::sha256(), msg).map_err(Error::from_source)?;
        match sig.verify(&digest, &self.0) {
            Ok(true) => Ok(()),
            _ => Err(Error::new()),
        }
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct Ps256Signer(PKey<Private>);

impl Signer<Vec<u8>> for Ps256Signer {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, Error> {
        let mut signer =
            OsslSigner::new(MessageDigest::sha256(), &self.0).map_err(Error::from_source)?;
        signer
            .set_rsa_padding(Padding::PKCS1_PSS)
            .and_then(|()| signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH))
            .and_then(|()| signer.set_rsa_mgf1_md(MessageDigest::sha256()))
            .map_err(Error::from_source)?;
        signer.sign_oneshot_to_vec(msg).map_err(Error::from_source)
    }
}

impl JwtSigner for Ps256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::PS256
    }
}

struct Ps256Verifier(PKey<Public>);

impl Verifier<Vec<u8>> for Ps256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), Error> {
        let mut verifier =
            OsslVerifier::new(MessageDigest::sha256(), &self.0).map_err(Error::from_source)?;
        verifier
            .set_rsa_padding(Padding::PKCS1_PSS)
            .and_then(|()| verifier.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH))
            .and_then(|()| verifier.set_rsa_mgf1_md(MessageDigest::sha256()))
            .map_err(Error::from_source)?;
        match verifier.verify_oneshot(signature, msg) {
            Ok(true) => Ok(()),
            _ => Err(Error::new()),
        }
    }
}

impl JwtVerifier for Ps256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::PS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn keys(
        alg: Algorithm,
    ) -> std::result::Result<(EncodingKey, DecodingKey), Box<dyn std::error::Error>> {
        Ok(match alg {
            Algorithm::ES256 => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                let ec = EcKey::generate(&group)?;
                let mut ctx = BigNumContext::new()?;
                let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
                ec.public_key()
                    .affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
                let der = PKey::from_ec_key(ec)?.private_key_to_pkcs8()?;
                (
                    EncodingKey::from_ec_der(&der),
                    DecodingKey::from_ec_components(
                        &URL_SAFE_NO_PAD.encode(x.to_vec_padded(32)?),
                        &URL_SAFE_NO_PAD.encode(y.to_vec_padded(32)?),
                    )?,
                )
            }
            _ => {
                let rsa = Rsa::generate(2048)?;
                let decoding =
                    DecodingKey::from_rsa_raw_components(&rsa.n().to_vec(), &rsa.e().to_vec());
                (
                    EncodingKey::from_rsa_der(&PKey::from_rsa(rsa)?.private_key_to_pkcs8()?),
                    decoding,
                )
            }
        })
    }

    #[test]
    fn es256_and_ps256_sign_and_verify_and_reject_tampering()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        install();
        for alg in [Algorithm::ES256, Algorithm::PS256] {
            let (enc, dec) = keys(alg)?;
            let sig = jsonwebtoken::crypto::sign(b"header.payload", &enc, alg)?;
            assert!(jsonwebtoken::crypto::verify(
                &sig,
                b"header.payload",
                &dec,
                alg
            )?);
            assert!(!jsonwebtoken::crypto::verify(
                &sig,
                b"header.payloaD",
                &dec,
                alg
            )?);
            if alg == Algorithm::ES256 {
                assert_eq!(URL_SAFE_NO_PAD.decode(&sig)?.len(), 64, "raw r||s, not DER");
            }
        }
        Ok(())
    }

    #[test]
    fn other_algorithms_are_refused() -> std::result::Result<(), Box<dyn std::error::Error>> {
        install();
        let (enc, _) = keys(Algorithm::ES256)?;
        assert!(jsonwebtoken::crypto::sign(b"m", &enc, Algorithm::ES384).is_err());
        assert!(
            jsonwebtoken::crypto::verify(
                "c2ln",
                b"m",
                &DecodingKey::from_secret(b"k"),
                Algorithm::HS256
            )
            .is_err()
        );
        Ok(())
    }
}

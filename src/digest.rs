//! Hex SHA-256, the one way the gateway keeps a value it must recognise but never reveal:
//! single-use values, refresh tokens, session ids and request bodies are stored under it.

/// Lower-case hex SHA-256 of `value`.
pub fn sha256_hex(value: &str) -> String {
    openssl::hash::hash(openssl::hash::MessageDigest::sha256(), value.as_bytes())
        .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

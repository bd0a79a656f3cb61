//! Encryption of secret values and integration credentials at rest: AES-256-GCM under the
//! server's master key, a random 96-bit nonce per value, stored as `nonce || ciphertext || tag`.
//!
//! The associated data names the row a value belongs to (organization and secret name, or
//! organization and integration id), so a ciphertext copied into another row, or another
//! organization, fails to decrypt instead of leaking under a different name.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use uuid::Uuid;

/// Bytes of the nonce that prefixes every sealed value.
const NONCE_LEN: usize = 12;
/// Bytes of the authentication tag that ends every sealed value.
const TAG_LEN: usize = 16;

/// Why a value could not be sealed or opened. Carries no key, plaintext or ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Wrong key, wrong associated data, or altered bytes.
    #[error("the value does not decrypt: wrong key, wrong row, or altered bytes")]
    Unreadable,
    /// The operating system's random number generator failed.
    #[error("no randomness available for a nonce")]
    NoRandomness,
}

/// The cipher for one master key. Cheap to build (a key schedule), so build it where needed.
pub struct Cipher(Aes256Gcm);

impl Cipher {
    pub fn new(master_key: &[u8; 32]) -> Self {
        Cipher(Aes256Gcm::new(&(*master_key).into()))
    }

    /// Encrypts `plaintext` bound to `aad` under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = Nonce::<Aes256Gcm>::try_generate().map_err(|_| CryptoError::NoRandomness)?;
        // Encryption only fails for inputs beyond GCM's limits (64 GiB), far past the body limit.
        let ciphertext = self
            .0
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .map_err(|_| CryptoError::Unreadable)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts what [`Cipher::seal`] produced for the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Unreadable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| CryptoError::Unreadable)?;
        self.0
            .decrypt(&nonce, Payload { msg: ciphertext, aad })
            .map_err(|_| CryptoError::Unreadable)
    }

    /// Decrypts to a UTF-8 string (secret values and credentials are strings).
    pub fn open_string(&self, sealed: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
        String::from_utf8(self.open(sealed, aad)?).map_err(|_| CryptoError::Unreadable)
    }
}

/// The master key's check value: tells whether a key is the one a database was sealed with,
/// without revealing anything of the key (HMAC-SHA-256 of a fixed label under the key).
pub fn key_check_value(master_key: &[u8; 32]) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(master_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"kubiya-cp master key check v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The associated data of a value the master key sealed, from where it is stored.
pub fn sealed_aad(at: &cp_store::master_key::SealedRef) -> Vec<u8> {
    use cp_store::master_key::SealedRef;
    match at {
        SealedRef::Secret { org, name } => secret_aad(org, name),
        SealedRef::Integration { org, id } => integration_aad(org, *id),
        // A webhook's previous secret is sealed for the same webhook as its current one.
        SealedRef::Webhook { org, id, .. } => webhook_aad(org, *id),
        SealedRef::Idempotent { org, key } => idempotency_aad(org, key),
        SealedRef::Job { org, id } => job_aad(org, *id),
    }
}

/// Associated data of a secret value: its organization and name (both immutable).
pub fn secret_aad(org: &str, name: &str) -> Vec<u8> {
    aad(b"secret", org, name.as_bytes())
}

/// Associated data of an integration's credentials: its organization and id (the name may change).
pub fn integration_aad(org: &str, id: Uuid) -> Vec<u8> {
    aad(b"integration", org, id.as_bytes())
}

/// Associated data of a webhook's signing secret: its organization and id.
pub fn webhook_aad(org: &str, id: Uuid) -> Vec<u8> {
    aad(b"webhook", org, id.as_bytes())
}

/// Associated data of a job's inbound webhook secret: its organization and id.
pub fn job_aad(org: &str, id: Uuid) -> Vec<u8> {
    aad(b"job", org, id.as_bytes())
}

/// Associated data of a stored idempotent answer: its organization and record key.
pub fn idempotency_aad(org: &str, key: &str) -> Vec<u8> {
    aad(b"idempotency", org, key.as_bytes())
}

/// `kind 0 org 0 subject`: the separators keep ("a", "b_c") and ("a_b", "c") apart; neither
/// org slugs nor the kinds contain NUL.
fn aad(kind: &[u8], org: &str, subject: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.len() + org.len() + subject.len() + 2);
    out.extend_from_slice(kind);
    out.push(0);
    out.extend_from_slice(org.as_bytes());
    out.push(0);
    out.extend_from_slice(subject);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trip_with_a_fresh_nonce_each_time() {
        let c = Cipher::new(&KEY);
        let aad = secret_aad("acme", "DB_PASSWORD");
        let a = c.seal(b"hunter2", &aad).unwrap();
        let b = c.seal(b"hunter2", &aad).unwrap();
        assert_ne!(a, b, "a nonce is never reused");
        assert_eq!(a.len(), NONCE_LEN + 7 + TAG_LEN);
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(c.open(&a, &aad).unwrap(), b"hunter2");
        assert_eq!(c.open_string(&b, &aad).unwrap(), "hunter2");
        assert_eq!(c.open(&c.seal(b"", &aad).unwrap(), &aad).unwrap(), b"");
    }

    #[test]
    fn wrong_key_fails() {
        let aad = secret_aad("acme", "A");
        let sealed = Cipher::new(&KEY).seal(b"v", &aad).unwrap();
        assert_eq!(Cipher::new(&[8; 32]).open(&sealed, &aad), Err(CryptoError::Unreadable));
    }

    #[test]
    fn wrong_row_fails() {
        let c = Cipher::new(&KEY);
        let sealed = c.seal(b"v", &secret_aad("acme", "A")).unwrap();
        for other in [
            secret_aad("acme", "B"),
            secret_aad("other", "A"),
            integration_aad("acme", Uuid::nil()),
            b"".to_vec(),
        ] {
            assert_eq!(c.open(&sealed, &other), Err(CryptoError::Unreadable));
        }
        // The separators keep adjacent fields from sliding into each other.
        assert_ne!(secret_aad("a", "b_c"), secret_aad("a_b", "c"));
        let id = Uuid::now_v7();
        let creds = c.seal(b"{}", &integration_aad("acme", id)).unwrap();
        assert!(c.open(&creds, &integration_aad("acme", Uuid::now_v7())).is_err());
        assert!(c.open(&creds, &integration_aad("acme", id)).is_ok());
    }

    #[test]
    fn altered_or_short_bytes_fail() {
        let c = Cipher::new(&KEY);
        let aad = secret_aad("acme", "A");
        let sealed = c.seal(b"value", &aad).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(c.open(&bad, &aad), Err(CryptoError::Unreadable), "byte {i}");
        }
        assert_eq!(
            c.open(&sealed[..NONCE_LEN + TAG_LEN - 1], &aad),
            Err(CryptoError::Unreadable)
        );
        assert_eq!(c.open(&[], &aad), Err(CryptoError::Unreadable));
        assert_eq!(c.open(b"value", &aad), Err(CryptoError::Unreadable));
    }
}

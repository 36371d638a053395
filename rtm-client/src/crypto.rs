//! End-to-end encryption of message payloads (`docs/protocol.md` §5.11).
//!
//! The key is derived with HKDF-SHA256 from the application's `cipher_key` (the input key
//! material) and its 32-byte `salt` (shorter salts are zero-padded, as the reference does), with
//! the mode in the `info` string, so that the same key and salt give unrelated AES-128 and
//! AES-256 keys. Each message gets a fresh random 96-bit nonce. The sealed payload travels as
//! [`Payload::Encrypted`]:
//!
//! ```text
//! version (1 byte, = 1) | kind (1 byte: 0 text, 1 binary) | nonce (12 bytes) | ciphertext + tag (16 bytes)
//! ```
//!
//! The version and kind bytes are the AEAD's associated data, so neither can be changed
//! without the tag failing. The server relays and stores these bytes as they are.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload as AeadPayload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use bytes::{BufMut, Bytes, BytesMut};
use hkdf::Hkdf;
use rtm_proto::{ErrorCode, Payload, RtmError};
use sha2::Sha256;

use crate::config::{EncryptionMode, RtmConfig};

/// The salt's length; shorter salts are zero-padded to it.
pub(crate) const SALT_LEN: usize = 32;
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Bytes that encryption adds to a payload: the header, the nonce and the tag.
pub const ENCRYPTION_OVERHEAD: usize = HEADER_LEN + 16;

enum Key {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
}

/// The client's cipher, from its configuration.
pub(crate) struct Cipher {
    key: Key,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        let mode = match self.key {
            Key::Aes128(_) => "AES-128-GCM",
            Key::Aes256(_) => "AES-256-GCM",
        };
        write!(f, "Cipher({mode})")
    }
}

fn invalid(what: &str) -> RtmError {
    RtmError::new(ErrorCode::InvalidEncryptionParameter, "new", what)
}

impl Cipher {
    /// The cipher `config` asks for: `None` without encryption; `-10020` for an empty key or a
    /// salt longer than 32 bytes.
    pub(crate) fn from_config(config: &RtmConfig) -> Result<Option<Self>, RtmError> {
        let (len, info): (usize, &[u8]) = match config.encryption_mode {
            EncryptionMode::None => return Ok(None),
            EncryptionMode::Aes128Gcm => (16, b"rtm e2e v1 AES-128-GCM"),
            EncryptionMode::Aes256Gcm => (32, b"rtm e2e v1 AES-256-GCM"),
        };
        if config.cipher_key.is_empty() {
            return Err(invalid("encryption needs a cipher key"));
        }
        if config.salt.len() > SALT_LEN {
            return Err(invalid(&format!(
                "the salt is {} bytes long; it must be at most {SALT_LEN}",
                config.salt.len()
            )));
        }
        let mut salt = [0u8; SALT_LEN];
        salt[..config.salt.len()].copy_from_slice(&config.salt);
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), config.cipher_key.as_bytes());
        let mut okm = [0u8; 32];
        hkdf.expand(info, &mut okm[..len])
            .map_err(|_| invalid("key derivation failed"))?;
        let key = match config.encryption_mode {
            EncryptionMode::Aes128Gcm => Key::Aes128(Box::new(
                Aes128Gcm::new_from_slice(&okm[..16]).map_err(|_| invalid("bad key length"))?,
            )),
            _ => Key::Aes256(Box::new(
                Aes256Gcm::new_from_slice(&okm).map_err(|_| invalid("bad key length"))?,
            )),
        };
        Ok(Some(Self { key }))
    }

    /// Seals a text or binary payload; an already sealed one is returned as it is.
    pub(crate) fn seal(&self, payload: Payload) -> Result<Payload, RtmError> {
        let (kind, plain): (u8, &[u8]) = match &payload {
            Payload::Text(t) => (0, t.as_bytes()),
            Payload::Binary(b) => (1, b),
            Payload::Encrypted(_) => return Ok(payload),
        };
        let nonce = Aes128Gcm::generate_nonce(&mut OsRng);
        let aad = [VERSION, kind];
        let sealed = AeadPayload {
            msg: plain,
            aad: &aad,
        };
        let ciphertext = match &self.key {
            Key::Aes128(k) => k.encrypt(&nonce, sealed),
            Key::Aes256(k) => k.encrypt(&nonce, sealed),
        }
        .map_err(|_| {
            RtmError::new(
                ErrorCode::ChannelEncryptMessageFailed,
                "publish",
                "encryption failed",
            )
        })?;
        let mut out = BytesMut::with_capacity(HEADER_LEN + ciphertext.len());
        out.put_slice(&aad);
        out.put_slice(&nonce);
        out.put_slice(&ciphertext);
        Ok(Payload::Encrypted(out.freeze()))
    }

    /// Opens a sealed payload. One that does not open (another key or mode, a damaged or
    /// unknown layout) stays [`Payload::Encrypted`]: the application sees that it could not
    /// be read, never bytes taken for text. Text and binary payloads pass through.
    pub(crate) fn open(&self, payload: Payload) -> Payload {
        let Payload::Encrypted(sealed) = &payload else {
            return payload;
        };
        match self.try_open(sealed) {
            Some(opened) => opened,
            None => {
                tracing::debug!("a message could not be decrypted with this client's key");
                payload
            }
        }
    }

    fn try_open(&self, sealed: &Bytes) -> Option<Payload> {
        if sealed.len() < ENCRYPTION_OVERHEAD || sealed[0] != VERSION {
            return None;
        }
        let aad = &sealed[..2];
        let nonce = Nonce::from_slice(&sealed[2..HEADER_LEN]);
        let opened = AeadPayload {
            msg: &sealed[HEADER_LEN..],
            aad,
        };
        let plain = match &self.key {
            Key::Aes128(k) => k.decrypt(nonce, opened),
            Key::Aes256(k) => k.decrypt(nonce, opened),
        }
        .ok()?;
        match aad[1] {
            0 => String::from_utf8(plain).ok().map(Payload::Text),
            1 => Some(Payload::Binary(plain.into())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Endpoint, Trust};

    fn config(mode: EncryptionMode, key: &str, salt: &[u8]) -> RtmConfig {
        let mut config = RtmConfig::new(Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            server_name: "localhost".into(),
            trust: Trust::PinnedCertDer(Vec::new()),
        });
        config.encryption_mode = mode;
        config.cipher_key = key.into();
        config.salt = salt.to_vec();
        config
    }

    fn cipher(mode: EncryptionMode, key: &str, salt: &[u8]) -> Cipher {
        Cipher::from_config(&config(mode, key, salt))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn round_trips_in_both_modes_and_keeps_the_kind() {
        for mode in [EncryptionMode::Aes128Gcm, EncryptionMode::Aes256Gcm] {
            let c = cipher(mode, "secret", b"salt");
            for payload in [
                Payload::Text("héllo".into()),
                Payload::Binary(vec![0, 1, 2].into()),
            ] {
                let sealed = c.seal(payload.clone()).unwrap();
                let Payload::Encrypted(bytes) = &sealed else {
                    panic!("not sealed: {sealed:?}");
                };
                assert_eq!(bytes.len(), payload.len() + ENCRYPTION_OVERHEAD);
                assert!(!bytes.windows(2).any(|w| w == b"ll"), "plaintext leaked");
                assert_eq!(c.open(sealed), payload);
            }
        }
    }

    #[test]
    fn fresh_nonce_per_message() {
        let c = cipher(EncryptionMode::Aes128Gcm, "secret", &[]);
        let a = c.seal(Payload::Text("same".into())).unwrap();
        let b = c.seal(Payload::Text("same".into())).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn the_wrong_key_salt_or_mode_leaves_the_payload_sealed() {
        let c = cipher(EncryptionMode::Aes256Gcm, "secret", b"salt");
        let sealed = c.seal(Payload::Text("hi".into())).unwrap();
        for other in [
            cipher(EncryptionMode::Aes256Gcm, "other", b"salt"),
            cipher(EncryptionMode::Aes256Gcm, "secret", b"pepper"),
            cipher(EncryptionMode::Aes128Gcm, "secret", b"salt"),
        ] {
            assert_eq!(other.open(sealed.clone()), sealed);
        }
        // A changed kind byte, a cut payload, garbage: still sealed, never a panic.
        let Payload::Encrypted(bytes) = &sealed else {
            unreachable!()
        };
        let mut flipped = bytes.to_vec();
        flipped[1] = 1;
        for broken in [flipped, bytes[..10].to_vec(), vec![1; 40], Vec::new()] {
            let broken = Payload::Encrypted(broken.into());
            assert_eq!(c.open(broken.clone()), broken);
        }
    }

    #[test]
    fn a_short_salt_is_zero_padded() {
        let short = cipher(EncryptionMode::Aes128Gcm, "k", &[7]);
        let mut padded = vec![7];
        padded.resize(32, 0);
        let long = cipher(EncryptionMode::Aes128Gcm, "k", &padded);
        let sealed = short.seal(Payload::Text("x".into())).unwrap();
        assert_eq!(long.open(sealed), Payload::Text("x".into()));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for bad in [
            config(EncryptionMode::Aes128Gcm, "", b"salt"),
            config(EncryptionMode::Aes256Gcm, "k", &[0; 33]),
        ] {
            let err = Cipher::from_config(&bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEncryptionParameter);
        }
        assert!(
            Cipher::from_config(&config(EncryptionMode::None, "", &[0; 40]))
                .unwrap()
                .is_none()
        );
    }
}

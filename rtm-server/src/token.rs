//! Signaling tokens ("007", AccessToken2): building and verifying.
//!
//! Written from the format in `reference/extended-api.md` §9 and checked against tokens made by
//! the official builders (`reference/token-vectors.md`, reproduced in the tests below).
//!
//! ```text
//! token        = "007" base64( zlib( pack_string(signature) signing_info ) )
//! signing_info = pack_string(app_id) u32(issue_ts) u32(expire) u32(salt) u16(count) service*
//! service      = u16(type) u16(n) (u16(privilege) u32(expire))* fields
//!   RTC (1): pack_string(channel_name) pack_string(uid)
//!   RTM (2): pack_string(user_id)
//! signature    = HMAC-SHA256(k2, signing_info), k2 = HMAC-SHA256(u32(salt), k1),
//!                k1 = HMAC-SHA256(u32(issue_ts), app_certificate)
//! ```
//!
//! Integers are little-endian, `pack_string` is a `u16` length and the bytes. Expiry times are
//! seconds after `issue_ts`. Verification takes the current time as an argument: nothing here
//! reads a clock.

use std::io::{Read, Write};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rtm_proto::ErrorCode;
use sha2::Sha256;

/// The version prefix of AccessToken2.
const VERSION: &str = "007";
/// The RTC service type.
const SERVICE_RTC: u16 = 1;
/// The RTM service type.
const SERVICE_RTM: u16 = 2;
/// RTM's Login privilege.
const PRIVILEGE_LOGIN: u16 = 1;
/// RTC's JoinChannel privilege.
const PRIVILEGE_JOIN_CHANNEL: u16 = 1;
/// The largest token accepted, in bytes, before any decoding.
const MAX_TOKEN_LEN: usize = 2048;
/// The largest decompressed token body accepted.
const MAX_BODY_LEN: usize = 4096;

/// Why a token was refused, with the reference's code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TokenError {
    /// `INVALID_TOKEN` (-10005), `TOKEN_EXPIRED` (-10009) or `INCONSISTENT_APPID` (-10016).
    pub code: ErrorCode,
    /// What is wrong, in words.
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError {
        code: ErrorCode::InvalidToken,
        reason: reason.into(),
    }
}

/// A service a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Service {
    /// RTM: log in as `user_id`.
    Rtm {
        /// The user id.
        user_id: String,
        /// Seconds after issue until the Login privilege expires.
        login_expire: u32,
    },
    /// RTC: join `channel_name` as `uid` (used by stream channels).
    Rtc {
        /// The channel.
        channel_name: String,
        /// The user (account) id; empty for "any".
        uid: String,
        /// Privileges and their expiry, seconds after issue.
        privileges: Vec<(u16, u32)>,
    },
}

/// A decoded token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The App ID it was issued for.
    pub app_id: String,
    /// Unix time of issue, seconds.
    pub issue_ts: u32,
    /// Seconds after issue until the token expires.
    pub expire: u32,
    /// The builder's random salt.
    pub salt: u32,
    /// The services granted (those this version understands).
    pub services: Vec<Service>,
    signature: Vec<u8>,
    signing_info: Vec<u8>,
}

impl AccessToken {
    /// Decodes a token without checking its signature.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token is too long"));
        }
        let Some(encoded) = token.strip_prefix(VERSION) else {
            return Err(invalid("not an AccessToken2 (\"007\") token"));
        };
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| invalid(format!("token is not base64: {e}")))?;
        let mut body = Vec::new();
        flate2::read::ZlibDecoder::new(&compressed[..])
            .take(MAX_BODY_LEN as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| invalid(format!("token does not decompress: {e}")))?;
        if body.len() > MAX_BODY_LEN {
            return Err(invalid("token body is too long"));
        }
        let mut r = Reader(&body);
        let signature = r.string()?.to_vec();
        let signing_info = r.0.to_vec();
        let app_id = r.utf8()?;
        let issue_ts = r.u32()?;
        let expire = r.u32()?;
        let salt = r.u32()?;
        let count = r.u16()?;
        let mut services = Vec::new();
        for _ in 0..count {
            let kind = r.u16()?;
            let n = r.u16()?;
            let mut privileges = Vec::with_capacity(usize::from(n).min(16));
            for _ in 0..n {
                privileges.push((r.u16()?, r.u32()?));
            }
            match kind {
                SERVICE_RTM => {
                    let user_id = r.utf8()?;
                    let login_expire = privileges
                        .iter()
                        .find(|(p, _)| *p == PRIVILEGE_LOGIN)
                        .map_or(0, |(_, e)| *e);
                    services.push(Service::Rtm {
                        user_id,
                        login_expire,
                    });
                }
                SERVICE_RTC => {
                    let channel_name = r.utf8()?;
                    let uid = r.utf8()?;
                    services.push(Service::Rtc {
                        channel_name,
                        uid,
                        privileges,
                    });
                }
                // Services this version does not know end the parse, as in the reference
                // parsers; what was read so far is kept.
                _ => break,
            }
        }
        Ok(Self {
            app_id,
            issue_ts,
            expire,
            salt,
            services,
            signature,
            signing_info,
        })
    }

    /// Whether the signature was made with `app_certificate`.
    pub fn signed_with(&self, app_certificate: &str) -> bool {
        let Ok(mut mac) = signer(app_certificate, self.issue_ts, self.salt) else {
            return false;
        };
        mac.update(&self.signing_info);
        // Constant-time comparison.
        mac.verify_slice(&self.signature).is_ok()
    }

    /// Unix time (seconds) at which the token expires.
    pub fn expires_at(&self) -> u64 {
        u64::from(self.issue_ts) + u64::from(self.expire)
    }

    /// Checks this token for an RTM login of `user_id` to `app_id` at Unix time `now`, and
    /// returns when the login privilege ends (Unix seconds).
    pub fn verify_login(
        &self,
        app_id: &str,
        app_certificate: &str,
        user_id: &str,
        now: u64,
    ) -> Result<u64, TokenError> {
        self.check_issuer(app_id, app_certificate)?;
        let Some(login_expire) = self.services.iter().find_map(|s| match s {
            Service::Rtm {
                user_id: u,
                login_expire,
            } if u == user_id => Some(*login_expire),
            _ => None,
        }) else {
            return Err(invalid(format!(
                "the token grants no RTM login to user {user_id:?}"
            )));
        };
        self.ends(login_expire, now)
    }

    /// Checks this token for joining the stream channel `channel` of `app_id` as `user_id` at
    /// Unix time `now` (an RTC token with the JoinChannel privilege for that channel and user,
    /// or for any user), and returns when the privilege ends (Unix seconds).
    pub fn verify_join(
        &self,
        app_id: &str,
        app_certificate: &str,
        channel: &str,
        user_id: &str,
        now: u64,
    ) -> Result<u64, TokenError> {
        self.check_issuer(app_id, app_certificate)?;
        let Some(join_expire) = self.services.iter().find_map(|s| match s {
            Service::Rtc {
                channel_name,
                uid,
                privileges,
            } if channel_name == channel && (uid == user_id || uid.is_empty()) => privileges
                .iter()
                .find(|(p, _)| *p == PRIVILEGE_JOIN_CHANNEL)
                .map(|(_, expire)| *expire),
            _ => None,
        }) else {
            return Err(invalid(format!(
                "the token grants user {user_id:?} no join of stream channel {channel:?}"
            )));
        };
        self.ends(join_expire, now)
    }

    /// Checks the App ID and the signature.
    fn check_issuer(&self, app_id: &str, app_certificate: &str) -> Result<(), TokenError> {
        if self.app_id != app_id {
            return Err(TokenError {
                code: ErrorCode::InconsistentAppid,
                reason: "the token was issued for another App ID".into(),
            });
        }
        if !self.signed_with(app_certificate) {
            return Err(invalid(
                "the token's signature does not match the App Certificate",
            ));
        }
        Ok(())
    }

    /// When a privilege that lasts `privilege_expire` seconds after issue ends (Unix seconds),
    /// or the expiry error if that is not after `now`.
    fn ends(&self, privilege_expire: u32, now: u64) -> Result<u64, TokenError> {
        let ends = self
            .expires_at()
            .min(u64::from(self.issue_ts) + u64::from(privilege_expire));
        if now >= ends {
            return Err(TokenError {
                code: ErrorCode::TokenExpired,
                reason: format!("the token expired at {ends} (Unix time)"),
            });
        }
        Ok(ends)
    }
}

/// Builds an RTM login token for `user_id`, valid `expire` seconds from `issue_ts`.
pub fn build_rtm_token(
    app_id: &str,
    app_certificate: &str,
    user_id: &str,
    issue_ts: u32,
    expire: u32,
    salt: u32,
) -> Result<String, TokenError> {
    let mut service = Vec::new();
    put_u16(&mut service, SERVICE_RTM);
    put_u16(&mut service, 1);
    put_u16(&mut service, PRIVILEGE_LOGIN);
    put_u32(&mut service, expire);
    put_string(&mut service, user_id.as_bytes())?;
    build(app_id, app_certificate, issue_ts, expire, salt, &[service])
}

/// Builds an RTC token granting JoinChannel on `channel_name` to `uid`, valid `expire` seconds.
pub fn build_rtc_token(
    app_id: &str,
    app_certificate: &str,
    channel_name: &str,
    uid: &str,
    issue_ts: u32,
    expire: u32,
    salt: u32,
) -> Result<String, TokenError> {
    let mut service = Vec::new();
    put_u16(&mut service, SERVICE_RTC);
    put_u16(&mut service, 1);
    put_u16(&mut service, PRIVILEGE_JOIN_CHANNEL);
    put_u32(&mut service, expire);
    put_string(&mut service, channel_name.as_bytes())?;
    put_string(&mut service, uid.as_bytes())?;
    build(app_id, app_certificate, issue_ts, expire, salt, &[service])
}

/// Whether `s` is 32 hexadecimal characters, the form of the App IDs and App Certificates the
/// token builders accept.
pub(crate) fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn build(
    app_id: &str,
    app_certificate: &str,
    issue_ts: u32,
    expire: u32,
    salt: u32,
    services: &[Vec<u8>],
) -> Result<String, TokenError> {
    if !is_hex32(app_id) || !is_hex32(app_certificate) {
        return Err(invalid(
            "the App ID and App Certificate must be 32 hexadecimal characters",
        ));
    }
    let mut info = Vec::new();
    put_string(&mut info, app_id.as_bytes())?;
    put_u32(&mut info, issue_ts);
    put_u32(&mut info, expire);
    put_u32(&mut info, salt);
    put_u16(&mut info, services.len() as u16);
    for service in services {
        info.extend_from_slice(service);
    }
    let mut mac = signer(app_certificate, issue_ts, salt)?;
    mac.update(&info);
    let signature = mac.finalize().into_bytes();
    let mut body = Vec::new();
    put_string(&mut body, &signature)?;
    body.extend_from_slice(&info);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&body).map_err(|e| invalid(e.to_string()))?;
    let compressed = z.finish().map_err(|e| invalid(e.to_string()))?;
    Ok(format!(
        "{VERSION}{}",
        base64::engine::general_purpose::STANDARD.encode(compressed)
    ))
}

type HmacSha256 = Hmac<Sha256>;

/// The keyed MAC for `signing_info`: the two-step key derivation of §9.1.
fn signer(app_certificate: &str, issue_ts: u32, salt: u32) -> Result<HmacSha256, TokenError> {
    let key = |k: &[u8]| HmacSha256::new_from_slice(k).map_err(|e| invalid(e.to_string()));
    let mut k1 = key(&issue_ts.to_le_bytes())?;
    k1.update(app_certificate.as_bytes());
    let k1 = k1.finalize().into_bytes();
    let mut k2 = key(&salt.to_le_bytes())?;
    k2.update(&k1);
    let k2 = k2.finalize().into_bytes();
    key(&k2)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) -> Result<(), TokenError> {
    let len = u16::try_from(s.len()).map_err(|_| invalid("a token field is too long"))?;
    put_u16(out, len);
    out.extend_from_slice(s);
    Ok(())
}

/// A cursor over the token body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(invalid("token is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, TokenError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TokenError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], TokenError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn utf8(&mut self) -> Result<String, TokenError> {
        let bytes = self.string()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid("a token field is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    const ISSUE: u32 = 1795719793;

    /// Made by the official python3 `RtmTokenBuilder2` (reference/token-vectors.md).
    const TONY: &str = "007eJxTYBCtW8Okxueelz77aUS55ayiJd63ZgaJd68qne68YIu5UpcCg6W5gbOjsWlKqplBsomJmYlpUlJiqkWikaGpgZlhkrFxYRNHtgAfA0P+lyYGRgYmIGZkAPFZGELy8yoBKw0bZQ==";
    const USER_B: &str = "007eJxTYOD3X7tz4449UW0vN/LJ75mlLeTSK+SU+/TE9dj9fwVUeV4rMFiaGzg7GpumpJoZJJuYmJmYJiUlplokGhmaGpgZJhkbFzZxZDcEMjI8LVjNyMjAxMAIhCA+G0NpcWpRfBIAKAgflA==";
    const RTC_TONY: &str = "007eJxTYLC6Men+gfy4W0prut60/d4cvOhi56MHlytYF9uGf+eJj5mvwGBpbuDsaGyakmpmkGxiYmZimpSUmGqRaGRoamBmmGRsXNjEkS3Ax8CQZh3GysjAyMACxCA+E5hkBpMsYJKDwSc/ObEkMz+PhSEkP68SABOLIs4=";

    #[test]
    fn official_rtm_tokens_verify() {
        let now = u64::from(ISSUE) + 5;
        let t = AccessToken::parse(TONY).unwrap();
        assert_eq!(t.app_id, APP_ID);
        assert_eq!((t.issue_ts, t.expire, t.salt), (ISSUE, 3600, 8582255));
        assert_eq!(
            t.verify_login(APP_ID, CERT, "Tony", now),
            Ok(u64::from(ISSUE) + 3600)
        );
        let b = AccessToken::parse(USER_B).unwrap();
        assert_eq!(
            b.verify_login(APP_ID, CERT, "user_b", now),
            Ok(u64::from(ISSUE) + 86400)
        );
    }

    #[test]
    fn official_rtc_token_parses_and_verifies() {
        let t = AccessToken::parse(RTC_TONY).unwrap();
        assert!(t.signed_with(CERT));
        assert!(
            matches!(&t.services[0], Service::Rtc { channel_name, uid, .. }
            if channel_name == "Location" && uid == "Tony")
        );
        // An RTC token grants no RTM login.
        let err = t
            .verify_login(APP_ID, CERT, "Tony", u64::from(ISSUE))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidToken);
        // It grants Tony a join of Location, and nothing else.
        let now = u64::from(ISSUE) + 5;
        assert!(t.verify_join(APP_ID, CERT, "Location", "Tony", now).is_ok());
        for (channel, user) in [("Location", "Bo"), ("Other", "Tony")] {
            let err = t.verify_join(APP_ID, CERT, channel, user, now).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidToken, "{channel} {user}");
        }
        // And an RTM login token grants no join.
        let rtm = AccessToken::parse(TONY).unwrap();
        let err = rtm
            .verify_join(APP_ID, CERT, "Location", "Tony", now)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidToken);
    }

    #[test]
    fn bad_tokens_get_the_reference_codes() {
        let now = u64::from(ISSUE) + 5;
        let t = AccessToken::parse(TONY).unwrap();
        let wrong_cert = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            t.verify_login(APP_ID, wrong_cert, "Tony", now)
                .unwrap_err()
                .code,
            ErrorCode::InvalidToken
        );
        let other_app = "00000000000000000000000000000000";
        assert_eq!(
            t.verify_login(other_app, CERT, "Tony", now)
                .unwrap_err()
                .code,
            ErrorCode::InconsistentAppid
        );
        assert_eq!(
            t.verify_login(APP_ID, CERT, "Lily", now).unwrap_err().code,
            ErrorCode::InvalidToken
        );
        let late = u64::from(ISSUE) + 3600;
        assert_eq!(
            t.verify_login(APP_ID, CERT, "Tony", late).unwrap_err().code,
            ErrorCode::TokenExpired
        );
    }

    #[test]
    fn our_builder_matches_the_official_one() {
        let built = build_rtm_token(APP_ID, CERT, "Tony", ISSUE, 3600, 8582255).unwrap();
        // Compression output may differ between zlib implementations; the content may not.
        let ours = AccessToken::parse(&built).unwrap();
        let theirs = AccessToken::parse(TONY).unwrap();
        assert_eq!(ours, theirs);
        let rtc = build_rtc_token(APP_ID, CERT, "Location", "Tony", ISSUE, 3600, 89537382).unwrap();
        assert!(AccessToken::parse(&rtc).unwrap().signed_with(CERT));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for bad in [
            "",
            "007",
            "006abc",
            "007!!!",
            "007AAAA",
            &format!("007{}", "A".repeat(5000)),
        ] {
            assert_eq!(
                AccessToken::parse(bad).unwrap_err().code,
                ErrorCode::InvalidToken,
                "{bad:.20}"
            );
        }
        // A valid zlib stream of a truncated body.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[32, 0, 1, 2]).unwrap();
        let token = format!(
            "007{}",
            base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap())
        );
        assert!(AccessToken::parse(&token).is_err());
    }
}

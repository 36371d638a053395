//! `AccessToken::parse` over arbitrary text, and over arbitrary token bodies wrapped the way a
//! token builder wraps them ("007" + base64 of zlib), so that the fuzzer reaches the body parser
//! instead of stopping at base64.
//!
//! Input: the first byte chooses the mode (even: the rest as text, odd: the rest as a body).
#![no_main]

use std::io::Write;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rtm_server::token::AccessToken;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = AccessToken::parse(&String::from_utf8_lossy(rest));
    } else {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(rest).unwrap();
        let compressed = zlib.finish().unwrap();
        let token = format!(
            "007{}",
            base64::engine::general_purpose::STANDARD.encode(compressed)
        );
        let _ = AccessToken::parse(&token);
    }
});

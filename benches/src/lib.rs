//! rtm benchmarks. The criterion benches are in `benches/`: `codec` (frame encode and decode)
//! and `roundtrip` (publish to receive through a server in this process). Run them with
//! `cargo bench -p rtm-benches`; `docs/performance.md` has the numbers and the commands.
#![warn(missing_docs)]

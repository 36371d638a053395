//! Which Redis shard holds what: independent servers, each channel's and each user's keys on
//! one of them, chosen by consistent hashing so that adding a shard moves few channels.

/// 64-bit FNV-1a: a hash every node computes the same way, whatever its Rust version (the
/// standard library's hasher makes no such promise).
pub(super) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Jump consistent hash (Lamping and Veach, 2014): a bucket in `0..buckets` for `key`, such
/// that going from n to n + 1 buckets moves only 1/(n + 1) of the keys, all to the new one.
pub(super) fn jump(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b.wrapping_add(1) as f64) * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_separates_parts() {
        // Fixed values: every node (and every version of rtm) must agree.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"app", b"room"]), fnv1a(&[b"app", b"room"]));
    }

    #[test]
    fn one_more_shard_moves_about_its_share_and_only_to_itself() {
        let keys: Vec<u64> = (0..10_000u32).map(|i| fnv1a(&[&i.to_le_bytes()])).collect();
        for n in 1..8 {
            let mut moved = 0;
            for &key in &keys {
                let (before, after) = (jump(key, n), jump(key, n + 1));
                assert!(before < n && after < n + 1);
                if before != after {
                    assert_eq!(after, n, "a key moves only to the new shard");
                    moved += 1;
                }
            }
            let share = keys.len() / (n + 1);
            assert!(moved > share / 2 && moved < share * 2, "{n}: {moved} moved");
        }
        assert_eq!(jump(42, 1), 0);
        assert_eq!(jump(42, 0), 0);
    }
}

//! Where a topic lives: a stable hash (FNV-1a) that places topics on router
//! shards and, on proxy nodes, on upstreams. It must not change between
//! processes or runs.

/// FNV-1a, 64 bits: stable across processes and runs (topic placement on
/// shards and, on proxies, on upstreams must not change with a restart).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stable, cheap topic → shard hash.
pub fn shard_of(topic: &[u8], shards: usize) -> usize {
    (fnv1a(topic) % shards as u64) as usize
}

//! Which partition a keyed record lands on, computed as the producer computes it, so a
//! reader looking for one key (an operation's snapshots, keyed by its id) reads that
//! partition alone instead of the whole topic.
//!
//! Courier's producers use librdkafka's `partitioner` setting: `consistent_random`
//! by default (CRC-32 of the key), or whatever `--kafka-opt partitioner=...` names.
//! The Java client's default (`murmur2_random` here) is the other one teams pick, to
//! place records where Java producers would. A setting this module does not know
//! gives `None`, and the reader reads every partition.

/// The partitioners this module computes, by librdkafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// `consistent`, `consistent_random` (librdkafka's default): CRC-32 of the key.
    Crc32,
    /// `murmur2`, `murmur2_random`: the Java client's murmur2, positive, modulo.
    Murmur2,
    /// `fnv1a`, `fnv1a_random`: FNV-1a 32-bit, as Sarama (Go) places keys.
    Fnv1a,
}

impl Partitioner {
    /// The partitioner a client configured with `kafka_opts` uses for keyed records.
    pub fn configured(kafka_opts: &[String]) -> Option<Self> {
        let named = kafka_opts.iter().rev().find_map(|o| o.split_once('=').filter(|(k, _)| k.trim() == "partitioner").map(|(_, v)| v.trim()));
        match named.unwrap_or("consistent_random") {
            "consistent" | "consistent_random" => Some(Partitioner::Crc32),
            "murmur2" | "murmur2_random" => Some(Partitioner::Murmur2),
            "fnv1a" | "fnv1a_random" => Some(Partitioner::Fnv1a),
            _ => None,
        }
    }

    /// The partition of a record keyed `key` in a topic of `partitions` partitions.
    pub fn partition(self, key: &[u8], partitions: i32) -> Option<i32> {
        if partitions <= 0 {
            return None;
        }
        let n = partitions as u32;
        let p = match self {
            Partitioner::Crc32 => crc32(key) % n,
            Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % n,
            // As Sarama (Go) and librdkafka: the hash as a signed 32-bit number,
            // remainder, then its absolute value.
            Partitioner::Fnv1a => ((fnv1a(key) as i32) % partitions).unsigned_abs(),
        };
        Some(p as i32)
    }
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32: [u32; 256] = crc32_table();

/// CRC-32 (IEEE, as zlib and librdkafka's `rd_crc32`).
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, b| CRC32[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
}

/// The Java client's murmur2 (seed 0x9747b28c), as librdkafka's `rd_murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// FNV-1a, 32 bits.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashes_match_their_reference_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926, "the CRC-32 check value");
        assert_eq!(crc32(b""), 0);
        // Kafka's Java client, Utils.murmur2 (its unit test's vectors).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c, "the FNV-1a check value");
    }

    #[test]
    fn the_configured_partitioner_is_read_from_the_kafka_options() {
        assert_eq!(Partitioner::configured(&[]), Some(Partitioner::Crc32));
        assert_eq!(Partitioner::configured(&["partitioner=murmur2_random".into()]), Some(Partitioner::Murmur2));
        assert_eq!(Partitioner::configured(&["linger.ms=5".into(), "partitioner = fnv1a".into()]), Some(Partitioner::Fnv1a));
        assert_eq!(Partitioner::configured(&["partitioner=random".into()]), None, "keys do not decide: read every partition");
        assert_eq!(Partitioner::Crc32.partition(b"k", 0), None);
        assert!((0..6).contains(&Partitioner::Murmur2.partition(b"k", 6).unwrap()));
    }
}

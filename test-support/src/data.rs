//! Deterministic test data and its digests. The same seed gives the same bytes in every run,
//! so a failure can be replayed; different seeds give unrelated bytes, so two test files never
//! share chunks by accident. Files are written and hashed in blocks, so a test can make files
//! of several hundred MiB without holding them in memory.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

/// xorshift64*: incompressible, cheap, reproducible, and no period a chunk size could line up
/// with.
struct Bytes {
    state: u64,
}

impl Bytes {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point; mixing the seed in keeps seeds 0 and 1 apart.
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Fills `out` with the next `out.len()` bytes; a multiple of 8 keeps the stream the same
    /// however it is cut into blocks.
    fn fill(&mut self, out: &mut [u8]) {
        for word in out.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let next = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&next[..word.len()]);
        }
    }
}

const BLOCK: usize = 1 << 20;

/// `len` pseudo-random bytes from `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    Bytes::new(seed).fill(&mut out);
    out
}

/// Bytes that differ in every run, for tests that must not depend on a particular content.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    bytes(len, seed)
}

/// The SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The SHA-256 of the file at `path`, lowercase hex, read in blocks.
///
/// # Panics
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> String {
    let mut hash = Sha256::new();
    std::fs::File::open(path)
        .and_then(|mut f| std::io::copy(&mut f, &mut hash))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(hash.finalize())
}

/// Writes a file of `len` bytes from `seed` (the same bytes as [`bytes`]), in blocks; returns
/// its SHA-256 (hex).
///
/// # Panics
/// When the file cannot be written.
pub fn write_file(path: &Path, len: usize, seed: u64) -> String {
    let fail = |e: std::io::Error| -> ! { panic!("write {}: {e}", path.display()) };
    let mut out = std::fs::File::create(path).map_or_else(|e| fail(e), std::io::BufWriter::new);
    let mut source = Bytes::new(seed);
    let mut hash = Sha256::new();
    let mut block = vec![0u8; BLOCK.min(len)];
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK);
        source.fill(&mut block[..n]);
        out.write_all(&block[..n]).unwrap_or_else(|e| fail(e));
        hash.update(&block[..n]);
        left -= n;
    }
    out.flush().unwrap_or_else(|e| fail(e));
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(bytes(1000, 7), bytes(1000, 7));
        assert_ne!(bytes(1000, 7), bytes(1000, 8));
        assert_ne!(bytes(64, 0), bytes(64, 1));
        assert_eq!(bytes(13, 3).len(), 13);
        assert_eq!(&bytes(1000, 5)[..13], &bytes(13, 5)[..]);
    }

    #[test]
    fn a_written_file_holds_the_same_bytes_and_digest() {
        let dir = std::env::temp_dir().join(format!("test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("f");
        let len = BLOCK + 4321;
        let sha = write_file(&path, len, 9);
        let expected = bytes(len, 9);
        assert_eq!(std::fs::read(&path).unwrap_or_default(), expected);
        assert_eq!(sha, sha256_hex(&expected));
        assert_eq!(sha256_file(&path), sha);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

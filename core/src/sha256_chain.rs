//! A SHA-256 that is carried from one chunk to the next across processes: the file's running
//! hash state, serialised after each chunk and resumed by whichever worker receives the next.
//!
//! A tus client (docs/protocol.md, "tus") declares no checksum of the file, yet the bytes reach
//! the workers in order, one chunk after the other. The worker that stores chunk `i` resumes
//! the state that chunk `i - 1`'s worker committed with it, hashes chunk `i` as it streams
//! through, and commits the new state; the assembler finishes the last chunk's state into the
//! file's SHA-256 (`sha256_source: received`) without reading the stored file back. SHA-256 is
//! a Merkle–Damgård hash, so its state between 64-byte blocks is the eight words of the
//! compression function plus the bytes of an unfinished block and the length so far: that is
//! all a chain holds, and hashing in pieces gives exactly the one-pass digest.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;

use crate::digest::Sha256;

const BLOCK: usize = 64;
/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
/// The first byte of a serialised chain; a later layout gets another.
const FORMAT_V1: u8 = 1;
/// Version byte, eight state words, the length so far.
const FIXED_LEN: usize = 1 + 32 + 8;
/// Blocks copied into an aligned batch per compression call: one call per block would reload
/// the state each time; the copy is far cheaper than the hashing.
const BATCH: usize = 32;

/// A resumable SHA-256 of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Chain {
    state: [u32; 8],
    /// Bytes hashed so far, the unfinished block included.
    len: u64,
    /// The unfinished block: `len % 64` bytes.
    tail: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("a serialised SHA-256 chain starts with format byte {FORMAT_V1}, got {0}")]
    UnknownFormat(u8),
    #[error(
        "a serialised SHA-256 chain of {len} bytes hashed must be {expected} bytes long, got {got}"
    )]
    WrongLength {
        len: u64,
        expected: usize,
        got: usize,
    },
    #[error("a serialised SHA-256 chain is at least {FIXED_LEN} bytes long, got {0}")]
    Truncated(usize),
}

impl Default for Sha256Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Chain {
    /// The state before the first byte.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: H0,
            len: 0,
            tail: Vec::with_capacity(BLOCK),
        }
    }

    /// Bytes hashed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < BLOCK {
                return;
            }
            let block = GenericArray::clone_from_slice(&self.tail);
            compress256(&mut self.state, std::slice::from_ref(&block));
            self.tail.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        let (blocks, rest) = data.split_at(whole);
        let mut batch = [GenericArray::default(); BATCH];
        for group in blocks.chunks(BATCH * BLOCK) {
            let n = group.len() / BLOCK;
            for (slot, block) in batch.iter_mut().zip(group.chunks_exact(BLOCK)) {
                slot.copy_from_slice(block);
            }
            compress256(&mut self.state, &batch[..n]);
        }
        self.tail.extend_from_slice(rest);
    }

    /// The SHA-256 of every byte hashed.
    #[must_use]
    pub fn finish(mut self) -> Sha256 {
        let bits = self.len.wrapping_mul(8);
        self.tail.push(0x80);
        // Pad to 56 bytes mod 64, then the length in bits, big-endian: one or two blocks.
        while self.tail.len() % BLOCK != BLOCK - 8 {
            self.tail.push(0);
        }
        self.tail.extend_from_slice(&bits.to_be_bytes());
        for block in self.tail.chunks_exact(BLOCK) {
            let block = GenericArray::clone_from_slice(block);
            compress256(&mut self.state, std::slice::from_ref(&block));
        }
        let mut out = [0u8; 32];
        for (word, bytes) in self.state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The state as bytes: a format byte, the eight words and the length big-endian, then the
    /// unfinished block (0 to 63 bytes).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.tail.len());
        out.push(FORMAT_V1);
        for word in self.state {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        if bytes.len() < FIXED_LEN {
            return Err(ChainError::Truncated(bytes.len()));
        }
        if bytes[0] != FORMAT_V1 {
            return Err(ChainError::UnknownFormat(bytes[0]));
        }
        let mut state = [0u32; 8];
        for (word, chunk) in state.iter_mut().zip(bytes[1..33].chunks_exact(4)) {
            *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[33..FIXED_LEN]);
        let len = u64::from_be_bytes(len);
        let expected = FIXED_LEN + (len % BLOCK as u64) as usize;
        if bytes.len() != expected {
            return Err(ChainError::WrongLength {
                len,
                expected,
                got: bytes.len(),
            });
        }
        let mut tail = Vec::with_capacity(BLOCK);
        tail.extend_from_slice(&bytes[FIXED_LEN..]);
        Ok(Self { state, len, tail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            hex::encode(Sha256Chain::new().finish()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut abc = Sha256Chain::new();
        abc.update(b"abc");
        assert_eq!(
            hex::encode(abc.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pieces_resumed_from_bytes_give_the_one_pass_digest() {
        // Lengths around the block and padding edges, and batches of many blocks.
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4095, 4096, 70_001] {
            let bytes = data(n);
            let expected: Sha256 = sha2::Sha256::digest(&bytes).into();
            for split in [
                0,
                1,
                7,
                55,
                56,
                63,
                64,
                65,
                2049,
                n / 2,
                n.saturating_sub(1),
                n,
            ] {
                let split = split.min(n);
                let (a, b) = bytes.split_at(split);
                let mut first = Sha256Chain::new();
                first.update(a);
                assert_eq!(first.len(), split as u64);
                let wire = first.to_bytes();
                let mut second = Sha256Chain::from_bytes(&wire).expect("own bytes");
                assert_eq!(second, first);
                // The second piece in uneven pieces of its own.
                for piece in b.chunks(97) {
                    second.update(piece);
                }
                assert_eq!(second.len(), n as u64);
                assert_eq!(second.finish(), expected, "n={n} split={split}");
            }
        }
    }

    #[test]
    fn the_order_of_pieces_matters() {
        let bytes = data(1000);
        let (a, b) = bytes.split_at(300);
        let mut swapped = Sha256Chain::new();
        swapped.update(b);
        swapped.update(a);
        let expected: Sha256 = sha2::Sha256::digest(&bytes).into();
        assert_ne!(swapped.finish(), expected);
    }

    #[test]
    fn rejects_bytes_that_are_not_a_chain() {
        assert_eq!(
            Sha256Chain::from_bytes(&[1; 10]),
            Err(ChainError::Truncated(10))
        );
        let mut wire = Sha256Chain::new().to_bytes();
        wire[0] = 9;
        assert_eq!(
            Sha256Chain::from_bytes(&wire),
            Err(ChainError::UnknownFormat(9))
        );
        let mut chain = Sha256Chain::new();
        chain.update(b"abc");
        let mut wire = chain.to_bytes();
        wire.pop();
        assert_eq!(
            Sha256Chain::from_bytes(&wire),
            Err(ChainError::WrongLength {
                len: 3,
                expected: FIXED_LEN + 3,
                got: FIXED_LEN + 2
            })
        );
    }
}

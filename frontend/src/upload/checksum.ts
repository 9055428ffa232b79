// CRC-64/NVME (the checksum of every chunk and of the whole file, docs/protocol.md "Checksums"):
// reflected polynomial 0x9a6c9329ac4bc9b5, init and xorout all ones — the structure of
// CRC-64/XZ, which hash-wasm computes by default; hash-wasm takes the polynomial as a parameter,
// so its WebAssembly slicing-by-8 does the hot loop. CRCs are written as 16 lowercase hex digits
// (the value, most significant digit first), like the API's `crc64nvme` fields.

import { crc64, createCRC64, type IHasher } from 'hash-wasm';

/** CRC-64/NVME's reflected polynomial, as hash-wasm takes it. */
export const CRC64_NVME_POLY = '9a6c9329ac4bc9b5';

/** The CRC-64/NVME of `data`, 16 lowercase hex digits. */
export function crc64nvme(data: Uint8Array | ArrayBuffer | string): Promise<string> {
  return crc64(data instanceof ArrayBuffer ? new Uint8Array(data) : data, CRC64_NVME_POLY);
}

/** An incremental CRC-64/NVME hasher (hash-wasm). */
export function createCRC64NVME(): Promise<IHasher> {
  return createCRC64(CRC64_NVME_POLY);
}

const HEX16 = /^[0-9a-f]{16}$/;

function checkHex(hex: string): string {
  if (!HEX16.test(hex)) throw new RangeError(`not a CRC-64 in hex: ${hex}`);
  return hex;
}

/** The 8 bytes of a CRC, big-endian. */
export function crcBytes(hex: string): Uint8Array {
  checkHex(hex);
  const out = new Uint8Array(8);
  for (let i = 0; i < 8; i += 1) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function base64(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** RFC 9530 `Content-Digest` value of a chunk with this CRC-64/NVME (S3's `ChecksumCRC64NVME` bytes). */
export function crcContentDigest(hex: string): string {
  return `crc64nvme=:${base64(crcBytes(hex))}:`;
}

// ---- combining the CRCs of consecutive pieces (zlib's crc32_combine, for 64 bits) ----
// Once per chunk, outside the hot loop: BigInt is fine here.

const POLY = 0x9a6c9329ac4bc9b5n;
const TOP = 1n << 63n;

/** a(x)·b(x) modulo the polynomial, in the reflected representation. */
function multmodp(a: bigint, b: bigint): bigint {
  let m = TOP;
  let p = 0n;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1n)) === 0n) break;
    }
    m >>= 1n;
    b = b & 1n ? (b >> 1n) ^ POLY : b >> 1n;
  }
  return p;
}

/** X2N[k] = x^(2^k) modulo the polynomial. */
const X2N: bigint[] = (() => {
  const t: bigint[] = [];
  let p = TOP >> 1n; // x^1
  for (let k = 0; k < 64; k += 1) {
    t.push(p);
    p = multmodp(p, p);
  }
  return t;
})();

/** x^(n·2^k) modulo the polynomial. */
function x2nmodp(n: number, k: number): bigint {
  let p = TOP; // x^0
  let rest = BigInt(n);
  while (rest > 0n) {
    if (rest & 1n) p = multmodp(X2N[k & 63] ?? 0n, p);
    rest >>= 1n;
    k += 1;
  }
  return p;
}

/** The CRC-64/NVME of A followed by B, from the CRC of A, the CRC of B and B's length. */
export function crc64Combine(crcA: string, crcB: string, lengthB: number): string {
  const a = BigInt(`0x${checkHex(crcA)}`);
  const b = BigInt(`0x${checkHex(crcB)}`);
  return (multmodp(x2nmodp(lengthB, 3), a) ^ b).toString(16).padStart(16, '0');
}

import { crc64 } from 'hash-wasm';
import { describe, expect, it } from 'vitest';
import { crc64Combine, crc64nvme, crcBytes, crcContentDigest, createCRC64NVME } from './checksum';

/** CRC-64/NVME bit by bit, straight from its definition (reflected, init and xorout all ones). */
function reference(data: Uint8Array): string {
  const poly = 0x9a6c9329ac4bc9b5n;
  let crc = 0xffffffffffffffffn;
  for (const byte of data) {
    crc ^= BigInt(byte);
    for (let k = 0; k < 8; k += 1) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n;
  }
  return (crc ^ 0xffffffffffffffffn).toString(16).padStart(16, '0');
}

const fromBase64 = (b64: string) => [...atob(b64)].map((c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');

/** Bytes that are not all alike, from a seed. */
function bytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i += 1) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

describe('CRC-64/NVME', () => {
  it('has the catalogue check value (hash-wasm with the NVME polynomial, not its default CRC-64/XZ)', async () => {
    expect(await crc64nvme('123456789')).toBe('ae8b14860a799888');
    expect(await crc64nvme(new TextEncoder().encode('123456789'))).toBe('ae8b14860a799888');
    expect(reference(new TextEncoder().encode('123456789'))).toBe('ae8b14860a799888');
    // hash-wasm's default polynomial is CRC-64/XZ's: another checksum.
    expect(await crc64('123456789')).toBe('995dc9bbdf1939fa');
    expect(await crc64nvme(new Uint8Array(0))).toBe('0000000000000000');
  });

  it('agrees with the bitwise definition on odd lengths, incrementally too', async () => {
    const h = await createCRC64NVME();
    for (const n of [1, 7, 8, 9, 63, 1000, 4099]) {
      const data = bytes(n, n);
      expect(await crc64nvme(data)).toBe(reference(data));
      h.init();
      h.update(data.subarray(0, n >> 1));
      h.update(data.subarray(n >> 1));
      expect(h.digest('hex')).toBe(reference(data));
    }
  });

  it('is sent as the 8 bytes big-endian, in base64 (S3 ChecksumCRC64NVME)', () => {
    expect([...crcBytes('ae8b14860a799888')]).toEqual([0xae, 0x8b, 0x14, 0x86, 0x0a, 0x79, 0x98, 0x88]);
    expect(crcContentDigest('ae8b14860a799888')).toBe('crc64nvme=:rosUhgp5mIg=:');
    expect(fromBase64('rosUhgp5mIg=')).toBe('ae8b14860a799888');
    // Leading zeros are bytes too.
    expect(crcContentDigest('00000000000000ff')).toBe(`crc64nvme=:${btoa('\0\0\0\0\0\0\0\xff')}:`);
    expect(fromBase64(crcContentDigest('00000000000000ff').slice(11, -1))).toBe('00000000000000ff');
    expect(() => crcBytes('AE8B14860A799888')).toThrow(RangeError);
    expect(() => crcBytes('ae8b')).toThrow(RangeError);
  });

  it('combines the CRCs of consecutive pieces into the CRC of the whole', async () => {
    const data = bytes(10_000, 7);
    const whole = await crc64nvme(data);
    for (const cut of [0, 1, 8, 4096, 9_999, 10_000]) {
      const a = await crc64nvme(data.subarray(0, cut));
      const b = await crc64nvme(data.subarray(cut));
      expect(crc64Combine(a, b, data.length - cut)).toBe(whole);
    }
    // Many chunks, folded in order, as the pass does.
    let folded: string | null = null;
    for (let at = 0; at < data.length; at += 777) {
      const piece = data.subarray(at, at + 777);
      const c = await crc64nvme(piece);
      folded = folded === null ? c : crc64Combine(folded, c, piece.length);
    }
    expect(folded).toBe(whole);
  });

  it('combines over lengths beyond 32 bits', () => {
    // x^(8·len) for len ≥ 2^32 exercises the high bits of the length; the result must still be a CRC.
    expect(crc64Combine('ae8b14860a799888', '0000000000000000', 2 ** 33 + 5)).toMatch(/^[0-9a-f]{16}$/);
    expect(crc64Combine('ae8b14860a799888', '0000000000000000', 0)).toBe('ae8b14860a799888');
  });
});

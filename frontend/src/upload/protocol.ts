// Messages between the page and the hashing workers.

export type HashRequest =
  /**
   * Whole-file SHA-256 from `start`, continuing from a saved hasher state when given. With a
   * `chunkSize`, the file is read a chunk at a time and each chunk's digest is reported too, so
   * that the upload need not read and digest the chunks again (when the server plans that size).
   */
  | { op: 'file'; id: number; file: Blob; start: number; state: Uint8Array | null; chunkSize: number | null }
  /** Stop the whole-file hash after the current slice and answer `paused` with its state. */
  | { op: 'pause'; id: number }
  /** Read one chunk and digest it (the page then sends the same slice of the file). */
  | { op: 'chunk'; id: number; file: Blob; start: number; end: number };

export type HashReply =
  | { kind: 'progress'; id: number; bytes: number }
  /** `Content-Digest` values of chunks `first`, `first + 1`, … */
  | { kind: 'digests'; id: number; first: number; digests: string[] }
  | { kind: 'file-done'; id: number; hex: string }
  | { kind: 'paused'; id: number; offset: number; state: Uint8Array }
  | { kind: 'chunk-done'; id: number; digest: string }
  | { kind: 'error'; id: number; message: string };

/** RFC 9530 `Content-Digest` value of a SHA-256 digest. */
export function contentDigest(sha256: ArrayBuffer | Uint8Array): string {
  const bytes = sha256 instanceof Uint8Array ? sha256 : new Uint8Array(sha256);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return `sha-256=:${btoa(bin)}:`;
}

/** Slice size for whole-file hashing. */
export const HASH_SLICE = 8 * 1024 * 1024;

/** Chunk digests are computed while hashing the whole file only for chunks up to this size. */
export const MAX_PREDIGEST_CHUNK = 64 * 1024 * 1024;

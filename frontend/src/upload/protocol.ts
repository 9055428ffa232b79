// Messages between the page and a file's pass worker (hash.worker.ts runs pass.ts).
//
// One worker per file being uploaded. It reads the file once, in order, a chunk at a time: each
// chunk's CRC-64/NVME, and the whole file's CRC-64/NVME (and SHA-256, when asked for) on the way.
// A chunk the server holds is compared with the server's CRC of it and dropped; a chunk the server
// lacks is handed to the page as a Blob of the bytes read — but only against a credit: the page
// grants one per free send slot, so the worker never reads ahead of the senders.
//
// Blobs, not ArrayBuffers: Chromium sends an ArrayBuffer request body at a few MB/s (measured
// here: 6 MB/s against 110–140 MB/s for a Blob of the same bytes, with XMLHttpRequest and fetch
// alike), and a Blob's bytes live in the browser's blob store instead of the page's heap.

import type { ChunkPlan } from '../lib/plan';

export type PassRequest =
  /** First message: the file and its chunk plan. */
  | { op: 'open'; file: Blob; plan: ChunkPlan }
  /** Reads chunks `indices` (ascending) and answers `crcs`; nothing is kept (the resume check). */
  | { op: 'check'; seq: number; indices: number[] }
  /** Starts the pass; `received` are the chunks the server holds, with its CRC of each. */
  | { op: 'start'; received: [number, string][]; sha256: boolean }
  /** The pass may read `n` more chunks to hand over. */
  | { op: 'credit'; n: number }
  /** Stop reading (after the chunk in hand) and forget the credits not used yet. */
  | { op: 'pause' }
  /** Go on reading (with new credits). */
  | { op: 'go' }
  /** Reads chunk `index` again (it was handed over, then dropped): its bytes if its CRC is `expect`. */
  | { op: 'read'; seq: number; index: number; expect: string | null };

export interface Sums {
  /** 16 lowercase hex digits. */
  crc64nvme: string;
  /** 64 lowercase hex digits; null when the pass was not asked for it. */
  sha256: string | null;
}

export type PassReply =
  /** A chunk the server holds reads as the server's CRC says. */
  | { kind: 'checked'; index: number; crc: string }
  /** A chunk the server lacks, with its CRC and its bytes as read. */
  | { kind: 'chunk'; index: number; crc: string; data: Blob }
  /** A chunk the server holds reads otherwise: the pass stopped. */
  | { kind: 'mismatch'; index: number; crc: string }
  /** The pass read the whole file. */
  | { kind: 'done'; sums: Sums }
  | { kind: 'crcs'; seq: number; crcs: string[] }
  /** A chunk read again; `data` is null when its CRC is not the one expected. */
  | { kind: 'read'; seq: number; index: number; crc: string; data: Blob | null }
  /** A read failed (`seq` of the request, or none for the pass itself). */
  | { kind: 'error'; seq?: number; message: string };

// Messages between the page and a file's pass worker (hash.worker.ts runs pass.ts).
//
// One worker per file being uploaded. It reads the file once, in order, a chunk at a time: each
// chunk's CRC-64/NVME, and the whole file's SHA-256 and CRC-64/NVME on the way. A chunk the server
// holds is compared with the server's CRC of it and dropped; a chunk the server lacks is handed to
// the page (its ArrayBuffer transferred, not copied) — but only against a credit: the page grants
// one per free send slot, so the worker never reads ahead of the senders.

import type { ChunkPlan } from '../lib/plan';

export type PassRequest =
  /** First message: the file and its chunk plan. */
  | { op: 'open'; file: Blob; plan: ChunkPlan }
  /** Reads chunks `indices` (ascending) and answers `crcs`; nothing is kept (the resume check). */
  | { op: 'check'; seq: number; indices: number[] }
  /** Starts the pass; `received` are the chunks the server holds, with its CRC of each. */
  | { op: 'start'; received: [number, string][] }
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
  /** 64 lowercase hex digits. */
  sha256: string;
}

export type PassReply =
  /** A chunk the server holds reads as the server's CRC says. */
  | { kind: 'checked'; index: number; crc: string }
  /** A chunk the server lacks, with its CRC (`data` is transferred). */
  | { kind: 'chunk'; index: number; crc: string; data: ArrayBuffer }
  /** A chunk the server holds reads otherwise: the pass stopped. */
  | { kind: 'mismatch'; index: number; crc: string }
  /** The pass read the whole file. */
  | { kind: 'done'; sums: Sums }
  | { kind: 'crcs'; seq: number; crcs: string[] }
  /** A chunk read again; `data` is null when its CRC is not the one expected. */
  | { kind: 'read'; seq: number; index: number; crc: string; data: ArrayBuffer | null }
  /** A read failed (`seq` of the request, or none for the pass itself). */
  | { kind: 'error'; seq?: number; message: string };

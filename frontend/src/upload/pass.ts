// The one pass over a file (docs/protocol.md "Checksums"), as the worker runs it: every byte is
// read once, in order, a chunk at a time (Blob.slice, never the whole file). Each chunk gets its
// CRC-64/NVME, feeds the running SHA-256 when one was asked for, and its CRC is combined into
// the whole file's. A chunk the server holds is compared with the server's CRC and dropped; one
// it lacks is handed over (a Blob of the bytes read) against a credit from the page. The next chunk is read while this one is being
// digested, when it needs no credit or one is there: at most two chunks are in the worker.
//
// Kept free of worker globals so that tests run it in node.

import { createSHA256, type IHasher } from 'hash-wasm';
import type { ChunkPlan } from '../lib/plan';
import { chunkRange } from '../lib/plan';
import { createCRC64NVME, crc64Combine } from './checksum';
import type { PassReply, PassRequest } from './protocol';

export type Emit = (msg: PassReply) => void;

/** A reason in words for an error reading the file. */
export function describeReadError(e: unknown): string {
  if (e instanceof DOMException && e.name === 'NotReadableError') {
    return 'the file can no longer be read (was it moved, changed or deleted?)';
  }
  return e instanceof Error ? e.message : String(e);
}

export class PassRunner {
  private credits = 0;
  private running = true;
  private closed = false;
  private started = false;
  private wake: (() => void) | null = null;
  private crcHasher: Promise<IHasher> | null = null;

  constructor(
    private readonly file: Blob,
    private readonly plan: ChunkPlan,
    private readonly emit: Emit,
  ) {}

  handle(req: PassRequest): void {
    switch (req.op) {
      case 'open':
        return;
      case 'check':
        this.check(req.seq, req.indices).catch((e: unknown) => this.emit({ kind: 'error', seq: req.seq, message: describeReadError(e) }));
        return;
      case 'start':
        if (this.started) return;
        this.started = true;
        this.run(new Map(req.received), req.sha256).catch((e: unknown) => {
          if (!this.closed) this.emit({ kind: 'error', message: describeReadError(e) });
        });
        return;
      case 'credit':
        this.credits += req.n;
        this.poke();
        return;
      case 'pause':
        this.running = false;
        this.credits = 0;
        return;
      case 'go':
        this.running = true;
        this.poke();
        return;
      case 'read':
        this.reread(req.seq, req.index, req.expect).catch((e: unknown) =>
          this.emit({ kind: 'error', seq: req.seq, message: describeReadError(e) }),
        );
        return;
    }
  }

  /** Stops for good (in-process use; a worker is terminated instead). */
  close(): void {
    this.closed = true;
    this.poke();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async until(ready: () => boolean): Promise<void> {
    while (!ready() && !this.closed) await new Promise<void>((r) => (this.wake = r));
  }

  private async read(index: number): Promise<ArrayBuffer> {
    const { start, end } = chunkRange(this.plan, index);
    const buf = await this.file.slice(start, end).arrayBuffer();
    if (buf.byteLength !== end - start) throw new Error('the file is shorter than when it was selected: was it changed?');
    return buf;
  }

  private async crcOf(buf: ArrayBuffer): Promise<string> {
    this.crcHasher ??= createCRC64NVME();
    const h = await this.crcHasher;
    // One synchronous run: interleaved reads cannot mix their bytes in it.
    return h.init().update(new Uint8Array(buf)).digest('hex');
  }

  private async check(seq: number, indices: number[]): Promise<void> {
    const crcs: string[] = [];
    for (const i of indices) crcs.push(await this.crcOf(await this.read(i)));
    this.emit({ kind: 'crcs', seq, crcs });
  }

  private async reread(seq: number, index: number, expect: string | null): Promise<void> {
    const buf = await this.read(index);
    const crc = await this.crcOf(buf);
    if (expect !== null && crc !== expect) this.emit({ kind: 'read', seq, index, crc, data: null });
    else this.emit({ kind: 'read', seq, index, crc, data: new Blob([buf]) });
  }

  /** Takes what reading chunk `i` needs now (a credit when it is to be handed over); false when it would wait. */
  private tryTake(i: number, received: ReadonlyMap<number, string>): boolean {
    if (!this.running || this.closed) return false;
    if (received.has(i)) return true;
    if (this.credits <= 0) return false;
    this.credits -= 1;
    return true;
  }

  private async run(received: ReadonlyMap<number, string>, withSha256: boolean): Promise<void> {
    const [sha, crc] = await Promise.all([withSha256 ? createSHA256() : null, createCRC64NVME()]);
    sha?.init();
    let whole: string | null = null;
    const total = this.plan.totalChunks;
    type Ahead = { index: number; bytes: Promise<ArrayBuffer> };
    let ahead = null as Ahead | null;
    for (let i = 0; i < total; i += 1) {
      let bytes: Promise<ArrayBuffer>;
      if (ahead !== null && ahead.index === i) {
        bytes = ahead.bytes;
      } else {
        await this.until(() => this.tryTake(i, received));
        if (this.closed) return;
        bytes = this.read(i);
      }
      ahead = null;
      const buf = await bytes;
      if (this.closed) return;
      if (i + 1 < total && this.tryTake(i + 1, received)) {
        const next = this.read(i + 1);
        next.catch(() => undefined); // awaited at its turn; not unhandled if the pass ends first
        ahead = { index: i + 1, bytes: next };
      }
      const view = new Uint8Array(buf);
      const c = crc.init().update(view).digest('hex');
      sha?.update(view);
      whole = whole === null ? c : crc64Combine(whole, c, buf.byteLength);
      const theirs = received.get(i);
      if (theirs !== undefined) {
        if (theirs !== c) {
          this.emit({ kind: 'mismatch', index: i, crc: c });
          this.closed = true;
          return;
        }
        this.emit({ kind: 'checked', index: i, crc: c });
      } else {
        this.emit({ kind: 'chunk', index: i, crc: c, data: new Blob([buf]) });
      }
    }
    this.emit({ kind: 'done', sums: { crc64nvme: whole ?? '0000000000000000', sha256: sha?.digest('hex') ?? null } });
  }
}

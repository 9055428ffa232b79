// The page's side of the pass workers (protocol.ts): one worker per file being uploaded.

import type { ChunkPlan } from '../lib/plan';
import { PassRunner } from './pass';
import type { PassReply, PassRequest, Sums } from './protocol';

export type { Sums } from './protocol';

export type WorkerFactory = () => Worker;

export const defaultWorkerFactory: WorkerFactory = () =>
  new Worker(new URL('./hash.worker.ts', import.meta.url), { type: 'module', name: 'lfusys-pass' });

/** What the pass reports, in file order. */
export interface PassSink {
  /** A chunk the server holds reads as the server's CRC says. */
  checked(index: number, crc: string): void;
  /** A chunk the server lacks: its bytes are the page's now. */
  chunk(index: number, crc: string, data: Blob): void;
  /** A chunk the server holds reads otherwise; the pass is over. */
  mismatch(index: number, crc: string): void;
  /** The whole file was read. */
  done(sums: Sums): void;
  /** The file could not be read (or the worker died); the pass is over. */
  failed(message: string): void;
}

export type Reread = { ok: true; crc: string; data: Blob } | { ok: false; crc: string };

/** One file in its worker. */
export interface FilePass {
  /** The CRCs of chunks `indices` (read, compared by the caller, dropped). */
  check(indices: number[]): Promise<string[]>;
  /** Starts the one pass; `received` are the chunks the server holds, with its CRC of each; the file's SHA-256 too with `sha256`. */
  start(received: ReadonlyMap<number, string>, sink: PassSink, opts: { sha256: boolean }): void;
  /** Lets the pass read `n` more chunks to hand over. */
  credit(n: number): void;
  /** Stops reading after the chunk in hand; unused credits are forgotten. */
  pause(): void;
  go(): void;
  /** Chunk `index` read again, with its bytes when its CRC is `expect` (null: whatever it is). */
  read(index: number, expect: string | null): Promise<Reread>;
  /** Ends the worker; nothing is reported any more, and waiting calls reject with an AbortError. */
  close(): void;
}

export interface HashService {
  open(file: Blob, plan: ChunkPlan): FilePass;
}

function abortError(): DOMException {
  return new DOMException('aborted', 'AbortError');
}

type Waiter = { resolve: (m: PassReply) => void; reject: (e: Error) => void };

/** A FilePass over a message channel to a PassRunner (in a worker, or in this thread). */
class PassClient implements FilePass {
  private seq = 0;
  private readonly waiting = new Map<number, Waiter>();
  private sink: PassSink | null = null;
  private closed = false;

  constructor(
    private readonly post: (req: PassRequest) => void,
    private readonly end: () => void,
  ) {}

  receive(m: PassReply): void {
    if (this.closed) return;
    if ((m.kind === 'crcs' || m.kind === 'read' || m.kind === 'error') && m.seq !== undefined) {
      const w = this.waiting.get(m.seq);
      this.waiting.delete(m.seq);
      if (m.kind === 'error') w?.reject(new Error(m.message));
      else w?.resolve(m);
      return;
    }
    const sink = this.sink;
    if (!sink) return;
    switch (m.kind) {
      case 'checked':
        return sink.checked(m.index, m.crc);
      case 'chunk':
        return sink.chunk(m.index, m.crc, m.data);
      case 'mismatch':
        return sink.mismatch(m.index, m.crc);
      case 'done':
        return sink.done(m.sums);
      case 'error':
        return sink.failed(m.message);
    }
  }

  /** The worker died: everything waiting fails. */
  fail(message: string): void {
    if (this.closed) return;
    const sink = this.sink;
    for (const w of this.waiting.values()) w.reject(new Error(message));
    this.close();
    sink?.failed(message);
  }

  private ask(make: (seq: number) => PassRequest): Promise<PassReply> {
    if (this.closed) return Promise.reject(abortError());
    const seq = ++this.seq;
    return new Promise<PassReply>((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      this.post(make(seq));
    });
  }

  async check(indices: number[]): Promise<string[]> {
    if (indices.length === 0) return [];
    const m = await this.ask((seq) => ({ op: 'check', seq, indices }));
    return m.kind === 'crcs' ? m.crcs : [];
  }

  async read(index: number, expect: string | null): Promise<Reread> {
    const m = await this.ask((seq) => ({ op: 'read', seq, index, expect }));
    if (m.kind !== 'read') throw new Error('unexpected answer from the pass worker');
    return m.data ? { ok: true, crc: m.crc, data: m.data } : { ok: false, crc: m.crc };
  }

  start(received: ReadonlyMap<number, string>, sink: PassSink, opts: { sha256: boolean }): void {
    if (this.closed || this.sink) return;
    this.sink = sink;
    this.post({ op: 'start', received: [...received], sha256: opts.sha256 });
  }

  credit(n: number): void {
    if (!this.closed && n > 0) this.post({ op: 'credit', n });
  }

  pause(): void {
    if (!this.closed) this.post({ op: 'pause' });
  }

  go(): void {
    if (!this.closed) this.post({ op: 'go' });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sink = null;
    for (const w of this.waiting.values()) w.reject(abortError());
    this.waiting.clear();
    this.end();
  }
}

/** Passes in Web Workers: the file is read and digested off the page's thread. */
export class Hasher implements HashService {
  private readonly open_ = new Set<PassClient>();

  constructor(private readonly factory: WorkerFactory = defaultWorkerFactory) {}

  open(file: Blob, plan: ChunkPlan): FilePass {
    const worker = this.factory();
    const client: PassClient = new PassClient(
      (req) => worker.postMessage(req),
      () => {
        worker.terminate();
        this.open_.delete(client);
      },
    );
    worker.onmessage = (ev: MessageEvent<PassReply>) => client.receive(ev.data);
    worker.onerror = (ev) => {
      ev.preventDefault();
      client.fail(`the file's worker failed: ${ev.message || 'unknown error'}`);
    };
    this.open_.add(client);
    worker.postMessage({ op: 'open', file, plan } satisfies PassRequest);
    return client;
  }

  dispose(): void {
    for (const c of [...this.open_]) c.close();
  }
}

/** Passes in this thread (tests; a page without workers). Replies come asynchronously, in order, as from a worker. */
export class LocalHasher implements HashService {
  open(file: Blob, plan: ChunkPlan): FilePass {
    let runner: PassRunner | null = null;
    const client = new PassClient(
      (req) => runner?.handle(req),
      () => runner?.close(),
    );
    runner = new PassRunner(file, plan, (m) => queueMicrotask(() => client.receive(m)));
    return client;
  }
}

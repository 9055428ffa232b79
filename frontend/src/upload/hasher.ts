// The page's side of the hashing workers.

import type { HashReply, HashRequest } from './protocol';

export type WorkerFactory = () => Worker;

export const defaultWorkerFactory: WorkerFactory = () =>
  new Worker(new URL('./hash.worker.ts', import.meta.url), { type: 'module', name: 'lfusys-hash' });

export type FileHashResult = { kind: 'done'; hex: string } | { kind: 'paused'; offset: number; state: Uint8Array };

export interface FileHashOptions {
  onProgress: (bytes: number) => void;
  /** Digests of whole chunks of `chunkSize` bytes, as they are computed. */
  onDigests?: (first: number, digests: string[]) => void;
  start?: number;
  state?: Uint8Array | null;
  chunkSize?: number | null;
}

export interface FileHashJob {
  readonly result: Promise<FileHashResult>;
  /** Stops after the current slice; `result` then resolves to `paused` with the state to continue from. */
  pause(): void;
  /** Stops at once; `result` rejects with an AbortError. */
  cancel(): void;
}

export interface ChunkDigest {
  /** The `Content-Digest` header value. */
  digest: string;
}

function abortError(): DOMException {
  return new DOMException('aborted', 'AbortError');
}

export class Hasher {
  private chunkWorker: Worker | null = null;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (c: ChunkDigest) => void; reject: (e: Error) => void }>();

  constructor(private readonly factory: WorkerFactory = defaultWorkerFactory) {}

  /** Reads and digests bytes [start, end) of `file` in the worker; the bytes are not kept. */
  chunk(file: Blob, start: number, end: number, signal?: AbortSignal): Promise<ChunkDigest> {
    if (signal?.aborted) return Promise.reject(abortError());
    const worker = this.ensureChunkWorker();
    const id = this.nextId++;
    return new Promise<ChunkDigest>((resolve, reject) => {
      const onAbort = () => {
        this.waiting.delete(id);
        reject(abortError());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.set(id, {
        resolve: (c) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(c);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
      const msg: HashRequest = { op: 'chunk', id, file, start, end };
      worker.postMessage(msg);
    });
  }

  private ensureChunkWorker(): Worker {
    if (this.chunkWorker) return this.chunkWorker;
    const w = this.factory();
    w.onmessage = (ev: MessageEvent<HashReply>) => {
      const m = ev.data;
      const waiter = this.waiting.get(m.id);
      if (!waiter) return; // aborted meanwhile: the bytes are dropped
      this.waiting.delete(m.id);
      if (m.kind === 'chunk-done') waiter.resolve({ digest: m.digest });
      else if (m.kind === 'error') waiter.reject(new Error(m.message));
    };
    w.onerror = (ev) => {
      ev.preventDefault();
      const err = new Error(`the hashing worker failed: ${ev.message || 'unknown error'}`);
      for (const waiter of this.waiting.values()) waiter.reject(err);
      this.waiting.clear();
      w.terminate();
      this.chunkWorker = null;
    };
    this.chunkWorker = w;
    return w;
  }

  /** Whole-file SHA-256 in a worker of its own, from `start` with a saved state. */
  file(file: Blob, opts: FileHashOptions): FileHashJob {
    const { onProgress, onDigests, start = 0, state = null, chunkSize = null } = opts;
    const worker = this.factory();
    const id = this.nextId++;
    let settle: { resolve: (r: FileHashResult) => void; reject: (e: Error) => void } | null = null;
    const result = new Promise<FileHashResult>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const finish = (fn: (s: NonNullable<typeof settle>) => void) => {
      const s = settle;
      settle = null;
      worker.terminate();
      if (s) fn(s);
    };
    worker.onmessage = (ev: MessageEvent<HashReply>) => {
      const m = ev.data;
      if (m.kind === 'progress') onProgress(m.bytes);
      else if (m.kind === 'digests') onDigests?.(m.first, m.digests);
      else if (m.kind === 'file-done') finish((s) => s.resolve({ kind: 'done', hex: m.hex }));
      else if (m.kind === 'paused') finish((s) => s.resolve({ kind: 'paused', offset: m.offset, state: m.state }));
      else if (m.kind === 'error') finish((s) => s.reject(new Error(m.message)));
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      finish((s) => s.reject(new Error(`the hashing worker failed: ${ev.message || 'unknown error'}`)));
    };
    const msg: HashRequest = { op: 'file', id, file, start, state, chunkSize };
    worker.postMessage(msg);
    return {
      result,
      pause: () => {
        if (settle) worker.postMessage({ op: 'pause', id } satisfies HashRequest);
      },
      cancel: () => finish((s) => s.reject(abortError())),
    };
  }

  dispose(): void {
    this.chunkWorker?.terminate();
    this.chunkWorker = null;
    for (const w of this.waiting.values()) w.reject(abortError());
    this.waiting.clear();
  }
}

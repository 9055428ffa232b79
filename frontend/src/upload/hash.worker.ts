/// <reference lib="webworker" />
// Hashing off the main thread: the whole-file SHA-256 (hash-wasm, incremental, pausable) and each
// chunk's SHA-256 (WebCrypto). Files are read a slice at a time (Blob.slice), never whole.

import { createSHA256 } from 'hash-wasm';
import { contentDigest, HASH_SLICE, MAX_PREDIGEST_CHUNK, type HashReply, type HashRequest } from './protocol';

declare const self: DedicatedWorkerGlobalScope;

const pauseRequested = new Set<number>();

function reply(msg: HashReply, transfer: Transferable[] = []): void {
  self.postMessage(msg, transfer);
}

async function hashFile(req: Extract<HashRequest, { op: 'file' }>): Promise<void> {
  const hasher = await createSHA256();
  hasher.init();
  if (req.state) hasher.load(req.state);
  let offset = req.start;
  let lastReport = 0;
  const chunkSize = req.chunkSize !== null && req.chunkSize <= MAX_PREDIGEST_CHUNK && req.start % req.chunkSize === 0 ? req.chunkSize : null;
  const slice = chunkSize ?? HASH_SLICE;
  const read = (from: number) => req.file.slice(from, Math.min(from + slice, req.file.size)).arrayBuffer();
  // Reading the next slice overlaps with hashing this one: two slices in memory at most.
  let next: Promise<ArrayBuffer> | null = offset < req.file.size ? read(offset) : null;
  while (next) {
    const buf = await next;
    if (pauseRequested.delete(req.id)) {
      reply({ kind: 'paused', id: req.id, offset, state: hasher.save() });
      return;
    }
    const end = offset + buf.byteLength;
    if (buf.byteLength === 0) throw new Error('the file is shorter than when it was selected: was it changed?');
    next = end < req.file.size ? read(end) : null;
    // WebCrypto digests the chunk (natively) while hash-wasm goes on with the whole file.
    const chunkDigest = chunkSize ? crypto.subtle.digest('SHA-256', buf) : null;
    hasher.update(new Uint8Array(buf));
    if (chunkDigest && chunkSize) {
      reply({ kind: 'digests', id: req.id, first: offset / chunkSize, digests: [contentDigest(await chunkDigest)] });
    }
    offset = end;
    const now = performance.now();
    if (now - lastReport > 100) {
      lastReport = now;
      reply({ kind: 'progress', id: req.id, bytes: offset });
    }
  }
  pauseRequested.delete(req.id);
  reply({ kind: 'progress', id: req.id, bytes: offset });
  reply({ kind: 'file-done', id: req.id, hex: hasher.digest('hex') });
}

async function hashChunk(req: Extract<HashRequest, { op: 'chunk' }>): Promise<void> {
  const buffer = await req.file.slice(req.start, req.end).arrayBuffer();
  if (buffer.byteLength !== req.end - req.start) {
    throw new Error('the file is shorter than when it was selected: was it changed?');
  }
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  reply({ kind: 'chunk-done', id: req.id, digest: contentDigest(digest) });
}

function describe(e: unknown): string {
  if (e instanceof DOMException && e.name === 'NotReadableError') {
    return 'the file can no longer be read (was it moved, changed or deleted?)';
  }
  return e instanceof Error ? e.message : String(e);
}

self.onmessage = (ev: MessageEvent<HashRequest>) => {
  const req = ev.data;
  if (req.op === 'pause') {
    pauseRequested.add(req.id);
    return;
  }
  const job = req.op === 'file' ? hashFile(req) : hashChunk(req);
  job.catch((e: unknown) => reply({ kind: 'error', id: req.id, message: describe(e) }));
};

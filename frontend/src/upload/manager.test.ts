import { describe, expect, it } from 'vitest';
import { ApiError } from '../api/client';
import type { CreatedUpload, DeclaredChecksums, UploadStatus } from '../api/types';
import type { ChunkPlan } from '../lib/plan';
import type { KeyValueStore } from '../lib/resume';
import { crc64Combine, crc64nvme } from './checksum';
import { LocalHasher, type FilePass, type HashService, type PassSink } from './hasher';
import { UploadManager, type UploadApi, type UploadView } from './manager';
import type { PutChunk, PutResult } from './transport';

/** Bytes that are not all alike, from a seed. */
function bytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed * 7919 + 1;
  for (let i = 0; i < n; i += 1) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const file = (name: string, size: number, lastModified = 1000, seed = 1) => new File([bytes(size, seed)], name, { lastModified });

/** SHA-256 by WebCrypto (another implementation than the pass's hash-wasm). */
async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
  return [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const fromBase64 = (b64: string) => [...atob(b64)].map((c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');

async function fileSums(f: Blob) {
  const data = new Uint8Array(await f.arrayBuffer());
  return { crc64nvme: await crc64nvme(data), sha256: await sha256Hex(data) };
}

function problem(status: number, kind: string, detail: string): ApiError {
  return new ApiError(status, 'Refused', detail, `https://lfusys.io/problems/${kind}`);
}

interface StoredUpload extends UploadStatus {
  crcs: Map<number, string>;
  lengths: Map<number, number>;
}

/**
 * An in-memory server: uploads, their chunks and CRCs, the declaration, and what happened in
 * order (`log`). Like the real one, it checks every chunk's Content-Digest against the body, and
 * the declared CRC against the chunks when the last one lands.
 */
class FakeServer implements UploadApi {
  uploads = new Map<string, StoredUpload>();
  renewals = 0;
  cancels: string[] = [];
  /** What happened, in order: `put 3`, `patch`, … */
  log: string[] = [];
  /** The `wait` of each long poll. */
  waits: number[] = [];
  /** When set, the last chunk leaves the upload assembling; the next long poll sees it completed. */
  assembleWhileWaiting = false;
  /** Answers the declaration instead, when set. */
  onDeclare: ((id: string, sums: DeclaredChecksums, attempt: number) => Promise<UploadStatus | undefined>) | null = null;
  private declarations = 0;
  private n = 0;
  constructor(readonly chunkSize: number) {}

  async createUpload(body: { name: string; size: number; sha256?: string }): Promise<CreatedUpload> {
    const id = `up${++this.n}`;
    const total = Math.ceil(body.size / this.chunkSize);
    this.uploads.set(id, {
      upload_id: id,
      name: body.name,
      size: body.size,
      content_type: 'application/octet-stream',
      sha256: body.sha256,
      chunk_size: this.chunkSize,
      total_chunks: total,
      state: 'uploading',
      received_chunks: [],
      received_crc64nvme: [],
      bytes_received: 0,
      created_at: '',
      expires_at: '',
      crcs: new Map(),
      lengths: new Map(),
    });
    this.log.push(`create ${id}`);
    return {
      upload_id: id,
      chunk_size: this.chunkSize,
      total_chunks: total,
      upload_url: `http://workers/api/v1/chunks/${id}`,
      upload_token: 'tok1',
      expires_at: '',
      upload_token_expires_at: '',
      state: 'uploading',
    };
  }
  private status(u: StoredUpload): UploadStatus {
    const received = [...u.crcs.keys()].sort((a, b) => a - b);
    const rest: UploadStatus & Partial<Pick<StoredUpload, 'crcs' | 'lengths'>> = { ...u };
    delete rest.crcs;
    delete rest.lengths;
    return { ...rest, received_chunks: received, received_crc64nvme: received.map((i) => u.crcs.get(i) ?? '') };
  }
  async unfinishedUploads() {
    return [...this.uploads.values()]
      .filter((u) => u.state === 'uploading' || u.state === 'assembling')
      .map((u) => ({ ...this.status(u), received_chunks: [], received_crc64nvme: [] })); // listings carry only the byte count
  }
  async upload(id: string) {
    const u = this.uploads.get(id);
    if (!u) throw new ApiError(404, 'Not Found', 'no such upload');
    return this.status(u);
  }
  /** The assembly here is instant: a long poll answers at once. */
  async uploadChange(id: string, seconds: number) {
    this.waits.push(seconds);
    const u = this.uploads.get(id);
    if (u?.state === 'assembling') this.assemble(u);
    return this.upload(id);
  }
  async declareChecksums(id: string, sums: DeclaredChecksums): Promise<UploadStatus> {
    this.declarations += 1;
    this.log.push('patch');
    const scripted = await this.onDeclare?.(id, sums, this.declarations);
    if (scripted) return scripted;
    const u = this.uploads.get(id);
    if (!u) throw problem(404, 'not-found', 'no such upload');
    if (u.state !== 'uploading') throw problem(409, 'upload-not-uploading', `the upload is ${u.state}`);
    if (u.crc64nvme && u.crc64nvme !== sums.crc64nvme) throw problem(409, 'checksums-declared', 'other checksums were declared for this upload');
    if (u.sha256 && sums.sha256 && u.sha256 !== sums.sha256) {
      u.state = 'failed';
      u.error = `whole-file SHA-256 mismatch: declared ${u.sha256} at creation, the client computed ${sums.sha256} while reading the file`;
      throw problem(422, 'sha256-mismatch', u.error);
    }
    u.crc64nvme = sums.crc64nvme;
    u.sha256 = sums.sha256;
    return this.status(u);
  }
  async cancelUpload(id: string) {
    const u = this.uploads.get(id);
    if (!u) throw new ApiError(404, 'Not Found', 'no such upload');
    if (u.state !== 'uploading') throw new ApiError(409, 'Conflict', 'assembling');
    u.state = 'cancelled';
    this.cancels.push(id);
  }
  async renewUploadToken(id: string) {
    this.renewals += 1;
    return { upload_token: `tok${this.renewals + 1}`, expires_at: '', upload_url: `http://workers/api/v1/chunks/${id}` };
  }
  /** The whole file from its chunks' CRCs, checked against the declaration, as the assembler does. */
  private assemble(u: StoredUpload): void {
    let whole: string | null = null;
    for (let i = 0; i < u.total_chunks; i += 1) {
      const c = u.crcs.get(i) ?? '';
      whole = whole === null ? c : crc64Combine(whole, c, u.lengths.get(i) ?? 0);
    }
    if (!u.crc64nvme) {
      u.state = 'failed';
      u.error = 'the last chunk came before the declaration';
    } else if (whole !== u.crc64nvme) {
      u.state = 'failed';
      u.error = `the stored file is not the file declared (${whole} ≠ ${u.crc64nvme})`;
    } else {
      u.state = 'completed';
      u.file_id = `file-${u.upload_id}`;
    }
  }
  /** Stores a chunk whose Content-Digest matches its body; the last one starts the (instant) assembly. */
  async store(id: string, index: number, body: ArrayBuffer, digest: string): Promise<PutResult> {
    const u = this.uploads.get(id);
    if (!u || u.state === 'cancelled') return { status: 410 };
    if (u.state !== 'uploading') return { status: 409, problemType: 'https://lfusys.io/problems/upload-not-uploading' };
    const crc = await crc64nvme(body);
    const m = /^crc64nvme=:([A-Za-z0-9+/=]+):$/.exec(digest);
    if (!m || fromBase64(m[1] ?? '') !== crc) return { status: 422, detail: 'digest mismatch' };
    const had = u.crcs.get(index);
    if (had !== undefined && had !== crc) return { status: 409, problemType: 'https://lfusys.io/problems/digest-conflict', detail: 'another chunk' };
    this.log.push(`put ${index}`);
    if (had === undefined) {
      u.crcs.set(index, crc);
      u.lengths.set(index, body.byteLength);
      u.bytes_received += body.byteLength;
    }
    const complete = u.crcs.size === u.total_chunks;
    if (complete) {
      u.state = 'assembling';
      if (!this.assembleWhileWaiting) this.assemble(u);
    }
    return { status: 201, receipt: { index, size: body.byteLength, crc64nvme: crc, received_count: u.crcs.size, total_chunks: u.total_chunks, complete } };
  }
  /** Puts chunks of `f` there as if an earlier session had sent them. */
  async preload(id: string, f: Blob, indices: number[]): Promise<void> {
    for (const i of indices) {
      const body = await f.slice(i * this.chunkSize, (i + 1) * this.chunkSize).arrayBuffer();
      const u = this.uploads.get(id);
      u?.crcs.set(i, await crc64nvme(body));
      u?.lengths.set(i, body.byteLength);
      if (u) u.bytes_received += body.byteLength;
    }
  }
}

/** The real pass (in this thread), counting what it does. */
class CountingHasher implements HashService {
  private readonly inner = new LocalHasher();
  opened = 0;
  started = 0;
  /** The `sha256` option of each pass started. */
  sha256: boolean[] = [];
  /** Chunks handed over by passes and not yet sent or dropped. */
  handedOver = 0;
  rereads: number[] = [];
  checks: number[][] = [];
  /** The resume checks wait for this, when set. */
  gate: Promise<void> | null = null;
  open(f: Blob, plan: ChunkPlan): FilePass {
    this.opened += 1;
    const fp = this.inner.open(f, plan);
    return {
      check: async (indices) => {
        this.checks.push(indices);
        await this.gate;
        return fp.check(indices);
      },
      start: (received, sink: PassSink, opts) => {
        this.started += 1;
        this.sha256.push(opts.sha256);
        fp.start(received, {
          ...sink,
          chunk: (index, crc, data) => {
            this.handedOver += 1;
            sink.chunk(index, crc, data);
          },
        }, opts);
      },
      credit: (n) => fp.credit(n),
      pause: () => fp.pause(),
      go: () => fp.go(),
      read: (index, expect) => {
        this.rereads.push(index);
        return fp.read(index, expect);
      },
      close: () => fp.close(),
    };
  }
}

interface Options {
  parallel?: number;
  /** Return a result to answer a PUT, or undefined to store the chunk. */
  script?: (req: PutChunk, attempt: number) => PutResult | undefined;
  /** Keep PUTs open until released. */
  hold?: boolean;
  storage?: KeyValueStore;
  server?: FakeServer;
  /** The manager's `sha256` option. */
  sha256?: boolean;
}

function setup(o: Options = {}) {
  const server = o.server ?? new FakeServer(4);
  const hasher = new CountingHasher();
  let inFlight = 0;
  let maxInFlight = 0;
  let maxSlots = 0;
  const attempts = new Map<string, number>();
  const puts: PutChunk[] = [];
  const held: (() => void)[] = [];
  const announced: string[] = [];
  const slots = { now: () => 0 };
  const transport = async (req: PutChunk): Promise<PutResult> => {
    puts.push(req);
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    maxSlots = Math.max(maxSlots, slots.now());
    try {
      if (o.hold) {
        await new Promise<void>((resolve, reject) => {
          held.push(resolve);
          req.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
        });
      } else {
        await new Promise((r) => setTimeout(r, 1));
      }
      if (req.signal.aborted) throw new DOMException('aborted', 'AbortError');
      const [, id, idx] = /chunks\/([^/]+)\/(\d+)$/.exec(req.url) ?? [];
      const n = (attempts.get(req.url) ?? 0) + 1;
      attempts.set(req.url, n);
      const scripted = o.script?.(req, n);
      if (scripted) return scripted;
      const body = await req.body.arrayBuffer();
      req.onProgress(body.byteLength);
      return await server.store(id ?? '', Number(idx), body, req.digest);
    } finally {
      inFlight -= 1;
    }
  };
  const manager = new UploadManager({
    api: server,
    hasher,
    transport,
    parallel: o.parallel ?? 3,
    storage: o.storage ?? null,
    sha256: o.sha256,
    retry: { maxAttempts: 4, baseMs: 1, capMs: 5, inProgressDeadlineMs: 1000 },
    resolveUrl: (u) => u,
    online: () => true,
    announce: (m) => announced.push(m),
  });
  slots.now = () => manager.inFlight;
  const view = (name: string): UploadView | undefined => {
    // Snapshots are throttled for the UI; tests read the state directly through a fresh emit.
    (manager as unknown as { emit(): void }).emit();
    return manager.getSnapshot().find((v) => v.name === name);
  };
  const until = async (pred: () => boolean, ms = 3000) => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error('condition not reached');
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const settle = () => new Promise((r) => setTimeout(r, 30));
  const indices = (from = 0, id?: string) =>
    puts
      .slice(from)
      .filter((p) => !id || p.url.includes(`/${id}/`))
      .map((p) => Number(p.url.split('/').pop()));
  return { server, hasher, manager, puts, held, announced, view, until, settle, indices, maxInFlight: () => maxInFlight, maxSlots: () => maxSlots };
}

function memoryStore(): KeyValueStore {
  const data = new Map<string, string>();
  return { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
}

describe('the upload engine', () => {
  it('uploads several files in one pass each, with at most `parallel` chunks in flight, done only when the server says so', async () => {
    const t = setup({ parallel: 3, sha256: true });
    const a = file('a.bin', 40, 1000, 1);
    const b = file('b.bin', 17, 1000, 2);
    t.manager.addFiles([a, b]);
    await t.until(() => t.view('a.bin')?.phase === 'completed' && t.view('b.bin')?.phase === 'completed');
    expect(t.maxInFlight()).toBeLessThanOrEqual(3);
    expect(t.maxSlots()).toBeLessThanOrEqual(3);
    expect(t.maxInFlight()).toBeGreaterThan(1);
    expect(t.view('a.bin')).toMatchObject({ uploaded: 40, fileId: 'file-up1', receivedChunks: 10, totalChunks: 10 });
    // Each chunk goes once, with the CRC-64/NVME of its bytes (the fake server checks it against the body).
    expect(t.indices(0, 'up1').sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(t.puts.every((p) => p.token === 'tok1' && /^crc64nvme=:[A-Za-z0-9+/]{11}=:$/.test(p.digest))).toBe(true);
    // The bytes sent are the pass's, never the whole file.
    expect(t.puts.every((p) => p.body instanceof Blob && p.body.size <= 4)).toBe(true);
    // One pass per file, no second read, and the whole-file checksums declared are the file's.
    expect([t.hasher.opened, t.hasher.started, t.hasher.rereads.length]).toEqual([2, 2, 0]);
    expect(t.hasher.sha256).toEqual([true, true]);
    expect(t.server.uploads.get('up1')).toMatchObject({ ...(await fileSums(a)), state: 'completed' });
    expect(t.server.uploads.get('up2')).toMatchObject({ ...(await fileSums(b)), state: 'completed' });
    t.manager.dispose();
  });

  it('declares only the CRC-64/NVME unless asked for the SHA-256, and computes the SHA-256 for files started after it is turned on', async () => {
    const t = setup();
    expect(t.manager.computesSha256).toBe(false);
    const a = file('a.bin', 20, 1000, 1);
    t.manager.addFiles([a]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    const { crc64nvme } = await fileSums(a);
    expect(t.server.uploads.get('up1')).toMatchObject({ crc64nvme, state: 'completed' });
    expect(t.server.uploads.get('up1')?.sha256).toBeUndefined();
    t.manager.setComputeSha256(true);
    const b = file('b.bin', 9, 1000, 2);
    t.manager.addFiles([b]);
    await t.until(() => t.view('b.bin')?.phase === 'completed');
    expect(t.server.uploads.get('up2')).toMatchObject({ ...(await fileSums(b)), state: 'completed' });
    expect(t.hasher.sha256).toEqual([false, true]);
    t.manager.dispose();
  });

  it('holds back the last chunk until the server has taken the declaration of the checksums', async () => {
    const server = new FakeServer(4);
    let answer: (() => void) | null = null;
    server.onDeclare = () => new Promise<undefined>((r) => (answer = () => r(undefined)));
    const t = setup({ server, parallel: 2 });
    t.manager.addFiles([file('a.bin', 20)]);
    await t.until(() => answer !== null);
    await t.until(() => (server.uploads.get('up1')?.crcs.size ?? 0) === 4);
    await t.settle();
    // Everything but the last chunk is there; the last one waits (holding a slot) for the declaration.
    expect(t.indices().sort()).toEqual([0, 1, 2, 3]);
    expect(t.view('a.bin')).toMatchObject({ phase: 'uploading', chunksInFlight: 1 });
    (answer as unknown as () => void)();
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    const log = server.log.filter((l) => l !== 'create up1');
    expect(log.indexOf('patch')).toBeLessThan(log.indexOf('put 4'));
    expect(log.at(-1)).toBe('put 4');
    t.manager.dispose();
  });

  it('declares before the only chunk of a small file', async () => {
    const t = setup();
    t.manager.addFiles([file('tiny.txt', 3)]);
    await t.until(() => t.view('tiny.txt')?.phase === 'completed');
    expect(t.server.log).toEqual(['create up1', 'patch', 'put 0']);
    t.manager.dispose();
  });

  it('shares the slots between the files being sent: a file added beside a large one starts at once', async () => {
    const t = setup({ hold: true, parallel: 4 });
    t.manager.addFiles([file('big.bin', 40, 1000, 1), file('small.bin', 8, 1000, 2)]);
    // No chunk has finished yet: both files have theirs on the wire.
    await t.until(() => t.held.length === 4);
    await t.settle();
    expect(t.held).toHaveLength(4);
    expect(t.indices(0, 'up1')).toHaveLength(2);
    expect(t.indices(0, 'up2')).toHaveLength(2);
    const release = setInterval(() => t.held.shift()?.(), 1);
    await t.until(() => t.view('big.bin')?.phase === 'completed' && t.view('small.bin')?.phase === 'completed');
    clearInterval(release);
    expect(t.maxSlots()).toBeLessThanOrEqual(4);
    t.manager.dispose();
  });

  it('never lets the pass read ahead of the free slots (the page holds at most `parallel` chunks)', async () => {
    const t = setup({ hold: true, parallel: 2 });
    t.manager.addFiles([file('a.bin', 40)]);
    await t.until(() => t.held.length === 2);
    await t.settle();
    expect(t.hasher.handedOver).toBe(2);
    expect(t.manager.inFlight).toBe(2);
    t.held.shift()?.();
    await t.until(() => t.held.length === 2);
    await t.settle();
    expect(t.hasher.handedOver).toBe(3);
    const release = setInterval(() => t.held.shift()?.(), 1);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    clearInterval(release);
    expect(t.maxSlots()).toBeLessThanOrEqual(2);
    t.manager.dispose();
  });

  it('retries network errors and 5xx with backoff (the same bytes), and renews an expired upload token once', async () => {
    const t = setup({
      script: (req, n) => {
        if (req.url.endsWith('/1') && n <= 2) return { status: 0, detail: 'connection reset' };
        if (req.url.endsWith('/2') && n === 1) return { status: 503 };
        if (req.token === 'tok1' && req.url.endsWith('/3')) return { status: 401 };
        return undefined;
      },
    });
    t.manager.addFiles([file('a.bin', 20)]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(t.server.renewals).toBe(1);
    const ones = t.puts.filter((p) => p.url.endsWith('/1'));
    expect(ones).toHaveLength(3);
    expect(new Set(ones.map((p) => p.body)).size).toBe(1);
    expect(t.hasher.rereads).toEqual([]);
    t.manager.dispose();
  });

  it('stops with a reason after too many failures, and Retry continues', async () => {
    let broken = true;
    const t = setup({ script: (req) => (broken && req.url.endsWith('/0') ? { status: 500, detail: 'disk full' } : undefined) });
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => t.view('a.bin')?.phase === 'error');
    expect(t.view('a.bin')?.message).toMatch(/Chunk 1 of 2 failed 4 times \(disk full\)/);
    broken = false;
    t.manager.resume(t.view('a.bin')?.key ?? '');
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    // The pass went on where it was: chunk 0 was read again (its bytes were dropped with the stop), nothing else.
    expect([t.hasher.started, t.hasher.rereads]).toEqual([1, [0]]);
    t.manager.dispose();
  });

  it('pauses (nothing more is sent or read) and resumes with only the missing chunks, the pass going on where it was', async () => {
    const t = setup({ hold: true, parallel: 2 });
    const f = file('a.bin', 24);
    t.manager.addFiles([f]);
    await t.until(() => t.held.length === 2);
    t.held.shift()?.(); // chunk 0 lands
    await t.until(() => (t.server.uploads.get('up1')?.crcs.size ?? 0) === 1);
    await t.until(() => t.held.length === 2);
    const key = t.view('a.bin')?.key ?? '';
    t.manager.pause(key);
    expect(t.view('a.bin')?.phase).toBe('paused');
    const sent = t.puts.length;
    const handed = t.hasher.handedOver;
    await t.settle();
    expect(t.puts.length).toBe(sent);
    expect(t.manager.inFlight).toBe(0);
    expect(t.hasher.handedOver).toBeLessThanOrEqual(handed + 1); // at most the chunk in hand
    t.manager.resume(key);
    const release = setInterval(() => t.held.shift()?.(), 1);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    clearInterval(release);
    expect(t.indices(sent)).not.toContain(0);
    // One pass; the chunks that were in flight at the pause were read again — no more than that.
    expect(t.hasher.started).toBe(1);
    expect(t.hasher.rereads.length).toBeGreaterThan(0);
    expect(t.hasher.rereads.length).toBeLessThanOrEqual(3);
    expect(t.server.uploads.get('up1')).toMatchObject({ crc64nvme: (await fileSums(f)).crc64nvme, state: 'completed' });
    t.manager.dispose();
  });

  it('cancels: the server releases the upload', async () => {
    const t = setup({ hold: true });
    t.manager.addFiles([file('a.bin', 24)]);
    await t.until(() => t.held.length > 0);
    await t.manager.cancel(t.view('a.bin')?.key ?? '');
    expect(t.view('a.bin')?.phase).toBe('cancelled');
    expect(t.server.cancels).toEqual(['up1']);
    expect(t.manager.inFlight).toBe(0);
    t.manager.dispose();
  });

  it('after a reload, resumes an interrupted upload with the same file: the CRCs prove it, only the missing chunks go', async () => {
    const storage = memoryStore();
    const server = new FakeServer(4);
    const f = file('a.bin', 28, 777);
    const first = setup({ server, storage, hold: true, parallel: 1 });
    first.manager.addFiles([f]);
    await first.until(() => first.held.length === 1);
    first.held.shift()?.();
    await first.until(() => (server.uploads.get('up1')?.crcs.size ?? 0) === 1);
    first.manager.dispose(); // the tab is closed
    // Chunk 4 landed too (it was in flight when the tab closed): the server holds 0 and 4.
    await server.preload('up1', f, [4]);

    const second = setup({ server, storage });
    await second.manager.loadUnfinished();
    expect(second.view('a.bin')).toMatchObject({ phase: 'interrupted', uploaded: 8, hasFile: false });
    const row = second.view('a.bin')?.key ?? '';
    // A file of another size is refused at once, with a reason.
    expect(second.manager.attachFile(row, file('a.bin', 13, 777))).toBe(false);
    expect(second.view('a.bin')?.message).toMatch(/different size/);
    // The same file (dropped anywhere) continues that upload: no new upload, only the missing chunks.
    second.manager.addFiles([new File([f], 'a.bin', { lastModified: 777 })]);
    await second.until(() => second.view('a.bin')?.phase === 'completed');
    expect(server.uploads.size).toBe(1);
    expect(second.indices().sort()).toEqual([1, 2, 3, 5, 6]);
    // The chunk after the first missing one was read and compared before the pass, the pass read the file once.
    expect(second.hasher.checks).toEqual([[4]]);
    expect(second.hasher.started).toBe(1);
    expect(second.view('a.bin')?.note).toMatch(/Uploaded/);
    expect(server.uploads.get('up1')).toMatchObject({ crc64nvme: (await fileSums(f)).crc64nvme, state: 'completed' });
    second.manager.dispose();
  });

  it('never resumes into an upload of another file of the same name and size: it is left as it was', async () => {
    const server = new FakeServer(4);
    const ours = file('a.bin', 20, 5, 1);
    const theirs = file('a.bin', 20, 5, 2);
    // Upload 1 holds another file's chunk 0 (before the first missing chunk): the pass finds out before sending.
    await server.createUpload({ name: 'a.bin', size: 20 });
    await server.preload('up1', theirs, [0]);
    // Upload 2 holds our chunk 0 but another file's chunk 3 (after the first missing one): the check before the pass finds out.
    await server.createUpload({ name: 'a.bin', size: 20 });
    await server.preload('up2', ours, [0]);
    await server.preload('up2', theirs, [3]);
    const t = setup({ server });
    await t.manager.loadUnfinished();
    const rows = t.manager.getSnapshot().map((v) => v.key);

    // Picked for upload 1 on its row: refused, nothing sent.
    expect(t.manager.attachFile(rows[0] ?? '', ours)).toBe(true);
    await t.until(() => t.manager.getSnapshot()[0]?.message !== null && t.manager.getSnapshot()[0]?.phase === 'interrupted');
    expect(t.manager.getSnapshot()[0]?.message).toBe(
      'The selected file’s content is not the one of this upload. Choose the original file to resume.',
    );
    expect(t.puts).toHaveLength(0);

    // Dropped: tried on both (neither is its), then a new upload.
    t.manager.addFiles([ours]);
    await t.until(() => t.manager.getSnapshot().some((v) => v.phase === 'completed'));
    const done = t.manager.getSnapshot().find((v) => v.phase === 'completed');
    expect(done?.uploadId).toBe('up3');
    expect(t.puts.every((p) => p.url.includes('/up3/'))).toBe(true);
    expect(t.server.uploads.get('up1')).toMatchObject({ state: 'uploading', received_chunks: [] });
    expect([...(t.server.uploads.get('up1')?.crcs.keys() ?? [])]).toEqual([0]);
    expect([...(t.server.uploads.get('up2')?.crcs.keys() ?? [])].sort()).toEqual([0, 3]);
    expect(t.server.log.filter((l) => l === 'patch')).toHaveLength(1);
    expect(t.server.uploads.get('up3')).toMatchObject({ crc64nvme: (await fileSums(ours)).crc64nvme, state: 'completed' });
    // The interrupted rows are as they were (no message: the dropped file was only a candidate).
    expect(t.manager.getSnapshot().filter((v) => v.phase === 'interrupted').map((v) => v.uploadId)).toEqual(['up1', 'up2']);
    t.manager.dispose();
  });

  it('a dropped file of an interrupted upload’s name and size continues it once its CRCs prove it, whatever its modification time', async () => {
    const server = new FakeServer(4);
    const f = file('a.bin', 12, 5);
    await server.createUpload({ name: 'a.bin', size: 12 });
    await server.preload('up1', f, [0]);
    const t = setup({ server });
    await t.manager.loadUnfinished();
    t.manager.addFiles([f]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(server.uploads.size).toBe(1);
    expect(t.manager.getSnapshot()).toHaveLength(1);
    expect(t.indices().sort()).toEqual([1, 2]);
    expect(t.announced).toContain('a.bin: same file as an interrupted upload, resuming');
    t.manager.dispose();
  });

  it('pausing while the file is checked against an interrupted upload, then resuming, goes on to upload it', async () => {
    const server = new FakeServer(4);
    const f = file('a.bin', 40, 5);
    await server.createUpload({ name: 'a.bin', size: 40 });
    await server.preload('up1', f, [0, 1, 2, 3, 4, 5, 9]);
    const t = setup({ server, hold: true, parallel: 2 });
    let open = () => undefined as void;
    t.hasher.gate = new Promise<void>((r) => (open = r));
    await t.manager.loadUnfinished();
    const key = t.view('a.bin')?.key ?? '';
    t.manager.attachFile(key, f);
    // Chunk 9 (after the first missing one) is being read and compared.
    await t.until(() => t.hasher.checks.length === 1);
    await t.settle();
    expect(t.view('a.bin')).toMatchObject({
      label: 'Checking file',
      phase: 'uploading',
      verifying: true,
      note: 'Resumed: 7 of 10 chunks were already on the server. Checking that they are this file’s…',
    });
    t.manager.pause(key);
    open();
    await t.settle();
    expect(t.puts).toHaveLength(0);
    expect(t.hasher.started).toBe(0);
    t.manager.resume(key);
    await t.until(() => t.held.length > 0);
    expect(t.hasher.checks).toEqual([[9], [9]]);
    expect(t.view('a.bin')).toMatchObject({ label: 'Uploading', verifying: false, note: 'Resumed: 7 of 10 chunks were already on the server.' });
    const release = setInterval(() => t.held.shift()?.(), 1);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    clearInterval(release);
    expect(t.indices().sort()).toEqual([6, 7, 8]);
    t.manager.dispose();
  });

  it('a file that changed since its chunks were read is stopped, not sent', async () => {
    const t = setup({ hold: true, parallel: 2 });
    let changed = false;
    const original = bytes(24, 3);
    class Changing extends File {
      override slice(start?: number, end?: number): Blob {
        const data = changed ? original.map((b) => b ^ 0xff) : original;
        return new Blob([data.slice(start, end)]);
      }
    }
    t.manager.addFiles([new Changing([original], 'a.bin')]);
    await t.until(() => t.held.length === 2);
    const key = t.view('a.bin')?.key ?? '';
    t.manager.pause(key);
    changed = true;
    t.manager.resume(key);
    await t.until(() => t.view('a.bin')?.phase === 'error');
    expect(t.view('a.bin')).toMatchObject({ hasFile: false, can: { resume: false, cancel: true } });
    expect(t.view('a.bin')?.message).toMatch(/^The file changed while it was being uploaded \(chunk \d of 6 reads differently now\)/);
    t.manager.dispose();
  });

  describe('the declaration of the checksums', () => {
    it('is retried when the server cannot be reached, then the last chunk goes', async () => {
      const server = new FakeServer(4);
      server.onDeclare = async (_id, _sums, attempt) => {
        if (attempt <= 2) throw new ApiError(503, 'Unavailable', 'try again');
        return undefined;
      };
      const t = setup({ server });
      t.manager.addFiles([file('a.bin', 12)]);
      await t.until(() => t.view('a.bin')?.phase === 'completed');
      expect(server.log.filter((l) => l === 'patch')).toHaveLength(3);
      t.manager.dispose();
    });

    it('stops, resumably, when it keeps failing; Retry declares again and finishes', async () => {
      const server = new FakeServer(4);
      let down = true;
      server.onDeclare = async () => {
        if (down) throw new ApiError(0, 'Network error', 'Cannot reach the server.', 'network');
        return undefined;
      };
      const t = setup({ server });
      t.manager.addFiles([file('a.bin', 12)]);
      await t.until(() => t.view('a.bin')?.phase === 'error');
      expect(t.view('a.bin')).toMatchObject({ message: 'Could not give the server the file’s checksums: Cannot reach the server.', can: { resume: true } });
      expect(t.indices()).not.toContain(2);
      down = false;
      t.manager.resume(t.view('a.bin')?.key ?? '');
      await t.until(() => t.view('a.bin')?.phase === 'completed');
      expect(t.hasher.started).toBe(1);
      t.manager.dispose();
    });

    it('refused because other checksums were declared (the file changed): stops without the file, the last chunk never goes', async () => {
      const server = new FakeServer(4);
      const t = setup({ server });
      const created = server.createUpload.bind(server);
      server.createUpload = async (body) => {
        const c = await created(body);
        const u = server.uploads.get(c.upload_id);
        if (u) u.crc64nvme = '0123456789abcdef';
        return c;
      };
      t.manager.addFiles([file('a.bin', 12)]);
      await t.until(() => t.view('a.bin')?.phase === 'error');
      expect(t.view('a.bin')?.message).toBe(
        'The file changed since this upload began: the server holds other checksums for it (Other checksums were declared for this upload.). Cancel this upload, then add the file again.',
      );
      expect(t.view('a.bin')).toMatchObject({ hasFile: false, can: { resume: false, cancel: true } });
      expect(t.indices()).not.toContain(2);
      t.manager.dispose();
    });

    it('refused because the upload was created with another SHA-256: the upload has failed', async () => {
      const server = new FakeServer(4);
      await server.createUpload({ name: 'a.bin', size: 12, sha256: 'a'.repeat(64) });
      const t = setup({ server });
      await t.manager.loadUnfinished();
      t.manager.addFiles([file('a.bin', 12)]);
      await t.until(() => t.view('a.bin')?.phase === 'failed');
      expect(t.view('a.bin')?.message).toMatch(/^The file’s SHA-256 is not the one the upload was created with: Whole-file SHA-256 mismatch: declared a+ at creation/);
      expect(t.indices()).not.toContain(2);
      t.manager.dispose();
    });

    it('refused because the upload is no longer uploading: the task follows the server', async () => {
      const server = new FakeServer(4);
      server.onDeclare = async (id) => {
        const u = server.uploads.get(id);
        if (u) u.state = 'cancelled';
        return undefined;
      };
      const t = setup({ server });
      t.manager.addFiles([file('a.bin', 12)]);
      await t.until(() => t.view('a.bin')?.phase === 'cancelled');
      expect(t.view('a.bin')?.message).toBe('The upload was cancelled.');
      expect(t.indices()).not.toContain(2);
      t.manager.dispose();
    });
  });

  it('shows why the server failed an upload', async () => {
    const server = new FakeServer(4);
    const t = setup({ server });
    const store = server.store.bind(server);
    server.store = async (id, index, body, digest) => {
      const r = await store(id, index, body, digest);
      const u = server.uploads.get(id);
      if (u?.state === 'completed') {
        u.state = 'failed';
        u.error = 'the stored file is not the file received';
        delete u.file_id;
      }
      return r;
    };
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => t.view('a.bin')?.phase === 'failed');
    expect(t.view('a.bin')?.message).toMatch(/the stored file is not the file received/);
    t.manager.dispose();
  });

  it('follows an assembling upload to its outcome by long polls, not by polling', async () => {
    const server = new FakeServer(4);
    server.assembleWhileWaiting = true;
    const t = setup({ server });
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(server.waits).toEqual([30]);
    t.manager.dispose();
  });

  it('announces each move of a file for screen readers', async () => {
    const t = setup();
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(t.announced.filter((m) => !m.endsWith('% uploaded'))).toEqual([
      'a.bin: added',
      'a.bin: uploading',
      'a.bin: all chunks sent, the server is assembling the file',
      'a.bin: upload complete',
    ]);
    t.manager.dispose();
  });

  it('starts a few files at a time; the others wait their turn', async () => {
    const t = setup({ hold: true });
    t.manager.addFiles(['1', '2', '3', '4', '5'].map((n) => file(`${n}.bin`, 8, 1000, Number(n))));
    await t.until(() => t.server.uploads.size === 3);
    await t.settle();
    expect(t.manager.getSnapshot().map((v) => v.phase)).toEqual(['uploading', 'uploading', 'uploading', 'queued', 'queued']);
    expect(t.view('4.bin')).toMatchObject({ label: 'Waiting', note: null });
    const release = setInterval(() => t.held.shift()?.(), 1);
    await t.until(() => t.manager.getSnapshot().every((v) => v.phase === 'completed'));
    clearInterval(release);
    t.manager.dispose();
  });

  it('paused and resumed while the server creates the upload: one upload goes on, the other is released', async () => {
    const server = new FakeServer(4);
    const create = server.createUpload.bind(server);
    const answers: (() => void)[] = [];
    server.createUpload = (body) => new Promise((resolve) => answers.push(() => resolve(create(body))));
    const t = setup({ server });
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => answers.length === 1);
    const key = t.view('a.bin')?.key ?? '';
    t.manager.pause(key);
    t.manager.resume(key);
    await t.until(() => answers.length === 2);
    answers.shift()?.();
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    answers.shift()?.();
    await t.until(() => t.server.cancels.length === 1);
    expect(t.view('a.bin')?.uploadId).toBe('up1');
    expect(t.server.cancels).toEqual(['up2']);
    t.manager.dispose();
  });

  it('a cancel the server refuses (it is complete already) follows the server instead', async () => {
    const t = setup({ hold: true });
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => t.held.length > 0);
    const u = t.server.uploads.get('up1');
    if (u) Object.assign(u, { state: 'completed', file_id: 'file-up1' });
    await t.manager.cancel(t.view('a.bin')?.key ?? '');
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(t.view('a.bin')).toMatchObject({ fileId: 'file-up1', message: null, note: expect.stringMatching(/^Uploaded 8 B in /) });
    expect(t.server.cancels).toEqual([]);
    t.manager.dispose();
  });

  it('refuses empty files with a message', () => {
    const t = setup();
    t.manager.addFiles([file('empty.txt', 0)]);
    expect(t.view('empty.txt')).toMatchObject({ phase: 'error', message: expect.stringMatching(/empty/) });
    t.manager.dispose();
  });
});

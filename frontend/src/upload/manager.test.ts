import { describe, expect, it } from 'vitest';
import { ApiError } from '../api/client';
import type { CreatedUpload, UploadStatus } from '../api/types';
import type { KeyValueStore } from '../lib/resume';
import type { FileHashJob, FileHashResult } from './hasher';
import { UploadManager, type HashService, type UploadApi, type UploadView } from './manager';
import type { PutChunk, PutResult } from './transport';

const SHA = 'f'.repeat(64);

/** An in-memory server: uploads, their received chunks, and scripted chunk failures. */
class FakeServer implements UploadApi {
  uploads = new Map<string, UploadStatus>();
  renewals = 0;
  cancels: string[] = [];
  /** The `wait` of each long poll. */
  waits: number[] = [];
  /** When set, the last chunk leaves the upload assembling; the next long poll sees it completed. */
  assembleWhileWaiting = false;
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
      bytes_received: 0,
      created_at: '',
      expires_at: '',
    });
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
  async unfinishedUploads() {
    return [...this.uploads.values()]
      .filter((u) => u.state === 'uploading' || u.state === 'assembling')
      .map((u) => ({ ...u, received_chunks: [] })); // listings carry only the byte count
  }
  async upload(id: string) {
    const u = this.uploads.get(id);
    if (!u) throw new ApiError(404, 'Not Found', 'no such upload');
    return { ...u, received_chunks: [...u.received_chunks] };
  }
  /** The assembly here is instant: a long poll answers at once. */
  async uploadChange(id: string, seconds: number) {
    this.waits.push(seconds);
    const u = this.uploads.get(id);
    if (u?.state === 'assembling') {
      u.state = 'completed';
      u.file_id = `file-${id}`;
    }
    return this.upload(id);
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
  /** Stores a chunk; the last one starts the (instant) assembly. */
  store(id: string, index: number, len: number): PutResult {
    const u = this.uploads.get(id);
    if (!u || u.state === 'cancelled') return { status: 410 };
    if (!u.received_chunks.includes(index)) {
      u.received_chunks.push(index);
      u.bytes_received += len;
    }
    const complete = u.received_chunks.length === u.total_chunks;
    if (complete && this.assembleWhileWaiting) {
      u.state = 'assembling';
    } else if (complete) {
      u.state = 'completed';
      u.file_id = `file-${id}`;
    }
    return { status: 201, receipt: { index, size: len, sha256: '', received_count: u.received_chunks.length, total_chunks: u.total_chunks, complete } };
  }
}

const instantHasher: HashService = {
  async chunk() {
    return { digest: 'sha-256=:x:' };
  },
  file(_file, { onProgress }): FileHashJob {
    return {
      result: Promise.resolve().then(() => {
        onProgress(1);
        return { kind: 'done', hex: SHA };
      }),
      pause: () => undefined,
      cancel: () => undefined,
    };
  },
};

interface Options {
  parallel?: number;
  /** Return a result to answer a PUT, or undefined to store the chunk. */
  script?: (req: PutChunk, attempt: number) => PutResult | undefined;
  /** Keep PUTs open until released. */
  hold?: boolean;
  storage?: KeyValueStore;
  server?: FakeServer;
  hasher?: HashService;
}

function setup(o: Options = {}) {
  const server = o.server ?? new FakeServer(4);
  let inFlight = 0;
  let maxInFlight = 0;
  const attempts = new Map<string, number>();
  const puts: PutChunk[] = [];
  const held: (() => void)[] = [];
  const announced: string[] = [];
  const transport = async (req: PutChunk): Promise<PutResult> => {
    puts.push(req);
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
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
      const len = req.body instanceof Blob ? req.body.size : req.body.byteLength;
      req.onProgress(len);
      return server.store(id ?? '', Number(idx), len);
    } finally {
      inFlight -= 1;
    }
  };
  const manager = new UploadManager({
    api: server,
    hasher: o.hasher ?? instantHasher,
    transport,
    parallel: o.parallel ?? 3,
    storage: o.storage ?? null,
    retry: { maxAttempts: 4, baseMs: 1, capMs: 5, inProgressDeadlineMs: 1000 },
    resolveUrl: (u) => u,
    online: () => true,
    announce: (m) => announced.push(m),
  });
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
  return { server, manager, puts, held, announced, view, until, maxInFlight: () => maxInFlight };
}

const file = (name: string, size: number, lastModified = 1000) => new File([new Uint8Array(size)], name, { lastModified });

describe('the upload engine', () => {
  it('uploads several files with at most `parallel` chunks in flight, done only when the server says so', async () => {
    const t = setup({ parallel: 3 });
    t.manager.addFiles([file('a.bin', 40), file('b.bin', 17)]);
    await t.until(() => t.view('a.bin')?.phase === 'completed' && t.view('b.bin')?.phase === 'completed');
    expect(t.maxInFlight()).toBeLessThanOrEqual(3);
    expect(t.maxInFlight()).toBeGreaterThan(1);
    expect(t.view('a.bin')).toMatchObject({ uploaded: 40, fileId: 'file-up1', receivedChunks: 10, totalChunks: 10 });
    expect(t.puts.every((p) => p.token === 'tok1' && p.digest.startsWith('sha-256=:'))).toBe(true);
    // Chunk bodies are slices of the file, never the whole file.
    expect(t.puts.every((p) => p.body instanceof Blob && p.body.size <= 4)).toBe(true);
    expect(t.server.uploads.get('up1')?.sha256).toBe(SHA);
    t.manager.dispose();
  });

  it('retries network errors and 5xx with backoff, and renews an expired upload token once', async () => {
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
    expect(t.puts.filter((p) => p.url.endsWith('/1'))).toHaveLength(3);
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
    t.manager.dispose();
  });

  it('pauses (nothing more is sent) and resumes with only the missing chunks', async () => {
    const t = setup({ hold: true, parallel: 2 });
    t.manager.addFiles([file('a.bin', 24)]);
    await t.until(() => t.held.length === 2);
    t.held.shift()?.(); // chunk 0 lands
    await t.until(() => (t.server.uploads.get('up1')?.received_chunks.length ?? 0) === 1);
    const key = t.view('a.bin')?.key ?? '';
    t.manager.pause(key);
    expect(t.view('a.bin')?.phase).toBe('paused');
    const sent = t.puts.length;
    await new Promise((r) => setTimeout(r, 20));
    expect(t.puts.length).toBe(sent);
    expect(t.manager.inFlight).toBe(0);
    t.manager.resume(key);
    const release = setInterval(() => t.held.shift()?.(), 1);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    clearInterval(release);
    const indices = t.puts.slice(sent).map((p) => Number(p.url.split('/').pop()));
    expect(indices).not.toContain(0);
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

  it('after a reload, lists the unfinished upload and resumes it when the same file is selected', async () => {
    const data = new Map<string, string>();
    const storage: KeyValueStore = { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
    const server = new FakeServer(4);
    const first = setup({ server, storage, hold: true, parallel: 1 });
    first.manager.addFiles([file('a.bin', 12, 777)]);
    await first.until(() => first.held.length === 1);
    first.held.shift()?.();
    await first.until(() => (server.uploads.get('up1')?.received_chunks.length ?? 0) === 1);
    first.manager.dispose(); // the tab is closed

    const second = setup({ server, storage });
    await second.manager.loadUnfinished();
    expect(second.view('a.bin')).toMatchObject({ phase: 'interrupted', uploaded: 4, hasFile: false });
    // A different file of the same name is refused with a reason.
    const row = second.view('a.bin')?.key ?? '';
    expect(second.manager.attachFile(row, file('a.bin', 13, 777))).toBe(false);
    expect(second.view('a.bin')?.message).toMatch(/different size/);
    // The same file (dropped anywhere) continues that upload: no new upload, only chunks 1 and 2.
    second.manager.addFiles([file('a.bin', 12, 777)]);
    await second.until(() => second.view('a.bin')?.phase === 'completed');
    expect(server.uploads.size).toBe(1);
    expect(second.puts.map((p) => Number(p.url.split('/').pop())).sort()).toEqual([1, 2]);
    expect(second.view('a.bin')?.note).toMatch(/Uploaded/);
    second.manager.dispose();
  });

  it('checks the content of a same-named file whose modification time is unknown', async () => {
    const server = new FakeServer(4);
    await server.createUpload({ name: 'a.bin', size: 12, sha256: SHA });
    const t = setup({ server });
    await t.manager.loadUnfinished();
    t.manager.addFiles([file('a.bin', 12, 5)]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(server.uploads.size).toBe(1);
    expect(t.manager.getSnapshot()).toHaveLength(1);
    t.manager.dispose();
  });

  it('shows why the server failed an upload', async () => {
    const server = new FakeServer(4);
    const t = setup({ server });
    const store = server.store.bind(server);
    server.store = (id, index, len) => {
      const r = store(id, index, len);
      const u = server.uploads.get(id);
      if (u?.state === 'completed') {
        u.state = 'failed';
        u.error = 'the SHA-256 of the assembled file does not match';
        delete u.file_id;
      }
      return r;
    };
    t.manager.addFiles([file('a.bin', 8)]);
    await t.until(() => t.view('a.bin')?.phase === 'failed');
    expect(t.view('a.bin')?.message).toMatch(/SHA-256 of the assembled file does not match/);
    t.manager.dispose();
  });

  it('uses the chunk digests computed while hashing when the server plans that chunk size', async () => {
    const data = new Map<string, string>([['lfusys.chunkSize', '4']]);
    const storage: KeyValueStore = { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
    let chunkCalls = 0;
    const hasher: HashService = {
      async chunk() {
        chunkCalls += 1;
        return { digest: 'sha-256=:late:' };
      },
      file(f, { onDigests, chunkSize }) {
        return {
          result: Promise.resolve().then(() => {
            onDigests?.(0, Array.from({ length: Math.ceil(f.size / (chunkSize ?? 1)) }, (_, i) => `sha-256=:pre${i}:`));
            return { kind: 'done' as const, hex: SHA };
          }),
          pause: () => undefined,
          cancel: () => undefined,
        };
      },
    };
    const t = setup({ storage, script: (req, n) => (req.url.endsWith('/1') && n === 1 ? { status: 422 } : undefined) });
    (t.manager as unknown as { hasher: HashService }).hasher = hasher;
    t.manager.addFiles([file('a.bin', 10)]);
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    const digestOf = (i: number) => t.puts.filter((p) => p.url.endsWith(`/${i}`)).map((p) => p.digest);
    expect(digestOf(0)).toEqual(['sha-256=:pre0:']);
    // After a digest mismatch the chunk is digested afresh.
    expect(digestOf(1)).toEqual(['sha-256=:pre1:', 'sha-256=:late:']);
    expect(chunkCalls).toBe(1);
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

  it('pausing while hashing keeps the hash state: resume continues from the offset the worker stopped at', async () => {
    const starts: (number | undefined)[] = [];
    const job: { finish?: () => void } = {};
    const hasher: HashService = {
      ...instantHasher,
      file(_f, { start, state }) {
        starts.push(start);
        let settle: (r: FileHashResult) => void = () => undefined;
        const result = new Promise<FileHashResult>((r) => (settle = r));
        job.finish = () => settle({ kind: 'done', hex: SHA });
        return { result, pause: () => settle({ kind: 'paused', offset: state ? 12 : 6, state: new Uint8Array([6]) }), cancel: () => undefined };
      },
    };
    const t = setup({ hasher });
    t.manager.addFiles([file('a.bin', 20)]);
    await t.until(() => starts.length === 1 && t.view('a.bin')?.phase === 'hashing');
    const key = t.view('a.bin')?.key ?? '';
    t.manager.pause(key);
    expect(t.view('a.bin')).toMatchObject({ phase: 'paused', label: 'Paused', can: { pause: false, resume: true, cancel: true, remove: false } });
    await t.until(() => t.view('a.bin')?.hashed === 6);
    t.manager.resume(key);
    await t.until(() => starts.length === 2);
    expect(starts).toEqual([0, 6]);
    job.finish?.();
    await t.until(() => t.view('a.bin')?.phase === 'completed');
    expect(t.server.uploads.size).toBe(1);
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

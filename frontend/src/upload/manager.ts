// The upload engine: one task per file, a shared pool of chunk slots (bounded parallelism), hashing
// in workers, retries with backoff, pause/resume/cancel, resume after a reload, and a snapshot of
// every task for the UI (useSyncExternalStore).
//
// A task's state is data (state.ts): it changes only through `reduce`, here in `apply`, and
// `entered` then starts or stops the work of the phase the task is in. What a task holds beside
// its state is the work in progress: its hashing job, its chunks in flight and retry timers, its
// upload token, its speed meters.
//
// Memory: a chunk's bytes are read (Blob.slice) only when a slot is about to send it: the worker
// reads the slice to digest it and drops it, then the browser streams the same slice from the file
// to the network. At most `parallel` chunks are ever read at once, whatever the files' sizes.

import { ApiError, describeError } from '../api/client';
import type { CreatedUpload, UploadStatus, UploadToken } from '../api/types';
import { DEFAULT_RETRY, decideRetry, type RetryPolicy } from '../lib/backoff';
import { percent } from '../lib/format';
import { bytesOf, chunkRange, makePlan, missingChunks } from '../lib/plan';
import { crossedMilestone, SpeedMeter } from '../lib/progress';
import {
  forgetUpload,
  loadRecords,
  matchFile,
  pickBySha,
  pruneRecords,
  rememberUpload,
  wrongFileReason,
  type KeyValueStore,
  type UnfinishedUpload,
} from '../lib/resume';
import { SingleFlight } from '../lib/singleflight';
import type { ChunkDigest, FileHashJob, FileHashOptions } from './hasher';
import { MAX_PREDIGEST_CHUNK } from './protocol';
import {
  added,
  announcement,
  canCancel,
  canPause,
  canRemove,
  canResume,
  checkOf,
  describe,
  fileOf,
  finishedAtOf,
  FINISHED,
  hashedBytes,
  isSending,
  isWorking,
  listed,
  reduce,
  uploadOf,
  workOf,
  type Interrupted,
  type Phase,
  type Problem,
  type ServerUpload,
  type TaskEvent,
  type TaskState,
} from './state';
import type { ChunkTransport, PutResult } from './transport';

/** How long one status request of an assembling upload waits for its outcome, in seconds. */
const STATUS_WAIT_SECONDS = 30;

/** What the engine needs from the API (ApiClient has it). */
export interface UploadApi {
  createUpload(body: { name: string; size: number; content_type?: string; sha256?: string }): Promise<CreatedUpload>;
  unfinishedUploads(): Promise<UploadStatus[]>;
  upload(id: string): Promise<UploadStatus>;
  /** The long poll of `GET /api/v1/uploads/{id}?wait=N`. */
  uploadChange(id: string, seconds: number): Promise<UploadStatus>;
  cancelUpload(id: string): Promise<void>;
  renewUploadToken(id: string): Promise<UploadToken>;
}

/** What the engine needs from the hashing workers (Hasher has it). */
export interface HashService {
  chunk(file: Blob, start: number, end: number, signal?: AbortSignal): Promise<ChunkDigest>;
  file(file: Blob, opts: FileHashOptions): FileHashJob;
}

/** One task as the UI shows it: its state's phase and texts, and measurements of the moment. */
export interface UploadView {
  key: string;
  name: string;
  size: number;
  phase: Phase;
  uploadId: string | null;
  fileId: string | null;
  /** Bytes stored on the server plus the bytes of chunks being sent now. */
  uploaded: number;
  /** Bytes of the whole-file SHA-256 computed so far. */
  hashed: number;
  /** Whether the hash is a check that the file is an interrupted upload's. */
  verifying: boolean;
  /** Bytes per second of the current phase, when known. */
  speed: number | null;
  /** Seconds left, when known. */
  eta: number | null;
  totalChunks: number;
  receivedChunks: number;
  chunksInFlight: number;
  /** The phase in words (the badge). */
  label: string;
  /** Why it failed, stopped or was refused. */
  message: string | null;
  /** Information: retrying, resumed, waiting for the network… */
  note: string | null;
  hasFile: boolean;
  /** The controls the row offers now. */
  can: { pause: boolean; resume: boolean; cancel: boolean; remove: boolean };
  /** Milliseconds from the first chunk sent to completion (this session). */
  uploadMs: number | null;
  /** Milliseconds from adding the file to completion (this session), hashing included. */
  totalMs: number | null;
}

interface Slot {
  index: number;
  ctrl: AbortController;
  loaded: number;
}

/** The chunks of one upload on their way: waiting their turn, being sent, waiting to be retried. */
class ChunkQueue {
  pending: number[] = [];
  readonly inflight = new Map<number, Slot>();
  readonly timers = new Map<ReturnType<typeof setTimeout>, number>();
  /** Failed attempts per chunk. */
  readonly attempts = new Map<number, number>();
  /** Since when each chunk has been held by an earlier request (409 chunk-in-progress). */
  readonly heldSince = new Map<number, number>();

  /** Bytes of the chunks being sent now. */
  get sendingBytes(): number {
    let b = 0;
    for (const s of this.inflight.values()) b += s.loaded;
    return b;
  }

  /** Queues what `upload` is missing. */
  start(upload: ServerUpload): void {
    this.pending = missingChunks(upload.plan, upload.received).filter((i) => !this.inflight.has(i));
  }

  /** Aborts the chunks being sent and the retries waiting; `start` queues the missing ones again. */
  stop(): void {
    for (const slot of this.inflight.values()) slot.ctrl.abort();
    this.inflight.clear();
    for (const timer of this.timers.keys()) clearTimeout(timer);
    this.timers.clear();
    this.pending = [];
  }

  forgetFailures(): void {
    this.attempts.clear();
    this.heldSince.clear();
  }
}

/** Chunk digests computed while hashing the whole file, for chunks of `chunkSize` bytes. */
class PreDigests {
  chunkSize: number | null = null;
  private byIndex: (string | undefined)[] = [];

  /** A hash from the file's start: it digests chunks of this size (null: none). */
  restart(chunkSize: number | null): void {
    this.chunkSize = chunkSize;
    this.byIndex = [];
  }

  add(first: number, digests: string[]): void {
    digests.forEach((d, i) => (this.byIndex[first + i] = d));
  }

  /** The digest of chunk `index` of an upload planned in chunks of `chunkSize` bytes, if computed. */
  get(chunkSize: number, index: number): string | undefined {
    return chunkSize === this.chunkSize ? this.byIndex[index] : undefined;
  }

  /** The server found the digest wrong: the file may have changed since it was hashed. */
  forget(index: number): void {
    this.byIndex[index] = undefined;
  }
}

/** A file's task: its state, and the engine's handles on the work in progress. */
class Task {
  state: TaskState;
  /** Bumped whenever work stops, and on resume: continuations of older work ignore themselves. */
  epoch = 0;
  /** The current whole-file hash; results of any other job are stale. */
  hashJob: FileHashJob | null = null;
  readonly digests = new PreDigests();
  readonly chunks = new ChunkQueue();
  /** Where chunks go and the token they carry (both renewed on 401). */
  uploadUrl: string | null = null;
  token: string | null = null;
  tokenFlight: SingleFlight<void> | null = null;
  readonly meter = new SpeedMeter();
  readonly hashMeter = new SpeedMeter();
  /** The percentage last seen, for the screen reader's milestones. */
  lastPct = 0;

  constructor(state: TaskState) {
    this.state = state;
  }

  get key(): string {
    return this.state.key;
  }
}

export interface ManagerOptions {
  api: UploadApi;
  hasher: HashService;
  transport: ChunkTransport;
  /** Chunks in flight at once, over all files. */
  parallel?: number;
  /** Whole files hashed at once. */
  hashParallel?: number;
  storage?: KeyValueStore | null;
  retry?: RetryPolicy;
  now?: () => number;
  /** Short messages for screen readers (aria-live). */
  announce?: (message: string) => void;
  /** Called when an upload has become a file. */
  onCompleted?: (fileId: string) => void;
  /** Resolves an upload URL the server gave (absolute, or a path on the app's origin). */
  resolveUrl?: (url: string) => string;
  /** Whether the browser believes it is online. */
  online?: () => boolean;
  /** Waits until the browser is online again. */
  waitOnline?: () => Promise<void>;
  /** Per-chunk answer timeout (ms). */
  chunkTimeoutMs?: number;
}

const CHUNK_SIZE_KEY = 'lfusys.chunkSize';
/** The server's default preferred chunk size. */
const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;

const SAFE_MEDIA_TYPE = /^[A-Za-z0-9][\w.+-]*\/[A-Za-z0-9][\w.+-]*$/;

/** Events that happen many times a second: the snapshot for them is throttled. */
const PROGRESS: ReadonlySet<TaskEvent['type']> = new Set(['hash-progress', 'chunk-stored']);

function isAbort(e: unknown): boolean {
  return (e instanceof DOMException || e instanceof Error) && e.name === 'AbortError';
}

function defaultResolve(url: string): string {
  if (typeof location === 'undefined') return url;
  return new URL(url, location.href).toString().replace(/\/$/, '');
}

/** An interrupted task as lib/resume matches files against it. */
function unfinishedOf(s: Interrupted): UnfinishedUpload {
  return { upload_id: s.upload.id, name: s.name, size: s.size, state: 'uploading', sha256: s.upload.sha256 ?? undefined };
}

export class UploadManager {
  private tasks: Task[] = [];
  private readonly listeners = new Set<() => void>();
  private snapshot: UploadView[] = [];
  private emitTimer: ReturnType<typeof setTimeout> | null = null;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private rr = 0;
  private seq = 0;
  private disposed = false;

  private readonly api: UploadApi;
  private readonly hasher: HashService;
  private readonly transport: ChunkTransport;
  readonly parallel: number;
  private readonly hashParallel: number;
  private readonly storage: KeyValueStore | null;
  private readonly retry: RetryPolicy;
  private readonly now: () => number;
  private readonly announce: (m: string) => void;
  private readonly onCompleted: (fileId: string) => void;
  private readonly resolveUrl: (url: string) => string;
  private readonly online: () => boolean;
  private readonly waitOnline: () => Promise<void>;
  private readonly chunkTimeoutMs: number;

  constructor(opts: ManagerOptions) {
    this.api = opts.api;
    this.hasher = opts.hasher;
    this.transport = opts.transport;
    this.parallel = Math.max(1, Math.min(opts.parallel ?? 4, 16));
    this.hashParallel = Math.max(1, opts.hashParallel ?? 2);
    this.storage = opts.storage ?? null;
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.now = opts.now ?? (() => Date.now());
    this.announce = opts.announce ?? (() => undefined);
    this.onCompleted = opts.onCompleted ?? (() => undefined);
    this.resolveUrl = opts.resolveUrl ?? defaultResolve;
    this.online = opts.online ?? (() => typeof navigator === 'undefined' || navigator.onLine !== false);
    this.waitOnline =
      opts.waitOnline ??
      (() =>
        new Promise<void>((resolve) => {
          if (typeof window === 'undefined') resolve();
          else window.addEventListener('online', () => resolve(), { once: true });
        }));
    this.chunkTimeoutMs = opts.chunkTimeoutMs ?? 10 * 60_000;
  }

  // ---- the UI's view ----

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): UploadView[] => this.snapshot;

  /** True while anything is being hashed, created or sent. */
  get busy(): boolean {
    return this.tasks.some((t) => isWorking(t.state));
  }

  /** Chunks being read or sent right now, over all files. */
  get inFlight(): number {
    return this.tasks.reduce((n, t) => n + t.chunks.inflight.size, 0);
  }

  private notify(immediate = false): void {
    if (this.disposed) return;
    if (immediate) {
      if (this.emitTimer !== null) clearTimeout(this.emitTimer);
      this.emitTimer = null;
      this.emit();
      return;
    }
    if (this.emitTimer !== null) return;
    this.emitTimer = setTimeout(() => {
      this.emitTimer = null;
      this.emit();
    }, 120);
  }

  private emit(): void {
    const now = this.now();
    this.snapshot = this.tasks.map((t) => this.view(t, now));
    // Keep sampling while something moves, so a stall shows as a falling speed.
    const active = this.tasks.some((t) => t.state.phase === 'uploading' || t.state.phase === 'hashing');
    if (active && this.ticker === null) {
      this.ticker = setInterval(() => this.notify(), 500);
    } else if (!active && this.ticker !== null) {
      clearInterval(this.ticker);
      this.ticker = null;
    }
    for (const fn of this.listeners) fn();
  }

  private view(t: Task, now: number): UploadView {
    const s = t.state;
    const upload = uploadOf(s);
    // Listings give only the byte count, not the chunk indices.
    const uploaded = upload
      ? Math.min(Math.max(bytesOf(upload.plan, upload.received) + t.chunks.sendingBytes, upload.reportedBytes), s.size)
      : 0;
    const hashed = hashedBytes(s);
    let speed: number | null = null;
    let eta: number | null = null;
    if (s.phase === 'uploading') {
      t.meter.record(now, uploaded);
      speed = t.meter.rate(now);
      eta = speed && speed > 0 ? (s.size - uploaded) / speed : null;
      const pct = percent(uploaded, s.size);
      const milestone = crossedMilestone(t.lastPct, pct);
      if (milestone !== null) this.announce(`${s.name}: ${milestone}% uploaded`);
      t.lastPct = pct;
    } else if (s.phase === 'hashing') {
      t.hashMeter.record(now, hashed);
      speed = t.hashMeter.rate(now);
      eta = speed && speed > 0 ? (s.size - hashed) / speed : null;
    }
    const text = describe(s);
    const finishedAt = finishedAtOf(s);
    return {
      key: s.key,
      name: s.name,
      size: s.size,
      phase: s.phase,
      uploadId: upload?.id ?? null,
      fileId: s.phase === 'completed' ? s.fileId : null,
      uploaded,
      hashed,
      verifying: checkOf(s) !== null,
      speed,
      eta,
      totalChunks: upload?.plan.totalChunks ?? 0,
      receivedChunks: upload?.received.size ?? 0,
      chunksInFlight: t.chunks.inflight.size,
      label: text.label,
      message: text.message,
      note: text.note,
      hasFile: fileOf(s) !== null,
      can: { pause: canPause(s), resume: canResume(s), cancel: canCancel(s), remove: canRemove(s) },
      uploadMs: s.startedAt !== null && finishedAt !== null ? finishedAt - s.startedAt : null,
      totalMs: finishedAt !== null ? finishedAt - s.addedAt : null,
    };
  }

  // ---- state changes ----

  /** Moves `t` to the state `e` leads to; false (and nothing done) when `e` means nothing in its state. */
  private apply(t: Task, e: TaskEvent): boolean {
    return this.commit(t, reduce(t.state, e, this.now()), e);
  }

  private commit(t: Task, next: TaskState, e: TaskEvent): boolean {
    const before = t.state;
    if (next === before) return false;
    t.state = next;
    this.entered(t, before, e);
    return true;
  }

  /** The effects of a change of `t`'s state: stops and starts the work its new phase calls for. */
  private entered(t: Task, before: TaskState, e: TaskEvent): void {
    const s = t.state;
    const moved = s.phase !== before.phase;
    if (moved) {
      // Leaving the working phases stops the chunks (and, paused or finished, the hashing).
      if (!isWorking(s)) this.halt(t);
      if (s.phase === 'paused' || s.phase === 'error') t.hashJob?.pause();
      if (FINISHED.has(s.phase)) {
        t.hashJob?.cancel();
        t.hashJob = null;
        const id = uploadOf(s)?.id;
        if (id) forgetUpload(this.storage, id);
      }
      const say = announcement(before, s, e);
      if (say) this.announce(`${s.name}: ${say}`);
      // A hashing slot is free, or a task waits for one.
      if (before.phase === 'hashing' || s.phase === 'queued') this.pumpHashing();
      if (s.phase === 'creating') void this.create(t);
      if (s.phase === 'assembling') void this.poll(t);
      if (s.phase === 'completed' && s.fileId) this.onCompleted(s.fileId);
    }
    if (s.phase === 'uploading') {
      const was = before.phase === 'uploading' ? before.syncing : undefined;
      if (s.syncing === 'resume' && was !== 'resume') void this.syncAndUpload(t);
      if (s.syncing === null && was !== null) {
        t.chunks.start(s.work.upload);
        t.meter.reset();
        this.pump();
      }
    }
    this.notify(moved || !PROGRESS.has(e.type));
  }

  private find(key: string): Task | undefined {
    return this.tasks.find((t) => t.key === key);
  }

  private newKey(): string {
    this.seq += 1;
    return `u${this.seq}`;
  }

  // ---- adding files and resuming after a reload ----

  /** Lists the server's unfinished uploads: each one not in this tab becomes an `interrupted` row. */
  async loadUnfinished(): Promise<void> {
    const list = await this.api.unfinishedUploads();
    if (this.disposed) return;
    pruneRecords(this.storage, list.map((u) => u.upload_id));
    for (const u of list) {
      if (this.tasks.some((t) => uploadOf(t.state)?.id === u.upload_id)) continue;
      const t = new Task(listed(this.newKey(), u, this.now()));
      this.tasks.push(t);
      if (t.state.phase === 'assembling') void this.poll(t);
    }
    this.notify(true);
  }

  /** Adds files picked or dropped by the user; each re-selected interrupted file resumes its upload. */
  addFiles(files: Iterable<File>): void {
    const records = loadRecords(this.storage);
    for (const file of files) {
      const interrupted = this.tasks.flatMap((t) => (t.state.phase === 'interrupted' ? [{ t, u: unfinishedOf(t.state) }] : []));
      const match = matchFile(
        file,
        interrupted.map((x) => x.u),
        records,
      );
      if (match.kind === 'resume') {
        const target = interrupted.find((x) => x.u.upload_id === match.upload.upload_id);
        if (target) {
          this.attachFile(target.t.key, file);
          continue;
        }
      }
      const t = new Task(added(this.newKey(), file, this.now(), match.kind === 'verify' ? match.candidates : null));
      this.tasks.push(t);
      const say = announcement(null, t.state);
      if (say) this.announce(`${file.name}: ${say}`);
    }
    this.pumpHashing();
    this.notify(true);
  }

  /** Gives an interrupted upload its file again. Returns false (and says why) if it is another file. */
  attachFile(key: string, file: File): boolean {
    const t = this.find(key);
    const s = t?.state;
    if (!t || s?.phase !== 'interrupted') return false;
    const wrong = wrongFileReason(file, unfinishedOf(s));
    if (wrong) {
      this.apply(t, { type: 'attach-refused', reason: wrong });
      return false;
    }
    const recorded = loadRecords(this.storage)[s.upload.id];
    // Not known to be the same file (same name and size only): `reduce` has its content compared first.
    const evidence = recorded?.lastModified === file.lastModified ? 'record' : 'none';
    this.apply(t, { type: 'attached', file, addedAt: this.now(), evidence });
    return true;
  }

  // ---- hashing ----

  private pumpHashing(): void {
    if (this.disposed) return;
    let running = this.tasks.filter((t) => t.state.phase === 'hashing').length;
    for (const t of this.tasks) {
      if (running >= this.hashParallel) break;
      if (t.state.phase === 'queued') {
        running += 1;
        this.startHash(t);
      }
    }
  }

  private startHash(t: Task): void {
    if (!this.apply(t, { type: 'hash-started' }) || t.state.phase !== 'hashing') return;
    const { file, work } = t.state;
    t.hashMeter.reset();
    const epoch = t.epoch;
    if (work.hash.offset === 0) {
      // The chunk size of the upload when known (checking a re-selected file), else the size the server planned last.
      t.digests.restart(work.check?.kind === 'same-file' ? work.check.upload.plan.chunkSize : this.guessChunkSize());
    }
    const job = this.hasher.file(file, {
      onProgress: (bytes) => {
        if (t.epoch === epoch) this.apply(t, { type: 'hash-progress', bytes });
      },
      onDigests: (first, digests) => t.digests.add(first, digests),
      start: work.hash.offset,
      state: work.hash.saved,
      chunkSize: t.digests.chunkSize,
    });
    t.hashJob = job;
    job.result.then(
      (r) => {
        if (t.hashJob !== job) return;
        t.hashJob = null;
        if (r.kind === 'paused') {
          this.apply(t, { type: 'hash-paused', offset: r.offset, saved: r.state });
        } else if (isWorking(t.state)) {
          this.continueHashed(t, r.hex, { type: 'hashed', sha256: r.hex });
        } else {
          this.apply(t, { type: 'hashed', sha256: r.hex }); // paused meanwhile: kept for resume
        }
        this.pumpHashing();
      },
      (e: unknown) => {
        if (t.hashJob !== job) return;
        t.hashJob = null;
        this.pumpHashing();
        if (isAbort(e) || t.epoch !== epoch) return;
        this.apply(t, { type: 'stopped', phase: 'error', problem: { kind: 'unreadable', detail: describeError(e) } });
      },
    );
  }

  /**
   * The file's SHA-256 is known and `t` goes on: a file that proves to be one of the interrupted
   * uploads continues that one (and its own row goes); any other goes as `e` says.
   */
  private continueHashed(t: Task, sha256: string, e: TaskEvent): void {
    const file = fileOf(t.state);
    const check = checkOf(t.state);
    if (file && check?.kind === 'candidates') {
      const found = pickBySha(check.candidates, sha256);
      const target = found && this.tasks.find((x) => x.state.phase === 'interrupted' && x.state.upload.id === found.upload_id);
      if (found && target) {
        this.remember(found.upload_id, file);
        this.tasks = this.tasks.filter((x) => x !== t);
        this.apply(target, { type: 'attached', file, addedAt: t.state.addedAt, evidence: 'content' });
        return;
      }
    }
    this.apply(t, e);
    // A re-selected file proved to be the upload's: recognise it by its modification time next time.
    if (file && check?.kind === 'same-file' && t.state.phase === 'uploading') this.remember(check.upload.id, file);
  }

  // ---- creating and syncing ----

  private async create(t: Task): Promise<void> {
    const s = t.state;
    if (s.phase !== 'creating') return;
    const { file, sha256 } = s;
    const epoch = t.epoch;
    let created: CreatedUpload;
    try {
      created = await this.api.createUpload({
        name: file.name,
        size: file.size,
        content_type: SAFE_MEDIA_TYPE.test(file.type) ? file.type : undefined,
        sha256,
      });
    } catch (e) {
      if (t.epoch !== epoch) return;
      const permanent = e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
      this.apply(t, { type: 'stopped', phase: permanent ? 'failed' : 'error', problem: { kind: 'not-started', detail: describeError(e) } });
      return;
    }
    const upload: ServerUpload = {
      id: created.upload_id,
      plan: makePlan(file.size, created.chunk_size, created.total_chunks),
      received: new Set(),
      reportedBytes: 0,
      sha256,
    };
    const event: TaskEvent = { type: 'created', upload };
    const next = reduce(t.state, event, this.now());
    if (next === t.state) {
      // Cancelled while the server was creating it, or paused and resumed (another request made
      // the upload): release this one there too.
      void this.api.cancelUpload(created.upload_id).catch(() => undefined);
      return;
    }
    t.uploadUrl = this.resolveUrl(created.upload_url);
    t.token = created.upload_token;
    t.tokenFlight = this.tokenFlightFor(t);
    this.learnChunkSize(created.chunk_size, file.size);
    this.remember(created.upload_id, file);
    this.commit(t, next, event);
  }

  /** The chunk size the server is likely to plan (its preferred size, learned from earlier uploads). */
  private guessChunkSize(): number | null {
    const v = Number(this.storage?.getItem(CHUNK_SIZE_KEY) ?? DEFAULT_CHUNK_SIZE);
    return Number.isSafeInteger(v) && v > 0 && v <= MAX_PREDIGEST_CHUNK ? v : null;
  }

  private learnChunkSize(chunkSize: number, fileSize: number): void {
    // Files of more than 10,000 preferred chunks get larger chunks: not the preferred size.
    if (fileSize > chunkSize * 9_999 || !this.storage) return;
    try {
      this.storage.setItem(CHUNK_SIZE_KEY, String(chunkSize));
    } catch {
      // Storage full or disabled: chunks are digested when sent.
    }
  }

  private remember(uploadId: string, file: File): void {
    rememberUpload(this.storage, uploadId, {
      name: file.name,
      size: file.size,
      lastModified: file.lastModified,
      createdAt: this.now(),
    });
  }

  private tokenFlightFor(t: Task): SingleFlight<void> {
    return new SingleFlight(async () => {
      const id = uploadOf(t.state)?.id;
      if (!id) throw new Error('no upload');
      const renewed = await this.api.renewUploadToken(id);
      t.token = renewed.upload_token;
      if (renewed.upload_url) t.uploadUrl = this.resolveUrl(renewed.upload_url);
    });
  }

  /** Asks the server where the upload stands and continues from there (resume, retry). */
  private async syncAndUpload(t: Task): Promise<void> {
    const s = t.state;
    if (s.phase !== 'uploading') return;
    const epoch = t.epoch;
    let status: UploadStatus;
    try {
      status = await this.api.upload(s.work.upload.id);
      if (t.epoch !== epoch) return;
      if (status.state === 'uploading' && (!t.token || !t.uploadUrl)) {
        t.tokenFlight ??= this.tokenFlightFor(t);
        await t.tokenFlight.run();
        if (t.epoch !== epoch) return;
      }
    } catch (e) {
      if (t.epoch !== epoch) return;
      if (e instanceof ApiError && e.status === 409) {
        // The token was refused: the upload left the uploading state meanwhile.
        return this.syncAndUpload(t);
      }
      this.stop(t, { kind: 'unreachable', detail: describeError(e) });
      return;
    }
    this.apply(t, { type: 'synced', status, resuming: true });
  }

  /** Stops sending and follows the server's state (or stops with `fallback` when it is still uploading). */
  private async resync(t: Task, fallback?: Problem): Promise<void> {
    const id = uploadOf(t.state)?.id;
    if (!id) return;
    const epoch = this.halt(t);
    this.apply(t, { type: 'follow' });
    try {
      const s = await this.api.upload(id);
      if (t.epoch !== epoch) return;
      if (s.state === 'uploading' && fallback) {
        this.stop(t, fallback);
      } else {
        t.tokenFlight = this.tokenFlightFor(t);
        this.apply(t, { type: 'synced', status: s, resuming: false });
      }
    } catch (e) {
      if (t.epoch !== epoch) return;
      this.stop(t, fallback ?? { kind: 'unreachable', detail: describeError(e) });
    }
  }

  // ---- sending chunks ----

  /** Fills the free chunk slots, taking files in turn so that every file moves. */
  private pump(): void {
    if (this.disposed) return;
    let free = this.parallel - this.inFlight;
    while (free > 0) {
      const ready = this.tasks.filter((t) => isSending(t.state) && t.chunks.pending.length > 0);
      if (ready.length === 0) break;
      const t = ready[this.rr % ready.length];
      this.rr += 1;
      const index = t?.chunks.pending.shift();
      if (!t || index === undefined) break;
      free -= 1;
      void this.sendChunk(t, index);
    }
  }

  private async sendChunk(t: Task, index: number): Promise<void> {
    const s = t.state;
    if (s.phase !== 'uploading' || !t.uploadUrl) return;
    const { file } = s;
    const { plan } = s.work.upload;
    const slot: Slot = { index, ctrl: new AbortController(), loaded: 0 };
    t.chunks.inflight.set(index, slot);
    const signal = slot.ctrl.signal;
    const release = () => {
      if (t.chunks.inflight.get(index) === slot) t.chunks.inflight.delete(index);
    };
    try {
      const range = chunkRange(plan, index);
      const digest = t.digests.get(plan.chunkSize, index) ?? (await this.hasher.chunk(file, range.start, range.end, signal)).digest;
      if (signal.aborted) return;
      const seenToken = t.tokenFlight?.generation ?? 0;
      const res = await this.transport({
        url: `${t.uploadUrl}/${index}`,
        token: t.token ?? '',
        digest,
        body: file.slice(range.start, range.end),
        signal,
        timeoutMs: this.chunkTimeoutMs,
        onProgress: (loaded) => {
          slot.loaded = Math.min(loaded, range.end - range.start);
          this.notify();
        },
      });
      if (signal.aborted) return;
      release();
      if (res.status === 200 || res.status === 201) {
        t.chunks.attempts.delete(index);
        t.chunks.heldSince.delete(index);
        this.apply(t, { type: 'chunk-stored', index, complete: res.receipt?.complete === true });
      } else {
        await this.onFailure(t, index, res, seenToken);
      }
    } catch (e) {
      release();
      if (isAbort(e) || signal.aborted) return;
      this.stop(t, { kind: 'unreadable', detail: describeError(e) });
    } finally {
      this.pump();
      this.notify();
    }
  }

  private requeueLater(t: Task, index: number, delayMs: number): void {
    const epoch = t.epoch;
    const timer = setTimeout(() => {
      t.chunks.timers.delete(timer);
      if (t.epoch !== epoch || t.state.phase !== 'uploading') return;
      t.chunks.pending.unshift(index);
      this.pump();
    }, delayMs);
    t.chunks.timers.set(timer, index);
  }

  private async onFailure(t: Task, index: number, res: PutResult, seenToken: number): Promise<void> {
    const epoch = t.epoch;
    const q = t.chunks;
    const why = res.detail ?? (res.status ? `HTTP ${res.status}` : 'network error');
    if (res.status === 0 && !this.online()) {
      this.apply(t, { type: 'notice', notice: { kind: 'offline' } });
      await this.waitOnline();
      if (t.epoch !== epoch || t.state.phase !== 'uploading') return;
      this.apply(t, { type: 'notice', notice: null });
      q.pending.unshift(index);
      return;
    }
    const attempt = (q.attempts.get(index) ?? 0) + 1;
    q.attempts.set(index, attempt);
    // A digest mismatch may mean the file changed since it was hashed: digest it afresh.
    if (res.status === 422) t.digests.forget(index);
    let since = 0;
    if (res.status === 409 && res.problemType?.endsWith('/chunk-in-progress')) {
      since = q.heldSince.get(index) ?? this.now();
      q.heldSince.set(index, since);
    }
    const decision = decideRetry(
      { status: res.status, problemType: res.problemType, retryAfterS: res.retryAfterS },
      attempt,
      since ? this.now() - since : 0,
      this.retry,
    );
    switch (decision.kind) {
      case 'renew-token':
        try {
          t.tokenFlight ??= this.tokenFlightFor(t);
          await t.tokenFlight.run(seenToken);
          if (t.epoch !== epoch) return;
          q.pending.unshift(index);
        } catch (e) {
          if (t.epoch !== epoch) return;
          if (e instanceof ApiError && (e.status === 409 || e.status === 404)) {
            void this.resync(t);
          } else {
            this.requeueLater(t, index, 1000);
          }
        }
        return;
      case 'retry':
        this.apply(t, {
          type: 'notice',
          notice: { kind: 'retrying', index, why, delayMs: decision.delayMs, failures: attempt, maxAttempts: this.retry.maxAttempts },
        });
        this.requeueLater(t, index, decision.delayMs);
        return;
      case 'wait':
        this.apply(t, { type: 'notice', notice: { kind: 'held', index } });
        q.attempts.set(index, attempt - 1);
        this.requeueLater(t, index, decision.delayMs);
        return;
      case 'gone':
        void this.resync(t, { kind: 'gone' });
        return;
      case 'fail':
        if (res.status === 409 || res.status === 404 || res.status === 403) {
          // Maybe it is finished or gone: ask before calling it an error.
          void this.resync(t, { kind: 'chunk-refused', index, why });
          return;
        }
        this.stop(
          t,
          decision.reason === 'attempts' ? { kind: 'chunk-failed', index, failures: attempt, why } : { kind: 'chunk-refused', index, why },
        );
    }
  }

  // ---- assembly ----

  /** Follows an assembling upload to its outcome by long polls (each answered when the state changes). */
  private async poll(t: Task): Promise<void> {
    const epoch = t.epoch;
    let delay = 200;
    let failures = 0;
    for (;;) {
      const s = t.state;
      if (this.disposed || t.epoch !== epoch || s.phase !== 'assembling') return;
      const asked = Date.now();
      try {
        const status = await this.api.uploadChange(s.work.upload.id, STATUS_WAIT_SECONDS);
        failures = 0;
        if (t.epoch !== epoch || t.state.phase !== 'assembling') return;
        if (status.state !== 'assembling') {
          this.apply(t, { type: 'synced', status, resuming: false });
          // Still assembling when the server reports it uploading yet has every chunk: keep asking.
          if (t.state.phase !== 'assembling') return;
        }
        // A long poll that waited needs no pause before the next.
        if (Date.now() - asked >= 1000) continue;
      } catch (e) {
        if (t.epoch !== epoch) return;
        failures += 1;
        const permanent = e instanceof ApiError && e.status > 0 && e.status < 500 && e.status !== 408 && e.status !== 429;
        if (permanent || failures > 30) {
          this.stop(t, { kind: 'unfollowed', detail: describeError(e) });
          return;
        }
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
  }

  // ---- stopping ----

  /** Stops the chunks of a task (aborts those in flight, drops the retries waiting); returns the new epoch. */
  private halt(t: Task): number {
    t.epoch += 1;
    t.chunks.stop();
    t.meter.reset();
    // Freed slots go to other files: after the caller has moved this task out of `uploading`.
    queueMicrotask(() => this.pump());
    return t.epoch;
  }

  /** The client stops the task with a reason; Retry continues it. */
  private stop(t: Task, problem: Problem): void {
    this.apply(t, { type: 'stopped', phase: 'error', problem });
  }

  // ---- the user's controls ----

  pause(key: string): void {
    const t = this.find(key);
    if (t) this.apply(t, { type: 'paused' });
  }

  resume(key: string): void {
    const t = this.find(key);
    if (!t || !canResume(t.state)) return;
    t.epoch += 1;
    t.chunks.forgetFailures();
    const work = workOf(t.state);
    if (work?.step === 'hashed') this.continueHashed(t, work.sha256, { type: 'resumed' });
    else this.apply(t, { type: 'resumed' });
  }

  async cancel(key: string): Promise<void> {
    const t = this.find(key);
    if (!t) return;
    const before = t.state;
    if (!this.apply(t, { type: 'cancelled' })) return;
    const id = uploadOf(before)?.id;
    if (!id) return;
    try {
      await this.api.cancelUpload(id);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return;
      if (e instanceof ApiError && e.status === 409) {
        // Too late: it is assembling or complete. Follow it.
        this.apply(t, { type: 'cancel-refused', previous: before });
        void this.resync(t);
        return;
      }
      this.apply(t, { type: 'cancel-unconfirmed', detail: describeError(e) });
    }
  }

  /** Forgets a finished row (the upload itself is not touched). */
  remove(key: string): void {
    const t = this.find(key);
    if (!t || !canRemove(t.state)) return;
    this.tasks = this.tasks.filter((x) => x !== t);
    this.notify(true);
  }

  pauseAll(): void {
    for (const t of this.tasks) this.pause(t.key);
  }

  resumeAll(): void {
    for (const t of this.tasks) if (t.state.phase === 'paused') this.resume(t.key);
  }

  async cancelAll(): Promise<void> {
    await Promise.all(this.tasks.map((t) => this.cancel(t.key)));
  }

  clearFinished(): void {
    this.tasks = this.tasks.filter((t) => !canRemove(t.state));
    this.notify(true);
  }

  /** Stops everything without touching the server (sign-out, unmount): the uploads stay resumable. */
  dispose(): void {
    for (const t of this.tasks) {
      this.halt(t);
      t.hashJob?.cancel();
    }
    this.disposed = true;
    if (this.emitTimer !== null) clearTimeout(this.emitTimer);
    if (this.ticker !== null) clearInterval(this.ticker);
    this.listeners.clear();
  }
}

// The upload engine: one task per file, a shared pool of chunk slots (bounded parallelism), one
// pass over each file in a worker, retries with backoff, pause/resume/cancel, resume after a
// reload, and a snapshot of every task for the UI (useSyncExternalStore).
//
// A task's state is data (state.ts): it changes only through `reduce`, here in `apply`, and
// `entered` then starts or stops the work of the phase the task is in. What a task holds beside
// its state is the work in progress: its file's pass, its chunks in flight and retry timers, its
// upload token, its speed meter.
//
// Every byte of a file is read once (docs/protocol.md "The web app"): the pass worker reads the
// file in order, computes each chunk's CRC-64/NVME and the whole file's (and its SHA-256 when
// asked), compares the chunks the server holds with the server's CRCs, and hands the others
// over — as Blobs of the bytes read — against credits: one per free slot of the pool, so the page never
// holds more than `parallel` chunks, whatever the files' sizes (a chunk waiting to be retried
// keeps its slot and its bytes). Chunks go with `Content-Digest: crc64nvme=:…:`. The last chunk
// the server lacks is held back until the whole-file checksums are declared (`PATCH`), which the
// pass knows once it has read the end of the file: the upload cannot complete before.
//
// Pausing keeps the pass where it is (the worker stops reading); the chunks that were in flight
// are read again on resume (random access), and must read as they did. Resuming a file in a new
// session (after a reload) proves the file is the upload's before sending a byte of it: the
// chunks the server holds after the first one it lacks are read and compared first, then the
// pass compares the ones before it on its way to the first missing chunk.

import { ApiError, describeError } from '../api/client';
import type { CreatedUpload, DeclaredChecksums, UploadStatus, UploadToken } from '../api/types';
import { backoffDelay, DEFAULT_RETRY, decideRetry, isTransient, type RetryPolicy } from '../lib/backoff';
import { percent } from '../lib/format';
import { bytesOf, makePlan, missingChunks } from '../lib/plan';
import { crossedMilestone, SpeedMeter } from '../lib/progress';
import {
  candidatesFor,
  forgetUpload,
  loadRecords,
  pruneRecords,
  rememberUpload,
  wrongFileReason,
  type KeyValueStore,
  type UnfinishedUpload,
} from '../lib/resume';
import { SingleFlight } from '../lib/singleflight';
import { crcContentDigest } from './checksum';
import type { FilePass, HashService, PassSink, Sums } from './hasher';
import {
  added,
  announcement,
  canCancel,
  canPause,
  canRemove,
  canResume,
  describe,
  fileOf,
  finishedAtOf,
  FINISHED,
  isSending,
  isWorking,
  listed,
  reduce,
  trialOf,
  uploadOf,
  type Interrupted,
  type Phase,
  type Problem,
  type ServerUpload,
  type TaskEvent,
  type TaskState,
} from './state';
import type { ChunkTransport, PutResult } from './transport';

export type { HashService } from './hasher';

/** How long one status request of an assembling upload waits for its outcome, in seconds. */
const STATUS_WAIT_SECONDS = 30;

/** What the engine needs from the API (ApiClient has it). */
export interface UploadApi {
  createUpload(body: { name: string; size: number; content_type?: string }): Promise<CreatedUpload>;
  unfinishedUploads(): Promise<UploadStatus[]>;
  upload(id: string): Promise<UploadStatus>;
  /** The long poll of `GET /api/v1/uploads/{id}?wait=N`. */
  uploadChange(id: string, seconds: number): Promise<UploadStatus>;
  /** `PATCH /api/v1/uploads/{id}`: the whole-file checksums, before the last chunk. */
  declareChecksums(id: string, sums: DeclaredChecksums): Promise<UploadStatus>;
  cancelUpload(id: string): Promise<void>;
  renewUploadToken(id: string): Promise<UploadToken>;
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
  /** Whether the file is being checked against an interrupted upload (nothing is sent meanwhile). */
  verifying: boolean;
  /** Bytes per second of the upload, when known. */
  speed: number | null;
  /** Seconds left, when known. */
  eta: number | null;
  totalChunks: number;
  receivedChunks: number;
  /** Chunk slots this file holds: being read for sending, being sent, waiting to be retried. */
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
  /** Milliseconds from adding the file to completion (this session). */
  totalMs: number | null;
}

/** A chunk's bytes in the page, with its CRC-64/NVME. */
interface Outgoing {
  readonly index: number;
  readonly crc: string;
  readonly data: Blob;
}

interface Slot extends Outgoing {
  readonly ctrl: AbortController;
  loaded: number;
}

/** The chunks of one upload on their way; each holds one slot of the pool. */
class Sends {
  /** Being sent, or waiting to be sent again. */
  readonly inflight = new Map<number, Slot>();
  /** Being read again by the worker. */
  readonly reading = new Set<number>();
  /** Chunks the pass went past that the server lacks (they were in flight when sending stopped): read again. */
  rereads: number[] = [];
  /** The last chunk the server lacks, read, waiting for the declaration of the checksums. */
  held: Outgoing | null = null;
  /** Which chunk that is (null once the checksums are declared). */
  heldIndex: number | null = null;
  readonly timers = new Set<ReturnType<typeof setTimeout>>();
  /** Failed attempts per chunk. */
  readonly attempts = new Map<number, number>();
  /** Since when each chunk has been held by an earlier request (409 chunk-in-progress). */
  readonly heldSince = new Map<number, number>();

  get slots(): number {
    return this.inflight.size + this.reading.size + (this.held ? 1 : 0);
  }

  /** Bytes of the chunks being sent now. */
  get sendingBytes(): number {
    let b = 0;
    for (const s of this.inflight.values()) b += s.loaded;
    return b;
  }

  /** Aborts the chunks being sent, drops their bytes and the retries waiting. */
  stop(): void {
    for (const slot of this.inflight.values()) slot.ctrl.abort();
    this.inflight.clear();
    this.reading.clear();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.rereads = [];
    this.held = null;
    this.heldIndex = null;
  }

  forgetFailures(): void {
    this.attempts.clear();
    this.heldSince.clear();
  }
}

/** The page's side of a file's pass over it, for one upload. */
class Pass {
  /** The pass was started (after the resume check, when there is one). */
  started = false;
  /** How many chunks the pass has gone past, in file order. */
  pos = 0;
  /** Credits granted and not yet used: each holds a slot. */
  credits = 0;
  /** Chunks the pass has still to hand over. */
  toDeliver = 0;
  /** The whole file's checksums, once the pass has read it all. */
  sums: Sums | null = null;
  /** The pass went past every chunk the server held before the first it lacks: the file is the upload's. */
  proven = false;
  /** The CRC of every chunk the pass went past. */
  readonly crcs = new Map<number, string>();

  constructor(
    readonly fp: FilePass,
    readonly uploadId: string,
    readonly file: File,
  ) {}

  /** Credits the pass could use now. */
  get wants(): number {
    return this.started ? Math.max(0, this.toDeliver - this.credits) : 0;
  }
}

/** A file's task: its state, and the engine's handles on the work in progress. */
class Task {
  state: TaskState;
  /** Bumped whenever sending stops, and on resume: continuations of older work ignore themselves. */
  epoch = 0;
  pass: Pass | null = null;
  declaring = false;
  readonly sends = new Sends();
  /** Where chunks go and the token they carry (both renewed on 401). */
  uploadUrl: string | null = null;
  token: string | null = null;
  tokenFlight: SingleFlight<void> | null = null;
  readonly meter = new SpeedMeter();
  /** The percentage last seen, for the screen reader's milestones. */
  lastPct = 0;
  /** A file added that is being tried on this interrupted upload: where it goes if it is not the upload's. */
  fallback: { rest: string[]; addedAt: number } | null = null;

  constructor(state: TaskState) {
    this.state = state;
  }

  get key(): string {
    return this.state.key;
  }

  /** Slots of the pool this task holds. */
  get slots(): number {
    return this.sends.slots + (this.pass?.credits ?? 0);
  }
}

export interface ManagerOptions {
  api: UploadApi;
  hasher: HashService;
  transport: ChunkTransport;
  /** Chunks in flight at once (read for sending, being sent, waiting to be retried), over all files. */
  parallel?: number;
  /** Files started at once (created and read); the others wait their turn. */
  activeFiles?: number;
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
  /**
   * Whether each file's SHA-256 is computed (in the same pass) and declared too. Off by default:
   * the CRC-64/NVME already verifies every byte end to end, and a SHA-256 in WebAssembly
   * (234 MB/s on one core) slows a fast upload by about 40 % (docs/protocol.md "The web app").
   */
  sha256?: boolean;
}

const SAFE_MEDIA_TYPE = /^[A-Za-z0-9][\w.+-]*\/[A-Za-z0-9][\w.+-]*$/;

/** Events that happen many times a second: the snapshot for them is throttled. */
const PROGRESS: ReadonlySet<TaskEvent['type']> = new Set(['chunk-stored']);

function isAbort(e: unknown): boolean {
  return (e instanceof DOMException || e instanceof Error) && e.name === 'AbortError';
}

function defaultResolve(url: string): string {
  if (typeof location === 'undefined') return url;
  return new URL(url, location.href).toString().replace(/\/$/, '');
}

/** An interrupted task as lib/resume matches files against it. */
function unfinishedOf(s: Interrupted): UnfinishedUpload {
  return { upload_id: s.upload.id, name: s.name, size: s.size, state: 'uploading' };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class UploadManager {
  private tasks: Task[] = [];
  private readonly listeners = new Set<() => void>();
  private snapshot: UploadView[] = [];
  private emitTimer: ReturnType<typeof setTimeout> | null = null;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private rr = 0;
  private seq = 0;
  private disposed = false;
  private starting = false;

  private readonly api: UploadApi;
  private readonly hasher: HashService;
  private readonly transport: ChunkTransport;
  readonly parallel: number;
  private readonly activeFiles: number;
  private readonly storage: KeyValueStore | null;
  private readonly retry: RetryPolicy;
  private readonly now: () => number;
  private readonly announce: (m: string) => void;
  private readonly onCompleted: (fileId: string) => void;
  private readonly resolveUrl: (url: string) => string;
  private readonly online: () => boolean;
  private readonly waitOnline: () => Promise<void>;
  private readonly chunkTimeoutMs: number;
  private sha256: boolean;

  constructor(opts: ManagerOptions) {
    this.api = opts.api;
    this.hasher = opts.hasher;
    this.transport = opts.transport;
    this.parallel = Math.max(1, Math.min(opts.parallel ?? 4, 16));
    this.activeFiles = Math.max(1, opts.activeFiles ?? 3);
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
    this.sha256 = opts.sha256 ?? false;
  }

  /** Whether files whose pass starts from now on get their SHA-256 computed and declared. */
  get computesSha256(): boolean {
    return this.sha256;
  }

  setComputeSha256(on: boolean): void {
    this.sha256 = on;
  }

  // ---- the UI's view ----

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): UploadView[] => this.snapshot;

  /** True while anything is being created, read or sent. */
  get busy(): boolean {
    return this.tasks.some((t) => isWorking(t.state));
  }

  /** Slots of the pool in use, over all files: chunks being read for sending, sent, or waiting to be retried. */
  get inFlight(): number {
    return this.tasks.reduce((n, t) => n + t.slots, 0);
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
    const active = this.tasks.some((t) => t.state.phase === 'uploading');
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
      ? Math.min(Math.max(bytesOf(upload.plan, upload.received) + t.sends.sendingBytes, upload.reportedBytes), s.size)
      : 0;
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
      verifying: trialOf(s) !== null,
      speed,
      eta,
      totalChunks: upload?.plan.totalChunks ?? 0,
      receivedChunks: upload?.received.size ?? 0,
      chunksInFlight: t.slots,
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
    const say = announcement(before, s, e);
    if (say) this.announce(`${s.name}: ${say}`);
    if (moved) {
      // Leaving the working phases stops the chunks and the reading (paused, the pass waits where it is).
      if (!isWorking(s)) this.halt(t);
      // The pass is over once nothing more is to be read for this upload with this file.
      if (FINISHED.has(s.phase) || s.phase === 'assembling' || s.phase === 'interrupted' || (s.phase === 'error' && !s.file)) {
        this.closePass(t);
      }
      if (FINISHED.has(s.phase)) {
        const id = uploadOf(s)?.id;
        if (id) forgetUpload(this.storage, id);
      }
      if (s.phase === 'creating') void this.create(t);
      if (s.phase === 'assembling') void this.poll(t);
      if (s.phase === 'completed' && s.fileId) this.onCompleted(s.fileId);
      // A file left (or joined) the ones started: another may start.
      this.pumpStarts();
    }
    if (s.phase === 'uploading') {
      const was = before.phase === 'uploading' ? before.syncing : undefined;
      if (s.syncing === 'resume' && was !== 'resume') void this.syncAndUpload(t);
      if (s.syncing === null && was !== null) this.startSending(t);
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

  /**
   * Adds files picked or dropped by the user. A file of the name and size of interrupted uploads
   * is tried on them in turn (the one this browser recorded with the file's modification time
   * first) and continues the one its content proves to be; otherwise it is a new upload.
   */
  addFiles(files: Iterable<File>): void {
    const records = loadRecords(this.storage);
    for (const file of files) {
      const interrupted = this.tasks.filter((t): t is Task & { state: Interrupted } => t.state.phase === 'interrupted');
      const candidates = candidatesFor(
        file,
        interrupted.map((t) => unfinishedOf(t.state)),
        records,
      );
      const keys = candidates.flatMap((c) => interrupted.filter((t) => t.state.upload.id === c.upload_id).map((t) => t.key));
      this.offer(file, keys, this.now());
    }
    this.notify(true);
  }

  /** Tries `file` on the first of these interrupted rows still waiting for a file, or makes it a new upload. */
  private offer(file: File, keys: readonly string[], addedAt: number): void {
    for (let i = 0; i < keys.length; i += 1) {
      const target = this.find(keys[i] ?? '');
      if (target?.state.phase !== 'interrupted') continue;
      target.fallback = { rest: keys.slice(i + 1), addedAt };
      if (this.apply(target, { type: 'attached', file, addedAt, trial: 'candidate' })) return;
      target.fallback = null;
    }
    const t = new Task(added(this.newKey(), file, addedAt));
    this.tasks.push(t);
    const say = announcement(null, t.state);
    if (say) this.announce(`${file.name}: ${say}`);
    this.pumpStarts();
    this.notify(true);
  }

  /** Gives an interrupted upload its file again. Returns false (and says why) if it cannot be its file. */
  attachFile(key: string, file: File): boolean {
    const t = this.find(key);
    const s = t?.state;
    if (!t || s?.phase !== 'interrupted') return false;
    const wrong = wrongFileReason(file, unfinishedOf(s));
    if (wrong) {
      this.apply(t, { type: 'attach-refused', reason: wrong });
      return false;
    }
    // Same name and size: its content is compared with the server's chunks before anything is sent.
    t.fallback = null;
    this.apply(t, { type: 'attached', file, addedAt: this.now(), trial: 'chosen' });
    return true;
  }

  /** The file proved to be the upload's. */
  private prove(t: Task): void {
    const file = fileOf(t.state);
    const upload = uploadOf(t.state);
    if (!this.apply(t, { type: 'proven' })) return;
    t.fallback = null;
    if (file && upload) this.remember(upload.id, file);
  }

  /** A chunk the server holds is not the file's: the upload stays as it was, the file goes on. */
  private refute(t: Task): void {
    const file = fileOf(t.state);
    const fallback = t.fallback;
    t.fallback = null;
    this.closePass(t);
    if (!this.apply(t, { type: 'refuted' })) return;
    if (file && fallback) this.offer(file, fallback.rest, fallback.addedAt);
  }

  // ---- starting files ----

  /** Gives queued files their turn while fewer than `activeFiles` are being created or sent. */
  private pumpStarts(): void {
    if (this.disposed || this.starting) return;
    this.starting = true;
    try {
      for (;;) {
        const active = this.tasks.filter((t) => t.state.phase === 'creating' || t.state.phase === 'uploading').length;
        const next = this.tasks.find((t) => t.state.phase === 'queued');
        if (active >= this.activeFiles || !next) break;
        if (!this.apply(next, { type: 'turn' })) break;
      }
    } finally {
      this.starting = false;
    }
  }

  private async create(t: Task): Promise<void> {
    const s = t.state;
    if (s.phase !== 'creating') return;
    const { file } = s;
    const epoch = t.epoch;
    let created: CreatedUpload;
    try {
      created = await this.api.createUpload({
        name: file.name,
        size: file.size,
        content_type: SAFE_MEDIA_TYPE.test(file.type) ? file.type : undefined,
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
      crcs: new Map(),
      reportedBytes: 0,
      declared: null,
      sha256: null,
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
    this.remember(created.upload_id, file);
    this.commit(t, next, event);
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

  // ---- syncing ----

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

  // ---- the pass over the file ----

  /** Chunks may go (again): the pass starts, or goes on and the chunks dropped meanwhile are read again. */
  private startSending(t: Task): void {
    const s = t.state;
    if (!isSending(s)) return;
    const { upload } = s.work;
    const q = t.sends;
    t.meter.reset();
    let pass = t.pass;
    if (pass && (pass.uploadId !== upload.id || pass.file !== s.file)) {
      this.closePass(t);
      pass = null;
    }
    if (!pass) {
      pass = new Pass(this.hasher.open(s.file, upload.plan), upload.id, s.file);
      t.pass = pass;
    }
    const missing = missingChunks(upload.plan, upload.received);
    q.heldIndex = this.declaredOurs(t) ? null : (missing.at(-1) ?? null);
    // A pause reached the worker (perhaps before its pass started): it may read again.
    pass.fp.go();
    if (pass.started) {
      const p = pass;
      // Proved while paused (the proof could not be recorded then).
      if (pass.proven && s.work.trial !== null) this.prove(t);
      q.rereads = missing.filter((i) => i < p.pos && !q.inflight.has(i) && !q.reading.has(i));
      if (pass.sums) void this.declare(t);
    } else {
      void this.beginPass(t, pass);
    }
    this.pump();
  }

  /** Starts the pass; a file on trial is checked first against the chunks after the first one the server lacks. */
  private async beginPass(t: Task, pass: Pass): Promise<void> {
    const s = t.state;
    if (!isSending(s)) return;
    const epoch = t.epoch;
    const { upload, trial } = s.work;
    // A chunk the server gave no CRC for cannot be compared: it never matches.
    const received = new Map<number, string>();
    for (const i of [...upload.received].sort((a, b) => a - b)) received.set(i, upload.crcs.get(i) ?? '');
    if (trial !== null) {
      if (received.size === 0) {
        pass.proven = true;
        this.prove(t); // nothing on the server to tell another file from this one
      } else {
        const first = missingChunks(upload.plan, upload.received)[0] ?? upload.plan.totalChunks;
        const later = [...received.keys()].filter((i) => i > first);
        let crcs: string[];
        try {
          crcs = await pass.fp.check(later);
        } catch (e) {
          if (t.pass !== pass || t.epoch !== epoch || isAbort(e)) return;
          this.closePass(t);
          this.stop(t, { kind: 'unreadable', detail: describeError(e) });
          return;
        }
        if (t.pass !== pass || t.epoch !== epoch) return;
        if (later.some((i, k) => crcs[k] !== received.get(i))) {
          this.refute(t);
          return;
        }
      }
    }
    if (t.pass !== pass || t.epoch !== epoch || !isSending(t.state)) return;
    pass.started = true;
    pass.toDeliver = upload.plan.totalChunks - received.size;
    // An upload created with a SHA-256 (a published one, say) gets the file's compared with it.
    pass.fp.start(received, this.sinkFor(t, pass), { sha256: this.sha256 || upload.sha256 !== null });
    this.pump();
  }

  private sinkFor(t: Task, pass: Pass): PassSink {
    return {
      checked: (index, crc) => {
        if (t.pass !== pass) return;
        pass.pos = index + 1;
        pass.crcs.set(index, crc);
      },
      chunk: (index, crc, data) => this.delivered(t, pass, { index, crc, data }),
      mismatch: (index) => {
        if (t.pass !== pass) return;
        this.closePass(t);
        // Nothing was sent yet when the file is on trial: the upload is another file's (paused,
        // resume checks again and finds it out then).
        if (trialOf(t.state) !== null) {
          if (t.state.phase === 'uploading') this.refute(t);
        } else {
          this.stop(t, { kind: 'changed', index });
        }
      },
      done: (sums) => {
        if (t.pass !== pass) return;
        pass.sums = sums;
        pass.pos = Math.max(pass.pos, pass.crcs.size);
        pass.proven = true;
        if (trialOf(t.state) !== null) this.prove(t);
        if (isSending(t.state)) void this.declare(t);
        this.pump();
      },
      failed: (message) => {
        if (t.pass !== pass) return;
        this.closePass(t);
        if (isWorking(t.state)) this.stop(t, { kind: 'unreadable', detail: message });
      },
    };
  }

  /** A chunk the pass handed over (against a credit, or one in hand when sending stopped). */
  private delivered(t: Task, pass: Pass, out: Outgoing): void {
    if (t.pass !== pass) return;
    pass.pos = out.index + 1;
    pass.crcs.set(out.index, out.crc);
    pass.toDeliver -= 1;
    const reserved = pass.credits > 0;
    if (reserved) pass.credits -= 1;
    // The chunks before it were compared, those after the first missing one before the pass: it is the file's upload.
    pass.proven = true;
    if (trialOf(t.state) !== null) this.prove(t);
    const s = t.state;
    if (!isSending(s) || s.work.upload.id !== pass.uploadId) {
      // Dropped: the resume reads it again.
      this.pump();
      return;
    }
    if (s.work.upload.received.has(out.index)) {
      // Stored meanwhile (by another tab?): it must be this chunk.
      if (s.work.upload.crcs.get(out.index) !== out.crc) {
        this.closePass(t);
        this.stop(t, { kind: 'changed', index: out.index });
      }
      this.pump();
      return;
    }
    if (!reserved && this.inFlight >= this.parallel) {
      t.sends.rereads.push(out.index);
      return;
    }
    this.dispatch(t, out);
  }

  /** Reads a chunk again that the pass went past (its bytes were dropped): it must read as it did. */
  private reread(t: Task, pass: Pass, index: number): void {
    const q = t.sends;
    const epoch = t.epoch;
    q.reading.add(index);
    pass.fp.read(index, pass.crcs.get(index) ?? null).then(
      (r) => {
        if (t.epoch !== epoch || t.pass !== pass) return;
        q.reading.delete(index);
        if (!r.ok) {
          this.closePass(t);
          this.stop(t, { kind: 'changed', index });
          return;
        }
        this.dispatch(t, { index, crc: r.crc, data: r.data });
        this.pump();
      },
      (e: unknown) => {
        if (t.epoch !== epoch || t.pass !== pass) return;
        q.reading.delete(index);
        if (isAbort(e)) return;
        this.closePass(t);
        this.stop(t, { kind: 'unreadable', detail: describeError(e) });
      },
    );
  }

  private closePass(t: Task): void {
    t.pass?.fp.close();
    t.pass = null;
  }

  // ---- the declaration ----

  /** Whether the server holds the checksums this task's pass computed. */
  private declaredOurs(t: Task): boolean {
    const sums = t.pass?.sums;
    return !!sums && uploadOf(t.state)?.declared === sums.crc64nvme;
  }

  /** Declares the whole-file checksums the pass computed (`PATCH`), then lets the held-back chunk go. */
  private async declare(t: Task): Promise<void> {
    const pass = t.pass;
    const sums = pass?.sums;
    const upload = uploadOf(t.state);
    if (!pass || !sums || !upload || t.declaring) return;
    if (upload.declared === sums.crc64nvme) {
      this.releaseHeld(t);
      return;
    }
    t.declaring = true;
    try {
      for (let attempt = 1; ; attempt += 1) {
        try {
          const declared: DeclaredChecksums = { crc64nvme: sums.crc64nvme };
          if (sums.sha256 !== null) declared.sha256 = sums.sha256;
          const status = await this.api.declareChecksums(upload.id, declared);
          if (t.pass !== pass) return;
          this.apply(t, { type: 'declared', crc64nvme: status.crc64nvme?.toLowerCase() ?? sums.crc64nvme });
          this.releaseHeld(t);
          return;
        } catch (e) {
          // Stopped or paused meanwhile: resume declares again.
          if (t.pass !== pass || t.state.phase !== 'uploading') return;
          const kind = e instanceof ApiError ? e.kind : '';
          const status = e instanceof ApiError ? e.status : 0;
          if (status === 409 && kind === 'checksums-declared') {
            this.closePass(t);
            this.stop(t, { kind: 'checksums-conflict', detail: describeError(e) });
            return;
          }
          if (status === 422 && kind === 'sha256-mismatch') {
            // The server failed the upload.
            this.apply(t, { type: 'stopped', phase: 'failed', problem: { kind: 'sha256-mismatch', detail: describeError(e) } });
            return;
          }
          if (status === 409 || status === 404 || status === 410) {
            // No longer uploading (finished, cancelled, expired…): follow the server.
            void this.resync(t);
            return;
          }
          if (!isTransient(status) || attempt >= this.retry.maxAttempts) {
            this.stop(t, { kind: 'declaration-failed', detail: describeError(e) });
            return;
          }
        }
        await sleep(backoffDelay(attempt, this.retry));
        if (t.pass !== pass || t.state.phase !== 'uploading') return;
      }
    } finally {
      t.declaring = false;
    }
  }

  /** The checksums are declared: the held-back chunk goes (and the last one is no longer held when read). */
  private releaseHeld(t: Task): void {
    const q = t.sends;
    if (!isSending(t.state) || !this.declaredOurs(t)) return;
    q.heldIndex = null;
    const held = q.held;
    q.held = null;
    if (held) this.send(t, held);
    this.pump();
  }

  // ---- sending chunks ----

  /** Fills the free slots, taking files in turn so that every file moves: a chunk to read again, or a credit for the pass. */
  private pump(): void {
    if (this.disposed) return;
    let free = this.parallel - this.inFlight;
    const wanting = (t: Task) => isSending(t.state) && !!t.pass && (t.sends.rereads.length > 0 || t.pass.wants > 0);
    // Each file about to send (being created, or with chunks to send) gets its share of the pool:
    // a file added beside a large one starts at once, instead of after the large one's chunks.
    const contenders = this.tasks.filter((t) => t.state.phase === 'creating' || wanting(t)).length;
    const share = Math.ceil(this.parallel / Math.max(1, contenders));
    while (free > 0) {
      const ready = this.tasks.filter((t) => wanting(t) && t.slots < share);
      if (ready.length === 0) break;
      const t = ready[this.rr % ready.length];
      this.rr += 1;
      const pass = t?.pass;
      if (!t || !pass) break;
      free -= 1;
      const index = t.sends.rereads.shift();
      if (index !== undefined) {
        this.reread(t, pass, index);
      } else {
        pass.credits += 1;
        pass.fp.credit(1);
      }
    }
  }

  /** A chunk in hand goes, unless it is the held-back one and the checksums are not declared yet. */
  private dispatch(t: Task, out: Outgoing): void {
    if (!isSending(t.state)) return;
    const q = t.sends;
    if (out.index === q.heldIndex && !this.declaredOurs(t)) {
      q.held = out;
      this.notify();
      return;
    }
    this.send(t, out);
  }

  private send(t: Task, out: Outgoing): void {
    const slot: Slot = { ...out, ctrl: new AbortController(), loaded: 0 };
    t.sends.inflight.set(out.index, slot);
    void this.transmit(t, slot);
  }

  /** One attempt to send a chunk; failures are retried with the same bytes (the slot keeps them). */
  private async transmit(t: Task, slot: Slot): Promise<void> {
    const q = t.sends;
    const { index } = slot;
    const signal = slot.ctrl.signal;
    const epoch = t.epoch;
    const release = () => {
      if (q.inflight.get(index) === slot) q.inflight.delete(index);
    };
    if (!isSending(t.state) || !t.uploadUrl || signal.aborted) {
      release();
      return;
    }
    try {
      const seenToken = t.tokenFlight?.generation ?? 0;
      slot.loaded = 0;
      const res = await this.transport({
        url: `${t.uploadUrl}/${index}`,
        token: t.token ?? '',
        digest: crcContentDigest(slot.crc),
        body: slot.data,
        signal,
        timeoutMs: this.chunkTimeoutMs,
        onProgress: (loaded) => {
          slot.loaded = Math.min(loaded, slot.data.size);
          this.notify();
        },
      });
      if (signal.aborted || t.epoch !== epoch) return;
      if (res.status === 200 || res.status === 201) {
        release();
        q.attempts.delete(index);
        q.heldSince.delete(index);
        this.apply(t, { type: 'chunk-stored', index, crc: slot.crc, complete: res.receipt?.complete === true });
      } else {
        slot.loaded = 0;
        await this.onFailure(t, slot, res, seenToken);
      }
    } catch (e) {
      release();
      if (isAbort(e) || signal.aborted) return;
      this.stop(t, { kind: 'unreachable', detail: describeError(e) });
    } finally {
      this.pump();
      this.notify();
    }
  }

  /** Sends the chunk again after `delayMs`, if sending has not stopped meanwhile. */
  private retryLater(t: Task, slot: Slot, delayMs: number): void {
    const epoch = t.epoch;
    const timer = setTimeout(() => {
      t.sends.timers.delete(timer);
      if (t.epoch !== epoch) return;
      void this.transmit(t, slot);
    }, delayMs);
    t.sends.timers.add(timer);
  }

  private async onFailure(t: Task, slot: Slot, res: PutResult, seenToken: number): Promise<void> {
    const epoch = t.epoch;
    const q = t.sends;
    const { index } = slot;
    const why = res.detail ?? (res.status ? `HTTP ${res.status}` : 'network error');
    if (res.status === 0 && !this.online()) {
      this.apply(t, { type: 'notice', notice: { kind: 'offline' } });
      await this.waitOnline();
      if (t.epoch !== epoch || t.state.phase !== 'uploading') return;
      this.apply(t, { type: 'notice', notice: null });
      void this.transmit(t, slot);
      return;
    }
    const attempt = (q.attempts.get(index) ?? 0) + 1;
    q.attempts.set(index, attempt);
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
          void this.transmit(t, slot);
        } catch (e) {
          if (t.epoch !== epoch) return;
          if (e instanceof ApiError && (e.status === 409 || e.status === 404)) {
            void this.resync(t);
          } else {
            this.retryLater(t, slot, 1000);
          }
        }
        return;
      case 'retry':
        this.apply(t, {
          type: 'notice',
          notice: { kind: 'retrying', index, why, delayMs: decision.delayMs, failures: attempt, maxAttempts: this.retry.maxAttempts },
        });
        this.retryLater(t, slot, decision.delayMs);
        return;
      case 'wait':
        this.apply(t, { type: 'notice', notice: { kind: 'held', index } });
        q.attempts.set(index, attempt - 1);
        this.retryLater(t, slot, decision.delayMs);
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

  /** Stops the chunks of a task (aborts those in flight, drops their bytes and the retries) and pauses its pass; returns the new epoch. */
  private halt(t: Task): number {
    t.epoch += 1;
    t.sends.stop();
    t.meter.reset();
    if (t.pass) {
      t.pass.fp.pause();
      t.pass.credits = 0;
    }
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
    t.sends.forgetFailures();
    this.apply(t, { type: 'resumed' });
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
      this.closePass(t);
    }
    this.disposed = true;
    if (this.emitTimer !== null) clearTimeout(this.emitTimer);
    if (this.ticker !== null) clearInterval(this.ticker);
    this.listeners.clear();
  }
}

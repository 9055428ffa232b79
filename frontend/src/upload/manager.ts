// The upload engine: one task per file, a shared pool of chunk slots (bounded parallelism), hashing
// in workers, retries with backoff, pause/resume/cancel, resume after a reload, and a snapshot of
// every task for the UI (useSyncExternalStore).
//
// Memory: a chunk's bytes are read (Blob.slice) only when a slot is about to send it: the worker
// reads the slice to digest it and drops it, then the browser streams the same slice from the file
// to the network. At most `parallel` chunks are ever read at once, whatever the files' sizes.

import { ApiError, describeError } from '../api/client';
import type { CreatedUpload, UploadStatus, UploadToken } from '../api/types';
import { DEFAULT_RETRY, decideRetry, type RetryPolicy } from '../lib/backoff';
import { formatBytes, formatDuration, formatRate, percent } from '../lib/format';
import { bytesOf, chunkRange, makePlan, missingChunks, type ChunkPlan } from '../lib/plan';
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
} from '../lib/resume';
import { SingleFlight } from '../lib/singleflight';
import type { ChunkDigest, FileHashJob, FileHashOptions } from './hasher';
import { MAX_PREDIGEST_CHUNK } from './protocol';
import type { ChunkTransport, PutResult } from './transport';

/** What the engine needs from the API (ApiClient has it). */
export interface UploadApi {
  createUpload(body: { name: string; size: number; content_type?: string; sha256?: string }): Promise<CreatedUpload>;
  unfinishedUploads(): Promise<UploadStatus[]>;
  upload(id: string): Promise<UploadStatus>;
  cancelUpload(id: string): Promise<void>;
  renewUploadToken(id: string): Promise<UploadToken>;
}

/** What the engine needs from the hashing workers (Hasher has it). */
export interface HashService {
  chunk(file: Blob, start: number, end: number, signal?: AbortSignal): Promise<ChunkDigest>;
  file(file: Blob, opts: FileHashOptions): FileHashJob;
}

export type Phase =
  | 'queued' // waiting for a hashing slot
  | 'hashing' // computing the whole-file SHA-256
  | 'creating' // asking the server for an upload session
  | 'uploading'
  | 'paused'
  | 'assembling' // every chunk is there; the server verifies and assembles
  | 'completed'
  | 'failed' // the server could not assemble it (see message)
  | 'error' // the client stopped (network, file unreadable…); resume retries
  | 'cancelled'
  | 'expired'
  | 'interrupted'; // known from the server after a reload: waiting for the file again

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
  /** Whether the hash is a check that a re-selected file is the interrupted one. */
  verifying: boolean;
  /** Bytes per second of the current phase, when known. */
  speed: number | null;
  /** Seconds left, when known. */
  eta: number | null;
  totalChunks: number;
  receivedChunks: number;
  chunksInFlight: number;
  /** Why it failed or stopped. */
  message: string | null;
  /** Information: retrying, resumed, waiting for the network… */
  note: string | null;
  hasFile: boolean;
  /** Milliseconds from the first chunk sent to completion (this session). */
  uploadMs: number | null;
  /** Milliseconds from adding the file to completion (this session), hashing included. */
  totalMs: number | null;
}

export const FINISHED: ReadonlySet<Phase> = new Set(['completed', 'failed', 'cancelled', 'expired']);
const BUSY: ReadonlySet<Phase> = new Set(['queued', 'hashing', 'creating', 'uploading', 'assembling']);

interface Slot {
  index: number;
  ctrl: AbortController;
  loaded: number;
}

class Task {
  readonly key: string;
  name: string;
  size: number;
  file: File | null = null;
  lastModified: number | null = null;
  phase: Phase;
  /** Bumped by pause and cancel: continuations of older work ignore themselves. */
  epoch = 0;

  sha256: string | null = null;
  hashed = 0;
  hashOffset = 0;
  hashState: Uint8Array | null = null;
  hashJob: FileHashJob | null = null;
  /** Chunk digests computed while hashing, for chunks of `preDigestSize` bytes. */
  preDigests: (string | undefined)[] = [];
  preDigestSize: number | null = null;
  /** The whole-file SHA-256 the server was given for this upload (known after a reload). */
  serverSha: string | null = null;
  /** The SHA-256 a re-selected file must have to continue this (interrupted) upload. */
  verifySha: string | null = null;
  /** A new file that may be one of these interrupted uploads (same name and size). */
  verifyCandidates: UploadStatus[] | null = null;

  uploadId: string | null = null;
  uploadUrl: string | null = null;
  token: string | null = null;
  tokenFlight: SingleFlight<void> | null = null;
  plan: ChunkPlan | null = null;
  received = new Set<number>();
  pending: number[] = [];
  inflight = new Map<number, Slot>();
  timers = new Map<ReturnType<typeof setTimeout>, number>();
  attempts = new Map<number, number>();
  inProgressSince = new Map<number, number>();
  serverBytes = 0;
  /** Asking the server where the upload stands: send nothing meanwhile. */
  syncing = false;

  meter = new SpeedMeter();
  hashMeter = new SpeedMeter();
  lastPct = 0;
  message: string | null = null;
  note: string | null = null;
  fileId: string | null = null;
  addedAt: number;
  startedAt: number | null = null;
  finishedAt: number | null = null;

  constructor(key: string, name: string, size: number, phase: Phase, now: number) {
    this.key = key;
    this.name = name;
    this.size = size;
    this.phase = phase;
    this.addedAt = now;
  }

  uploadedBytes(): number {
    if (!this.plan) return this.serverBytes;
    let b = bytesOf(this.plan, this.received);
    for (const s of this.inflight.values()) b += s.loaded;
    // Listings give only the byte count, not the chunk indices.
    return Math.min(Math.max(b, this.serverBytes), this.size);
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

function isAbort(e: unknown): boolean {
  return (e instanceof DOMException || e instanceof Error) && e.name === 'AbortError';
}

function defaultResolve(url: string): string {
  if (typeof location === 'undefined') return url;
  return new URL(url, location.href).toString().replace(/\/$/, '');
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

  /** True while anything is being hashed, created, sent or assembled. */
  get busy(): boolean {
    return this.tasks.some((t) => BUSY.has(t.phase) && t.phase !== 'assembling');
  }

  /** Chunks being read or sent right now, over all files. */
  get inFlight(): number {
    return this.tasks.reduce((n, t) => n + t.inflight.size, 0);
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
    const active = this.tasks.some((t) => t.phase === 'uploading' || t.phase === 'hashing');
    if (active && this.ticker === null) {
      this.ticker = setInterval(() => this.notify(), 500);
    } else if (!active && this.ticker !== null) {
      clearInterval(this.ticker);
      this.ticker = null;
    }
    for (const fn of this.listeners) fn();
  }

  private view(t: Task, now: number): UploadView {
    const uploaded = t.uploadedBytes();
    let speed: number | null = null;
    let eta: number | null = null;
    if (t.phase === 'uploading') {
      t.meter.record(now, uploaded);
      speed = t.meter.rate(now);
      eta = speed && speed > 0 ? (t.size - uploaded) / speed : null;
      const pct = percent(uploaded, t.size);
      const milestone = crossedMilestone(t.lastPct, pct);
      if (milestone !== null) this.announce(`${t.name}: ${milestone}% uploaded`);
      t.lastPct = pct;
    } else if (t.phase === 'hashing') {
      t.hashMeter.record(now, t.hashed);
      speed = t.hashMeter.rate(now);
      eta = speed && speed > 0 ? (t.size - t.hashed) / speed : null;
    }
    return {
      key: t.key,
      name: t.name,
      size: t.size,
      phase: t.phase,
      uploadId: t.uploadId,
      fileId: t.fileId,
      uploaded,
      hashed: t.hashed,
      verifying: t.verifySha !== null || t.verifyCandidates !== null,
      speed,
      eta,
      totalChunks: t.plan?.totalChunks ?? 0,
      receivedChunks: t.received.size,
      chunksInFlight: t.inflight.size,
      message: t.message,
      note: t.note,
      hasFile: t.file !== null,
      uploadMs: t.startedAt !== null && t.finishedAt !== null ? t.finishedAt - t.startedAt : null,
      totalMs: t.finishedAt !== null ? t.finishedAt - t.addedAt : null,
    };
  }

  private setPhase(t: Task, phase: Phase, say?: string): void {
    if (t.phase === phase) return;
    t.phase = phase;
    if (say) this.announce(`${t.name}: ${say}`);
    this.notify(true);
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
      if (this.tasks.some((t) => t.uploadId === u.upload_id)) continue;
      const t = new Task(this.newKey(), u.name, u.size, 'interrupted', this.now());
      t.uploadId = u.upload_id;
      this.applyPlan(t, u);
      this.tasks.push(t);
      if (u.state === 'assembling') {
        t.phase = 'assembling';
        t.note = 'Verifying and assembling on the server…';
        void this.poll(t);
      }
    }
    this.notify(true);
  }

  /** Adds files picked or dropped by the user; each re-selected interrupted file resumes its upload. */
  addFiles(files: Iterable<File>): void {
    const records = loadRecords(this.storage);
    for (const file of files) {
      const interrupted = this.tasks.filter((t) => t.phase === 'interrupted' && !t.file && t.uploadId);
      const statuses = interrupted.map((t) => this.statusOf(t));
      const match = matchFile(file, statuses, records);
      if (match.kind === 'resume') {
        const target = interrupted.find((t) => t.uploadId === match.upload.upload_id);
        if (target) {
          this.attachFile(target.key, file);
          continue;
        }
      }
      const t = new Task(this.newKey(), file.name, file.size, 'queued', this.now());
      t.file = file;
      t.lastModified = file.lastModified;
      if (file.size === 0) {
        t.phase = 'error';
        t.message = 'This file is empty: there is nothing to upload.';
        t.file = null;
      } else if (match.kind === 'verify') {
        t.verifyCandidates = match.candidates;
        t.note = 'Checking whether this is an interrupted upload…';
      }
      this.tasks.push(t);
      if (t.phase === 'queued') this.announce(`${file.name}: added`);
    }
    this.pumpHashing();
    this.notify(true);
  }

  /** Gives an interrupted upload its file again. Returns false (and says why) if it is another file. */
  attachFile(key: string, file: File): boolean {
    const t = this.find(key);
    if (!t || t.phase !== 'interrupted' || !t.uploadId) return false;
    const status = this.statusOf(t);
    const wrong = wrongFileReason(file, status);
    if (wrong) {
      t.message = wrong;
      this.notify(true);
      return false;
    }
    t.file = file;
    t.message = null;
    t.addedAt = this.now();
    const recorded = loadRecords(this.storage)[t.uploadId];
    t.lastModified = file.lastModified;
    if (recorded?.lastModified === file.lastModified || !t.serverSha) {
      t.verifySha = null;
      this.announce(`${t.name}: resuming`);
      void this.syncAndUpload(t);
    } else {
      // Same name and size but not known to be the same file: compare contents first.
      t.verifySha = t.serverSha;
      t.phase = 'queued';
      t.note = 'Checking that this is the same file…';
      this.pumpHashing();
    }
    this.notify(true);
    return true;
  }

  private statusOf(t: Task): UploadStatus {
    return {
      upload_id: t.uploadId ?? '',
      name: t.name,
      size: t.size,
      content_type: '',
      sha256: t.serverSha ?? undefined,
      chunk_size: t.plan?.chunkSize ?? 0,
      total_chunks: t.plan?.totalChunks ?? 0,
      state: 'uploading',
      received_chunks: [...t.received],
      bytes_received: t.serverBytes,
      created_at: '',
      expires_at: '',
    };
  }

  private applyPlan(t: Task, u: UploadStatus): void {
    t.plan = makePlan(u.size, u.chunk_size, u.total_chunks);
    t.received = new Set(u.received_chunks);
    t.serverBytes = u.bytes_received;
    if (u.sha256) t.serverSha = u.sha256;
  }

  // ---- hashing ----

  private pumpHashing(): void {
    let running = this.tasks.filter((t) => t.phase === 'hashing').length;
    for (const t of this.tasks) {
      if (running >= this.hashParallel) break;
      if (t.phase === 'queued' && t.file) {
        running += 1;
        this.startHash(t);
      }
    }
  }

  private startHash(t: Task): void {
    const file = t.file;
    if (!file) return;
    this.setPhase(t, 'hashing');
    t.hashMeter.reset();
    const epoch = t.epoch;
    // The chunk size of the upload when known (resuming), else the size the server planned last.
    if (t.hashOffset === 0) t.preDigestSize = t.plan?.chunkSize ?? this.guessChunkSize();
    const job = this.hasher.file(file, {
      onProgress: (bytes) => {
        if (t.epoch === epoch) {
          t.hashed = bytes;
          this.notify();
        }
      },
      onDigests: (first, digests) => {
        digests.forEach((d, i) => (t.preDigests[first + i] = d));
      },
      start: t.hashOffset,
      state: t.hashState,
      chunkSize: t.preDigestSize,
    });
    t.hashJob = job;
    job.result.then(
      (r) => {
        if (t.hashJob === job) t.hashJob = null;
        if (r.kind === 'paused') {
          t.hashOffset = r.offset;
          t.hashState = r.state;
          t.hashed = r.offset;
        } else if (t.phase !== 'cancelled' && t.file === file) {
          t.sha256 = r.hex;
          t.hashed = t.size;
          if (t.epoch === epoch) void this.afterHash(t);
        }
        this.pumpHashing();
        this.notify();
      },
      (e: unknown) => {
        if (t.hashJob === job) t.hashJob = null;
        this.pumpHashing();
        if (isAbort(e) || t.epoch !== epoch) return;
        this.stop(t, 'error', `Could not read the file: ${describeError(e)}`);
      },
    );
  }

  private async afterHash(t: Task): Promise<void> {
    const sha = t.sha256;
    if (!sha || !t.file) return;
    if (t.verifySha !== null) {
      if (sha.toLowerCase() === t.verifySha.toLowerCase()) {
        t.verifySha = null;
        t.note = null;
        if (t.uploadId) this.remember(t.uploadId, t.file);
        this.announce(`${t.name}: same file, resuming`);
        await this.syncAndUpload(t);
      } else {
        t.file = null;
        t.sha256 = null;
        t.hashed = 0;
        t.hashOffset = 0;
        t.hashState = null;
        t.note = null;
        t.message = 'The selected file’s content is not the one of this upload. Choose the original file to resume.';
        this.setPhase(t, 'interrupted', 'a different file was selected');
      }
      return;
    }
    if (t.verifyCandidates) {
      const found = pickBySha(t.verifyCandidates, sha);
      t.verifyCandidates = null;
      t.note = null;
      const target = found && this.tasks.find((x) => x.uploadId === found.upload_id && x.phase === 'interrupted' && !x.file);
      if (target) {
        // It is the interrupted upload: continue that one, drop this row.
        target.file = t.file;
        target.lastModified = t.file.lastModified;
        target.sha256 = sha;
        target.verifySha = null;
        target.message = null;
        target.addedAt = t.addedAt;
        if (target.uploadId) this.remember(target.uploadId, t.file);
        this.tasks = this.tasks.filter((x) => x !== t);
        this.announce(`${t.name}: same file as an interrupted upload, resuming`);
        await this.syncAndUpload(target);
        return;
      }
    }
    await this.create(t);
  }

  // ---- creating and syncing ----

  private async create(t: Task): Promise<void> {
    const file = t.file;
    const sha = t.sha256;
    if (!file || !sha) return;
    this.setPhase(t, 'creating');
    const epoch = t.epoch;
    let created: CreatedUpload;
    try {
      created = await this.api.createUpload({
        name: file.name,
        size: file.size,
        content_type: SAFE_MEDIA_TYPE.test(file.type) ? file.type : undefined,
        sha256: sha,
      });
    } catch (e) {
      if (t.epoch !== epoch) return;
      const permanent = e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
      this.stop(t, permanent ? 'failed' : 'error', `Could not start the upload: ${describeError(e)}`);
      return;
    }
    if (t.phase === 'cancelled') {
      // Cancelled while the server was creating it: release it there too.
      void this.api.cancelUpload(created.upload_id).catch(() => undefined);
      return;
    }
    t.uploadId = created.upload_id;
    t.uploadUrl = this.resolveUrl(created.upload_url);
    t.token = created.upload_token;
    t.tokenFlight = this.tokenFlightFor(t);
    t.plan = makePlan(file.size, created.chunk_size, created.total_chunks);
    this.learnChunkSize(created.chunk_size, file.size);
    if (t.preDigestSize !== created.chunk_size) t.preDigests = [];
    t.received = new Set();
    t.pending = missingChunks(t.plan, t.received);
    this.remember(created.upload_id, file);
    if (t.epoch !== epoch) return; // paused meanwhile: resume continues from here
    this.startUploading(t);
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
      if (!t.uploadId) throw new Error('no upload');
      const renewed = await this.api.renewUploadToken(t.uploadId);
      t.token = renewed.upload_token;
      if (renewed.upload_url) t.uploadUrl = this.resolveUrl(renewed.upload_url);
    });
  }

  /** Asks the server where the upload stands and continues from there (resume, retry). */
  private async syncAndUpload(t: Task): Promise<void> {
    if (!t.uploadId) return;
    const epoch = t.epoch;
    t.message = null;
    t.note = 'Checking what the server already has…';
    t.syncing = true;
    this.setPhase(t, 'uploading');
    this.notify(true);
    let status: UploadStatus;
    try {
      status = await this.api.upload(t.uploadId);
      if (t.epoch !== epoch) return;
      if (status.state === 'uploading' && (!t.token || !t.uploadUrl)) {
        t.tokenFlight ??= this.tokenFlightFor(t);
        await t.tokenFlight.run();
        if (t.epoch !== epoch) return;
      }
    } catch (e) {
      t.syncing = false;
      if (t.epoch !== epoch) return;
      if (e instanceof ApiError && e.status === 409) {
        // The token was refused: the upload left the uploading state meanwhile.
        return this.syncAndUpload(t);
      }
      this.stop(t, 'error', `Could not reach the server: ${describeError(e)}`);
      return;
    }
    t.syncing = false;
    t.note = null;
    this.applyStatus(t, status, true);
  }

  /** Moves a task to wherever the server says its upload is. */
  private applyStatus(t: Task, s: UploadStatus, resuming: boolean): void {
    switch (s.state) {
      case 'uploading': {
        this.applyPlan(t, s);
        t.verifySha = null;
        const plan = t.plan;
        if (!plan) return;
        t.pending = missingChunks(plan, t.received).filter((i) => !t.inflight.has(i));
        if (resuming && t.received.size > 0) {
          t.note = `Resumed: ${t.received.size} of ${plan.totalChunks} chunks were already on the server.`;
        }
        this.startUploading(t);
        return;
      }
      case 'assembling':
        this.goAssembling(t);
        return;
      case 'completed':
        this.complete(t, s.file_id ?? null);
        return;
      case 'failed':
        this.stop(t, 'failed', s.error ? `The server could not assemble the file: ${s.error}` : 'The server could not assemble the file.');
        return;
      case 'cancelled':
        this.stop(t, 'cancelled', 'The upload was cancelled.');
        return;
      case 'expired':
        this.stop(t, 'expired', 'The upload expired on the server before it was finished. Add the file again to start over.');
        return;
      default:
        this.stop(t, 'error', `The server reports an unknown state “${s.state}”.`);
    }
  }

  // ---- sending chunks ----

  private startUploading(t: Task): void {
    if (!t.plan || !t.file) return;
    if (t.phase !== 'uploading') this.setPhase(t, 'uploading', 'uploading');
    t.startedAt ??= this.now();
    t.meter.reset();
    if (t.pending.length === 0 && t.inflight.size === 0 && t.timers.size === 0) {
      this.goAssembling(t);
      return;
    }
    this.pump();
  }

  /** Fills the free chunk slots, taking files in turn so that every file moves. */
  private pump(): void {
    if (this.disposed) return;
    let free = this.parallel - this.inFlight;
    while (free > 0) {
      const ready = this.tasks.filter((t) => t.phase === 'uploading' && !t.syncing && t.file && t.pending.length > 0);
      if (ready.length === 0) break;
      const t = ready[this.rr % ready.length];
      this.rr += 1;
      const index = t?.pending.shift();
      if (!t || index === undefined) break;
      free -= 1;
      void this.sendChunk(t, index);
    }
  }

  private async sendChunk(t: Task, index: number): Promise<void> {
    const file = t.file;
    const plan = t.plan;
    if (!file || !plan || !t.uploadUrl) return;
    const slot: Slot = { index, ctrl: new AbortController(), loaded: 0 };
    t.inflight.set(index, slot);
    const signal = slot.ctrl.signal;
    const release = () => {
      if (t.inflight.get(index) === slot) t.inflight.delete(index);
    };
    try {
      const range = chunkRange(plan, index);
      const precomputed = t.preDigestSize === plan.chunkSize ? t.preDigests[index] : undefined;
      const digest = precomputed ?? (await this.hasher.chunk(file, range.start, range.end, signal)).digest;
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
        t.received.add(index);
        t.attempts.delete(index);
        t.inProgressSince.delete(index);
        if (t.note?.startsWith('Chunk') || t.note?.startsWith('Waiting') || t.note?.startsWith('Offline')) t.note = null;
        if (t.received.size === plan.totalChunks || res.receipt?.complete) {
          this.goAssembling(t);
        }
      } else {
        await this.onFailure(t, index, res, seenToken);
      }
    } catch (e) {
      release();
      if (isAbort(e) || signal.aborted) return;
      this.stop(t, 'error', `Could not read the file: ${describeError(e)}`);
    } finally {
      this.pump();
      this.notify();
    }
  }

  private requeueLater(t: Task, index: number, delayMs: number): void {
    const epoch = t.epoch;
    const timer = setTimeout(() => {
      t.timers.delete(timer);
      if (t.epoch !== epoch || t.phase !== 'uploading') return;
      t.pending.unshift(index);
      this.pump();
    }, delayMs);
    t.timers.set(timer, index);
  }

  private async onFailure(t: Task, index: number, res: PutResult, seenToken: number): Promise<void> {
    const epoch = t.epoch;
    const label = `Chunk ${index + 1} of ${t.plan?.totalChunks ?? '?'}`;
    const why = res.detail ?? (res.status ? `HTTP ${res.status}` : 'network error');
    if (res.status === 0 && !this.online()) {
      t.note = 'Offline: waiting for the network to come back…';
      this.notify();
      await this.waitOnline();
      if (t.epoch !== epoch || t.phase !== 'uploading') return;
      t.note = null;
      t.pending.unshift(index);
      return;
    }
    const attempt = (t.attempts.get(index) ?? 0) + 1;
    t.attempts.set(index, attempt);
    // A digest mismatch may mean the file changed since it was hashed: digest it afresh.
    if (res.status === 422) t.preDigests[index] = undefined;
    let since = 0;
    if (res.status === 409 && res.problemType?.endsWith('/chunk-in-progress')) {
      since = t.inProgressSince.get(index) ?? this.now();
      t.inProgressSince.set(index, since);
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
          t.pending.unshift(index);
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
        t.note = `${label} failed (${why}); retrying in ${formatDuration(decision.delayMs / 1000)} (attempt ${attempt + 1} of ${this.retry.maxAttempts}).`;
        this.requeueLater(t, index, decision.delayMs);
        return;
      case 'wait':
        t.note = `Waiting for ${label.toLowerCase()}, still held by an earlier request…`;
        t.attempts.set(index, attempt - 1);
        this.requeueLater(t, index, decision.delayMs);
        return;
      case 'gone':
        void this.resync(t, 'The upload was cancelled or has expired on the server.');
        return;
      case 'fail':
        if (res.status === 409 || res.status === 404 || res.status === 403) {
          // Maybe it is finished or gone: ask before calling it an error.
          void this.resync(t, `${label} was refused: ${why}.`);
          return;
        }
        this.stop(
          t,
          'error',
          decision.reason === 'attempts'
            ? `${label} failed ${attempt} times (${why}). Resume to try again.`
            : `${label} was refused: ${why}.`,
        );
    }
  }

  /** Stops sending and follows the server's state (or stops with `fallback` when it is still uploading). */
  private async resync(t: Task, fallback?: string): Promise<void> {
    if (!t.uploadId) return;
    const epoch = this.halt(t);
    t.syncing = true;
    try {
      const s = await this.api.upload(t.uploadId);
      t.syncing = false;
      if (t.epoch !== epoch) return;
      if (s.state === 'uploading' && fallback) {
        this.stop(t, 'error', fallback);
      } else {
        t.tokenFlight = this.tokenFlightFor(t);
        this.applyStatus(t, s, false);
      }
    } catch (e) {
      t.syncing = false;
      if (t.epoch !== epoch) return;
      this.stop(t, 'error', fallback ?? `Could not reach the server: ${describeError(e)}`);
    }
  }

  // ---- assembly ----

  private goAssembling(t: Task): void {
    if (t.phase === 'assembling' || FINISHED.has(t.phase)) return;
    this.halt(t);
    t.note = 'Verifying and assembling on the server…';
    this.setPhase(t, 'assembling', 'all chunks sent, the server is assembling the file');
    void this.poll(t);
  }

  private async poll(t: Task): Promise<void> {
    const epoch = t.epoch;
    let delay = 200;
    let failures = 0;
    while (!this.disposed && t.epoch === epoch && t.phase === 'assembling' && t.uploadId) {
      try {
        const s = await this.api.upload(t.uploadId);
        failures = 0;
        if (t.epoch !== epoch || t.phase !== 'assembling') return;
        if (s.state === 'uploading') {
          // The server is missing chunks after all: send them.
          t.phase = 'uploading';
          this.applyStatus(t, s, false);
          return;
        }
        if (s.state !== 'assembling') {
          this.applyStatus(t, s, false);
          return;
        }
      } catch (e) {
        failures += 1;
        if (e instanceof ApiError && e.status > 0 && e.status < 500 && e.status !== 408 && e.status !== 429) {
          this.stop(t, 'error', `Could not follow the assembly: ${describeError(e)}`);
          return;
        }
        if (failures > 30) {
          this.stop(t, 'error', `Could not follow the assembly: ${describeError(e)}`);
          return;
        }
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
  }

  private complete(t: Task, fileId: string | null): void {
    this.halt(t);
    t.fileId = fileId;
    t.finishedAt = this.now();
    t.message = null;
    const secs = t.startedAt !== null ? (t.finishedAt - t.startedAt) / 1000 : null;
    t.note =
      secs !== null && secs > 0
        ? `Uploaded ${formatBytes(t.size)} in ${formatDuration(secs)} (${formatRate(t.size / secs)}).`
        : 'Uploaded.';
    if (t.plan) for (let i = 0; i < t.plan.totalChunks; i += 1) t.received.add(i);
    t.serverBytes = t.size;
    if (t.uploadId) forgetUpload(this.storage, t.uploadId);
    this.setPhase(t, 'completed', 'upload complete');
    if (fileId) this.onCompleted(fileId);
  }

  // ---- stopping ----

  /** Stops all work of a task (aborts its chunks, puts them back in the queue); returns the new epoch. */
  private halt(t: Task): number {
    t.epoch += 1;
    t.syncing = false;
    for (const slot of t.inflight.values()) {
      slot.ctrl.abort();
      t.pending.unshift(slot.index);
    }
    t.inflight.clear();
    for (const [timer, index] of t.timers) {
      clearTimeout(timer);
      t.pending.unshift(index);
    }
    t.timers.clear();
    if (t.plan) {
      const plan = t.plan;
      t.pending = [...new Set(t.pending)].filter((i) => !t.received.has(i) && i < plan.totalChunks).sort((a, b) => a - b);
    }
    t.meter.reset();
    // Freed slots go to other files: after the caller has moved this task out of `uploading`.
    queueMicrotask(() => this.pump());
    return t.epoch;
  }

  private stop(t: Task, phase: Phase, message: string): void {
    this.halt(t);
    if (t.hashJob) {
      t.hashJob.pause();
    }
    t.message = message;
    t.note = null;
    if (FINISHED.has(phase) && t.uploadId) forgetUpload(this.storage, t.uploadId);
    if (phase === 'completed' || phase === 'failed' || phase === 'cancelled' || phase === 'expired') t.finishedAt ??= this.now();
    this.setPhase(t, phase, phase === 'error' || phase === 'failed' ? `stopped: ${message}` : phase);
    this.notify(true);
  }

  // ---- the user's controls ----

  canPause(v: UploadView): boolean {
    return v.phase === 'queued' || v.phase === 'hashing' || v.phase === 'creating' || v.phase === 'uploading';
  }

  canResume(v: UploadView): boolean {
    return (v.phase === 'paused' || v.phase === 'error') && v.hasFile;
  }

  canCancel(v: UploadView): boolean {
    return !FINISHED.has(v.phase) && v.phase !== 'assembling' && !(v.phase === 'error' && !v.uploadId && !v.hasFile);
  }

  pause(key: string): void {
    const t = this.find(key);
    if (!t || !this.canPause(this.view(t, this.now()))) return;
    this.halt(t);
    t.hashJob?.pause();
    t.note = null;
    this.setPhase(t, 'paused', 'paused');
    this.pumpHashing();
  }

  resume(key: string): void {
    const t = this.find(key);
    if (!t || (t.phase !== 'paused' && t.phase !== 'error') || !t.file) return;
    t.epoch += 1;
    t.message = null;
    t.note = null;
    t.attempts.clear();
    t.inProgressSince.clear();
    if (!t.sha256 && (!t.uploadId || t.verifySha !== null)) {
      this.setPhase(t, 'queued', 'resumed');
      this.pumpHashing();
    } else if (!t.uploadId) {
      void this.afterHash(t);
    } else {
      this.announce(`${t.name}: resumed`);
      void this.syncAndUpload(t);
    }
    this.notify(true);
  }

  async cancel(key: string): Promise<void> {
    const t = this.find(key);
    if (!t || FINISHED.has(t.phase) || t.phase === 'assembling') return;
    this.halt(t);
    t.hashJob?.cancel();
    t.hashJob = null;
    const id = t.uploadId;
    t.note = null;
    t.message = null;
    this.setPhase(t, 'cancelled', 'cancelled');
    this.pumpHashing();
    if (!id) return;
    forgetUpload(this.storage, id);
    try {
      await this.api.cancelUpload(id);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return;
      if (e instanceof ApiError && e.status === 409) {
        // Too late: it is assembling or complete. Follow it.
        t.phase = 'uploading';
        void this.resync(t);
        return;
      }
      t.message = `The server may still hold the upload: ${describeError(e)}`;
      this.notify(true);
    }
  }

  /** Forgets a finished row (the upload itself is not touched). */
  remove(key: string): void {
    const t = this.find(key);
    if (!t || !(FINISHED.has(t.phase) || (t.phase === 'error' && !t.uploadId))) return;
    this.tasks = this.tasks.filter((x) => x !== t);
    this.notify(true);
  }

  pauseAll(): void {
    for (const t of this.tasks) this.pause(t.key);
  }

  resumeAll(): void {
    for (const t of this.tasks) if (t.phase === 'paused') this.resume(t.key);
  }

  async cancelAll(): Promise<void> {
    await Promise.all(
      this.tasks.filter((t) => !FINISHED.has(t.phase) && t.phase !== 'assembling').map((t) => this.cancel(t.key)),
    );
  }

  clearFinished(): void {
    this.tasks = this.tasks.filter((t) => !FINISHED.has(t.phase) && !(t.phase === 'error' && !t.uploadId && !t.file));
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

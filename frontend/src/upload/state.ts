// The state of one file's upload, as data. Contract:
//  - `TaskState` is a union of phases; each phase carries only what is meaningful in it (a paused
//    task keeps the `Work` that resume continues, a completed one its file id and times…).
//  - `reduce(state, event, now)` is the only way a state changes. It is pure: it never reads the
//    clock (`now` is given), storage or the network, and it returns the very same object when the
//    event means nothing in that state, so callers can tell "ignored" from "moved".
//  - Every text the UI shows for a task (`describe`, `announcement`) is derived from the state;
//    nothing is ever read back from a text.
// The engine (manager.ts) owns what is not data: chunks in flight, timers, hashing workers, upload
// tokens. It feeds `reduce` what happened and starts or stops work by the phase a task enters.

import type { UploadStatus } from '../api/types';
import { formatBytes, formatDuration, formatRate } from '../lib/format';
import { makePlan, type ChunkPlan } from '../lib/plan';
import type { UnfinishedUpload } from '../lib/resume';

// ---- the parts ----

/** The server's upload session, as this tab knows it. */
export interface ServerUpload {
  readonly id: string;
  readonly plan: ChunkPlan;
  /** The chunks the server has confirmed. */
  readonly received: ReadonlySet<number>;
  /** The bytes the server reported: listings give only this count, not the chunk indices. */
  readonly reportedBytes: number;
  /** The whole-file SHA-256 the server was given, when known (it is after a reload). */
  readonly sha256: string | null;
}

/** The whole-file SHA-256 computed so far: the hasher continues from `offset` with its `saved` state. */
export interface HashProgress {
  readonly bytes: number;
  readonly offset: number;
  readonly saved: Uint8Array | null;
}

export const NO_HASH: HashProgress = { bytes: 0, offset: 0, saved: null };

/** Why a file is hashed besides uploading it: to tell whether it continues an interrupted upload. */
export type Check =
  /** Re-selected for this interrupted upload, not known to be the same file: its SHA-256 must be `sha256`. */
  | { readonly kind: 'same-file'; readonly upload: ServerUpload; readonly sha256: string }
  /** A new file of the name and size of these interrupted uploads: it continues the one of its SHA-256, if any. */
  | { readonly kind: 'candidates'; readonly candidates: readonly UnfinishedUpload[] };

/** What a task is doing or, paused or stopped by an error, what resume continues. */
export type Work = HashWork | HashedWork | UploadWork;
export interface HashWork {
  readonly step: 'hash';
  readonly hash: HashProgress;
  readonly check: Check | null;
}
export interface HashedWork {
  readonly step: 'hashed';
  readonly sha256: string;
  readonly check: Check | null;
}
export interface UploadWork {
  readonly step: 'upload';
  readonly upload: ServerUpload;
}

/** What the engine knows that shows as a note while chunks go. */
export type Notice =
  /** `had` chunks were on the server already when this session resumed the upload. */
  | { readonly kind: 'resumed'; readonly had: number }
  /** Chunk `index` failed `failures` times so far; it is sent again after `delayMs`. */
  | { readonly kind: 'retrying'; readonly index: number; readonly why: string; readonly delayMs: number; readonly failures: number; readonly maxAttempts: number }
  /** Chunk `index` is still held on the server by an earlier request. */
  | { readonly kind: 'held'; readonly index: number }
  | { readonly kind: 'offline' };

/** Why a task stopped, or why the user's choice was refused. `detail` is a reason from elsewhere, already in words. */
export type Problem =
  | { readonly kind: 'empty-file' }
  | { readonly kind: 'unreadable'; readonly detail: string }
  | { readonly kind: 'not-started'; readonly detail: string }
  | { readonly kind: 'unreachable'; readonly detail: string }
  | { readonly kind: 'chunk-failed'; readonly index: number; readonly failures: number; readonly why: string }
  | { readonly kind: 'chunk-refused'; readonly index: number; readonly why: string }
  | { readonly kind: 'gone' }
  | { readonly kind: 'unfollowed'; readonly detail: string }
  | { readonly kind: 'assembly-failed'; readonly detail: string | null }
  | { readonly kind: 'unknown-state'; readonly state: string }
  | { readonly kind: 'wrong-file'; readonly reason: string }
  | { readonly kind: 'different-content' }
  | { readonly kind: 'cancelled-on-server' }
  | { readonly kind: 'cancel-unconfirmed'; readonly detail: string };

// ---- the phases ----

interface Row {
  readonly key: string;
  readonly name: string;
  readonly size: number;
  /** When the file was added or re-selected (this session). */
  readonly addedAt: number;
  /** When the first chunk was sent (this session). */
  readonly startedAt: number | null;
}

/** Waiting for a hashing slot. */
export interface Queued extends Row {
  readonly phase: 'queued';
  readonly file: File;
  readonly work: HashWork;
}
/** Computing the whole-file SHA-256. */
export interface Hashing extends Row {
  readonly phase: 'hashing';
  readonly file: File;
  readonly work: HashWork;
}
/** Asking the server for an upload session. */
export interface Creating extends Row {
  readonly phase: 'creating';
  readonly file: File;
  readonly sha256: string;
}
export interface Uploading extends Row {
  readonly phase: 'uploading';
  readonly file: File;
  readonly work: UploadWork;
  /**
   * Asking the server where the upload stands, so nothing is sent: on resume (`resume`), or after
   * a refusal that may mean it is finished or gone (`follow`). Null while chunks go.
   */
  readonly syncing: 'resume' | 'follow' | null;
  readonly notice: Notice | null;
}
export interface Paused extends Row {
  readonly phase: 'paused';
  readonly file: File;
  readonly work: Work;
}
/** Every chunk is there: the server verifies and assembles. */
export interface Assembling extends Row {
  readonly phase: 'assembling';
  /** Null when only the server's listing is known (after a reload). */
  readonly file: File | null;
  readonly work: UploadWork;
}
export interface Completed extends Row {
  readonly phase: 'completed';
  readonly upload: ServerUpload;
  readonly fileId: string | null;
  readonly finishedAt: number;
}
/** The server could not assemble it, or refused to start it. */
export interface Failed extends Row {
  readonly phase: 'failed';
  readonly upload: ServerUpload | null;
  readonly problem: Problem;
  readonly finishedAt: number;
}
/** The client stopped (network, file unreadable…): Retry continues `work` when there is a file. */
export interface Stopped extends Row {
  readonly phase: 'error';
  readonly file: File | null;
  readonly work: Work | null;
  readonly problem: Problem;
}
export interface Cancelled extends Row {
  readonly phase: 'cancelled';
  readonly upload: ServerUpload | null;
  readonly problem: Problem | null;
  readonly finishedAt: number;
}
export interface Expired extends Row {
  readonly phase: 'expired';
  readonly upload: ServerUpload;
  readonly finishedAt: number;
}
/** Known from the server after a reload: waiting for the file again. */
export interface Interrupted extends Row {
  readonly phase: 'interrupted';
  readonly upload: ServerUpload;
  /** Why the last file offered for it was refused. */
  readonly problem: Problem | null;
}

export type TaskState =
  | Queued
  | Hashing
  | Creating
  | Uploading
  | Paused
  | Assembling
  | Completed
  | Failed
  | Stopped
  | Cancelled
  | Expired
  | Interrupted;

export type Phase = TaskState['phase'];

export const FINISHED: ReadonlySet<Phase> = new Set<Phase>(['completed', 'failed', 'cancelled', 'expired']);

// ---- new tasks ----

/** A file the user added; `candidates` are the interrupted uploads it may be (same name and size). */
export function added(key: string, file: File, now: number, candidates: readonly UnfinishedUpload[] | null): TaskState {
  const row: Row = { key, name: file.name, size: file.size, addedAt: now, startedAt: null };
  if (file.size === 0) return { ...row, phase: 'error', file: null, work: null, problem: { kind: 'empty-file' } };
  const check: Check | null = candidates ? { kind: 'candidates', candidates } : null;
  return { ...row, phase: 'queued', file, work: { step: 'hash', hash: NO_HASH, check } };
}

/** An unfinished upload the server lists (after a reload). */
export function listed(key: string, status: UploadStatus, now: number): TaskState {
  const row: Row = { key, name: status.name, size: status.size, addedAt: now, startedAt: null };
  const upload = uploadFromStatus(status);
  if (status.state === 'assembling') return { ...row, phase: 'assembling', file: null, work: { step: 'upload', upload } };
  return { ...row, phase: 'interrupted', upload, problem: null };
}

/** The server's status as a `ServerUpload`; what it leaves out (the SHA-256) is kept from `known`. */
export function uploadFromStatus(status: UploadStatus, known: ServerUpload | null = null): ServerUpload {
  return {
    id: status.upload_id,
    plan: makePlan(status.size, status.chunk_size, status.total_chunks),
    received: new Set(status.received_chunks),
    reportedBytes: status.bytes_received,
    sha256: status.sha256 ?? known?.sha256 ?? null,
  };
}

// ---- what a state holds, whatever its phase ----

export function fileOf(s: TaskState): File | null {
  return 'file' in s ? s.file : null;
}

/** The work resume (or cancel, or a stop) deals with; null once finished. */
export function workOf(s: TaskState): Work | null {
  switch (s.phase) {
    case 'creating':
      return { step: 'hashed', sha256: s.sha256, check: null };
    case 'interrupted':
      return { step: 'upload', upload: s.upload };
    case 'queued':
    case 'hashing':
    case 'uploading':
    case 'paused':
    case 'assembling':
    case 'error':
      return s.work;
    default:
      return null;
  }
}

export function uploadOf(s: TaskState): ServerUpload | null {
  if ('upload' in s) return s.upload;
  const work = workOf(s);
  if (!work) return null;
  if (work.step === 'upload') return work.upload;
  return work.check?.kind === 'same-file' ? work.check.upload : null;
}

export function checkOf(s: TaskState): Check | null {
  const work = workOf(s);
  return work && work.step !== 'upload' ? work.check : null;
}

/** Bytes of the whole-file SHA-256 computed (the size once it is known, 0 when it is not needed). */
export function hashedBytes(s: TaskState): number {
  const work = workOf(s);
  if (work?.step === 'hash') return work.hash.bytes;
  return work?.step === 'hashed' ? s.size : 0;
}

export function finishedAtOf(s: TaskState): number | null {
  return 'finishedAt' in s ? s.finishedAt : null;
}

// ---- what can be done ----

/** Work in this tab that pause stops (and that leaving the page would interrupt). */
export function isWorking(s: TaskState): s is Queued | Hashing | Creating | Uploading {
  return s.phase === 'queued' || s.phase === 'hashing' || s.phase === 'creating' || s.phase === 'uploading';
}

/** Chunks may go. */
export function isSending(s: TaskState): boolean {
  return s.phase === 'uploading' && s.syncing === null;
}

export const canPause = isWorking;

/** What resume continues: paused or stopped work, with the file to read. */
function resumable(s: TaskState): { file: File; work: Work } | null {
  return (s.phase === 'paused' || s.phase === 'error') && s.file && s.work ? { file: s.file, work: s.work } : null;
}

export function canResume(s: TaskState): boolean {
  return resumable(s) !== null;
}

/** Rows that may leave the list: finished, or stopped with nothing to continue (no upload, no file). */
export function canRemove(s: TaskState): boolean {
  return FINISHED.has(s.phase) || (s.phase === 'error' && s.file === null && uploadOf(s) === null);
}

/** Whether the UI offers Cancel (`reduce` also cancels a row that can only be removed: see 'cancelled'). */
export function canCancel(s: TaskState): boolean {
  return s.phase !== 'assembling' && !canRemove(s);
}

// ---- the transitions ----

/** How a re-selected file is known to be the one of an interrupted upload. */
export type Evidence = 'record' | 'content' | 'none';

export type TaskEvent =
  | { readonly type: 'hash-started' }
  | { readonly type: 'hash-progress'; readonly bytes: number }
  /** The hashing worker stopped where pause asked it to. */
  | { readonly type: 'hash-paused'; readonly offset: number; readonly saved: Uint8Array }
  | { readonly type: 'hashed'; readonly sha256: string }
  | { readonly type: 'created'; readonly upload: ServerUpload }
  /** A file for an interrupted upload: `record` (this browser recorded its modification time), `content` (same SHA-256) or `none`. */
  | { readonly type: 'attached'; readonly file: File; readonly addedAt: number; readonly evidence: Evidence }
  | { readonly type: 'attach-refused'; readonly reason: string }
  /** Something went wrong that the server's state explains: stop sending and ask. */
  | { readonly type: 'follow' }
  /** Where the server says the upload stands; `resuming` when asked on resume. */
  | { readonly type: 'synced'; readonly status: UploadStatus; readonly resuming: boolean }
  | { readonly type: 'chunk-stored'; readonly index: number; readonly complete: boolean }
  | { readonly type: 'notice'; readonly notice: Notice | null }
  | { readonly type: 'paused' }
  | { readonly type: 'resumed' }
  | { readonly type: 'cancelled' }
  /** The server refused to cancel (it is assembling or complete): the task is back as it was, to follow the server. */
  | { readonly type: 'cancel-refused'; readonly previous: TaskState }
  | { readonly type: 'cancel-unconfirmed'; readonly detail: string }
  | { readonly type: 'stopped'; readonly phase: 'error' | 'failed'; readonly problem: Problem };

function row(s: Row): Row {
  return { key: s.key, name: s.name, size: s.size, addedAt: s.addedAt, startedAt: s.startedAt };
}

function allReceived(u: ServerUpload): boolean {
  if (u.received.size < u.plan.totalChunks) return false;
  for (let i = 0; i < u.plan.totalChunks; i += 1) if (!u.received.has(i)) return false;
  return true;
}

/** Chunks start going (or, when the server has them all, the assembly is awaited). */
function sending(s: Row, file: File, upload: ServerUpload, notice: Notice | null, now: number): Uploading | Assembling {
  const base = { ...row(s), startedAt: s.startedAt ?? now };
  const work: UploadWork = { step: 'upload', upload };
  if (allReceived(upload)) return { ...base, phase: 'assembling', file, work };
  return { ...base, phase: 'uploading', file, work, syncing: null, notice };
}

/** The whole-file SHA-256 is known: on to the interrupted upload it must be, or to a new upload. */
function afterHash(s: Row, file: File, check: Check | null, sha256: string): TaskState {
  if (check?.kind === 'same-file') {
    if (sha256.toLowerCase() === check.sha256.toLowerCase()) {
      return { ...row(s), phase: 'uploading', file, work: { step: 'upload', upload: check.upload }, syncing: 'resume', notice: null };
    }
    return { ...row(s), phase: 'interrupted', upload: check.upload, problem: { kind: 'different-content' } };
  }
  // Candidates that no row of this tab matched (the engine looks first) mean a new upload.
  return { ...row(s), phase: 'creating', file, sha256 };
}

function continueWork(s: Row, file: File, work: Work): TaskState {
  switch (work.step) {
    case 'hash':
      return { ...row(s), phase: 'queued', file, work };
    case 'hashed':
      return afterHash(s, file, work.check, work.sha256);
    case 'upload':
      return { ...row(s), phase: 'uploading', file, work, syncing: 'resume', notice: null };
  }
}

function withHashWork(s: TaskState, f: (w: HashWork) => Work): TaskState {
  switch (s.phase) {
    case 'queued':
    case 'hashing': {
      const work = f(s.work);
      return work.step === 'hash' ? { ...s, work } : s;
    }
    case 'paused':
    case 'error':
      return s.work?.step === 'hash' ? { ...s, work: f(s.work) } : s;
    default:
      return s;
  }
}

function everyChunk(u: ServerUpload): ServerUpload {
  return { ...u, received: new Set(Array.from({ length: u.plan.totalChunks }, (_, i) => i)), reportedBytes: u.plan.size };
}

function stop(s: TaskState, phase: 'error' | 'failed', problem: Problem, now: number): TaskState {
  if (FINISHED.has(s.phase)) return s;
  if (phase === 'error') return { ...row(s), phase: 'error', file: fileOf(s), work: workOf(s), problem };
  return { ...row(s), phase: 'failed', upload: uploadOf(s), problem, finishedAt: now };
}

/** Moves a task to where the server says its upload is. */
function synced(s: TaskState, status: UploadStatus, resuming: boolean, now: number): TaskState {
  const known = uploadOf(s);
  if (FINISHED.has(s.phase) || !known) return s;
  switch (status.state) {
    case 'uploading': {
      // Only a task that was sending or awaiting the assembly goes (back) to sending.
      if (s.phase !== 'uploading' && s.phase !== 'assembling') return s;
      const upload = uploadFromStatus(status, known);
      if (!s.file) return { ...row(s), phase: 'interrupted', upload, problem: null };
      let notice: Notice | null = s.phase === 'uploading' ? s.notice : null;
      if (resuming) notice = upload.received.size > 0 ? { kind: 'resumed', had: upload.received.size } : null;
      return sending(s, s.file, upload, notice, now);
    }
    case 'assembling':
      return s.phase === 'assembling' ? s : { ...row(s), phase: 'assembling', file: fileOf(s), work: { step: 'upload', upload: known } };
    case 'completed':
      return { ...row(s), phase: 'completed', upload: everyChunk(known), fileId: status.file_id ?? null, finishedAt: now };
    case 'failed':
      return stop(s, 'failed', { kind: 'assembly-failed', detail: status.error ?? null }, now);
    case 'cancelled':
      return { ...row(s), phase: 'cancelled', upload: known, problem: { kind: 'cancelled-on-server' }, finishedAt: now };
    case 'expired':
      return { ...row(s), phase: 'expired', upload: known, finishedAt: now };
    default:
      return stop(s, 'error', { kind: 'unknown-state', state: status.state }, now);
  }
}

/** The state after `e`; `s` itself when `e` means nothing in it. */
export function reduce(s: TaskState, e: TaskEvent, now: number): TaskState {
  switch (e.type) {
    case 'hash-started':
      return s.phase === 'queued' ? { ...row(s), phase: 'hashing', file: s.file, work: s.work } : s;
    case 'hash-progress':
      return s.phase === 'hashing' ? { ...s, work: { ...s.work, hash: { ...s.work.hash, bytes: e.bytes } } } : s;
    case 'hash-paused':
      return withHashWork(s, (w) => ({ ...w, hash: { bytes: e.offset, offset: e.offset, saved: e.saved } }));
    case 'hashed':
      // While working the task goes on; paused or stopped it keeps the digest for resume.
      if (s.phase === 'queued' || s.phase === 'hashing') return afterHash(s, s.file, s.work.check, e.sha256);
      return withHashWork(s, (w) => ({ step: 'hashed', sha256: e.sha256, check: w.check }));
    case 'created':
      if (s.phase === 'creating') return sending(s, s.file, e.upload, null, now);
      // Paused while the server was creating it: resume continues that upload.
      if (s.phase === 'paused' && s.work.step === 'hashed' && s.work.check === null) {
        return { ...s, work: { step: 'upload', upload: e.upload } };
      }
      return s;
    case 'attached': {
      if (s.phase !== 'interrupted') return s;
      const at: Row = { ...row(s), addedAt: e.addedAt };
      if (e.evidence === 'none' && s.upload.sha256 !== null) {
        const check: Check = { kind: 'same-file', upload: s.upload, sha256: s.upload.sha256 };
        return { ...at, phase: 'queued', file: e.file, work: { step: 'hash', hash: NO_HASH, check } };
      }
      return { ...at, phase: 'uploading', file: e.file, work: { step: 'upload', upload: s.upload }, syncing: 'resume', notice: null };
    }
    case 'attach-refused':
      return s.phase === 'interrupted' ? { ...s, problem: { kind: 'wrong-file', reason: e.reason } } : s;
    case 'follow':
      return s.phase === 'uploading' && s.syncing !== 'follow' ? { ...s, syncing: 'follow' } : s;
    case 'synced':
      return synced(s, e.status, e.resuming, now);
    case 'chunk-stored': {
      if (s.phase !== 'uploading') return s;
      const upload: ServerUpload = { ...s.work.upload, received: new Set(s.work.upload.received).add(e.index) };
      if (e.complete || allReceived(upload)) return { ...row(s), phase: 'assembling', file: s.file, work: { step: 'upload', upload } };
      // A chunk went through: notes about failing ones are over; the resume summary stays.
      const notice = s.notice?.kind === 'resumed' ? s.notice : null;
      return { ...s, work: { step: 'upload', upload }, notice };
    }
    case 'notice':
      return s.phase === 'uploading' ? { ...s, notice: e.notice } : s;
    case 'paused': {
      if (!isWorking(s)) return s;
      const work = workOf(s);
      return work ? { ...row(s), phase: 'paused', file: s.file, work } : s;
    }
    case 'resumed': {
      const r = resumable(s);
      return r ? continueWork(s, r.file, r.work) : s;
    }
    case 'cancelled':
      // Anything not finished nor past the point of no return; this includes a refused empty file.
      if (FINISHED.has(s.phase) || s.phase === 'assembling') return s;
      return { ...row(s), phase: 'cancelled', upload: uploadOf(s), problem: null, finishedAt: now };
    case 'cancel-refused': {
      if (s.phase !== 'cancelled') return s;
      const p = e.previous;
      // The cancel stopped its chunks and its hashing: ask the server before sending; hash again.
      if (p.phase === 'uploading') return { ...p, syncing: 'follow' };
      if (p.phase === 'hashing') return { ...row(p), phase: 'queued', file: p.file, work: p.work };
      return p;
    }
    case 'cancel-unconfirmed':
      return s.phase === 'cancelled' ? { ...s, problem: { kind: 'cancel-unconfirmed', detail: e.detail } } : s;
    case 'stopped':
      return stop(s, e.phase, e.problem, now);
  }
}

// ---- the texts ----

const LABELS: Record<Phase, string> = {
  queued: 'Waiting',
  hashing: 'Preparing',
  creating: 'Starting',
  uploading: 'Uploading',
  paused: 'Paused',
  assembling: 'Assembling',
  completed: 'Done',
  failed: 'Failed',
  error: 'Stopped',
  cancelled: 'Cancelled',
  expired: 'Expired',
  interrupted: 'Interrupted',
};

export interface Description {
  /** The badge. */
  label: string;
  /** Information: checking, retrying, resumed, waiting for the network… */
  note: string | null;
  /** Why it failed, stopped or was refused. */
  message: string | null;
}

export function describe(s: TaskState): Description {
  return {
    label: s.phase === 'hashing' && s.work.check ? 'Checking file' : LABELS[s.phase],
    note: noteOf(s),
    message: messageOf(s),
  };
}

function chunkLabel(s: TaskState, index: number): string {
  return `Chunk ${index + 1} of ${uploadOf(s)?.plan.totalChunks ?? '?'}`;
}

function noteOf(s: TaskState): string | null {
  switch (s.phase) {
    case 'queued':
    case 'hashing':
      if (s.work.check?.kind === 'candidates') return 'Checking whether this is an interrupted upload…';
      return s.work.check?.kind === 'same-file' ? 'Checking that this is the same file…' : null;
    case 'uploading':
      if (s.syncing === 'resume') return 'Checking what the server already has…';
      return s.notice && noticeText(s, s.notice);
    case 'assembling':
      return 'Verifying and assembling on the server…';
    case 'completed': {
      const secs = s.startedAt !== null ? (s.finishedAt - s.startedAt) / 1000 : null;
      return secs !== null && secs > 0 ? `Uploaded ${formatBytes(s.size)} in ${formatDuration(secs)} (${formatRate(s.size / secs)}).` : 'Uploaded.';
    }
    default:
      return null;
  }
}

function noticeText(s: Uploading, n: Notice): string {
  switch (n.kind) {
    case 'resumed':
      return `Resumed: ${n.had} of ${s.work.upload.plan.totalChunks} chunks were already on the server.`;
    case 'retrying':
      return `${chunkLabel(s, n.index)} failed (${n.why}); retrying in ${formatDuration(n.delayMs / 1000)} (attempt ${n.failures + 1} of ${n.maxAttempts}).`;
    case 'held':
      return `Waiting for ${chunkLabel(s, n.index).toLowerCase()}, still held by an earlier request…`;
    case 'offline':
      return 'Offline: waiting for the network to come back…';
  }
}

function messageOf(s: TaskState): string | null {
  if (s.phase === 'expired') return 'The upload expired on the server before it was finished. Add the file again to start over.';
  const p = 'problem' in s ? s.problem : null;
  return p && problemText(s, p);
}

function problemText(s: TaskState, p: Problem): string {
  switch (p.kind) {
    case 'empty-file':
      return 'This file is empty: there is nothing to upload.';
    case 'unreadable':
      return `Could not read the file: ${p.detail}`;
    case 'not-started':
      return `Could not start the upload: ${p.detail}`;
    case 'unreachable':
      return `Could not reach the server: ${p.detail}`;
    case 'chunk-failed':
      return `${chunkLabel(s, p.index)} failed ${p.failures} times (${p.why}). Resume to try again.`;
    case 'chunk-refused':
      return `${chunkLabel(s, p.index)} was refused: ${p.why}.`;
    case 'gone':
      return 'The upload was cancelled or has expired on the server.';
    case 'unfollowed':
      return `Could not follow the assembly: ${p.detail}`;
    case 'assembly-failed':
      return p.detail ? `The server could not assemble the file: ${p.detail}` : 'The server could not assemble the file.';
    case 'unknown-state':
      return `The server reports an unknown state “${p.state}”.`;
    case 'wrong-file':
      return p.reason;
    case 'different-content':
      return 'The selected file’s content is not the one of this upload. Choose the original file to resume.';
    case 'cancelled-on-server':
      return 'The upload was cancelled.';
    case 'cancel-unconfirmed':
      return `The server may still hold the upload: ${p.detail}`;
  }
}

/**
 * What a screen reader hears when a task moves from `before` (null: just added) to `after` through
 * `e`, without the file's name; null when nothing is worth saying.
 */
export function announcement(before: TaskState | null, after: TaskState, e?: TaskEvent): string | null {
  if (before === null) return after.phase === 'queued' ? 'added' : null;
  if (before.phase === after.phase || e?.type === 'cancel-refused') return null;
  const resumed = before.phase === 'paused' || before.phase === 'error';
  switch (after.phase) {
    case 'queued':
      return resumed ? 'resumed' : null;
    case 'uploading':
      if (before.phase === 'creating') return 'uploading';
      if (resumed) return 'resumed';
      if (before.phase === 'interrupted') {
        return e?.type === 'attached' && e.evidence === 'content' ? 'same file as an interrupted upload, resuming' : 'resuming';
      }
      return before.phase === 'queued' || before.phase === 'hashing' ? 'same file, resuming' : null;
    case 'paused':
      return 'paused';
    case 'assembling':
      return 'all chunks sent, the server is assembling the file';
    case 'completed':
      return 'upload complete';
    case 'error':
    case 'failed':
      return `stopped: ${messageOf(after) ?? ''}`;
    case 'cancelled':
    case 'expired':
      return after.phase;
    case 'interrupted':
      return after.problem?.kind === 'different-content' ? 'a different file was selected' : null;
    default:
      return null;
  }
}

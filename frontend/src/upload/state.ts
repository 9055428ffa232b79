// The state of one file's upload, as data. Contract:
//  - `TaskState` is a union of phases; each phase carries only what is meaningful in it (a paused
//    task keeps the `Work` that resume continues, a completed one its file id and times…).
//  - `reduce(state, event, now)` is the only way a state changes. It is pure: it never reads the
//    clock (`now` is given), storage or the network, and it returns the very same object when the
//    event means nothing in that state, so callers can tell "ignored" from "moved".
//  - Every text the UI shows for a task (`describe`, `announcement`) is derived from the state;
//    nothing is ever read back from a text.
// The engine (manager.ts) owns what is not data: chunks in flight, timers, the file's pass worker,
// upload tokens. It feeds `reduce` what happened and starts or stops work by the phase a task enters.

import type { UploadStatus } from '../api/types';
import { formatBytes, formatDuration, formatRate } from '../lib/format';
import { makePlan, type ChunkPlan } from '../lib/plan';

// ---- the parts ----

/** The server's upload session, as this tab knows it. */
export interface ServerUpload {
  readonly id: string;
  readonly plan: ChunkPlan;
  /** The chunks the server has confirmed. */
  readonly received: ReadonlySet<number>;
  /** The server's CRC-64/NVME (16 hex digits) of received chunks, where known. */
  readonly crcs: ReadonlyMap<number, string>;
  /** The bytes the server reported: listings give only this count, not the chunk indices. */
  readonly reportedBytes: number;
  /** The whole-file CRC-64/NVME declared to the server (`PATCH`), once it is. */
  readonly declared: string | null;
  /** The whole-file SHA-256 the server holds for it (given at creation, or declared): the pass computes one to match. */
  readonly sha256: string | null;
}

/**
 * A file tried on an upload that it is not yet known to be the file of: nothing is sent until the
 * chunks the server holds have been compared with the file's. Where it goes if it is not:
 * `chosen` (the user picked it for this interrupted upload) back to the upload, refused;
 * `candidate` (a file added, of the upload's name and size) on to a new upload.
 */
export type Trial = 'chosen' | 'candidate';

/** What a task is doing or, paused or stopped by an error, what resume continues. */
export type Work = NewWork | UploadWork;
/** No upload yet: one is created when the file's turn comes. */
export interface NewWork {
  readonly step: 'new';
}
export interface UploadWork {
  readonly step: 'upload';
  readonly upload: ServerUpload;
  /** Null once the file is known to be the upload's. */
  readonly trial: Trial | null;
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
  /** Chunk `index` reads otherwise than when it was sent (or than the server's copy). */
  | { readonly kind: 'changed'; readonly index: number }
  /** The server holds other whole-file checksums for this upload (`409 checksums-declared`). */
  | { readonly kind: 'checksums-conflict'; readonly detail: string }
  /** The whole-file checksums could not be declared. */
  | { readonly kind: 'declaration-failed'; readonly detail: string }
  /** The file's SHA-256 is not the one the upload was created with (`422 sha256-mismatch`). */
  | { readonly kind: 'sha256-mismatch'; readonly detail: string }
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

/** Waiting for its turn: a few files are started at a time. */
export interface Queued extends Row {
  readonly phase: 'queued';
  readonly file: File;
  readonly work: NewWork;
}
/** Asking the server for an upload session. */
export interface Creating extends Row {
  readonly phase: 'creating';
  readonly file: File;
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

/** A file the user added, for a new upload. */
export function added(key: string, file: File, now: number): TaskState {
  const row: Row = { key, name: file.name, size: file.size, addedAt: now, startedAt: null };
  if (file.size === 0) return { ...row, phase: 'error', file: null, work: null, problem: { kind: 'empty-file' } };
  return { ...row, phase: 'queued', file, work: { step: 'new' } };
}

/** An unfinished upload the server lists (after a reload). */
export function listed(key: string, status: UploadStatus, now: number): TaskState {
  const row: Row = { key, name: status.name, size: status.size, addedAt: now, startedAt: null };
  const upload = uploadFromStatus(status);
  if (status.state === 'assembling') return { ...row, phase: 'assembling', file: null, work: { step: 'upload', upload, trial: null } };
  return { ...row, phase: 'interrupted', upload, problem: null };
}

/** The server's status as a `ServerUpload`; what it leaves out is kept from `known`. */
export function uploadFromStatus(status: UploadStatus, known: ServerUpload | null = null): ServerUpload {
  const crcs = new Map<number, string>();
  const theirs = status.received_crc64nvme ?? [];
  status.received_chunks.forEach((index, i) => {
    const crc = theirs[i] ?? known?.crcs.get(index);
    if (crc !== undefined) crcs.set(index, crc.toLowerCase());
  });
  return {
    id: status.upload_id,
    plan: makePlan(status.size, status.chunk_size, status.total_chunks),
    received: new Set(status.received_chunks),
    crcs,
    reportedBytes: status.bytes_received,
    declared: status.crc64nvme?.toLowerCase() ?? known?.declared ?? null,
    sha256: status.sha256?.toLowerCase() ?? known?.sha256 ?? null,
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
      return { step: 'new' };
    case 'interrupted':
      return { step: 'upload', upload: s.upload, trial: null };
    case 'queued':
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
  return work?.step === 'upload' ? work.upload : null;
}

/** The trial of the file, while it is not known to be its upload's. */
export function trialOf(s: TaskState): Trial | null {
  const work = workOf(s);
  return work?.step === 'upload' ? work.trial : null;
}

export function finishedAtOf(s: TaskState): number | null {
  return 'finishedAt' in s ? s.finishedAt : null;
}

// ---- what can be done ----

/** Work in this tab that pause stops (and that leaving the page would interrupt). */
export function isWorking(s: TaskState): s is Queued | Creating | Uploading {
  return s.phase === 'queued' || s.phase === 'creating' || s.phase === 'uploading';
}

/** Chunks may go. */
export function isSending(s: TaskState): s is Uploading {
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

export type TaskEvent =
  /** The file's turn has come: its upload is created. */
  | { readonly type: 'turn' }
  | { readonly type: 'created'; readonly upload: ServerUpload }
  /** A file for an interrupted upload, tried on it. */
  | { readonly type: 'attached'; readonly file: File; readonly addedAt: number; readonly trial: Trial }
  | { readonly type: 'attach-refused'; readonly reason: string }
  /** The chunks the server holds are the file's: chunks go. */
  | { readonly type: 'proven' }
  /** A chunk the server holds is not the file's: nothing was sent, the upload is left as it was. */
  | { readonly type: 'refuted' }
  /** Something went wrong that the server's state explains: stop sending and ask. */
  | { readonly type: 'follow' }
  /** Where the server says the upload stands; `resuming` when asked on resume. */
  | { readonly type: 'synced'; readonly status: UploadStatus; readonly resuming: boolean }
  | { readonly type: 'chunk-stored'; readonly index: number; readonly crc: string; readonly complete: boolean }
  /** The server took the whole-file checksums. */
  | { readonly type: 'declared'; readonly crc64nvme: string }
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
function sending(s: Row, file: File, work: UploadWork, notice: Notice | null, now: number): Uploading | Assembling {
  const base = { ...row(s), startedAt: s.startedAt ?? now };
  if (allReceived(work.upload)) return { ...base, phase: 'assembling', file, work: { ...work, trial: null } };
  return { ...base, phase: 'uploading', file, work, syncing: null, notice };
}

function continueWork(s: Row, file: File, work: Work): TaskState {
  if (work.step === 'new') return { ...row(s), phase: 'queued', file, work };
  return { ...row(s), phase: 'uploading', file, work, syncing: 'resume', notice: null };
}

/** A stop that leaves the task's upload where it is; the file goes when it can no longer serve it. */
const FILE_UNUSABLE: ReadonlySet<Problem['kind']> = new Set<Problem['kind']>(['changed', 'checksums-conflict']);

function everyChunk(u: ServerUpload): ServerUpload {
  return { ...u, received: new Set(Array.from({ length: u.plan.totalChunks }, (_, i) => i)), reportedBytes: u.plan.size };
}

function stop(s: TaskState, phase: 'error' | 'failed', problem: Problem, now: number): TaskState {
  if (FINISHED.has(s.phase)) return s;
  if (phase === 'error') {
    const file = FILE_UNUSABLE.has(problem.kind) ? null : fileOf(s);
    return { ...row(s), phase: 'error', file, work: workOf(s), problem };
  }
  return { ...row(s), phase: 'failed', upload: uploadOf(s), problem, finishedAt: now };
}

/** `s` with its upload work changed by `f`, in any phase that holds upload work. */
function withUpload(s: TaskState, f: (u: ServerUpload) => ServerUpload): TaskState {
  switch (s.phase) {
    case 'uploading':
    case 'assembling':
      return { ...s, work: { ...s.work, upload: f(s.work.upload) } };
    case 'paused':
    case 'error':
      return s.work?.step === 'upload' ? { ...s, work: { ...s.work, upload: f(s.work.upload) } } : s;
    default:
      return s;
  }
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
      return sending(s, s.file, { ...s.work, upload }, notice, now);
    }
    case 'assembling':
      return s.phase === 'assembling' ? s : { ...row(s), phase: 'assembling', file: fileOf(s), work: { step: 'upload', upload: known, trial: null } };
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
    case 'turn':
      return s.phase === 'queued' ? { ...row(s), phase: 'creating', file: s.file } : s;
    case 'created':
      if (s.phase === 'creating') return sending(s, s.file, { step: 'upload', upload: e.upload, trial: null }, null, now);
      // Paused while the server was creating it: resume continues that upload.
      if (s.phase === 'paused' && s.work.step === 'new') return { ...s, work: { step: 'upload', upload: e.upload, trial: null } };
      return s;
    case 'attached':
      if (s.phase !== 'interrupted') return s;
      return {
        ...row(s),
        addedAt: e.addedAt,
        phase: 'uploading',
        file: e.file,
        work: { step: 'upload', upload: s.upload, trial: e.trial },
        syncing: 'resume',
        notice: null,
      };
    case 'attach-refused':
      return s.phase === 'interrupted' ? { ...s, problem: { kind: 'wrong-file', reason: e.reason } } : s;
    case 'proven':
      return s.phase === 'uploading' && s.work.trial !== null ? { ...s, work: { ...s.work, trial: null } } : s;
    case 'refuted':
      if (s.phase !== 'uploading' || s.work.trial === null) return s;
      return {
        ...row(s),
        startedAt: null,
        phase: 'interrupted',
        upload: s.work.upload,
        problem: s.work.trial === 'chosen' ? { kind: 'different-content' } : null,
      };
    case 'follow':
      return s.phase === 'uploading' && s.syncing !== 'follow' ? { ...s, syncing: 'follow' } : s;
    case 'synced':
      return synced(s, e.status, e.resuming, now);
    case 'chunk-stored': {
      if (s.phase !== 'uploading') return s;
      const u = s.work.upload;
      const upload: ServerUpload = { ...u, received: new Set(u.received).add(e.index), crcs: new Map(u.crcs).set(e.index, e.crc) };
      const work: UploadWork = { ...s.work, upload };
      if (e.complete || allReceived(upload)) return { ...row(s), phase: 'assembling', file: s.file, work: { ...work, trial: null } };
      // A chunk went through: notes about failing ones are over; the resume summary stays.
      const notice = s.notice?.kind === 'resumed' ? s.notice : null;
      return { ...s, work, notice };
    }
    case 'declared':
      return uploadOf(s)?.declared === e.crc64nvme ? s : withUpload(s, (u) => ({ ...u, declared: e.crc64nvme }));
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
      // The cancel stopped its chunks: ask the server before sending.
      return p.phase === 'uploading' ? { ...p, syncing: 'follow' } : p;
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
    label: s.phase === 'uploading' && s.work.trial !== null ? 'Checking file' : LABELS[s.phase],
    note: noteOf(s),
    message: messageOf(s),
  };
}

function chunkLabel(s: TaskState, index: number): string {
  return `Chunk ${index + 1} of ${uploadOf(s)?.plan.totalChunks ?? '?'}`;
}

function noteOf(s: TaskState): string | null {
  switch (s.phase) {
    case 'uploading':
      if (s.syncing === 'resume') return 'Checking what the server already has…';
      if (s.work.trial !== null) {
        // Nothing is sent until the chunks on the server are found to be this file's.
        const had = s.notice?.kind === 'resumed' ? `${noticeText(s, s.notice)} ` : '';
        return `${had}Checking that ${had ? 'they are this file’s' : 'this is the same file'}…`;
      }
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
    case 'changed':
      return `The file changed while it was being uploaded (${chunkLabel(s, p.index).toLowerCase()} reads differently now). Cancel this upload, then add the file again.`;
    case 'checksums-conflict':
      return `The file changed since this upload began: the server holds other checksums for it (${p.detail}). Cancel this upload, then add the file again.`;
    case 'declaration-failed':
      return `Could not give the server the file’s checksums: ${p.detail}`;
    case 'sha256-mismatch':
      return `The file’s SHA-256 is not the one the upload was created with: ${p.detail}`;
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
  if (e?.type === 'proven') return trialOf(before) === 'candidate' ? 'same file as an interrupted upload, resuming' : null;
  if (before.phase === after.phase || e?.type === 'cancel-refused') return null;
  const resumed = before.phase === 'paused' || before.phase === 'error';
  switch (after.phase) {
    case 'queued':
      return resumed ? 'resumed' : null;
    case 'uploading':
      if (before.phase === 'creating') return 'uploading';
      if (resumed) return 'resumed';
      if (before.phase === 'interrupted') {
        return e?.type === 'attached' && e.trial === 'candidate' ? 'checking whether this is an interrupted upload' : 'resuming';
      }
      return null;
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

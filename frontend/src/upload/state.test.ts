import { describe as suite, expect, it } from 'vitest';
import type { UploadStatus } from '../api/types';
import {
  added,
  announcement,
  canCancel,
  canPause,
  canRemove,
  canResume,
  describe,
  isSending,
  listed,
  reduce,
  uploadOf,
  type ServerUpload,
  type TaskEvent,
  type TaskState,
} from './state';

const SHA = 'a'.repeat(64);
const OTHER_SHA = 'b'.repeat(64);
const T0 = 1_000;

const file = (name = 'a.bin', size = 12) => new File([new Uint8Array(size)], name, { lastModified: 7 });

/** The server's view of a 12-byte upload in 3 chunks of 4. */
const status = (over: Partial<UploadStatus> = {}): UploadStatus => ({
  upload_id: 'up1',
  name: 'a.bin',
  size: 12,
  content_type: '',
  sha256: SHA,
  chunk_size: 4,
  total_chunks: 3,
  state: 'uploading',
  received_chunks: [],
  bytes_received: 0,
  created_at: '',
  expires_at: '',
  ...over,
});

const fresh = (): ServerUpload => ({ id: 'up1', plan: { size: 12, chunkSize: 4, totalChunks: 3 }, received: new Set(), reportedBytes: 0, sha256: SHA });

function run(s: TaskState, events: TaskEvent[], now = T0): TaskState {
  return events.reduce((x, e) => reduce(x, e, now), s);
}

/** A new file, hashed and created on the server: sending. */
function sendingTask(f = file()): TaskState {
  return run(added('u1', f, 0, null), [{ type: 'hash-started' }, { type: 'hashed', sha256: SHA }, { type: 'created', upload: fresh() }]);
}

suite('upload task states', () => {
  it('a new file waits for hashing; an empty one stops at once, removable and not resumable', () => {
    const s = added('u1', file(), T0, null);
    expect(s).toMatchObject({ phase: 'queued', work: { step: 'hash', hash: { bytes: 0, offset: 0 }, check: null } });
    expect(describe(s)).toEqual({ label: 'Waiting', note: null, message: null });
    expect(canPause(s)).toBe(true);

    const empty = added('u2', file('e.txt', 0), T0, null);
    expect(empty.phase).toBe('error');
    expect(describe(empty).message).toBe('This file is empty: there is nothing to upload.');
    expect([canResume(empty), canRemove(empty), canCancel(empty)]).toEqual([false, true, false]);
  });

  it('hashes, creates the upload and starts sending, recording when sending started', () => {
    let s = run(added('u1', file(), 0, null), [{ type: 'hash-started' }, { type: 'hash-progress', bytes: 5 }]);
    expect(s).toMatchObject({ phase: 'hashing', work: { hash: { bytes: 5 } } });
    expect(describe(s).label).toBe('Preparing');
    s = reduce(s, { type: 'hashed', sha256: SHA }, T0);
    expect(s).toMatchObject({ phase: 'creating', sha256: SHA, startedAt: null });
    s = reduce(s, { type: 'created', upload: fresh() }, 2_000);
    expect(s).toMatchObject({ phase: 'uploading', syncing: null, notice: null, startedAt: 2_000 });
    expect(isSending(s)).toBe(true);
    expect(uploadOf(s)?.id).toBe('up1');
  });

  it('ignores events that mean nothing in a phase (the very same object comes back)', () => {
    const queued = added('u1', file(), T0, null);
    expect(reduce(queued, { type: 'hash-progress', bytes: 3 }, T0)).toBe(queued);
    expect(reduce(queued, { type: 'chunk-stored', index: 0, complete: false }, T0)).toBe(queued);
    expect(reduce(queued, { type: 'resumed' }, T0)).toBe(queued);
    const done = run(sendingTask(), [{ type: 'synced', status: status({ state: 'completed', file_id: 'f1' }), resuming: false }]);
    for (const e of [{ type: 'paused' }, { type: 'cancelled' }, { type: 'stopped', phase: 'error', problem: { kind: 'gone' } }] as TaskEvent[]) {
      expect(reduce(done, e, T0)).toBe(done);
    }
  });

  it('pausing a hash keeps where it stopped; resume continues from there', () => {
    let s = run(added('u1', file(), 0, null), [{ type: 'hash-started' }, { type: 'paused' }]);
    expect(s).toMatchObject({ phase: 'paused', work: { step: 'hash' } });
    const saved = new Uint8Array([1, 2, 3]);
    s = reduce(s, { type: 'hash-paused', offset: 8, saved }, T0);
    expect(s).toMatchObject({ phase: 'paused', work: { step: 'hash', hash: { bytes: 8, offset: 8, saved } } });
    expect(canResume(s)).toBe(true);
    s = reduce(s, { type: 'resumed' }, T0);
    expect(s).toMatchObject({ phase: 'queued', work: { hash: { offset: 8, saved } } });
  });

  it('a hash finishing after pause is kept: resume goes straight to creating the upload', () => {
    let s = run(added('u1', file(), 0, null), [{ type: 'hash-started' }, { type: 'paused' }, { type: 'hashed', sha256: SHA }]);
    expect(s).toMatchObject({ phase: 'paused', work: { step: 'hashed', sha256: SHA } });
    s = reduce(s, { type: 'resumed' }, T0);
    expect(s).toMatchObject({ phase: 'creating', sha256: SHA });
  });

  it('an upload created while paused is kept for resume, which asks the server first; a late one is refused', () => {
    let s = run(added('u1', file(), 0, null), [{ type: 'hash-started' }, { type: 'hashed', sha256: SHA }, { type: 'paused' }]);
    s = reduce(s, { type: 'created', upload: fresh() }, T0);
    expect(s).toMatchObject({ phase: 'paused', work: { step: 'upload', upload: { id: 'up1' } } });
    s = reduce(s, { type: 'resumed' }, T0);
    expect(s).toMatchObject({ phase: 'uploading', syncing: 'resume' });
    expect(isSending(s)).toBe(false);
    expect(describe(s).note).toBe('Checking what the server already has…');
    // Another `created` (a second request) means nothing now: the engine releases that upload.
    expect(reduce(s, { type: 'created', upload: { ...fresh(), id: 'up2' } }, T0)).toBe(s);
  });

  it('stores chunks without touching the previous state, and awaits the assembly after the last one', () => {
    const s0 = sendingTask();
    const s1 = reduce(s0, { type: 'chunk-stored', index: 0, complete: false }, T0);
    expect(uploadOf(s0)?.received.size).toBe(0);
    expect([...(uploadOf(s1)?.received ?? [])]).toEqual([0]);
    const s2 = run(s1, [
      { type: 'chunk-stored', index: 1, complete: false },
      { type: 'chunk-stored', index: 2, complete: false },
    ]);
    expect(s2.phase).toBe('assembling');
    expect(describe(s2).note).toBe('Verifying and assembling on the server…');
    // The server may say it is complete before this tab saw every receipt.
    expect(reduce(s1, { type: 'chunk-stored', index: 1, complete: true }, T0).phase).toBe('assembling');
  });

  it('shows retries, waits and being offline as notes; a chunk that goes through clears them', () => {
    const s = sendingTask();
    const retrying = reduce(s, { type: 'notice', notice: { kind: 'retrying', index: 1, why: 'HTTP 503', delayMs: 1500, failures: 1, maxAttempts: 8 } }, T0);
    expect(describe(retrying).note).toBe('Chunk 2 of 3 failed (HTTP 503); retrying in 2 s (attempt 2 of 8).');
    const held = reduce(s, { type: 'notice', notice: { kind: 'held', index: 0 } }, T0);
    expect(describe(held).note).toBe('Waiting for chunk 1 of 3, still held by an earlier request…');
    const offline = reduce(s, { type: 'notice', notice: { kind: 'offline' } }, T0);
    expect(describe(offline).note).toBe('Offline: waiting for the network to come back…');
    expect(describe(reduce(offline, { type: 'notice', notice: null }, T0)).note).toBeNull();
    for (const noted of [retrying, held, offline]) {
      expect(describe(reduce(noted, { type: 'chunk-stored', index: 2, complete: false }, T0)).note).toBeNull();
    }
    // Notes are about sending: elsewhere they mean nothing.
    const queued = added('u1', file(), T0, null);
    expect(reduce(queued, { type: 'notice', notice: { kind: 'offline' } }, T0)).toBe(queued);
  });

  it('resuming takes the server’s chunks and says how many were there; that summary outlives chunk receipts', () => {
    const paused = reduce(sendingTask(), { type: 'paused' }, T0);
    const asking = reduce(paused, { type: 'resumed' }, T0);
    let s = reduce(asking, { type: 'synced', status: status({ received_chunks: [0], bytes_received: 4 }), resuming: true }, T0);
    expect(s).toMatchObject({ phase: 'uploading', syncing: null });
    expect(describe(s).note).toMatch(/^Resumed: \d+ of \d+ chunks were already on the server\.$/);
    expect(describe(s).note).toBe('Resumed: 1 of 3 chunks were already on the server.');
    s = reduce(s, { type: 'chunk-stored', index: 1, complete: false }, T0);
    expect(describe(s).note).toBe('Resumed: 1 of 3 chunks were already on the server.');
    // Nothing there yet: no summary. Everything there: on to the assembly.
    expect(describe(reduce(asking, { type: 'synced', status: status(), resuming: true }, T0)).note).toBeNull();
    expect(reduce(asking, { type: 'synced', status: status({ received_chunks: [0, 1, 2] }), resuming: true }, T0).phase).toBe('assembling');
  });

  it('follows the server after a refusal: nothing is sent meanwhile, and the note stays until it answers', () => {
    const noted = reduce(sendingTask(), { type: 'notice', notice: { kind: 'held', index: 0 } }, T0);
    const following = reduce(noted, { type: 'follow' }, T0);
    expect(following).toMatchObject({ phase: 'uploading', syncing: 'follow' });
    expect(isSending(following)).toBe(false);
    const back = reduce(following, { type: 'synced', status: status({ received_chunks: [1] }), resuming: false }, T0);
    expect(back).toMatchObject({ phase: 'uploading', syncing: null, notice: { kind: 'held' } });
    expect([...(uploadOf(back)?.received ?? [])]).toEqual([1]);
  });

  it('ends where the server says: completed (with the time it took), failed, cancelled, expired or an unknown state', () => {
    const s = sendingTask(); // started sending at T0
    const done = reduce(s, { type: 'synced', status: status({ state: 'completed', file_id: 'f1' }), resuming: false }, T0 + 4_000);
    expect(done).toMatchObject({ phase: 'completed', fileId: 'f1', finishedAt: T0 + 4_000 });
    expect(uploadOf(done)?.received.size).toBe(3);
    expect(describe(done)).toEqual({ label: 'Done', note: 'Uploaded 12 B in 4 s (3 B/s).', message: null });

    const at = (over: Partial<UploadStatus>) => describe(reduce(s, { type: 'synced', status: status(over), resuming: false }, T0));
    expect(at({ state: 'failed', error: 'digest mismatch' })).toMatchObject({ label: 'Failed', message: 'The server could not assemble the file: digest mismatch' });
    expect(at({ state: 'failed' }).message).toBe('The server could not assemble the file.');
    expect(at({ state: 'cancelled' })).toMatchObject({ label: 'Cancelled', message: 'The upload was cancelled.' });
    expect(at({ state: 'expired' })).toMatchObject({
      label: 'Expired',
      message: 'The upload expired on the server before it was finished. Add the file again to start over.',
    });
    expect(at({ state: 'sleeping' })).toMatchObject({ label: 'Stopped', message: 'The server reports an unknown state “sleeping”.' });
  });

  it('an error keeps the work and the file, so Retry asks the server and continues', () => {
    const s = reduce(sendingTask(), { type: 'stopped', phase: 'error', problem: { kind: 'chunk-failed', index: 0, failures: 8, why: 'disk full' } }, T0);
    expect(describe(s)).toEqual({ label: 'Stopped', note: null, message: 'Chunk 1 of 3 failed 8 times (disk full). Resume to try again.' });
    expect([canResume(s), canCancel(s), canRemove(s)]).toEqual([true, true, false]);
    expect(reduce(s, { type: 'resumed' }, T0)).toMatchObject({ phase: 'uploading', syncing: 'resume' });
    // A permanent refusal to start ends the task instead.
    const creating = run(added('u1', file(), 0, null), [{ type: 'hash-started' }, { type: 'hashed', sha256: SHA }]);
    const failed = reduce(creating, { type: 'stopped', phase: 'failed', problem: { kind: 'not-started', detail: 'Forbidden' } }, T0);
    expect(failed).toMatchObject({ phase: 'failed', finishedAt: T0 });
    expect(describe(failed).message).toBe('Could not start the upload: Forbidden');
    expect([canResume(failed), canRemove(failed)]).toEqual([false, true]);
  });

  it('cancels anything not finished nor assembling; a refused cancel puts the task back, following the server', () => {
    const s = sendingTask();
    const cancelled = reduce(s, { type: 'cancelled' }, T0);
    expect(cancelled).toMatchObject({ phase: 'cancelled', problem: null, finishedAt: T0 });
    expect(uploadOf(cancelled)?.id).toBe('up1');
    expect(describe(reduce(cancelled, { type: 'cancel-unconfirmed', detail: 'offline' }, T0)).message).toBe(
      'The server may still hold the upload: offline',
    );
    expect(reduce(cancelled, { type: 'cancel-refused', previous: s }, T0)).toMatchObject({ phase: 'uploading', syncing: 'follow' });
    const assembling = listed('u2', status({ state: 'assembling' }), T0);
    expect(reduce(assembling, { type: 'cancelled' }, T0)).toBe(assembling);
    expect(canCancel(assembling)).toBe(false);
  });

  it('an interrupted upload takes its file back: trusted by the record, or checked by content first', () => {
    const s = listed('u1', status({ bytes_received: 4 }), T0);
    expect(s).toMatchObject({ phase: 'interrupted', upload: { reportedBytes: 4, sha256: SHA } });
    const refused = reduce(s, { type: 'attach-refused', reason: 'Not this one.' }, T0);
    expect(describe(refused)).toMatchObject({ label: 'Interrupted', message: 'Not this one.' });

    const trusted = reduce(refused, { type: 'attached', file: file(), addedAt: 5, evidence: 'record' }, T0);
    expect(trusted).toMatchObject({ phase: 'uploading', syncing: 'resume', addedAt: 5 });
    expect(describe(trusted).message).toBeNull();

    const checking = run(s, [{ type: 'attached', file: file(), addedAt: 5, evidence: 'none' }, { type: 'hash-started' }]);
    expect(describe(checking)).toEqual({ label: 'Checking file', note: 'Checking that this is the same file…', message: null });
    expect(uploadOf(checking)?.id).toBe('up1');
    expect(reduce(checking, { type: 'hashed', sha256: SHA.toUpperCase() }, T0)).toMatchObject({ phase: 'uploading', syncing: 'resume' });
    const other = reduce(checking, { type: 'hashed', sha256: OTHER_SHA }, T0);
    expect(other).toMatchObject({ phase: 'interrupted', problem: { kind: 'different-content' } });
    expect(describe(other).message).toBe('The selected file’s content is not the one of this upload. Choose the original file to resume.');

    // Without a SHA-256 on the server there is nothing to compare: it is trusted.
    const noSha = listed('u3', status({ sha256: undefined }), T0);
    expect(reduce(noSha, { type: 'attached', file: file(), addedAt: 5, evidence: 'none' }, T0).phase).toBe('uploading');
  });

  it('a new file that may be an interrupted upload says so while hashing, then is a new upload unless claimed', () => {
    const candidates = [{ upload_id: 'up9', name: 'a.bin', size: 12, state: 'uploading', sha256: SHA }];
    const s = reduce(added('u1', file(), T0, candidates), { type: 'hash-started' }, T0);
    expect(describe(s)).toEqual({ label: 'Checking file', note: 'Checking whether this is an interrupted upload…', message: null });
    expect(reduce(s, { type: 'hashed', sha256: OTHER_SHA }, T0)).toMatchObject({ phase: 'creating' });
  });

  it('a listed upload being assembled is followed; sent back to uploading without its file, it waits for the file', () => {
    const s = listed('u1', status({ state: 'assembling' }), T0);
    expect(s).toMatchObject({ phase: 'assembling', file: null });
    expect(reduce(s, { type: 'synced', status: status({ received_chunks: [0] }), resuming: false }, T0)).toMatchObject({
      phase: 'interrupted',
    });
  });

  it('announces moves for screen readers, worded by where the task came from', () => {
    const a = (before: TaskState | null, e: TaskEvent) => announcement(before, before ? reduce(before, e, T0) : added('u1', file(), T0, null), e);
    const queued = added('u1', file(), T0, null);
    expect(announcement(null, queued)).toBe('added');
    const creating = run(queued, [{ type: 'hash-started' }, { type: 'hashed', sha256: SHA }]);
    expect(a(creating, { type: 'created', upload: fresh() })).toBe('uploading');
    const sending = sendingTask();
    expect(a(sending, { type: 'paused' })).toBe('paused');
    expect(a(reduce(sending, { type: 'paused' }, T0), { type: 'resumed' })).toBe('resumed');
    expect(a(sending, { type: 'notice', notice: { kind: 'offline' } })).toBeNull();
    expect(a(sending, { type: 'stopped', phase: 'error', problem: { kind: 'gone' } })).toBe(
      'stopped: The upload was cancelled or has expired on the server.',
    );
    const interrupted = listed('u2', status(), T0);
    expect(a(interrupted, { type: 'attached', file: file(), addedAt: T0, evidence: 'record' })).toBe('resuming');
    expect(a(interrupted, { type: 'attached', file: file(), addedAt: T0, evidence: 'content' })).toBe('same file as an interrupted upload, resuming');
    const cancelled = reduce(sending, { type: 'cancelled' }, T0);
    expect(a(sending, { type: 'cancelled' })).toBe('cancelled');
    expect(a(cancelled, { type: 'cancel-refused', previous: sending })).toBeNull();
  });
});

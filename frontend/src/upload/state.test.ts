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
  trialOf,
  uploadOf,
  type ServerUpload,
  type TaskEvent,
  type TaskState,
} from './state';

const CRC = 'ae8b14860a799888';
const T0 = 1_000;

const file = (name = 'a.bin', size = 12) => new File([new Uint8Array(size)], name, { lastModified: 7 });

/** The server's view of a 12-byte upload in 3 chunks of 4. */
const status = (over: Partial<UploadStatus> = {}): UploadStatus => ({
  upload_id: 'up1',
  name: 'a.bin',
  size: 12,
  content_type: '',
  chunk_size: 4,
  total_chunks: 3,
  state: 'uploading',
  received_chunks: [],
  received_crc64nvme: [],
  bytes_received: 0,
  created_at: '',
  expires_at: '',
  ...over,
});

const fresh = (): ServerUpload => ({
  id: 'up1',
  plan: { size: 12, chunkSize: 4, totalChunks: 3 },
  received: new Set(),
  crcs: new Map(),
  reportedBytes: 0,
  declared: null,
  sha256: null,
});

const stored = (index: number, complete = false): TaskEvent => ({ type: 'chunk-stored', index, crc: CRC, complete });

function run(s: TaskState, events: TaskEvent[], now = T0): TaskState {
  return events.reduce((x, e) => reduce(x, e, now), s);
}

/** A new file, created on the server: sending. */
function sendingTask(f = file()): TaskState {
  return run(added('u1', f, 0), [{ type: 'turn' }, { type: 'created', upload: fresh() }]);
}

suite('upload task states', () => {
  it('a new file waits for its turn; an empty one stops at once, removable and not resumable', () => {
    const s = added('u1', file(), T0);
    expect(s).toMatchObject({ phase: 'queued', work: { step: 'new' } });
    expect(describe(s)).toEqual({ label: 'Waiting', note: null, message: null });
    expect(canPause(s)).toBe(true);

    const empty = added('u2', file('e.txt', 0), T0);
    expect(empty.phase).toBe('error');
    expect(describe(empty).message).toBe('This file is empty: there is nothing to upload.');
    expect([canResume(empty), canRemove(empty), canCancel(empty)]).toEqual([false, true, false]);
  });

  it('creates the upload and starts sending at once (nothing is read before), recording when sending started', () => {
    let s = reduce(added('u1', file(), 0), { type: 'turn' }, T0);
    expect(s).toMatchObject({ phase: 'creating', startedAt: null });
    expect(describe(s).label).toBe('Starting');
    s = reduce(s, { type: 'created', upload: fresh() }, 2_000);
    expect(s).toMatchObject({ phase: 'uploading', syncing: null, notice: null, startedAt: 2_000, work: { trial: null } });
    expect(describe(s)).toEqual({ label: 'Uploading', note: null, message: null });
    expect(isSending(s)).toBe(true);
    expect(uploadOf(s)?.id).toBe('up1');
  });

  it('ignores events that mean nothing in a phase (the very same object comes back)', () => {
    const queued = added('u1', file(), T0);
    expect(reduce(queued, stored(0), T0)).toBe(queued);
    expect(reduce(queued, { type: 'resumed' }, T0)).toBe(queued);
    expect(reduce(queued, { type: 'proven' }, T0)).toBe(queued);
    const sending = sendingTask();
    expect(reduce(sending, { type: 'proven' }, T0)).toBe(sending);
    expect(reduce(sending, { type: 'refuted' }, T0)).toBe(sending);
    const done = run(sending, [{ type: 'synced', status: status({ state: 'completed', file_id: 'f1' }), resuming: false }]);
    for (const e of [{ type: 'paused' }, { type: 'cancelled' }, { type: 'stopped', phase: 'error', problem: { kind: 'gone' } }] as TaskEvent[]) {
      expect(reduce(done, e, T0)).toBe(done);
    }
  });

  it('an upload created while paused is kept for resume, which asks the server first; a late one is refused', () => {
    let s = run(added('u1', file(), 0), [{ type: 'turn' }, { type: 'paused' }]);
    expect(s).toMatchObject({ phase: 'paused', work: { step: 'new' } });
    s = reduce(s, { type: 'created', upload: fresh() }, T0);
    expect(s).toMatchObject({ phase: 'paused', work: { step: 'upload', upload: { id: 'up1' } } });
    s = reduce(s, { type: 'resumed' }, T0);
    expect(s).toMatchObject({ phase: 'uploading', syncing: 'resume' });
    expect(isSending(s)).toBe(false);
    expect(describe(s).note).toBe('Checking what the server already has…');
    // Another `created` (a second request) means nothing now: the engine releases that upload.
    expect(reduce(s, { type: 'created', upload: { ...fresh(), id: 'up2' } }, T0)).toBe(s);
    // Paused before its upload was created: resume waits for a turn again.
    expect(run(added('u2', file(), 0), [{ type: 'paused' }, { type: 'resumed' }]).phase).toBe('queued');
  });

  it('records the declared checksums, in any phase that holds the upload', () => {
    const s = reduce(sendingTask(), { type: 'declared', crc64nvme: CRC }, T0);
    expect(uploadOf(s)?.declared).toBe(CRC);
    expect(reduce(s, { type: 'declared', crc64nvme: CRC }, T0)).toBe(s);
    const paused = reduce(sendingTask(), { type: 'paused' }, T0);
    expect(uploadOf(reduce(paused, { type: 'declared', crc64nvme: CRC }, T0))?.declared).toBe(CRC);
    expect(uploadOf(listed('u2', status({ crc64nvme: CRC.toUpperCase() }), T0))?.declared).toBe(CRC);
  });

  it('stores chunks (with their CRCs) without touching the previous state, and awaits the assembly after the last one', () => {
    const s0 = sendingTask();
    const s1 = reduce(s0, stored(0), T0);
    expect(uploadOf(s0)?.received.size).toBe(0);
    expect([...(uploadOf(s1)?.received ?? [])]).toEqual([0]);
    expect(uploadOf(s1)?.crcs.get(0)).toBe(CRC);
    const s2 = run(s1, [stored(1), stored(2)]);
    expect(s2.phase).toBe('assembling');
    expect(describe(s2).note).toBe('Verifying and assembling on the server…');
    // The server may say it is complete before this tab saw every receipt.
    expect(reduce(s1, stored(1, true), T0).phase).toBe('assembling');
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
      expect(describe(reduce(noted, stored(2), T0)).note).toBeNull();
    }
    // Notes are about sending: elsewhere they mean nothing.
    const queued = added('u1', file(), T0);
    expect(reduce(queued, { type: 'notice', notice: { kind: 'offline' } }, T0)).toBe(queued);
  });

  it('resuming takes the server’s chunks and CRCs and says how many were there; that summary outlives chunk receipts', () => {
    const paused = reduce(sendingTask(), { type: 'paused' }, T0);
    const asking = reduce(paused, { type: 'resumed' }, T0);
    let s = reduce(asking, { type: 'synced', status: status({ received_chunks: [0], received_crc64nvme: [CRC], bytes_received: 4 }), resuming: true }, T0);
    expect(s).toMatchObject({ phase: 'uploading', syncing: null });
    expect(uploadOf(s)?.crcs.get(0)).toBe(CRC);
    expect(describe(s).note).toMatch(/^Resumed: \d+ of \d+ chunks were already on the server\.$/);
    expect(describe(s).note).toBe('Resumed: 1 of 3 chunks were already on the server.');
    s = reduce(s, stored(1), T0);
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
    const back = reduce(following, { type: 'synced', status: status({ received_chunks: [1], received_crc64nvme: [CRC] }), resuming: false }, T0);
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
    const creating = reduce(added('u1', file(), 0), { type: 'turn' }, T0);
    const failed = reduce(creating, { type: 'stopped', phase: 'failed', problem: { kind: 'not-started', detail: 'Forbidden' } }, T0);
    expect(failed).toMatchObject({ phase: 'failed', finishedAt: T0 });
    expect(describe(failed).message).toBe('Could not start the upload: Forbidden');
    expect([canResume(failed), canRemove(failed)]).toEqual([false, true]);
  });

  it('a file that changed stops the task without its file (Cancel is offered), like a conflicting declaration', () => {
    for (const problem of [
      { kind: 'changed', index: 1 },
      { kind: 'checksums-conflict', detail: 'Other checksums were declared.' },
    ] as const) {
      const s = reduce(sendingTask(), { type: 'stopped', phase: 'error', problem }, T0);
      expect(s).toMatchObject({ phase: 'error', file: null });
      expect([canResume(s), canCancel(s), canRemove(s)]).toEqual([false, true, false]);
    }
    const changed = reduce(sendingTask(), { type: 'stopped', phase: 'error', problem: { kind: 'changed', index: 1 } }, T0);
    expect(describe(changed).message).toBe(
      'The file changed while it was being uploaded (chunk 2 of 3 reads differently now). Cancel this upload, then add the file again.',
    );
    const conflict = reduce(sendingTask(), { type: 'stopped', phase: 'error', problem: { kind: 'checksums-conflict', detail: 'Other checksums.' } }, T0);
    expect(describe(conflict).message).toBe(
      'The file changed since this upload began: the server holds other checksums for it (Other checksums.). Cancel this upload, then add the file again.',
    );
    const undeclared = reduce(sendingTask(), { type: 'stopped', phase: 'error', problem: { kind: 'declaration-failed', detail: 'Offline.' } }, T0);
    expect(describe(undeclared).message).toBe('Could not give the server the file’s checksums: Offline.');
    expect(canResume(undeclared)).toBe(true);
    const sha = reduce(sendingTask(), { type: 'stopped', phase: 'failed', problem: { kind: 'sha256-mismatch', detail: 'Declared X.' } }, T0);
    expect(sha).toMatchObject({ phase: 'failed' });
    expect(describe(sha).message).toBe('The file’s SHA-256 is not the one the upload was created with: Declared X.');
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

  it('an interrupted upload takes its file back on trial: nothing goes until the chunks there are found to be its', () => {
    const s = listed('u1', status({ received_chunks: [0], received_crc64nvme: [CRC], bytes_received: 4 }), T0);
    expect(s).toMatchObject({ phase: 'interrupted', upload: { reportedBytes: 4 } });
    const refused = reduce(s, { type: 'attach-refused', reason: 'Not this one.' }, T0);
    expect(describe(refused)).toMatchObject({ label: 'Interrupted', message: 'Not this one.' });

    const attached = reduce(refused, { type: 'attached', file: file(), addedAt: 5, trial: 'chosen' }, T0);
    expect(attached).toMatchObject({ phase: 'uploading', syncing: 'resume', addedAt: 5, work: { trial: 'chosen' } });
    expect(describe(attached)).toEqual({ label: 'Checking file', note: 'Checking what the server already has…', message: null });
    const checking = reduce(attached, { type: 'synced', status: status({ received_chunks: [0], received_crc64nvme: [CRC] }), resuming: true }, T0);
    expect(checking).toMatchObject({ phase: 'uploading', syncing: null });
    expect(trialOf(checking)).toBe('chosen');
    expect(describe(checking)).toEqual({
      label: 'Checking file',
      note: 'Resumed: 1 of 3 chunks were already on the server. Checking that they are this file’s…',
      message: null,
    });

    const proven = reduce(checking, { type: 'proven' }, T0);
    expect(proven).toMatchObject({ phase: 'uploading', work: { trial: null } });
    expect(describe(proven)).toEqual({ label: 'Uploading', note: 'Resumed: 1 of 3 chunks were already on the server.', message: null });

    const other = reduce(checking, { type: 'refuted' }, T0);
    expect(other).toMatchObject({ phase: 'interrupted', problem: { kind: 'different-content' }, upload: { id: 'up1' } });
    expect(describe(other).message).toBe('The selected file’s content is not the one of this upload. Choose the original file to resume.');
    // A file added that was only a candidate goes elsewhere: the upload is left as it was, without a message.
    const candidate = run(s, [
      { type: 'attached', file: file(), addedAt: 5, trial: 'candidate' },
      { type: 'synced', status: status({ received_chunks: [0], received_crc64nvme: [CRC] }), resuming: true },
      { type: 'refuted' },
    ]);
    expect(candidate).toMatchObject({ phase: 'interrupted', problem: null });
  });

  it('a listed upload being assembled is followed; sent back to uploading without its file, it waits for the file', () => {
    const s = listed('u1', status({ state: 'assembling' }), T0);
    expect(s).toMatchObject({ phase: 'assembling', file: null });
    expect(reduce(s, { type: 'synced', status: status({ received_chunks: [0] }), resuming: false }, T0)).toMatchObject({
      phase: 'interrupted',
    });
  });

  it('announces moves for screen readers, worded by where the task came from', () => {
    const a = (before: TaskState | null, e: TaskEvent) => announcement(before, before ? reduce(before, e, T0) : added('u1', file(), T0), e);
    const queued = added('u1', file(), T0);
    expect(announcement(null, queued)).toBe('added');
    const creating = reduce(queued, { type: 'turn' }, T0);
    expect(a(creating, { type: 'created', upload: fresh() })).toBe('uploading');
    const sending = sendingTask();
    expect(a(sending, { type: 'paused' })).toBe('paused');
    expect(a(reduce(sending, { type: 'paused' }, T0), { type: 'resumed' })).toBe('resumed');
    expect(a(sending, { type: 'notice', notice: { kind: 'offline' } })).toBeNull();
    expect(a(sending, { type: 'stopped', phase: 'error', problem: { kind: 'gone' } })).toBe(
      'stopped: The upload was cancelled or has expired on the server.',
    );
    const interrupted = listed('u2', status(), T0);
    expect(a(interrupted, { type: 'attached', file: file(), addedAt: T0, trial: 'chosen' })).toBe('resuming');
    expect(a(interrupted, { type: 'attached', file: file(), addedAt: T0, trial: 'candidate' })).toBe('checking whether this is an interrupted upload');
    const candidate = reduce(interrupted, { type: 'attached', file: file(), addedAt: T0, trial: 'candidate' }, T0);
    const chosen = reduce(interrupted, { type: 'attached', file: file(), addedAt: T0, trial: 'chosen' }, T0);
    expect(a(candidate, { type: 'proven' })).toBe('same file as an interrupted upload, resuming');
    expect(a(chosen, { type: 'proven' })).toBeNull();
    expect(a(chosen, { type: 'refuted' })).toBe('a different file was selected');
    expect(a(candidate, { type: 'refuted' })).toBeNull();
    const cancelled = reduce(sending, { type: 'cancelled' }, T0);
    expect(a(sending, { type: 'cancelled' })).toBe('cancelled');
    expect(a(cancelled, { type: 'cancel-refused', previous: sending })).toBeNull();
  });
});

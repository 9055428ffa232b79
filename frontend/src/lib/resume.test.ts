import { describe, expect, it } from 'vitest';
import {
  forgetUpload,
  loadRecords,
  matchFile,
  pickBySha,
  pruneRecords,
  RECORDS_KEY,
  rememberUpload,
  wrongFileReason,
  type KeyValueStore,
  type UnfinishedUpload,
} from './resume';

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);

function memoryStore(): KeyValueStore & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
}

const up = (id: string, over: Partial<UnfinishedUpload> = {}): UnfinishedUpload => ({
  upload_id: id,
  name: 'movie.mkv',
  size: 1000,
  state: 'uploading',
  sha256: SHA_A,
  ...over,
});

const file = { name: 'movie.mkv', size: 1000, lastModified: 111 };
const rec = (lastModified: number) => ({ name: 'movie.mkv', size: 1000, lastModified, createdAt: 1 });

describe('matching a re-selected file to an unfinished upload', () => {
  it('resumes when name, size and modification time match', () => {
    const m = matchFile(file, [up('x'), up('y')], { y: rec(111), x: rec(222) });
    expect(m).toEqual({ kind: 'resume', upload: up('y') });
  });

  it('asks for a content check when only name and size match', () => {
    expect(matchFile(file, [up('x')], { x: rec(999) })).toEqual({ kind: 'verify', candidates: [up('x')] });
    // Another browser or a cleared storage: no record at all.
    expect(matchFile(file, [up('x')], {})).toEqual({ kind: 'verify', candidates: [up('x')] });
  });

  it('starts a new upload for another file, a finished upload or one already in use', () => {
    expect(matchFile({ ...file, size: 1001 }, [up('x')], { x: rec(111) })).toEqual({ kind: 'new' });
    expect(matchFile({ ...file, name: 'other.mkv' }, [up('x')], { x: rec(111) })).toEqual({ kind: 'new' });
    expect(matchFile(file, [up('x', { state: 'cancelled' })], { x: rec(111) })).toEqual({ kind: 'new' });
    expect(matchFile(file, [up('x')], { x: rec(111) }, new Set(['x']))).toEqual({ kind: 'new' });
    expect(matchFile(file, [up('x', { sha256: undefined })], {})).toEqual({ kind: 'new' });
  });

  it('picks the candidate with the same SHA-256', () => {
    const c = [up('x', { sha256: SHA_A }), up('y', { sha256: SHA_B })];
    expect(pickBySha(c, SHA_B.toUpperCase())?.upload_id).toBe('y');
    expect(pickBySha(c, 'c'.repeat(64))).toBeUndefined();
  });

  it('explains why a file cannot be the one of an interrupted upload', () => {
    expect(wrongFileReason(file, up('x'))).toBeNull();
    expect(wrongFileReason({ ...file, name: 'b.mkv' }, up('x'))).toMatch(/movie\.mkv/);
    expect(wrongFileReason({ ...file, size: 5 }, up('x'))).toMatch(/different size/);
  });
});

describe('the browser-side records', () => {
  it('remembers, forgets and prunes', () => {
    const s = memoryStore();
    rememberUpload(s, 'a', rec(1));
    rememberUpload(s, 'b', rec(2));
    rememberUpload(s, 'c', rec(3));
    expect(Object.keys(loadRecords(s)).sort()).toEqual(['a', 'b', 'c']);
    forgetUpload(s, 'a');
    pruneRecords(s, ['c', 'zzz']);
    expect(loadRecords(s)).toEqual({ c: rec(3) });
  });

  it('survives garbage, a missing store and a full one', () => {
    const s = memoryStore();
    s.data.set(RECORDS_KEY, '{not json');
    expect(loadRecords(s)).toEqual({});
    s.data.set(RECORDS_KEY, JSON.stringify({ ok: rec(1), bad: { name: 3 } }));
    expect(loadRecords(s)).toEqual({ ok: rec(1) });
    expect(loadRecords(null)).toEqual({});
    const full: KeyValueStore = {
      getItem: () => null,
      setItem: () => {
        throw new Error('QuotaExceededError');
      },
    };
    expect(() => rememberUpload(full, 'a', rec(1))).not.toThrow();
  });
});

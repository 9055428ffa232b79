import { describe, expect, it } from 'vitest';
import {
  candidatesFor,
  forgetUpload,
  loadRecords,
  pruneRecords,
  RECORDS_KEY,
  rememberUpload,
  wrongFileReason,
  type KeyValueStore,
  type UnfinishedUpload,
} from './resume';

function memoryStore(): KeyValueStore & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v) };
}

const up = (id: string, over: Partial<UnfinishedUpload> = {}): UnfinishedUpload => ({
  upload_id: id,
  name: 'movie.mkv',
  size: 1000,
  state: 'uploading',
  ...over,
});

const file = { name: 'movie.mkv', size: 1000, lastModified: 111 };
const rec = (lastModified: number) => ({ name: 'movie.mkv', size: 1000, lastModified, createdAt: 1 });

describe('the unfinished uploads a re-selected file may continue', () => {
  const ids = (us: UnfinishedUpload[]) => us.map((u) => u.upload_id);

  it('are those of its name and size, still uploading and not in use in this tab', () => {
    expect(ids(candidatesFor(file, [up('x'), up('y')], {}))).toEqual(['x', 'y']);
    expect(candidatesFor({ ...file, size: 1001 }, [up('x')], { x: rec(111) })).toEqual([]);
    expect(candidatesFor({ ...file, name: 'other.mkv' }, [up('x')], { x: rec(111) })).toEqual([]);
    expect(candidatesFor(file, [up('x', { state: 'cancelled' }), up('y', { state: 'assembling' })], {})).toEqual([]);
    expect(candidatesFor(file, [up('x')], { x: rec(111) }, new Set(['x']))).toEqual([]);
  });

  it('come in the order to try them: the recorded modification time first, then the newest this browser made', () => {
    const unfinished = [up('a'), up('b'), up('c'), up('d')];
    const records = { b: { ...rec(999), createdAt: 5 }, c: { ...rec(111), createdAt: 1 }, d: { ...rec(998), createdAt: 9 } };
    expect(ids(candidatesFor(file, unfinished, records))).toEqual(['c', 'd', 'b', 'a']);
    // A record is no proof: every candidate is still one to check (the engine compares CRCs).
    expect(ids(candidatesFor({ ...file, lastModified: 5 }, unfinished, records))).toEqual(['d', 'b', 'c', 'a']);
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

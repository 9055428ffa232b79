import { describe, expect, it } from 'vitest';
import { makePlan } from '../lib/plan';
import { crc64nvme } from './checksum';
import { PassRunner } from './pass';
import type { PassReply } from './protocol';

function bytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i += 1) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A 40-byte file in 10 chunks of 4, counting the reads. */
function setup(seed = 1) {
  const data = bytes(40, seed);
  let reads = 0;
  const file = new Blob([data]);
  const counted = {
    slice(start?: number, end?: number) {
      reads += 1;
      return file.slice(start, end);
    },
    size: file.size,
  } as unknown as Blob;
  const plan = makePlan(40, 4);
  const replies: PassReply[] = [];
  const runner = new PassRunner(counted, plan, (m) => replies.push(m));
  const settle = () => new Promise((r) => setTimeout(r, 30));
  const until = async (n: number) => {
    const end = Date.now() + 5000;
    while (replies.length < n) {
      if (Date.now() > end) throw new Error(`${n} replies expected, ${replies.length} came`);
      await new Promise((r) => setTimeout(r, 2));
    }
    await settle(); // and no more
  };
  const crcOf = (i: number) => crc64nvme(data.subarray(i * 4, i * 4 + 4));
  return { data, plan, replies, runner, settle, until, crcOf, reads: () => reads };
}

/** SHA-256 by WebCrypto (another implementation than the pass's hash-wasm). */
async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
  return [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const kinds = (rs: PassReply[]) => rs.map((r) => ('index' in r ? `${r.kind} ${r.index}` : r.kind));

describe('the pass over a file', () => {
  it('reads every byte once, in order, and hands chunks over only against credits', async () => {
    const t = setup();
    t.runner.handle({ op: 'start', received: [], sha256: true });
    await t.settle();
    expect(t.replies).toEqual([]);
    expect(t.reads()).toBe(0);
    t.runner.handle({ op: 'credit', n: 2 });
    await t.until(2);
    expect(kinds(t.replies)).toEqual(['chunk 0', 'chunk 1']);
    expect(t.reads()).toBe(2); // no read ahead without a credit
    t.runner.handle({ op: 'credit', n: 8 });
    await t.until(11);
    expect(kinds(t.replies)).toEqual([...Array.from({ length: 10 }, (_, i) => `chunk ${i}`), 'done']);
    expect(t.reads()).toBe(10);
    for (const r of t.replies) {
      if (r.kind === 'chunk') {
        expect(r.crc).toBe(await t.crcOf(r.index));
        expect(new Uint8Array(await r.data.arrayBuffer())).toEqual(t.data.subarray(r.index * 4, r.index * 4 + 4));
      }
    }
    expect(t.replies.at(-1)).toEqual({
      kind: 'done',
      sums: { crc64nvme: await crc64nvme(t.data), sha256: await sha256Hex(t.data) },
    });
  });

  it('compares the chunks the server holds (no credit needed) and hands over only the others', async () => {
    const t = setup();
    const received: [number, string][] = [[0, await t.crcOf(0)], [1, await t.crcOf(1)], [6, await t.crcOf(6)]];
    t.runner.handle({ op: 'start', received, sha256: false });
    t.runner.handle({ op: 'credit', n: 1 });
    await t.until(3);
    expect(kinds(t.replies)).toEqual(['checked 0', 'checked 1', 'chunk 2']);
    t.runner.handle({ op: 'credit', n: 10 });
    await t.until(11);
    expect(kinds(t.replies)).toEqual([
      'checked 0',
      'checked 1',
      'chunk 2',
      'chunk 3',
      'chunk 4',
      'chunk 5',
      'checked 6',
      'chunk 7',
      'chunk 8',
      'chunk 9',
      'done',
    ]);
    // Not asked for a SHA-256: none is computed.
    expect(t.replies.at(-1)).toEqual({ kind: 'done', sums: { crc64nvme: await crc64nvme(t.data), sha256: null } });
  });

  it('stops at a chunk the server holds that reads otherwise, before handing over any chunk after it', async () => {
    const t = setup();
    const other = setup(2);
    t.runner.handle({ op: 'start', received: [[0, await t.crcOf(0)], [1, await other.crcOf(1)]], sha256: false });
    t.runner.handle({ op: 'credit', n: 5 });
    await t.until(2);
    expect(kinds(t.replies)).toEqual(['checked 0', 'mismatch 1']);
  });

  it('pauses after the chunk in hand, forgetting its credits, and goes on', async () => {
    const t = setup();
    t.runner.handle({ op: 'start', received: [], sha256: true });
    t.runner.handle({ op: 'credit', n: 3 });
    t.runner.handle({ op: 'pause' });
    await t.settle();
    const before = t.replies.length;
    expect(before).toBeLessThanOrEqual(1);
    t.runner.handle({ op: 'go' });
    await t.settle();
    expect(t.replies.length).toBe(before); // the credits went with the pause
    t.runner.handle({ op: 'credit', n: 20 });
    await t.until(11);
    expect(t.replies.at(-1)?.kind).toBe('done');
    expect(t.replies.filter((r) => r.kind === 'chunk')).toHaveLength(10);
  });

  it('reads a chunk again: its bytes when it reads as before, none when it does not; checks CRCs of chunks', async () => {
    const t = setup();
    t.runner.handle({ op: 'read', seq: 1, index: 3, expect: await t.crcOf(3) });
    t.runner.handle({ op: 'read', seq: 2, index: 3, expect: await t.crcOf(4) });
    t.runner.handle({ op: 'check', seq: 3, indices: [5, 9] });
    await t.until(3);
    const [a, b, c] = t.replies;
    expect(a?.kind === 'read' && a.data && new Uint8Array(await a.data.arrayBuffer())).toEqual(t.data.subarray(12, 16));
    expect(b).toMatchObject({ kind: 'read', seq: 2, data: null, crc: await t.crcOf(3) });
    expect(c).toEqual({ kind: 'crcs', seq: 3, crcs: [await t.crcOf(5), await t.crcOf(9)] });
  });

  it('reports a file that has become shorter', async () => {
    const replies: PassReply[] = [];
    const runner = new PassRunner(new Blob([new Uint8Array(10)]), makePlan(12, 4), (m) => replies.push(m));
    runner.handle({ op: 'start', received: [], sha256: true });
    runner.handle({ op: 'credit', n: 3 });
    await new Promise((r) => setTimeout(r, 20));
    expect(replies.at(-1)).toMatchObject({ kind: 'error', message: expect.stringMatching(/shorter/) });
  });
});

import { describe, expect, it } from 'vitest';
import { bytesOf, chunkLength, chunkRange, makePlan, missingChunks } from './plan';

describe('chunk planning', () => {
  it('cuts a file into full chunks and a shorter last one', () => {
    const plan = makePlan(10, 4);
    expect(plan.totalChunks).toBe(3);
    expect(chunkRange(plan, 0)).toEqual({ index: 0, start: 0, end: 4 });
    expect(chunkRange(plan, 2)).toEqual({ index: 2, start: 8, end: 10 });
    expect(chunkLength(plan, 2)).toBe(2);
  });

  it('makes one chunk of a file smaller than the chunk size, and exact multiples have no stub', () => {
    expect(makePlan(3, 16).totalChunks).toBe(1);
    expect(chunkLength(makePlan(3, 16), 0)).toBe(3);
    const exact = makePlan(32, 16);
    expect(exact.totalChunks).toBe(2);
    expect(chunkLength(exact, 1)).toBe(16);
  });

  it('handles files of terabytes exactly (safe integers)', () => {
    const size = 5 * 1024 ** 4 + 7;
    const plan = makePlan(size, 512 * 1024 ** 2);
    expect(plan.totalChunks).toBe(10241);
    expect(chunkRange(plan, plan.totalChunks - 1).end).toBe(size);
    expect(chunkLength(plan, plan.totalChunks - 1)).toBe(7);
  });

  it('checks the server plan and the inputs', () => {
    expect(() => makePlan(10, 4, 3)).not.toThrow();
    expect(() => makePlan(10, 4, 2)).toThrow(/planned 2 chunks/);
    expect(() => makePlan(0, 4)).toThrow();
    expect(() => makePlan(10, 0)).toThrow();
    expect(() => makePlan(1.5, 4)).toThrow();
    expect(() => chunkRange(makePlan(10, 4), 3)).toThrow();
    expect(() => chunkRange(makePlan(10, 4), -1)).toThrow();
  });

  it('lists missing chunks and counts received bytes', () => {
    const plan = makePlan(10, 4);
    expect(missingChunks(plan, [])).toEqual([0, 1, 2]);
    expect(missingChunks(plan, [2, 0])).toEqual([1]);
    expect(missingChunks(plan, [0, 1, 2])).toEqual([]);
    expect(bytesOf(plan, [0, 2, 2, 99])).toBe(6);
  });
});

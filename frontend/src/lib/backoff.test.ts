import { describe, expect, it } from 'vitest';
import { backoffDelay, decideRetry, DEFAULT_RETRY, isTransient, parseRetryAfter } from './backoff';

const noJitter = () => 0;
const maxJitter = () => 0.999999;

describe('backoff', () => {
  it('doubles from 250 ms and stops at the cap', () => {
    expect([1, 2, 3, 4, 5].map((a) => backoffDelay(a, DEFAULT_RETRY, noJitter))).toEqual([250, 500, 1000, 2000, 4000]);
    expect(backoffDelay(7, DEFAULT_RETRY, noJitter)).toBe(10_000);
    expect(backoffDelay(50, DEFAULT_RETRY, noJitter)).toBe(10_000);
  });

  it('adds at most 25 % jitter', () => {
    expect(backoffDelay(1, DEFAULT_RETRY, maxJitter)).toBe(312);
    expect(backoffDelay(50, DEFAULT_RETRY, maxJitter)).toBeLessThanOrEqual(12_500);
  });

  it('knows which failures are transient', () => {
    expect([0, 408, 429, 500, 502, 503].every(isTransient)).toBe(true);
    expect([400, 401, 403, 404, 409, 410, 413, 422].some(isTransient)).toBe(false);
  });
});

describe('retry decisions', () => {
  it('retries network errors and 5xx with growing delays, then gives up', () => {
    expect(decideRetry({ status: 0 }, 1, 0, DEFAULT_RETRY, noJitter)).toEqual({ kind: 'retry', delayMs: 250 });
    expect(decideRetry({ status: 503 }, 3, 0, DEFAULT_RETRY, noJitter)).toEqual({ kind: 'retry', delayMs: 1000 });
    expect(decideRetry({ status: 500 }, DEFAULT_RETRY.maxAttempts)).toEqual({ kind: 'fail', reason: 'attempts' });
  });

  it('honours Retry-After on 429 and 503 when longer than the backoff', () => {
    expect(decideRetry({ status: 429, retryAfterS: 5 }, 1, 0, DEFAULT_RETRY, noJitter)).toEqual({ kind: 'retry', delayMs: 5000 });
  });

  it('resends a chunk whose digest did not match (corrupted on the way)', () => {
    expect(decideRetry({ status: 422 }, 1, 0, DEFAULT_RETRY, noJitter).kind).toBe('retry');
  });

  it('renews the upload token on 401', () => {
    expect(decideRetry({ status: 401 }, 1)).toEqual({ kind: 'renew-token' });
  });

  it('waits, without counting, for a chunk another request holds, until the deadline', () => {
    const f = { status: 409, problemType: 'https://lfusys.io/problems/chunk-in-progress', retryAfterS: 3 };
    expect(decideRetry(f, 1, 0)).toEqual({ kind: 'wait', delayMs: 3000 });
    expect(decideRetry({ ...f, retryAfterS: undefined }, 1, 0)).toEqual({ kind: 'wait', delayMs: 1000 });
    expect(decideRetry({ ...f, retryAfterS: 600 }, 1, 0)).toEqual({ kind: 'wait', delayMs: 30_000 });
    expect(decideRetry(f, 1, DEFAULT_RETRY.inProgressDeadlineMs).kind).toBe('fail');
  });

  it('stops on a gone upload and on permanent errors', () => {
    expect(decideRetry({ status: 410 }, 1)).toEqual({ kind: 'gone' });
    expect(decideRetry({ status: 409, problemType: 'https://lfusys.io/problems/chunk-conflict' }, 1)).toEqual({ kind: 'fail', reason: 'permanent' });
    expect(decideRetry({ status: 400 }, 1)).toEqual({ kind: 'fail', reason: 'permanent' });
    expect(decideRetry({ status: 403 }, 1)).toEqual({ kind: 'fail', reason: 'permanent' });
  });

  it('parses Retry-After as seconds or a date', () => {
    expect(parseRetryAfter('7')).toBe(7);
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now)).toBe(10);
  });
});

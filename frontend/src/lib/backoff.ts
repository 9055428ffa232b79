// Retry policy for chunk uploads: what to do after a failed attempt.

export interface RetryPolicy {
  /** Attempts per chunk for transient failures before the upload stops with an error. */
  maxAttempts: number;
  baseMs: number;
  capMs: number;
  /** How long to keep waiting for a chunk that another request still holds (409 in progress). */
  inProgressDeadlineMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 8,
  baseMs: 250,
  capMs: 10_000,
  inProgressDeadlineMs: 180_000,
};

/**
 * Exponential backoff with jitter: 250 ms, 500 ms, 1 s, 2 s … capped; up to +25 % jitter so that
 * parallel chunks that failed together do not retry in lockstep. `random` is in [0, 1).
 */
export function backoffDelay(attempt: number, policy: RetryPolicy = DEFAULT_RETRY, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(attempt, 1) - 1, 30);
  const base = Math.min(policy.baseMs * 2 ** exp, policy.capMs);
  return Math.round(base + base * 0.25 * random());
}

/** The outcome of one chunk PUT, as far as retrying is concerned. */
export interface AttemptFailure {
  /** HTTP status; 0 for a network error (no answer), or a timeout. */
  status: number;
  /** The problem+json `type`, when there was one. */
  problemType?: string;
  /** `Retry-After` in seconds, when given. */
  retryAfterS?: number;
}

export type RetryDecision =
  /** Wait and try the same chunk again; counts as an attempt. */
  | { kind: 'retry'; delayMs: number }
  /** Get a fresh upload token, then retry at once. */
  | { kind: 'renew-token' }
  /** Another request holds the chunk: wait, do not count an attempt. */
  | { kind: 'wait'; delayMs: number }
  /** The upload is gone (cancelled or expired). */
  | { kind: 'gone' }
  /** Give up: the error is not transient, or too many attempts failed. */
  | { kind: 'fail'; reason: 'attempts' | 'permanent' };

export function isTransient(status: number): boolean {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/**
 * Decides what to do after the `attempt`-th failed try (1-based) of a chunk.
 * `elapsedInProgressMs` is how long this chunk has been waiting on 409 chunk-in-progress.
 */
export function decideRetry(
  failure: AttemptFailure,
  attempt: number,
  elapsedInProgressMs = 0,
  policy: RetryPolicy = DEFAULT_RETRY,
  random: () => number = Math.random,
): RetryDecision {
  const { status } = failure;
  if (status === 401) {
    return attempt >= policy.maxAttempts ? { kind: 'fail', reason: 'attempts' } : { kind: 'renew-token' };
  }
  if (status === 410) return { kind: 'gone' };
  if (status === 409 && failure.problemType?.endsWith('/chunk-in-progress')) {
    if (elapsedInProgressMs >= policy.inProgressDeadlineMs) return { kind: 'fail', reason: 'permanent' };
    const s = Math.min(Math.max(failure.retryAfterS ?? 1, 1), 30);
    return { kind: 'wait', delayMs: s * 1000 };
  }
  // 422: the bytes were corrupted on the way (digest mismatch): send them again.
  if (status === 422 || isTransient(status)) {
    if (attempt >= policy.maxAttempts) return { kind: 'fail', reason: 'attempts' };
    const retryAfterMs = status === 429 || status === 503 ? (failure.retryAfterS ?? 0) * 1000 : 0;
    return { kind: 'retry', delayMs: Math.max(backoffDelay(attempt, policy, random), retryAfterMs) };
  }
  return { kind: 'fail', reason: 'permanent' };
}

/** Parses a `Retry-After` header (seconds or an HTTP date) into seconds. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

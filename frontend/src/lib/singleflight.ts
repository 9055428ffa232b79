// One refresh at a time, however many requests hit an expired token at once.

/**
 * Runs `fn` at most once at a time: callers that arrive while it runs share its result.
 * Each success bumps `generation`; a caller that passes the generation it saw before its request
 * failed gets an immediate success when a run has completed since (someone else already refreshed),
 * instead of starting another one.
 */
export class SingleFlight<T> {
  private inflight: Promise<T> | null = null;
  private gen = 0;
  private last: { value: T } | null = null;

  constructor(private readonly fn: () => Promise<T>) {}

  /** Number of successful runs so far. */
  get generation(): number {
    return this.gen;
  }

  run(seenGeneration?: number): Promise<T> {
    if (this.inflight) return this.inflight;
    if (seenGeneration !== undefined && seenGeneration < this.gen && this.last) {
      return Promise.resolve(this.last.value);
    }
    // fn runs in a microtask, so `inflight` is set before it can settle (even if it throws).
    const p: Promise<T> = Promise.resolve()
      .then(() => this.fn())
      .then((value) => {
        this.gen += 1;
        this.last = { value };
        return value;
      })
      .finally(() => {
        if (this.inflight === p) this.inflight = null;
      });
    this.inflight = p;
    return p;
  }
}

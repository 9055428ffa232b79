// Transfer speed and time-left estimates.

interface Sample {
  t: number;
  bytes: number;
}

/**
 * Speed over a sliding window of recent samples (default 8 s), so the figure follows the current
 * rate rather than the average since the start, yet does not jump with every progress event.
 * `reset()` after a pause: the paused time must not drag the speed down.
 */
export class SpeedMeter {
  private samples: Sample[] = [];

  constructor(
    private readonly windowMs = 8_000,
    /** Below this much observed time there is no estimate yet. */
    private readonly minSpanMs = 750,
  ) {}

  /** Records that `bytes` (a running total) were done at time `t` (ms). */
  record(t: number, bytes: number): void {
    const last = this.samples[this.samples.length - 1];
    if (last && bytes < last.bytes) {
      // Progress went back (an aborted chunk): start measuring again from here.
      this.samples = [];
    }
    if (last && t === last.t) {
      last.bytes = bytes;
    } else {
      this.samples.push({ t, bytes });
    }
    // Keep one sample older than the window so the window is always fully covered.
    while (this.samples.length > 2 && (this.samples[1]?.t ?? t) <= t - this.windowMs) {
      this.samples.shift();
    }
  }

  /** Bytes per second, or null while there is too little data. */
  rate(now?: number): number | null {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || first === last) return null;
    const end = Math.max(now ?? last.t, last.t);
    const span = end - first.t;
    if (span < this.minSpanMs) return null;
    return ((last.bytes - first.bytes) * 1000) / span;
  }

  reset(): void {
    this.samples = [];
  }
}

/** Seconds left at `rate` bytes/s, or null when unknown (no rate yet, or stalled). */
export function eta(remainingBytes: number, rate: number | null): number | null {
  if (remainingBytes <= 0) return 0;
  if (rate === null || !(rate > 0)) return null;
  return remainingBytes / rate;
}

export interface ProgressPart {
  done: number;
  total: number;
  rate: number | null;
  active: boolean;
}

export interface Totals {
  done: number;
  total: number;
  /** Sum of the rates of the active transfers. */
  rate: number | null;
  /** When the last active transfer should finish at the current rates. */
  eta: number | null;
}

/** Overall progress of several transfers; the ETA counts only active ones. */
export function combine(parts: readonly ProgressPart[]): Totals {
  let done = 0;
  let total = 0;
  let rate: number | null = null;
  let activeRemaining = 0;
  let unknown = false;
  for (const p of parts) {
    done += Math.min(p.done, p.total);
    total += p.total;
    if (!p.active) continue;
    activeRemaining += Math.max(0, p.total - p.done);
    if (p.rate === null) unknown = true;
    else rate = (rate ?? 0) + p.rate;
  }
  const e = unknown && rate === null ? null : eta(activeRemaining, rate);
  return { done, total, rate, eta: activeRemaining === 0 ? null : e };
}

/** The next 25 % milestone crossed going from `before` to `after` percent, if any (for screen readers). */
export function crossedMilestone(before: number, after: number, step = 25): number | null {
  const a = Math.floor(before / step);
  const b = Math.floor(after / step);
  if (b > a && after < 100) return b * step;
  return null;
}

import { describe, expect, it } from 'vitest';
import { combine, crossedMilestone, eta, SpeedMeter } from './progress';

describe('speed', () => {
  it('has no estimate until enough time was observed', () => {
    const m = new SpeedMeter(8000, 750);
    m.record(0, 0);
    expect(m.rate(0)).toBeNull();
    m.record(500, 500_000);
    expect(m.rate(500)).toBeNull();
    m.record(1000, 1_000_000);
    expect(m.rate(1000)).toBe(1_000_000);
  });

  it('follows the recent rate over a sliding window', () => {
    const m = new SpeedMeter(2000, 500);
    let bytes = 0;
    for (let t = 0; t <= 10_000; t += 100) {
      bytes += t < 5000 ? 10_000 : 1_000; // 100 kB/s, then 10 kB/s
      m.record(t, bytes);
    }
    expect(m.rate(10_000)).toBeCloseTo(10_000, -2);
  });

  it('falls when nothing moves, and starts over after a reset or a step back', () => {
    const m = new SpeedMeter(8000, 500);
    m.record(0, 0);
    m.record(1000, 1000);
    expect(m.rate(1000)).toBe(1000);
    expect(m.rate(2000)).toBe(500);
    m.record(3000, 500); // an aborted chunk took its bytes back
    expect(m.rate(3000)).toBeNull();
    m.reset();
    expect(m.rate(4000)).toBeNull();
  });
});

describe('eta', () => {
  it('divides what is left by the rate', () => {
    expect(eta(1000, 100)).toBe(10);
    expect(eta(0, null)).toBe(0);
    expect(eta(1000, null)).toBeNull();
    expect(eta(1000, 0)).toBeNull();
  });

  it('adds up several transfers; only active ones count for the time left', () => {
    const t = combine([
      { done: 50, total: 100, rate: 10, active: true },
      { done: 20, total: 100, rate: 30, active: true },
      { done: 0, total: 1000, rate: null, active: false },
    ]);
    expect(t).toEqual({ done: 70, total: 1200, rate: 40, eta: 130 / 40 });
    expect(combine([]).eta).toBeNull();
    expect(combine([{ done: 1, total: 2, rate: null, active: true }]).eta).toBeNull();
  });

  it('announces each 25 % step once', () => {
    expect(crossedMilestone(10, 30)).toBe(25);
    expect(crossedMilestone(30, 40)).toBeNull();
    expect(crossedMilestone(74, 76)).toBe(75);
    expect(crossedMilestone(90, 100)).toBeNull();
  });
});

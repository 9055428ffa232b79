import { describe, expect, it } from 'vitest';
import { formatBytes, formatDate, formatDuration, formatRate, percent } from './format';

describe('human formats', () => {
  it('sizes', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(72 * 1024 ** 2)).toBe('72.0 MiB');
    expect(formatBytes(512 * 1024 ** 3)).toBe('512 GiB');
    expect(formatBytes(1024 ** 2 - 1)).toBe('1.00 MiB');
    expect(formatBytes(-1)).toBe('—');
  });

  it('rates and durations', () => {
    expect(formatRate(10 * 1024 ** 2)).toBe('10.0 MiB/s');
    expect(formatRate(null)).toBe('—');
    expect(formatDuration(0.2)).toBe('1 s');
    expect(formatDuration(65)).toBe('1 min 05 s');
    expect(formatDuration(3 * 3600 + 7 * 60)).toBe('3 h 07 min');
    expect(formatDuration(80 * 3600)).toBe('3 d 8 h');
    expect(formatDuration(null)).toBe('—');
  });

  it('dates and percentages', () => {
    expect(formatDate('2026-03-12T14:05:00Z', 'en-GB')).toMatch(/12 Mar 2026/);
    expect(formatDate('not a date')).toBe('not a date');
    expect(percent(999, 1000)).toBe(99);
    expect(percent(1000, 1000)).toBe(100);
    expect(percent(1, 0)).toBe(0);
  });
});

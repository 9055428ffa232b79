// Human-readable sizes, rates, durations and dates.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/** `1536` → `"1.5 KiB"`; three significant digits, binary units (as the CLI prints them). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  // 1023.95 KiB rounds to "1024 KiB": move up a unit instead.
  if (Number(value.toFixed(digits)) >= 1024 && unit < UNITS.length - 1) {
    return `1.00 ${UNITS[unit + 1]}`;
  }
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** Bytes per second → `"45.2 MiB/s"`. */
export function formatRate(bytesPerSecond: number | null): string {
  if (bytesPerSecond === null || !Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '—';
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** Seconds → `"42 s"`, `"3 min 05 s"`, `"2 h 07 min"`, `"3 d 4 h"`. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** An RFC 3339 timestamp in the user's locale, e.g. `"12 Mar 2026, 14:05"`. */
export function formatDate(iso: string, locale?: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }).format(d);
}

/** `12345678` → `"12,345,678"` (locale grouping) for exact byte counts. */
export function formatExactBytes(bytes: number, locale?: string): string {
  return `${new Intl.NumberFormat(locale).format(bytes)} bytes`;
}

/** A percentage for display: floors, so 100 % appears only when everything is there. */
export function percent(done: number, total: number): number {
  if (total <= 0) return 0;
  return Math.max(0, Math.min(100, Math.floor((done / total) * 100)));
}

// The web app's client of the LFUSYS API: same-origin cookies, the CSRF double submit, problem+json
// errors, and a silent, single-flight session refresh when the access token has expired.

import { SingleFlight } from '../lib/singleflight';
import type { CreatedUpload, DeclaredChecksums, FileInfo, Page, TokenResponse, UploadStatus, UploadToken, User } from './types';

export const CSRF_COOKIE = 'lfusys_csrf';

/** An API error: a problem+json answer, or status 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly type: string = 'about:blank',
    readonly retryAfterS?: number,
  ) {
    super(detail || title);
    this.name = 'ApiError';
  }

  /** The short problem kind, e.g. `email-taken` for `https://lfusys.io/problems/email-taken`. */
  get kind(): string {
    return this.type.slice(this.type.lastIndexOf('/') + 1);
  }
}

export function readCookie(cookieHeader: string, name: string): string | null {
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return null;
}

/** Turns a non-2xx response into an ApiError, reading problem+json when there is one. */
export async function errorFrom(res: Response): Promise<ApiError> {
  const retryAfter = res.headers.get('retry-after');
  const retryAfterS = retryAfter !== null && /^\d+$/.test(retryAfter.trim()) ? Number(retryAfter) : undefined;
  let title = res.statusText || `HTTP ${res.status}`;
  let detail = '';
  let type = 'about:blank';
  try {
    const text = await res.text();
    if (text) {
      try {
        const body = JSON.parse(text) as Record<string, unknown>;
        if (typeof body.title === 'string') title = body.title;
        if (typeof body.detail === 'string') detail = body.detail;
        if (typeof body.type === 'string') type = body.type;
      } catch {
        detail = text.slice(0, 300);
      }
    }
  } catch {
    // The body could not be read; the status says enough.
  }
  return new ApiError(res.status, title, detail || title, type, retryAfterS);
}

export function networkError(e: unknown): ApiError {
  const why = e instanceof Error ? e.message : String(e);
  return new ApiError(0, 'Network error', `Cannot reach the server (${why}). Check your connection and try again.`, 'network');
}

export interface ClientOptions {
  /** Prefix of every path (default: same origin). */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** The current `document.cookie` (read at every request: the CSRF token can change). */
  cookies?: () => string;
  /** Called once the session can no longer be renewed (signed out elsewhere, expired). */
  onSessionExpired?: () => void;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface RequestOptions {
  body?: unknown;
  /** Refresh the session and retry once on 401 (default true). */
  refresh?: boolean;
  signal?: AbortSignal;
}

export class ApiClient {
  private readonly baseUrl: string;
  private readonly fetchFn: typeof fetch;
  private readonly cookies: () => string;
  private readonly refresher: SingleFlight<TokenResponse>;
  onSessionExpired: (() => void) | undefined;

  constructor(opts: ClientOptions = {}) {
    this.baseUrl = (opts.baseUrl ?? '').replace(/\/$/, '');
    // Unbound `fetch` throws "Illegal invocation" in browsers.
    const f = opts.fetch ?? globalThis.fetch;
    this.fetchFn = (input, init) => f(input, init);
    this.cookies = opts.cookies ?? (() => (typeof document === 'undefined' ? '' : document.cookie));
    this.onSessionExpired = opts.onSessionExpired;
    this.refresher = new SingleFlight(() => this.doRefresh());
  }

  /** How many times the session was renewed (for tests and diagnostics). */
  get refreshCount(): number {
    return this.refresher.generation;
  }

  url(path: string): string {
    return `${this.baseUrl}${path}`;
  }

  private async send(method: Method, path: string, opts: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET') {
      const csrf = readCookie(this.cookies(), CSRF_COOKIE);
      if (csrf) headers['x-csrf-token'] = csrf;
    }
    try {
      return await this.fetchFn(this.url(path), {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        credentials: 'same-origin',
        cache: 'no-store',
        signal: opts.signal,
      });
    } catch (e) {
      if (e instanceof DOMException && e.name === 'AbortError') throw e;
      throw networkError(e);
    }
  }

  /** A request; on 401 the session is renewed (once for all concurrent callers) and it is retried. */
  async request(method: Method, path: string, opts: RequestOptions = {}): Promise<Response> {
    const seen = this.refresher.generation;
    let res = await this.send(method, path, opts);
    if (res.status !== 401 || opts.refresh === false) {
      if (!res.ok) throw await errorFrom(res);
      return res;
    }
    try {
      await this.refresher.run(seen);
    } catch (e) {
      // No refresh cookie, a spent or revoked one, or no CSRF cookie to go with it.
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        this.onSessionExpired?.();
        throw new ApiError(401, 'Signed out', 'Your session has ended. Please sign in again.', 'session-expired');
      }
      throw e;
    }
    res = await this.send(method, path, opts);
    if (!res.ok) {
      const err = await errorFrom(res);
      if (err.status === 401) this.onSessionExpired?.();
      throw err;
    }
    return res;
  }

  async json<T>(method: Method, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.request(method, path, opts);
    try {
      return (await res.json()) as T;
    } catch (e) {
      throw new ApiError(res.status, 'Bad answer', `The server sent an unreadable answer (${String(e)}).`, 'bad-answer');
    }
  }

  private async doRefresh(): Promise<TokenResponse> {
    const res = await this.send('POST', '/api/v1/auth/refresh', {});
    if (!res.ok) throw await errorFrom(res);
    return (await res.json()) as TokenResponse;
  }

  /** Renews the session now (shared with any refresh already running). */
  refresh(): Promise<TokenResponse> {
    return this.refresher.run();
  }

  // ---- auth ----

  register(email: string, password: string, name?: string): Promise<User> {
    return this.json('POST', '/api/v1/auth/register', { body: { email, password, name: name || undefined }, refresh: false });
  }

  async login(email: string, password: string): Promise<User> {
    const t = await this.json<TokenResponse>('POST', '/api/v1/auth/login', { body: { email, password }, refresh: false });
    return t.user;
  }

  async logout(): Promise<void> {
    await this.request('POST', '/api/v1/auth/logout', { refresh: false });
  }

  /** The signed-in user, or null when there is no (renewable) session. */
  async me(): Promise<User | null> {
    try {
      return await this.json<User>('GET', '/api/v1/auth/me');
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return null;
      throw e;
    }
  }

  // ---- uploads ----

  createUpload(body: { name: string; size: number; content_type?: string; sha256?: string }): Promise<CreatedUpload> {
    return this.json('POST', '/api/v1/uploads', { body });
  }

  async unfinishedUploads(): Promise<UploadStatus[]> {
    return (await this.json<{ items: UploadStatus[] }>('GET', '/api/v1/uploads')).items;
  }

  upload(id: string, signal?: AbortSignal): Promise<UploadStatus> {
    return this.json('GET', `/api/v1/uploads/${encodeURIComponent(id)}`, { signal });
  }

  /** The long poll: the upload once its state changes, or after `seconds` (at most 60) unchanged. */
  uploadChange(id: string, seconds: number, signal?: AbortSignal): Promise<UploadStatus> {
    const wait = Math.max(0, Math.min(60, Math.floor(seconds)));
    return this.json('GET', `/api/v1/uploads/${encodeURIComponent(id)}?wait=${wait}`, { signal });
  }

  /**
   * Declares the whole-file checksums computed while reading the file, before its last chunk:
   * `409 checksums-declared` (others were declared), `409 upload-not-uploading`, `422
   * sha256-mismatch` (the upload was created with another SHA-256; it is failed).
   */
  declareChecksums(id: string, sums: DeclaredChecksums): Promise<UploadStatus> {
    return this.json('PATCH', `/api/v1/uploads/${encodeURIComponent(id)}`, { body: sums });
  }

  async cancelUpload(id: string): Promise<void> {
    await this.request('DELETE', `/api/v1/uploads/${encodeURIComponent(id)}`);
  }

  renewUploadToken(id: string): Promise<UploadToken> {
    return this.json('POST', `/api/v1/uploads/${encodeURIComponent(id)}/token`);
  }

  // ---- files ----

  files(cursor: string | null, limit: number): Promise<Page<FileInfo>> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set('cursor', cursor);
    return this.json('GET', `/api/v1/files?${q.toString()}`);
  }

  file(id: string): Promise<FileInfo> {
    return this.json('GET', `/api/v1/files/${encodeURIComponent(id)}`);
  }

  async deleteFile(id: string): Promise<void> {
    await this.request('DELETE', `/api/v1/files/${encodeURIComponent(id)}`);
  }

  /** A streamed download: a plain link that the cookie authenticates. */
  contentUrl(id: string): string {
    return this.url(`/api/v1/files/${encodeURIComponent(id)}/content`);
  }
}

/** A message for a person, from any error. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 429) {
      return e.retryAfterS !== undefined ? `Too many attempts. Try again in ${e.retryAfterS} s.` : 'Too many attempts. Try again shortly.';
    }
    if (e.status >= 500 && e.detail === e.title) return `The server failed (${e.status}). Try again shortly.`;
    const d = e.detail.trim();
    return d ? d.charAt(0).toUpperCase() + d.slice(1) + (/[.!?]$/.test(d) ? '' : '.') : e.title;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

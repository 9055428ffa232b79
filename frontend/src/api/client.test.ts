import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError, describeError, readCookie } from './client';

interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string | undefined;
}

/** A fake gateway: access tokens expire until a refresh happens; counts refreshes. */
function fakeServer(opts: { refreshOk?: boolean; refreshDelayMs?: number } = {}) {
  const calls: Call[] = [];
  let session = 1; // bumped by refresh; requests carry the session current when sent
  let expired = true;
  let refreshes = 0;
  const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    const headers = (init?.headers ?? {}) as Record<string, string>;
    calls.push({ url, method: init?.method ?? 'GET', headers, body: init?.body as string | undefined });
    const json = (status: number, body: unknown) =>
      new Response(JSON.stringify(body), { status, headers: { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' } });
    if (url.endsWith('/api/v1/auth/refresh')) {
      refreshes += 1;
      await new Promise((r) => setTimeout(r, opts.refreshDelayMs ?? 5));
      if (opts.refreshOk === false) return json(401, { type: 'https://lfusys.io/problems/unauthorized', title: 'Unauthorized', status: 401, detail: 'the refresh token is invalid' });
      session += 1;
      expired = false;
      return json(200, { user: { id: 'u', email: 'a@b.c', name: '' }, access_token: 'a', refresh_token: 'r', token_type: 'Bearer', expires_in: 900 });
    }
    if (expired) return json(401, { type: 'https://lfusys.io/problems/unauthorized', title: 'Unauthorized', status: 401, detail: 'expired' });
    if (url.includes('/missing')) return json(404, { type: 'https://lfusys.io/problems/not-found', title: 'Not Found', status: 404, detail: 'no such file' });
    return json(200, { items: [], next_cursor: null, session });
  }) as typeof fetch;
  return { fetchFn, calls, refreshes: () => refreshes, expire: () => (expired = true) };
}

describe('the API client', () => {
  it('renews an expired session once for many concurrent requests, then retries each', async () => {
    const server = fakeServer({ refreshDelayMs: 20 });
    const api = new ApiClient({ fetch: server.fetchFn, cookies: () => 'lfusys_csrf=tok' });
    const pages = await Promise.all(Array.from({ length: 8 }, () => api.files(null, 10)));
    expect(pages).toHaveLength(8);
    expect(server.refreshes()).toBe(1);
    expect(api.refreshCount).toBe(1);
    const refresh = server.calls.find((c) => c.url.endsWith('/refresh'));
    expect(refresh?.headers['x-csrf-token']).toBe('tok');
  });

  it('does not refresh again for a request that failed before a refresh that has completed', async () => {
    const server = fakeServer();
    const api = new ApiClient({ fetch: server.fetchFn, cookies: () => 'lfusys_csrf=tok' });
    await api.files(null, 10);
    expect(server.refreshes()).toBe(1);
    server.expire();
    await api.files(null, 10);
    expect(server.refreshes()).toBe(2);
  });

  it('reports an ended session once refreshing fails', async () => {
    const server = fakeServer({ refreshOk: false });
    let expiredCalls = 0;
    const api = new ApiClient({ fetch: server.fetchFn, onSessionExpired: () => (expiredCalls += 1) });
    await expect(api.files(null, 10)).rejects.toMatchObject({ status: 401, type: 'session-expired' });
    expect(expiredCalls).toBe(1);
    expect(await api.me()).toBeNull();
  });

  it('sends JSON with the CSRF header on changes only, and turns problems into errors', async () => {
    const server = fakeServer();
    const api = new ApiClient({ fetch: server.fetchFn, cookies: () => 'other=1; lfusys_csrf=abc%3D' });
    await api.files(null, 10);
    await api.createUpload({ name: 'a', size: 1 }).catch(() => undefined);
    const get = server.calls.find((c) => c.url.includes('/files') && c.method === 'GET');
    const post = server.calls.find((c) => c.url.endsWith('/uploads') && c.method === 'POST');
    expect(get?.headers['x-csrf-token']).toBeUndefined();
    expect(post?.headers['x-csrf-token']).toBe('abc=');
    expect(post?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(post?.body ?? '')).toEqual({ name: 'a', size: 1 });
    const err = await api.file('missing').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).kind).toBe('not-found');
    expect(describeError(err)).toBe('No such file.');
  });

  it('declares the whole-file checksums with PATCH (JSON, CSRF) and reports refusals by kind', async () => {
    const calls: Call[] = [];
    const answers: Response[] = [
      new Response(JSON.stringify({ upload_id: 'u1', crc64nvme: 'ae8b14860a799888', state: 'uploading' }), { status: 200 }),
      new Response(JSON.stringify({ type: 'https://lfusys.io/problems/checksums-declared', title: 'Conflict', status: 409, detail: 'other checksums were declared' }), {
        status: 409,
        headers: { 'content-type': 'application/problem+json' },
      }),
      new Response(JSON.stringify({ type: 'https://lfusys.io/problems/sha256-mismatch', title: 'Unprocessable', status: 422, detail: 'whole-file SHA-256 mismatch' }), {
        status: 422,
        headers: { 'content-type': 'application/problem+json' },
      }),
    ];
    const api = new ApiClient({
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        calls.push({ url: String(input), method: init?.method ?? 'GET', headers: (init?.headers ?? {}) as Record<string, string>, body: init?.body as string | undefined });
        return answers.shift() as Response;
      }) as typeof fetch,
      cookies: () => 'lfusys_csrf=tok',
    });
    const sums = { crc64nvme: 'ae8b14860a799888', sha256: 'f'.repeat(64) };
    expect((await api.declareChecksums('u 1', sums)).crc64nvme).toBe('ae8b14860a799888');
    expect(calls[0]).toMatchObject({ url: '/api/v1/uploads/u%201', method: 'PATCH' });
    expect(calls[0]?.headers).toMatchObject({ 'x-csrf-token': 'tok', 'content-type': 'application/json' });
    expect(JSON.parse(calls[0]?.body ?? '')).toEqual(sums);
    await expect(api.declareChecksums('u1', sums)).rejects.toMatchObject({ status: 409, kind: 'checksums-declared' });
    await expect(api.declareChecksums('u1', sums)).rejects.toMatchObject({ status: 422, kind: 'sha256-mismatch' });
  });

  it('says so when the server cannot be reached', async () => {
    const api = new ApiClient({
      fetch: (async () => {
        throw new TypeError('Failed to fetch');
      }) as typeof fetch,
    });
    const err = (await api.files(null, 1).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(0);
    expect(describeError(err)).toMatch(/Cannot reach the server/);
  });

  it('reads cookies', () => {
    expect(readCookie('a=1; lfusys_csrf=xyz; b=2', 'lfusys_csrf')).toBe('xyz');
    expect(readCookie('a=1', 'lfusys_csrf')).toBeNull();
  });
});

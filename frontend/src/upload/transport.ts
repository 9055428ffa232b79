// One chunk PUT to the upload workers, with upload progress (XMLHttpRequest: fetch has none).

import { parseRetryAfter } from '../lib/backoff';
import type { ChunkReceipt } from '../api/types';

export interface PutResult {
  /** HTTP status; 0 when no answer came (network error, timeout). */
  status: number;
  receipt?: ChunkReceipt;
  problemType?: string;
  detail?: string;
  retryAfterS?: number;
}

export interface PutChunk {
  url: string;
  token: string;
  digest: string;
  /** A Blob: Chromium sends ArrayBuffer bodies at a few MB/s (upload/protocol.ts). */
  body: Blob;
  onProgress: (loaded: number) => void;
  signal: AbortSignal;
  /** Give up on an answer after this long (ms); 0 = never. */
  timeoutMs?: number;
}

export type ChunkTransport = (req: PutChunk) => Promise<PutResult>;

export const xhrTransport: ChunkTransport = (req) =>
  new Promise<PutResult>((resolve, reject) => {
    if (req.signal.aborted) {
      reject(new DOMException('aborted', 'AbortError'));
      return;
    }
    const xhr = new XMLHttpRequest();
    const onAbort = () => xhr.abort();
    req.signal.addEventListener('abort', onAbort, { once: true });
    const done = () => req.signal.removeEventListener('abort', onAbort);
    xhr.open('PUT', req.url);
    xhr.timeout = req.timeoutMs ?? 0;
    xhr.setRequestHeader('Authorization', `Bearer ${req.token}`);
    xhr.setRequestHeader('Content-Digest', req.digest);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (ev) => req.onProgress(ev.loaded);
    xhr.onload = () => {
      done();
      const result: PutResult = { status: xhr.status };
      // Only asked for when it can be there: reading a header CORS does not expose logs an error.
      if (xhr.status === 409 || xhr.status === 429 || xhr.status === 503) {
        result.retryAfterS = parseRetryAfter(xhr.getResponseHeader('retry-after'));
      }
      try {
        const body = JSON.parse(xhr.responseText) as Record<string, unknown>;
        if (xhr.status >= 200 && xhr.status < 300) {
          result.receipt = body as unknown as ChunkReceipt;
        } else {
          if (typeof body.type === 'string') result.problemType = body.type;
          if (typeof body.detail === 'string') result.detail = body.detail;
        }
      } catch {
        if (xhr.status >= 300) result.detail = xhr.statusText || `HTTP ${xhr.status}`;
      }
      resolve(result);
    };
    xhr.onerror = () => {
      done();
      resolve({ status: 0, detail: 'cannot reach the upload server' });
    };
    xhr.ontimeout = () => {
      done();
      resolve({ status: 0, detail: 'the upload server did not answer in time' });
    };
    xhr.onabort = () => {
      done();
      reject(new DOMException('aborted', 'AbortError'));
    };
    xhr.send(req.body);
  });

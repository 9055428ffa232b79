// Shared by the end-to-end test and the benchmark: a real `lfusys up`, Debian's Chromium driven by
// playwright-core, generated files. Everything started here is stopped by the returned handles.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCRC64 } from 'hash-wasm';
import { chromium } from 'playwright-core';

export const FRONTEND = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ARTIFACTS = path.join(FRONTEND, 'e2e', 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** The `lfusys` binary: $LFUSYS_BIN, else $CARGO_TARGET_DIR/<profile>/lfusys. */
export function lfusysBinary(profile = 'release') {
  if (process.env.LFUSYS_BIN) return process.env.LFUSYS_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(homedir(), '.cache', 'lfusys', 'target');
  return path.join(target, profile, 'lfusys');
}

export async function tempDir(prefix) {
  return mkdtemp(path.join(tmpdir(), prefix));
}

/** A free TCP port on loopback. */
export async function freePort() {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  srv.close();
  await once(srv, 'close');
  return port;
}

/**
 * The backends of `lfusys up` for the end-to-end tests: embedded, or with
 * `LFUSYS_E2E_BACKEND=aws` the AWS ones on the test servers `scripts/aws-servers.sh` started
 * (its `env` in the environment): MinIO for S3, moto for DynamoDB and SQS, under names no other
 * run uses, created by the server.
 */
function backend() {
  if (process.env.LFUSYS_E2E_BACKEND !== 'aws') return { args: [], env: {} };
  const need = (name) => {
    if (!process.env[name]) throw new Error(`${name} is not set: eval "$(bash scripts/aws-servers.sh env)"`);
    return process.env[name];
  };
  const name = `lfusys-e2e-${randomBytes(4).toString('hex')}`;
  return {
    args: ['--backend', 'aws', '--create-resources', '--s3-bucket', name, '--table-prefix', `${name}-`, '--queue-name', `${name}.fifo`],
    env: {
      AWS_ENDPOINT_URL_S3: need('LFUSYS_TEST_S3_URL'),
      // MinIO checks these; moto takes any.
      AWS_ACCESS_KEY_ID: need('LFUSYS_TEST_S3_ACCESS_KEY'),
      AWS_SECRET_ACCESS_KEY: need('LFUSYS_TEST_S3_SECRET_KEY'),
    },
  };
}

/**
 * Starts `lfusys up` on a free port with a fresh data dir, serving the built web app.
 * @param {{ binary?: string, dataDir: string, args?: string[], timeoutMs?: number }} opts
 */
export async function startServer({ binary = lfusysBinary(), dataDir, args = [], timeoutMs = 60_000 }) {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: build it with cargo build --bin lfusys`);
  const webDir = path.join(FRONTEND, 'dist');
  if (!existsSync(path.join(webDir, 'index.html'))) throw new Error('frontend/dist is missing: run npm run build');
  const port = await freePort();
  const stores = backend();
  const proc = spawn(binary, ['up', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--web-dir', webDir, ...stores.args, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...stores.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => {
    err += d;
    if (err.length > 200_000) err = err.slice(-100_000);
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`lfusys up did not start in ${timeoutMs} ms:\n${out}\n${err}`)), timeoutMs);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /web app and API: (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`lfusys up exited (${code}) before it was ready:\n${out}\n${err}`));
    });
  });
  return {
    url,
    proc,
    logs: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Headless Debian Chromium with a fresh profile; `close()` also removes the profile. */
export async function launchBrowser({ viewport = { width: 1280, height: 860 }, downloadsPath } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get update && apt-get install -y chromium`);
  }
  const profile = await tempDir('lfusys-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    acceptDownloads: true,
    downloadsPath,
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Holds the page's upload bandwidth to `bytesPerSecond` (Chromium's network emulation). */
export async function throttleUploads(page, bytesPerSecond) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond,
  });
}

/** Writes `size` random (incompressible) bytes to `file`. */
export async function makeFile(file, size) {
  await mkdir(path.dirname(file), { recursive: true });
  const out = createWriteStream(file);
  let left = size;
  const block = 4 << 20;
  while (left > 0) {
    const n = Math.min(block, left);
    if (!out.write(randomBytes(n))) await once(out, 'drain');
    left -= n;
  }
  out.end();
  await once(out, 'finish');
}

export async function sha256File(file) {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk);
  return h.digest('hex');
}

/** The CRC-64/NVME of a file, 16 hex digits (hash-wasm in Node; the server's is Rust's). */
export async function crc64nvmeFile(file) {
  const h = await createCRC64('9a6c9329ac4bc9b5');
  h.init();
  for await (const chunk of createReadStream(file)) h.update(chunk);
  return h.digest('hex');
}

/** A JSON API call from Node (for setup and for checking the server's view). */
export async function apiCall(base, method, pathname, { body, token } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(new URL(pathname, base), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${pathname}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

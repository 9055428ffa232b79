// Uppy end to end (DESIGN §3 step 7): the real Uppy — @uppy/core, @uppy/dashboard and
// @uppy/tus from npm, bundled by Vite into a page of its own (e2e/uppy/) — in Debian's headless
// Chromium against a real `lfusys up`, on the gateway's origin, authenticated with the user's
// access token. Two files are added on the Dashboard, uploaded, paused and resumed; LFUSYS then
// lists both as Files with the sources' SHA-256. The browser's upload bandwidth is held down so
// that the pause lands mid-upload; every wait is on a condition.

import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';

import { ARTIFACTS, apiCall, launchBrowser, makeFile, sha256File, startServer, tempDir, throttleUploads } from './harness.mjs';

const MIB = 1024 * 1024;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const FILES = [
  { name: 'uppy-video.mp4', size: 13 * MIB + 321 },
  { name: 'uppy-scan.pdf', size: 9 * MIB + 5 },
];
/** Where the page is served, on the gateway's origin (answered by the browser context). */
const PAGE = '/uppy-test/';
const T = { short: 15_000, long: 180_000 };

let dir;
let pageDir;
let server;
let browser;
let token;

before(async () => {
  dir = await tempDir('lfusys-uppy-');
  pageDir = path.join(dir, 'page');
  await build({
    configFile: false,
    root: path.join(HERE, 'uppy'),
    base: './',
    logLevel: 'warn',
    build: { outDir: pageDir, emptyOutDir: true },
  });
  for (const f of FILES) await makeFile(path.join(dir, f.name), f.size);
  server = await startServer({ dataDir: path.join(dir, 'data') });
  const email = 'uppy@example.com';
  const password = 'correct horse battery staple';
  await apiCall(server.url, 'POST', '/api/v1/auth/register', { body: { email, password } });
  token = (await apiCall(server.url, 'POST', '/api/v1/auth/login', { body: { email, password } })).access_token;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('Uppy Dashboard with @uppy/tus: two files uploaded, paused and resumed, listed with their SHA-256', async () => {
  const page = await browser.context.newPage();
  await page.route(`${server.url}${PAGE}**`, (route) => {
    const rel = new URL(route.request().url()).pathname.slice(PAGE.length) || 'index.html';
    return route.fulfill({ path: path.join(pageDir, rel) });
  });
  await page.goto(`${server.url}${PAGE}index.html`);
  const endpoint = new URL('/api/v1/tus', server.url).href;
  await page.evaluate((opts) => window.startUppy(opts), { endpoint, token, chunkSize: 4 * MIB });
  await throttleUploads(page, 4 * MIB);

  await page.locator('input.uppy-Dashboard-input').first().setInputFiles(FILES.map((f) => path.join(dir, f.name)));
  await page.getByRole('button', { name: 'Upload 2 files' }).click();
  await page.waitForFunction(() => window.uppy.getState().totalProgress >= 25, null, { timeout: T.long });

  await page.getByRole('button', { name: 'Pause', exact: true }).click();
  await page.waitForFunction(() => window.uppy.getFiles().every((f) => f.isPaused || f.progress.uploadComplete), null, { timeout: T.short });
  const atPause = await page.evaluate(() => window.uppyLog.requests.length);
  // Paused mid-upload: LFUSYS still has the unfinished one(s) in progress.
  const unfinished = (await apiCall(server.url, 'GET', '/api/v1/uploads', { token })).items;
  assert.ok(unfinished.some((u) => u.state === 'uploading' && u.bytes_received < u.size), JSON.stringify(unfinished));
  await page.getByRole('button', { name: 'Resume', exact: true }).click();
  await page.waitForFunction(() => window.uppyLog.events.some((e) => e.name === 'complete'), null, { timeout: T.long });

  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'uppy-dashboard-complete.png') });
  const log = await page.evaluate(() => window.uppyLog);
  assert.deepEqual(log.events.filter((e) => e.name === 'upload-error'), []);
  assert.deepEqual(
    log.events.filter((e) => e.name === 'upload-success').map((e) => e.file).sort(),
    FILES.map((f) => f.name).sort(),
  );
  // Resumed, not restarted: no upload was created again, and the appends went on from an offset.
  const resumed = log.requests.slice(atPause);
  assert.equal(log.requests.filter((r) => r.method === 'POST').length, 2);
  assert.ok(resumed.every((r) => r.method !== 'POST'), JSON.stringify(resumed));
  assert.ok(resumed.some((r) => r.method === 'PATCH' && Number(r.offset) > 0), JSON.stringify(resumed));

  const files = (await apiCall(server.url, 'GET', '/api/v1/files', { token })).items;
  for (const f of FILES) {
    const stored = files.find((x) => x.name === f.name);
    assert.ok(stored, `${f.name} is listed: ${JSON.stringify(files)}`);
    assert.equal(stored.size, f.size);
    assert.equal(stored.sha256, await sha256File(path.join(dir, f.name)));
    assert.equal(stored.sha256_source, 'received');
  }
  await page.close();
});

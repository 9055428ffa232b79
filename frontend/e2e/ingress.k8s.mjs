// The web app of a deployed cluster, in Debian's headless Chromium, through the Ingress of the
// real test cluster (LFUSYS_INGRESS_URL): register → sign in → upload two files at once (one
// ≥ 256 MiB; chunks go to the upload workers by the Ingress's /api/v1/chunks rule) → both
// listed → download one and compare its SHA-256; then tus-js-client in Node uploads through the
// Ingress's /api/v1/tus rule to the workers. Run by operator/tests/pods.rs (from
// scripts/test-k8s-pods.sh), not by `npm run e2e`: it needs the cluster. Screenshots go to
// e2e/artifacts/ingress-*.png.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe } from 'node:test';
import * as tus from 'tus-js-client';
import { AppPage, stepper } from './app-page.mjs';
import { apiCall, ARTIFACTS, launchBrowser, makeFile, sha256File, tempDir } from './harness.mjs';

const MiB = 1024 * 1024;
const BIG = { name: 'ingress-dataset.bin', size: 256 * MiB + 777 };
const SMALL = { name: 'ingress-notes.txt', size: 3 * MiB + 5 };
const T = { short: 20_000, long: 600_000 };
const BASE = process.env.LFUSYS_INGRESS_URL;
const EMAIL = `ingress-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery staple';

let tmp;
let browser;
/** @type {AppPage} */
let app;
let page;
const step = stepper(() => app);

describe('the web app through the Ingress of a real cluster', { concurrency: false }, () => {
  before(async () => {
    assert.ok(BASE, 'LFUSYS_INGRESS_URL is not set: run scripts/test-k8s-pods.sh');
    await mkdir(ARTIFACTS, { recursive: true });
    tmp = await tempDir('lfusys-ingress-');
    await Promise.all([makeFile(path.join(tmp, BIG.name), BIG.size), makeFile(path.join(tmp, SMALL.name), SMALL.size)]);
    browser = await launchBrowser({ downloadsPath: path.join(tmp, 'downloads') });
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.setDefaultTimeout(T.short);
    app = new AppPage(page, { prefix: 'ingress-', timeout: T.long });
  });

  after(async () => {
    await browser?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  step('opens the app at the Ingress URL, registers and signs in', async () => {
    await page.goto(`${BASE}/register`);
    await page.getByRole('heading', { name: 'Create your account' }).waitFor();
    await page.getByLabel('Email').fill(EMAIL);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByText('Your account is ready. Sign in to continue.').waitFor();
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Upload', level: 1 }).waitFor();
    await app.shot('01-signed-in');
  });

  step('uploads two files at once through the Ingress, chunks to the workers', async () => {
    await page.getByTestId('file-input').setInputFiles([path.join(tmp, BIG.name), path.join(tmp, SMALL.name)]);
    await app.waitRow(SMALL.name, (d) => d.phase === 'completed');
    await app.shot('02-uploading');
    await app.waitRow(BIG.name, (d) => d.phase === 'completed');
    await app.shot('03-completed');
    const puts = app.chunkPuts;
    assert.ok(puts.length >= Math.ceil(BIG.size / (16 * MiB)), `${puts.length} chunk PUTs`);
    // Same origin: the Ingress routes /api/v1/chunks to the workers.
    assert.deepEqual([...new Set(puts.map((p) => p.origin))], [new URL(BASE).origin]);
  });

  step('lists both files and downloads one byte for byte', async () => {
    await page.getByRole('link', { name: 'Files', exact: true }).click();
    await page.getByRole('heading', { name: 'Files', level: 1 }).waitFor();
    await app.fileRow(BIG.name).waitFor();
    await app.fileRow(SMALL.name).waitFor();
    assert.equal(Number(await app.fileRow(BIG.name).getAttribute('data-size')), BIG.size);
    await app.shot('04-files');
    await app.downloadMatches(BIG.name, path.join(tmp, 'downloaded.bin'), path.join(tmp, BIG.name));
  });

  step('a tus client uploads through the Ingress, PATCHes to the workers', async () => {
    const { access_token: token } = await apiCall(BASE, 'POST', '/api/v1/auth/login', {
      body: { email: EMAIL, password: PASSWORD },
    });
    const file = path.join(tmp, SMALL.name);
    // 2 MiB PATCHes: the first ends inside the server's chunk and is staged by one worker
    // Pod, the next may land on another.
    const url = await new Promise((resolve, reject) => {
      const upload = new tus.Upload(createReadStream(file), {
        endpoint: `${BASE}/api/v1/tus`,
        headers: { Authorization: `Bearer ${token}` },
        chunkSize: 2 * MiB,
        metadata: { filename: 'ingress-tus.txt', filetype: 'text/plain' },
        onSuccess: () => resolve(upload.url),
        onError: reject,
      });
      upload.start();
    });
    assert.equal(new URL(url).origin, new URL(BASE).origin);
    const id = new URL(url).pathname.split('/').pop();
    let status;
    for (let i = 0; i < 30 && status?.state !== 'completed'; i++) {
      status = await apiCall(BASE, 'GET', `/api/v1/uploads/${id}?wait=20`, { token });
    }
    assert.equal(status.state, 'completed', JSON.stringify(status));
    const res = await fetch(`${BASE}/api/v1/files/${status.file_id}/content`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200);
    const h = createHash('sha256');
    for await (const part of res.body) h.update(part);
    assert.equal(h.digest('hex'), await sha256File(file));
  });
});

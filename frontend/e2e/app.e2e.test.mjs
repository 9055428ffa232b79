// End to end, in Debian's headless Chromium against a real `lfusys up` serving the built app:
// register → sign in → upload two files at once (one ≥ 64 MiB) → progress → pause and resume →
// reload mid-upload and resume by re-selecting the file → both listed with their sizes →
// download one and compare its SHA-256 → delete it; plus drag and drop, cancel, phone width and
// sign-out. Screenshots of each page go to e2e/artifacts/. Every wait is on a condition.

import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe } from 'node:test';
import { AppPage, stepper } from './app-page.mjs';
import { ARTIFACTS, apiCall, crc64nvmeFile, launchBrowser, makeFile, sha256File, startServer, tempDir, throttleUploads } from './harness.mjs';

const MiB = 1024 * 1024;
const BIG = { name: 'dataset-72MiB.bin', size: 72 * MiB };
const SMALL = { name: 'holiday-photo.jpg', size: 9 * MiB + 12345 };
const THIRD = { name: 'to-cancel.iso', size: 24 * MiB };
/** Upload bandwidth the browser is held to, so that pausing and reloading happen mid-upload. */
const UPLOAD_BYTES_PER_S = 6 * MiB;
const T = { short: 15_000, long: 180_000 };

const EMAIL = `e2e-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery staple';

let tmp;
let server;
let browser;
/** @type {AppPage} */
let app;
let page;
const step = stepper(() => app);

const row = (name) => app.row(name);
const fileRow = (name) => app.fileRow(name);
const shot = (name) => app.shot(name);
const waitRow = (name, pred, options) => app.waitRow(name, pred, options);

/** The server's view, through the page's own session (cookies). */
async function inPage(pathname) {
  return page.evaluate(async (p) => {
    const res = await fetch(p, { credentials: 'same-origin' });
    if (!res.ok) throw new Error(`${p}: ${res.status}`);
    return res.json();
  }, pathname);
}

describe('web app end to end', { concurrency: false }, () => {
  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    tmp = await tempDir('lfusys-e2e-');
    await Promise.all([
      makeFile(path.join(tmp, BIG.name), BIG.size),
      makeFile(path.join(tmp, SMALL.name), SMALL.size),
      makeFile(path.join(tmp, THIRD.name), THIRD.size),
    ]);
    server = await startServer({ dataDir: path.join(tmp, 'data'), args: ['--chunk-size', '4MiB'] });
    browser = await launchBrowser({ downloadsPath: path.join(tmp, 'downloads') });
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.setDefaultTimeout(T.short);
    app = new AppPage(page, { timeout: T.long });
    // Leaving mid-upload asks for confirmation (beforeunload): the test says yes.
    page.on('dialog', (d) => void d.accept());
    await throttleUploads(page, UPLOAD_BYTES_PER_S);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  step('registers an account', async () => {
    await page.goto(`${server.url}/register`);
    await page.getByRole('heading', { name: 'Create your account' }).waitFor();
    await page.getByLabel('Email').fill(EMAIL);
    await page.getByLabel('Name (optional)').fill('Ada Lovelace');
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await shot('01-register');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByText('Your account is ready. Sign in to continue.').waitFor();
    assert.equal(new URL(page.url()).pathname, '/login');
  });

  step('refuses a wrong password with a clear message, then signs in', async () => {
    assert.equal(await page.getByLabel('Email').inputValue(), EMAIL);
    await page.getByLabel('Password', { exact: true }).fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'The email or password is incorrect.' }).waitFor();
    await shot('02-sign-in-error');
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Upload', level: 1 }).waitFor();
    await page.getByTestId('user-email').filter({ hasText: 'Ada Lovelace' }).waitFor();
    await shot('03-upload-empty');
  });

  step('uploads two files at once and shows their progress', async () => {
    await page.getByTestId('file-input').setInputFiles([path.join(tmp, BIG.name), path.join(tmp, SMALL.name)]);
    await page.locator('[data-testid="upload-row"]').nth(1).waitFor();
    // Both files are sent at the same time: each has chunks on the wire before the small one ends.
    await waitRow(BIG.name, (d) => d.phase === 'uploading' && Number(d.uploaded) > 0);
    await waitRow(SMALL.name, (d) => (d.phase === 'uploading' && Number(d.uploaded) > 0) || d.phase === 'assembling' || d.phase === 'completed');
    const chunks = (await app.dataset(BIG.name)).chunksTotal;
    assert.equal(Number(chunks), Math.ceil(BIG.size / (4 * MiB)));
    // The large file has not stored a chunk yet: the small one did not wait for its chunks to end.
    assert.equal((await app.dataset(BIG.name)).chunksReceived, '0');
    await app.waitPuts((puts) => new Set(puts.map((p) => p.uploadId)).size === 2);
    await waitRow(BIG.name, (d) => Number(d.percent) >= 5 && d.phase === 'uploading');
    const stats = await row(BIG.name).locator('.row-stats').innerText();
    assert.match(stats, /\d+%/);
    assert.match(stats, /MiB\/s|KiB\/s/, `speed shown: ${stats}`);
    assert.match(stats, /left|estimating/, `time left shown: ${stats}`);
    await shot('04-uploading');
    await waitRow(SMALL.name, (d) => d.phase === 'completed');
  });

  step('pauses and resumes one file', async () => {
    await row(BIG.name).getByRole('button', { name: `Pause ${BIG.name}` }).click();
    await waitRow(BIG.name, (d) => d.phase === 'paused');
    const paused = await app.dataset(BIG.name);
    const status = await inPage('/api/v1/uploads');
    const big = status.items.find((u) => u.name === BIG.name);
    assert.ok(big && big.state === 'uploading');
    const putsOfBig = () => app.chunkPuts.filter((p) => p.uploadId === big.upload_id).length;
    const putsAtPause = putsOfBig();
    await row(BIG.name).getByRole('button', { name: `Resume ${BIG.name}` }).waitFor();
    await shot('05-paused');
    // Nothing is sent while paused; the server has what was confirmed.
    assert.ok(big.bytes_received <= Number(paused.uploaded));
    assert.equal(putsOfBig(), putsAtPause, 'no chunk was sent while paused');
    await row(BIG.name).getByRole('button', { name: `Resume ${BIG.name}` }).click();
    await waitRow(BIG.name, (d) => d.phase === 'uploading');
    await waitRow(BIG.name, (d, a) => Number(d.uploaded) > a, { arg: Number(paused.uploaded) });
  });

  step('resumes after a reload when the file is selected again, sending only the missing chunks', async () => {
    // Mid-upload: a good part is on the server, a good part is not.
    await waitRow(BIG.name, (d) => d.phase === 'uploading' && Number(d.chunksReceived) >= 6);
    await page.reload();
    await page.getByRole('heading', { name: 'Unfinished uploads' }).waitFor();
    await waitRow(BIG.name, (d) => d.phase === 'interrupted' && Number(d.uploaded) > 0);
    await shot('06-after-reload');
    const listed = (await inPage('/api/v1/uploads')).items.find((u) => u.name === BIG.name);
    assert.ok(listed, 'the server lists the unfinished upload');
    const before = await inPage(`/api/v1/uploads/${listed.upload_id}`);
    const had = new Set(before.received_chunks);
    assert.ok(had.size > 0 && had.size < before.total_chunks);
    const putsBefore = app.chunkPuts.length;

    await row(BIG.name).getByTestId('resume-input').setInputFiles(path.join(tmp, BIG.name));
    await waitRow(BIG.name, (d) => d.phase === 'uploading');
    await row(BIG.name).getByText(/Resumed: \d+ of \d+ chunks were already on the server/).waitFor();
    await shot('07-resumed');
    await waitRow(BIG.name, (d) => d.phase === 'completed');
    await shot('08-completed');

    const sent = app.chunkPuts.slice(putsBefore).filter((p) => p.uploadId === before.upload_id).map((p) => p.index);
    for (const i of sent) assert.ok(!had.has(i), `chunk ${i} was on the server already but was sent again`);
    const all = new Set([...had, ...sent]);
    assert.equal(all.size, before.total_chunks, 'every chunk was sent once');
  });

  step('lists both files with their sizes', async () => {
    await page.getByRole('link', { name: 'Files', exact: true }).click();
    await page.getByRole('heading', { name: 'Files', level: 1 }).waitFor();
    await fileRow(BIG.name).waitFor();
    await fileRow(SMALL.name).waitFor();
    assert.equal(await page.locator('[data-testid="file-row"]').count(), 2);
    assert.equal(Number(await fileRow(BIG.name).getAttribute('data-size')), BIG.size);
    assert.equal(Number(await fileRow(SMALL.name).getAttribute('data-size')), SMALL.size);
    assert.equal((await fileRow(BIG.name).locator('td').first().innerText()).trim(), '72.0 MiB');
    await shot('09-files');
    // By default the web app declares the CRC-64/NVME it computed while reading, which the server
    // verified against the bytes it stored; no SHA-256 (the checkbox is off).
    const files = await inPage('/api/v1/files');
    for (const { name } of [BIG, SMALL]) {
      const f = files.items.find((x) => x.name === name);
      assert.equal(f.crc64nvme, await crc64nvmeFile(path.join(tmp, name)), name);
      assert.equal(f.sha256, null, name);
    }
  });

  step('downloads a file through a streamed link, byte for byte', async () => {
    const link = await app.downloadMatches(BIG.name, path.join(tmp, 'downloaded.bin'), path.join(tmp, BIG.name));
    assert.match((await link.getAttribute('href')) ?? '', /^\/api\/v1\/files\/[^/]+\/content$/);
  });

  step('deletes a file after confirmation', async () => {
    await fileRow(BIG.name).getByTestId('delete').click();
    const dialog = page.getByRole('dialog', { name: 'Delete this file?' });
    await dialog.waitFor();
    await shot('10-delete-confirm');
    // Escape keeps the file.
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(await fileRow(BIG.name).count(), 1);
    await fileRow(BIG.name).getByTestId('delete').click();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await fileRow(BIG.name).waitFor({ state: 'detached' });
    await page.getByText(`Deleted ${BIG.name}.`).first().waitFor();
    const files = await inPage('/api/v1/files');
    assert.deepEqual(
      files.items.map((f) => f.name),
      [SMALL.name],
    );
  });

  step('takes files by drag and drop, and cancels an upload', async () => {
    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    await page.getByRole('heading', { name: 'Upload', level: 1 }).waitFor();
    const dt = await page.evaluateHandle(() => {
      const d = new DataTransfer();
      d.items.add(new File(['dropped with the mouse\n'.repeat(1000)], 'dropped.txt', { type: 'text/plain' }));
      return d;
    });
    await page.getByTestId('dropzone').dispatchEvent('dragenter', { dataTransfer: dt });
    await page.getByTestId('dropzone').dispatchEvent('drop', { dataTransfer: dt });
    await waitRow('dropped.txt', (d) => d.phase === 'completed');

    await page.getByTestId('file-input').setInputFiles(path.join(tmp, THIRD.name));
    await waitRow(THIRD.name, (d) => d.phase === 'uploading' && Number(d.uploaded) > 0);
    await row(THIRD.name).getByRole('button', { name: `Cancel the upload of ${THIRD.name}` }).click();
    await waitRow(THIRD.name, (d) => d.phase === 'cancelled');
    await page.waitForFunction(
      async () => (await (await fetch('/api/v1/uploads')).json()).items.length === 0,
      null,
      { timeout: T.short, polling: 200 },
    );
    await shot('11-upload-list');
  });

  step("computes each file's SHA-256 when asked, and remembers the choice", async () => {
    const box = page.getByLabel("Also compute each file's SHA-256");
    assert.equal(await box.isChecked(), false);
    await box.check();
    await page.reload();
    await page.getByRole('heading', { name: 'Upload', level: 1 }).waitFor();
    assert.equal(await box.isChecked(), true);
    const name = 'with-sha256.bin';
    await makeFile(path.join(tmp, name), 3 * MiB + 7);
    await page.getByTestId('file-input').setInputFiles(path.join(tmp, name));
    await waitRow(name, (d) => d.phase === 'completed');
    const f = (await inPage('/api/v1/files')).items.find((x) => x.name === name);
    assert.equal(f.sha256, await sha256File(path.join(tmp, name)));
    assert.equal(f.sha256_source, 'client');
    assert.equal(f.crc64nvme, await crc64nvmeFile(path.join(tmp, name)));
    await box.uncheck();
  });

  step('is usable at phone width', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('12-phone-upload');
    await page.getByRole('link', { name: 'Files', exact: true }).click();
    await fileRow(SMALL.name).waitFor();
    await shot('13-phone-files');
    // Nothing overflows sideways.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  step('signs out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await shot('14-signed-out');
    const me = await page.evaluate(async () => (await fetch('/api/v1/auth/me')).status);
    assert.equal(me, 401);
    // And the server agrees from outside the browser: the account exists, its files are there.
    const login = await apiCall(server.url, 'POST', '/api/v1/auth/login', { body: { email: EMAIL, password: PASSWORD } });
    const files = await apiCall(server.url, 'GET', '/api/v1/files', { token: login.access_token });
    assert.deepEqual(files.items.map((f) => f.name).sort(), [SMALL.name, 'dropped.txt', 'with-sha256.bin'].sort());
  });
});

// The web app of a deployed cluster, in Debian's headless Chromium, through the Ingress of the
// real test cluster (LFUSYS_INGRESS_URL): register → sign in → upload two files at once (one
// ≥ 256 MiB; chunks go to the upload workers by the Ingress's /api/v1/chunks rule) → both
// listed → download one and compare its SHA-256. Run by operator/tests/pods.rs (from
// scripts/test-k8s-pods.sh), not by `npm run e2e`: it needs the cluster. Screenshots go to
// e2e/artifacts/ingress-*.png.

import assert from 'node:assert/strict';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ARTIFACTS, launchBrowser, makeFile, sha256File, tempDir } from './harness.mjs';

const MiB = 1024 * 1024;
const BIG = { name: 'ingress-dataset.bin', size: 256 * MiB + 777 };
const SMALL = { name: 'ingress-notes.txt', size: 3 * MiB + 5 };
const T = { short: 20_000, long: 600_000 };
const BASE = process.env.LFUSYS_INGRESS_URL;
const EMAIL = `ingress-${Date.now()}@example.com`;
const PASSWORD = 'correct horse battery staple';

let tmp;
let browser;
let page;
/** Hosts and paths of the chunk PUTs the page sent. */
const chunkPuts = [];

const fileRow = (name) => page.locator(`[data-testid="file-row"][data-name="${name}"]`);

async function shot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `ingress-${name}.png`), fullPage: true });
}

async function waitPhase(name, phase) {
  await page.waitForFunction(
    ([n, p]) => document.querySelector(`[data-testid="upload-row"][data-name="${n}"]`)?.dataset.phase === p,
    [name, phase],
    { timeout: T.long, polling: 250 },
  );
}

function step(name, fn) {
  it(name, async () => {
    try {
      await fn();
    } catch (e) {
      const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      await page?.screenshot({ path: path.join(ARTIFACTS, `ingress-FAILED-${slug}.png`), fullPage: true }).catch(() => undefined);
      throw e;
    }
  });
}

describe('the web app through the Ingress of a real cluster', { concurrency: false }, () => {
  before(async () => {
    assert.ok(BASE, 'LFUSYS_INGRESS_URL is not set: run scripts/test-k8s-pods.sh');
    await mkdir(ARTIFACTS, { recursive: true });
    tmp = await tempDir('lfusys-ingress-');
    await Promise.all([makeFile(path.join(tmp, BIG.name), BIG.size), makeFile(path.join(tmp, SMALL.name), SMALL.size)]);
    browser = await launchBrowser({ downloadsPath: path.join(tmp, 'downloads') });
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.setDefaultTimeout(T.short);
    page.on('request', (req) => {
      if (req.method() === 'PUT' && /\/api\/v1\/chunks\/[^/]+\/\d+$/.test(req.url())) {
        const u = new URL(req.url());
        chunkPuts.push(u.origin);
      }
    });
    page.on('pageerror', (e) => console.error('page error:', e));
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
    await shot('01-signed-in');
  });

  step('uploads two files at once through the Ingress, chunks to the workers', async () => {
    await page.getByTestId('file-input').setInputFiles([path.join(tmp, BIG.name), path.join(tmp, SMALL.name)]);
    await waitPhase(SMALL.name, 'completed');
    await shot('02-uploading');
    await waitPhase(BIG.name, 'completed');
    await shot('03-completed');
    assert.ok(chunkPuts.length >= Math.ceil(BIG.size / (16 * MiB)), `${chunkPuts.length} chunk PUTs`);
    // Same origin: the Ingress routes /api/v1/chunks to the workers.
    assert.deepEqual([...new Set(chunkPuts)], [new URL(BASE).origin]);
  });

  step('lists both files and downloads one byte for byte', async () => {
    await page.getByRole('link', { name: 'Files', exact: true }).click();
    await page.getByRole('heading', { name: 'Files', level: 1 }).waitFor();
    await fileRow(BIG.name).waitFor();
    await fileRow(SMALL.name).waitFor();
    assert.equal(Number(await fileRow(BIG.name).getAttribute('data-size')), BIG.size);
    await shot('04-files');
    const link = fileRow(BIG.name).getByTestId('download');
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: T.long }), link.click()]);
    const saved = path.join(tmp, 'downloaded.bin');
    await download.saveAs(saved);
    assert.equal((await stat(saved)).size, BIG.size);
    assert.equal(await sha256File(saved), await sha256File(path.join(tmp, BIG.name)));
  });
});

// Benchmark (not a test): upload throughput of the web app in headless Chromium against
// `lfusys upload` (the CLI) for the same file on the same `lfusys up` (release build, default
// chunk size, embedded backends in a temp dir). Prints both, and the ratio browser / CLI.
//
//   node e2e/bench.mjs            # 512 MiB, 3 rounds (CLI and browser alternate)
//   BENCH_SIZE_MIB=1024 BENCH_ROUNDS=5 node e2e/bench.mjs
//
// Two figures per client: "end to end" from handing over the file to the server's `completed`,
// and "transfer" from the upload's creation to `completed` (what `lfusys upload --json`
// reports as seconds). Both clients read the file once, computing the CRC-64/NVME of every
// chunk and of the file as they send it, so the two figures differ only by the upload's creation.
// The CLI computes the file's SHA-256 in that pass too (by default); the web app only when asked
// (its checkbox, off by default: docs/protocol.md "The web app"), so it is measured both ways.

import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { apiCall, launchBrowser, lfusysBinary, makeFile, startServer, tempDir } from './harness.mjs';

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_SIZE_MIB ?? 512) * MiB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BINARY = lfusysBinary('release');
const EMAIL = 'bench@example.com';
const PASSWORD = 'benchmark password';

function run(cmd, args, { env, input } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${err}`))));
    p.stdin.end(input ?? '');
  });
}

const mbps = (bytes, ms) => bytes / 1e6 / (ms / 1000);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const tmp = await tempDir('lfusys-bench-');
  const file = path.join(tmp, `bench-${SIZE / MiB}MiB.bin`);
  let server;
  let browser;
  try {
    console.error(`generating ${SIZE / MiB} MiB…`);
    await makeFile(file, SIZE);
    server = await startServer({ binary: BINARY, dataDir: path.join(tmp, 'data') });
    const url = server.url;
    await apiCall(url, 'POST', '/api/v1/auth/register', { body: { email: EMAIL, password: PASSWORD } });
    const cliEnv = { LFUSYS_CONFIG_DIR: path.join(tmp, 'cli'), LFUSYS_SERVER: url };
    await run(BINARY, ['login', '--email', EMAIL, '--password-stdin'], { env: cliEnv, input: `${PASSWORD}\n` });
    const token = (await apiCall(url, 'POST', '/api/v1/auth/login', { body: { email: EMAIL, password: PASSWORD } })).access_token;
    const cleanup = async () => {
      const files = await apiCall(url, 'GET', '/api/v1/files?limit=1000', { token });
      for (const f of files.items) await apiCall(url, 'DELETE', `/api/v1/files/${f.id}`, { token });
    };

    browser = await launchBrowser();
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    await page.goto(`${url}/login`);
    if (process.env.BENCH_PARALLEL) {
      await page.evaluate((n) => localStorage.setItem('lfusys.parallel', n), process.env.BENCH_PARALLEL);
      await page.reload();
    }
    await page.getByLabel('Email').fill(EMAIL);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Upload', level: 1 }).waitFor();

    const sha256Box = page.getByLabel("Also compute each file's SHA-256");
    const results = { cli: [], browser: [], browserSha: [] };
    const browserRound = async (withSha256) => {
      await sha256Box.setChecked(withSha256);
      const clear = page.getByRole('button', { name: 'Clear finished' });
      if ((await clear.count()) > 0 && (await clear.isEnabled())) await clear.click();
      const t0 = performance.now();
      await page.getByTestId('file-input').setInputFiles(file);
      await page.waitForFunction(
        () => document.querySelector('[data-testid="upload-row"]')?.getAttribute('data-phase') === 'completed',
        null,
        { timeout: 30 * 60_000, polling: 50 },
      );
      const browserWall = performance.now() - t0;
      const row = page.locator('[data-testid="upload-row"]').first();
      const uploadMs = Number(await row.getAttribute('data-upload-ms'));
      const totalMs = Number(await row.getAttribute('data-total-ms'));
      const files = await apiCall(url, 'GET', '/api/v1/files?limit=10', { token });
      if (files.items.length !== 1 || (files.items[0].sha256 !== null) !== withSha256) {
        throw new Error(`the web app's File has sha256 ${files.items[0]?.sha256} (asked for one: ${withSha256})`);
      }
      await cleanup();
      return { endToEnd: mbps(SIZE, browserWall), transfer: mbps(SIZE, uploadMs), before: (totalMs - uploadMs) / 1000 };
    };
    const line = (name, x) => `${name} ${x.endToEnd.toFixed(1)} MB/s (transfer ${x.transfer.toFixed(1)})`;
    for (let round = 1; round <= ROUNDS; round += 1) {
      // The CLI: its own wall time and its report (from the upload's creation).
      const t0 = performance.now();
      const report = JSON.parse(await run(BINARY, ['upload', file, '--json'], { env: cliEnv }));
      const cliWall = performance.now() - t0;
      const r = Array.isArray(report) ? report[0] : report;
      results.cli.push({ endToEnd: mbps(SIZE, cliWall), transfer: r.megabytes_per_second });
      await cleanup();

      // The browser: from handing the file to the page until the row says completed.
      results.browser.push(await browserRound(false));
      results.browserSha.push(await browserRound(true));
      console.error(
        `round ${round}: ${line('CLI', results.cli.at(-1))}, ${line('web app', results.browser.at(-1))}, ` +
          `${line('web app with SHA-256', results.browserSha.at(-1))}`,
      );
    }

    const med = (xs, key) => median(xs.map((x) => x[key]));
    const cliE = med(results.cli, 'endToEnd');
    const cliT = med(results.cli, 'transfer');
    const brE = med(results.browser, 'endToEnd');
    const brT = med(results.browser, 'transfer');
    const shaE = med(results.browserSha, 'endToEnd');
    const shaT = med(results.browserSha, 'transfer');
    const chromium = (await run('/usr/bin/chromium', ['--version']).catch(() => 'chromium ?')).trim();
    console.log(`\nWeb app upload benchmark: ${SIZE / MiB} MiB, median of ${ROUNDS} rounds, ${os.cpus().length} cores, ${chromium}`);
    console.log('| client | end to end (MB/s) | transfer (MB/s) |');
    console.log('|---|---:|---:|');
    console.log(`| \`lfusys upload\` (CLI, -j 4) | ${cliE.toFixed(1)} | ${cliT.toFixed(1)} |`);
    console.log(`| web app, headless Chromium (6 chunks in flight) | ${brE.toFixed(1)} | ${brT.toFixed(1)} |`);
    console.log(`| web app with its SHA-256 checkbox on | ${shaE.toFixed(1)} | ${shaT.toFixed(1)} |`);
    console.log(`| ratio web app / CLI | ${(brE / cliE).toFixed(2)} | ${(brT / cliT).toFixed(2)} |`);
    console.log(`| ratio web app with SHA-256 / CLI | ${(shaE / cliE).toFixed(2)} | ${(shaT / cliT).toFixed(2)} |`);
    console.log(`\nratio (end to end) = ${(brE / cliE).toFixed(2)}  (goal ≥ 0.8)`);
  } finally {
    await browser?.close();
    await server?.stop();
    await rm(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);

// Benchmark (not a test): upload throughput of the web app in headless Chromium against
// `lfusys upload` (the CLI) for the same file on the same `lfusys up` (release build, default
// chunk size, embedded backends in a temp dir). Prints both, and the ratio browser / CLI.
//
//   node e2e/bench.mjs            # 512 MiB, 3 rounds (CLI and browser alternate)
//   BENCH_SIZE_MIB=1024 BENCH_ROUNDS=5 node e2e/bench.mjs
//
// Two figures per client: "end to end" from handing over the file to the server's `completed`
// (whole-file SHA-256 included: both clients hash before they create the upload), and "transfer"
// from the upload's creation to `completed` (what `lfusys upload --json` reports as seconds).

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

    const results = { cli: [], browser: [] };
    for (let round = 1; round <= ROUNDS; round += 1) {
      // The CLI: its own wall time (hashing included) and its report (transfer only).
      let t0 = performance.now();
      const report = JSON.parse(await run(BINARY, ['upload', file, '--json'], { env: cliEnv }));
      const cliWall = performance.now() - t0;
      const r = Array.isArray(report) ? report[0] : report;
      results.cli.push({ endToEnd: mbps(SIZE, cliWall), transfer: r.megabytes_per_second });
      await cleanup();

      // The browser: from handing the file to the page until the row says completed.
      const clear = page.getByRole('button', { name: 'Clear finished' });
      if ((await clear.count()) > 0 && (await clear.isEnabled())) await clear.click();
      t0 = performance.now();
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
      results.browser.push({ endToEnd: mbps(SIZE, browserWall), transfer: mbps(SIZE, uploadMs), hashing: mbps(SIZE, totalMs - uploadMs) });
      await cleanup();
      console.error(
        `round ${round}: CLI ${results.cli.at(-1).endToEnd.toFixed(1)} MB/s (transfer ${results.cli.at(-1).transfer.toFixed(1)}), ` +
          `browser ${results.browser.at(-1).endToEnd.toFixed(1)} MB/s (transfer ${results.browser.at(-1).transfer.toFixed(1)}, ` +
          `hashing and creating ${results.browser.at(-1).hashing.toFixed(1)})`,
      );
    }

    const cliE = median(results.cli.map((x) => x.endToEnd));
    const cliT = median(results.cli.map((x) => x.transfer));
    const brE = median(results.browser.map((x) => x.endToEnd));
    const brT = median(results.browser.map((x) => x.transfer));
    const chromium = (await run('/usr/bin/chromium', ['--version']).catch(() => 'chromium ?')).trim();
    console.log(`\nWeb app upload benchmark: ${SIZE / MiB} MiB, median of ${ROUNDS} rounds, ${os.cpus().length} cores, ${chromium}`);
    console.log('| client | end to end (MB/s, hashing included) | transfer (MB/s) |');
    console.log('|---|---:|---:|');
    console.log(`| \`lfusys upload\` (CLI, -j 4) | ${cliE.toFixed(1)} | ${cliT.toFixed(1)} |`);
    console.log(`| web app, headless Chromium (6 chunks in flight) | ${brE.toFixed(1)} | ${brT.toFixed(1)} |`);
    console.log(`| ratio browser / CLI | ${(brE / cliE).toFixed(2)} | ${(brT / cliT).toFixed(2)} |`);
    console.log(`\nratio (end to end) = ${(brE / cliE).toFixed(2)}  (goal ≥ 0.5)`);
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

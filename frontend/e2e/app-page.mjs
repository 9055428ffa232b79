// The web app's page as the end-to-end tests drive it (the local suite, app.e2e.test.mjs, and
// the one through a real cluster's Ingress, ingress.k8s.mjs): rows by file name, waits on a
// row's data attributes, the chunk PUTs the page sends, screenshots, and test steps that leave
// a screenshot behind when they fail.
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { it } from 'node:test';
import { ARTIFACTS, sha256File } from './harness.mjs';

const CHUNK_PUT = /\/api\/v1\/chunks\/([^/]+)\/(\d+)$/;

export class AppPage {
  /**
   * @param {import('playwright-core').Page} page
   * @param {{ prefix?: string, timeout?: number }} options screenshot name prefix; the default
   *   timeout of the long waits (uploads, downloads).
   */
  constructor(page, { prefix = '', timeout = 180_000 } = {}) {
    this.page = page;
    this.prefix = prefix;
    this.timeout = timeout;
    /** Chunk PUTs the page started: { uploadId, index, origin, at }. */
    this.chunkPuts = [];
    page.on('request', (req) => {
      const m = CHUNK_PUT.exec(req.url());
      if (m && req.method() === 'PUT') {
        this.chunkPuts.push({ uploadId: m[1], index: Number(m[2]), origin: new URL(req.url()).origin, at: Date.now() });
      }
    });
    page.on('pageerror', (e) => console.error('page error:', e));
  }

  row(name) {
    return this.page.locator(`[data-testid="upload-row"][data-name="${name}"]`);
  }

  fileRow(name) {
    return this.page.locator(`[data-testid="file-row"][data-name="${name}"]`);
  }

  async shot(name) {
    await this.page.screenshot({ path: path.join(ARTIFACTS, `${this.prefix}${name}.png`), fullPage: true });
  }

  /** Waits until the row of `name` satisfies `pred(dataset, arg)` (evaluated in the page). */
  async waitRow(name, pred, { timeout = this.timeout, arg = null } = {}) {
    await this.page.waitForFunction(
      ([n, src, a]) => {
        const el = document.querySelector(`[data-testid="upload-row"][data-name="${n}"]`);
        return el instanceof HTMLElement && new Function('d', 'a', `return (${src})(d, a)`)(el.dataset, a);
      },
      [name, pred.toString(), arg],
      { timeout, polling: 100 },
    );
  }

  /** Waits until `pred(chunkPuts)` holds: the page's requests reach this process as events, a little after they start. */
  async waitPuts(pred, { timeout = this.timeout } = {}) {
    const end = Date.now() + timeout;
    while (!pred(this.chunkPuts)) {
      if (Date.now() > end) throw new Error(`the chunk PUTs did not come as expected (${this.chunkPuts.length} seen)`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The row's data attributes (phase, uploaded, chunksTotal, …). */
  async dataset(name) {
    return this.row(name).evaluate((el) => ({ ...el.dataset }));
  }

  /** Downloads `name` from the Files page's link into `saved`; asserts it is `original`, byte for byte. */
  async downloadMatches(name, saved, original) {
    const link = this.fileRow(name).getByTestId('download');
    const [download] = await Promise.all([this.page.waitForEvent('download', { timeout: this.timeout }), link.click()]);
    await download.saveAs(saved);
    assert.equal((await stat(saved)).size, (await stat(original)).size);
    assert.equal(await sha256File(saved), await sha256File(original));
    return link;
  }

}

/**
 * `step(name, fn)`: a test step (node:test `it`) that leaves a screenshot of the page behind when
 * it fails. Steps are declared before the page exists, so this takes a getter of the AppPage.
 * @param {() => AppPage | undefined} current
 */
export function stepper(current) {
  return (name, fn) =>
    it(name, async () => {
      try {
        await fn();
      } catch (e) {
        const app = current();
        const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
        await app?.page
          .screenshot({ path: path.join(ARTIFACTS, `${app.prefix}FAILED-${slug}.png`), fullPage: true })
          .catch(() => undefined);
        throw e;
      }
    });
}

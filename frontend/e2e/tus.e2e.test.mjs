// tus 1.0.0 end to end (DESIGN §3 step 7): the real tus-js-client (npm) in Node against a real
// `lfusys up`, through the gateway's origin at /api/v1/tus, authenticated with the user's
// access token. Every upload ends as a File whose bytes are the source's (SHA-256 of the
// download), listed and cancelled like native uploads.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';

import * as tus from 'tus-js-client';

import { apiCall, makeFile, sha256File, startServer, tempDir } from './harness.mjs';

const MIB = 1024 * 1024;
const HERE = path.dirname(fileURLToPath(import.meta.url));

let server;
let dir;
let token;
let endpoint;

async function signIn(base, email) {
  const password = 'correct horse battery staple';
  await apiCall(base, 'POST', '/api/v1/auth/register', { body: { email, password } });
  const login = await apiCall(base, 'POST', '/api/v1/auth/login', { body: { email, password } });
  return login.access_token;
}

/** Runs a tus-js-client upload to its end; resolves with the upload and the bytes it sent. */
function tusUpload(file, options = {}) {
  return new Promise((resolve, reject) => {
    let sent = 0;
    const upload = new tus.Upload(options.source ?? createReadStream(file), {
      endpoint,
      headers: { Authorization: `Bearer ${options.token ?? token}` },
      retryDelays: [0, 200, 500],
      metadata: { filename: path.basename(file), filetype: 'application/octet-stream' },
      ...options,
      onProgress(bytes) {
        sent = Math.max(sent, bytes);
        options.onProgress?.(bytes, upload);
      },
      onSuccess: () => resolve({ upload, sent }),
      onError: reject,
    });
    options.onCreate?.(upload);
    upload.start();
  });
}

const uploadIdOf = (url) => new URL(url, endpoint).pathname.split('/').pop();

/** Waits (long polls) until the upload is completed; answers its File. */
async function fileOf(uploadId, who = token) {
  for (let i = 0; i < 30; i++) {
    const up = await apiCall(server.url, 'GET', `/api/v1/uploads/${uploadId}?wait=20`, { token: who });
    if (up.state === 'completed') return apiCall(server.url, 'GET', `/api/v1/files/${up.file_id}`, { token: who });
    assert.ok(['uploading', 'assembling'].includes(up.state), `upload ${uploadId} is ${up.state}: ${up.error ?? ''}`);
  }
  throw new Error(`upload ${uploadId} did not complete`);
}

/** SHA-256 of a File's content as the server serves it. */
async function downloadedSha256(fileId) {
  const res = await fetch(new URL(`/api/v1/files/${fileId}/content`, server.url), {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 200);
  const h = createHash('sha256');
  for await (const chunk of res.body) h.update(chunk);
  return h.digest('hex');
}

async function assertPublished(uploadId, file) {
  const f = await fileOf(uploadId);
  assert.equal(f.name, path.basename(file));
  assert.equal(f.content_type, 'application/octet-stream');
  const expected = await sha256File(file);
  assert.equal(await downloadedSha256(f.id), expected);
  // tus declares no checksum of the file: the workers hashed it in order as it arrived.
  assert.equal(f.sha256, expected);
  assert.equal(f.sha256_source, 'received');
  return f;
}

/** A raw tus request. */
function tusCall(method, url, headers = {}, body = undefined, who = token) {
  return fetch(new URL(url, endpoint), {
    method,
    headers: { 'tus-resumable': '1.0.0', authorization: `Bearer ${who}`, ...headers },
    body,
    duplex: 'half',
  });
}

before(async () => {
  dir = await tempDir('lfusys-tus-');
  server = await startServer({ dataDir: path.join(dir, 'data') });
  endpoint = new URL('/api/v1/tus', server.url).href;
  token = await signIn(server.url, 'tus@example.com');
});

after(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('tus-js-client against lfusys up', () => {
  test('one upload in one PATCH becomes a File with the same bytes', async () => {
    const file = path.join(dir, 'one.bin');
    await makeFile(file, 37 * MIB + 12_345);
    const { upload } = await tusUpload(file);
    assert.match(upload.url, /\/api\/v1\/tus\/[\w-]+$/);
    await assertPublished(uploadIdOf(upload.url), file);
  });

  test('PATCHes that end inside chunks (5 MiB against the server chunks) are staged and resumed', async () => {
    const file = path.join(dir, 'pieces.bin');
    await makeFile(file, 40 * MIB + 7);
    const { upload } = await tusUpload(file, { chunkSize: 5 * MIB + 3 });
    await assertPublished(uploadIdOf(upload.url), file);
  });

  test('an aborted upload resumes from the offset the server reports, sending only the rest', async () => {
    const file = path.join(dir, 'abort.bin');
    const size = 48 * MIB;
    await makeFile(file, size);
    let first;
    const aborted = new Promise((resolve) => {
      tusUpload(file, {
        chunkSize: 4 * MIB,
        onProgress(bytes, upload) {
          if (bytes >= 20 * MIB && !first) {
            first = upload;
            upload.abort().then(resolve);
          }
        },
      }).catch(() => undefined);
    });
    await aborted;
    const head = await tusCall('HEAD', first.url);
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('tus-resumable'), '1.0.0');
    assert.equal(head.headers.get('upload-length'), String(size));
    assert.equal(head.headers.get('cache-control'), 'no-store');
    const offset = Number(head.headers.get('upload-offset'));
    assert.ok(offset >= 16 * MIB && offset < size, `offset ${offset}`);
    assert.equal(offset % (4 * MIB), 0, 'the offset is where an acknowledged PATCH ended');
    // A PATCH at another offset is refused and told the right one.
    const wrong = await tusCall('PATCH', first.url, {
      'upload-offset': String(offset + 1),
      'content-type': 'application/offset+octet-stream',
    }, Buffer.alloc(10));
    assert.equal(wrong.status, 409);
    assert.equal(wrong.headers.get('upload-offset'), String(offset));

    const patchedAt = [];
    const { upload } = await tusUpload(file, {
      uploadUrl: first.url,
      chunkSize: 4 * MIB,
      onBeforeRequest(req) {
        if (req.getMethod() === 'PATCH') patchedAt.push(Number(req.getHeader('Upload-Offset')));
      },
    });
    assert.equal(upload.url, first.url);
    // Only the missing bytes were sent: from the reported offset on, in order.
    assert.equal(patchedAt[0], offset);
    assert.deepEqual(patchedAt, patchedAt.map((_, i) => offset + i * 4 * MIB));
    await assertPublished(uploadIdOf(upload.url), file);
  });

  test('a second process resumes a crashed one with the stored URL', async () => {
    const file = path.join(dir, 'crash.bin');
    await makeFile(file, 30 * MIB + 1);
    const run = async (opts) => {
      const child = spawn(process.execPath, [path.join(HERE, 'tus-client.mjs'), JSON.stringify({
        file, endpoint, token, name: 'crash.bin', chunkSize: 3 * MIB, ...opts,
      })], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      const [code] = await once(child, 'exit');
      return { code, events: out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
    };
    const crashed = await run({ stopAfter: 12 * MIB });
    assert.equal(crashed.code, 3, JSON.stringify(crashed.events));
    const url = crashed.events.find((e) => e.url)?.url;
    assert.ok(url, 'the first process learnt its upload URL');
    const resumed = await run({ uploadUrl: url });
    assert.equal(resumed.code, 0, JSON.stringify(resumed.events));
    assert.equal(resumed.events.at(-1).done, url);
    // It went on from where the first one stopped: its first acknowledgement is past 12 MiB.
    const firstAck = resumed.events.find((e) => e.progress !== undefined)?.progress;
    assert.ok(firstAck > 12 * MIB, `first acknowledged offset ${firstAck}`);
    await assertPublished(uploadIdOf(url), file);
  });

  test('uploadDataDuringCreation stores the body of the POST', async () => {
    const file = path.join(dir, 'creation.bin');
    await makeFile(file, 21 * MIB + 5);
    let patches = 0;
    const { upload } = await tusUpload(file, {
      uploadDataDuringCreation: true,
      chunkSize: 8 * MIB,
      onBeforeRequest(req) {
        if (req.getMethod() === 'PATCH') patches++;
      },
    });
    // 21 MiB in 8 MiB requests: the POST carried the first, two PATCHes the rest.
    assert.equal(patches, 2);
    await assertPublished(uploadIdOf(upload.url), file);
  });

  test('uploadLengthDeferred: the length comes with the last PATCH', async () => {
    const file = path.join(dir, 'deferred.bin');
    const size = 21 * MIB + 5;
    await makeFile(file, size);
    let deferred;
    const lengths = [];
    // A Buffer source: tus-js-client 4.3.1's Node stream source stalls (before sending) on a
    // last slice shorter than chunkSize when the length is deferred.
    const { upload } = await tusUpload(file, {
      source: await readFile(file),
      uploadLengthDeferred: true,
      chunkSize: 5 * MIB + 3,
      onBeforeRequest(req) {
        if (req.getMethod() === 'POST') deferred = req.getHeader('Upload-Defer-Length');
        if (req.getMethod() === 'PATCH') lengths.push(req.getHeader('Upload-Length') ?? null);
      },
    });
    assert.equal(deferred, '1');
    assert.equal(lengths.length, 5);
    assert.equal(lengths.at(-1), String(size));
    assert.ok(lengths.slice(0, -1).every((l) => l === null), JSON.stringify(lengths));
    const f = await assertPublished(uploadIdOf(upload.url), file);
    assert.equal(f.size, size);
  });

  test('parallelUploads: 4 partial uploads side by side, concatenated into one File', async () => {
    const file = path.join(dir, 'parallel.bin');
    const size = 37 * MIB + 5; // parts of 9.25 MiB: none ends at a chunk boundary
    await makeFile(file, size);
    const created = []; // [Upload-Concat, Location] of each creation
    const { upload } = await tusUpload(file, {
      source: await readFile(file),
      parallelUploads: 4,
      onAfterResponse(req, res) {
        if (req.getMethod() === 'POST') created.push([req.getHeader('Upload-Concat'), res.getHeader('Location')]);
      },
    });
    const partials = created.filter(([concat]) => concat === 'partial').map(([, url]) => url);
    assert.equal(partials.length, 4, JSON.stringify(created));
    const final = created.find(([concat]) => concat?.startsWith('final;'));
    assert.ok(final, JSON.stringify(created));
    assert.equal(new URL(final[1], endpoint).href, new URL(upload.url, endpoint).href);
    const f = await assertPublished(uploadIdOf(upload.url), file);
    assert.equal(f.size, size);
    // The final upload names its parts in the file's order, as the client did (the partials'
    // creations may have been answered in any order); it takes no bytes of its own.
    const named = (concat) => concat.replace(/^final;/, '').split(' ').map(uploadIdOf);
    assert.deepEqual([...named(final[0])].sort(), partials.map(uploadIdOf).sort());
    const head = await tusCall('HEAD', upload.url);
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('upload-offset'), String(size));
    assert.deepEqual(named(head.headers.get('upload-concat')), named(final[0]));
    const patch = await tusCall('PATCH', upload.url, {
      'upload-offset': String(size),
      'content-type': 'application/offset+octet-stream',
    }, Buffer.alloc(1));
    assert.equal(patch.status, 403);
    // Once the File is published, the partial uploads are released.
    for (const url of partials) assert.equal((await tusCall('HEAD', url)).status, 410);
    const listed = await apiCall(server.url, 'GET', '/api/v1/uploads', { token });
    for (const url of partials) assert.ok(!listed.items.some((u) => u.upload_id === uploadIdOf(url)));
  });

  test('termination cancels the upload and releases it', async () => {
    const file = path.join(dir, 'terminate.bin');
    await makeFile(file, 20 * MIB);
    let target;
    await new Promise((resolve) => {
      tusUpload(file, {
        chunkSize: 4 * MIB,
        onProgress(bytes, upload) {
          if (bytes >= 8 * MIB && !target) {
            target = upload;
            upload.abort(true).then(resolve);
          }
        },
      }).catch(() => undefined);
    });
    const id = uploadIdOf(target.url);
    const status = await apiCall(server.url, 'GET', `/api/v1/uploads/${id}`, { token });
    assert.equal(status.state, 'cancelled');
    const head = await tusCall('HEAD', target.url);
    assert.equal(head.status, 410);
    const listed = await apiCall(server.url, 'GET', '/api/v1/uploads', { token });
    assert.ok(!listed.items.some((u) => u.upload_id === id));
  });

  test('uploads in progress are listed like native ones', async () => {
    const res = await tusCall('POST', endpoint, {
      'upload-length': String(3 * MIB),
      'upload-metadata': `filename ${Buffer.from('listed.bin').toString('base64')}`,
    });
    assert.equal(res.status, 201);
    const id = uploadIdOf(res.headers.get('location'));
    assert.ok(res.headers.get('upload-expires'));
    const listed = await apiCall(server.url, 'GET', '/api/v1/uploads', { token });
    const item = listed.items.find((u) => u.upload_id === id);
    assert.equal(item?.name, 'listed.bin');
    assert.equal(item?.size, 3 * MIB);
  });
});

describe('the tus protocol rules', () => {
  test('OPTIONS tells the version, the extensions and the largest size', async () => {
    const res = await fetch(endpoint, { method: 'OPTIONS' });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('tus-version'), '1.0.0');
    assert.equal(res.headers.get('tus-resumable'), '1.0.0');
    const ext = res.headers.get('tus-extension').split(',');
    for (const e of ['creation', 'creation-with-upload', 'creation-defer-length', 'termination', 'expiration', 'checksum', 'concatenation']) assert.ok(ext.includes(e), e);
    assert.ok(Number(res.headers.get('tus-max-size')) > 0);
    assert.equal(res.headers.get('tus-checksum-algorithm'), 'sha1,sha256');
  });

  test('another version is 412, no token 401, another user\'s upload 404', async () => {
    const v = await fetch(endpoint, { method: 'POST', headers: { 'tus-resumable': '0.2.2', authorization: `Bearer ${token}`, 'upload-length': '10' } });
    assert.equal(v.status, 412);
    assert.equal(v.headers.get('tus-version'), '1.0.0');
    const anon = await fetch(endpoint, { method: 'POST', headers: { 'tus-resumable': '1.0.0', 'upload-length': '10' } });
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('content-type'), 'application/problem+json');
    const created = await tusCall('POST', endpoint, { 'upload-length': '10' });
    assert.equal(created.status, 201);
    const url = created.headers.get('location');
    const other = await signIn(server.url, 'other-tus@example.com');
    assert.equal((await tusCall('HEAD', url, {}, undefined, other)).status, 404);
    const patch = await tusCall('PATCH', url, {
      'upload-offset': '0',
      'content-type': 'application/offset+octet-stream',
    }, Buffer.alloc(10), other);
    assert.equal(patch.status, 404);
    assert.equal((await tusCall('DELETE', url, {}, undefined, other)).status, 404);
  });

  test('bad requests get problem+json with the reason', async () => {
    const noLength = await tusCall('POST', endpoint, {});
    assert.equal(noLength.status, 400);
    assert.match((await noLength.json()).detail, /Upload-Length is required/);
    const huge = await tusCall('POST', endpoint, { 'upload-length': String(2 ** 50) });
    assert.equal(huge.status, 413);
    const created = await tusCall('POST', endpoint, { 'upload-length': '10' });
    const url = created.headers.get('location');
    const media = await tusCall('PATCH', url, { 'upload-offset': '0', 'content-type': 'text/plain' }, 'x');
    assert.equal(media.status, 415);
    const past = await tusCall('PATCH', url, {
      'upload-offset': '0',
      'content-type': 'application/offset+octet-stream',
    }, Buffer.alloc(11));
    assert.equal(past.status, 413);
    const offsetless = await tusCall('PATCH', url, { 'content-type': 'application/offset+octet-stream' }, Buffer.alloc(1));
    assert.equal(offsetless.status, 400);
    // Nothing of those was stored.
    const head = await tusCall('HEAD', url);
    assert.equal(head.headers.get('upload-offset'), '0');
  });

  test('concatenation: a final upload of the caller\'s complete partial uploads, in order; the rules', async () => {
    const partial = async (bytes) => {
      const res = await tusCall('POST', endpoint, {
        'upload-concat': 'partial',
        'upload-length': String(bytes.length),
        'content-type': 'application/offset+octet-stream',
      }, bytes);
      assert.equal(res.status, 201);
      assert.equal(res.headers.get('upload-offset'), String(bytes.length));
      return res.headers.get('location');
    };
    const finalOf = (urls, headers = {}, who = token) =>
      tusCall('POST', endpoint, { 'upload-concat': `final;${urls.join(' ')}`, ...headers }, undefined, who);
    const [a, b] = [Buffer.from('hello, '), Buffer.from('parallel world')];
    const urlA = await partial(a);
    const urlB = await partial(b);
    const headA = await tusCall('HEAD', urlA);
    assert.equal(headA.headers.get('upload-concat'), 'partial');
    assert.equal(headA.headers.get('upload-offset'), String(a.length));

    // What a final upload refuses, each with its reason; nothing is taken.
    const incomplete = await tusCall('POST', endpoint, { 'upload-concat': 'partial', 'upload-length': '10' });
    const urlC = incomplete.headers.get('location');
    const notReady = await finalOf([urlA, urlC]);
    assert.equal(notReady.status, 409);
    assert.match((await notReady.json()).detail, /has 0 of its 10 bytes/);
    const plain = (await tusCall('POST', endpoint, { 'upload-length': '3' })).headers.get('location');
    const notPartial = await finalOf([plain]);
    assert.equal(notPartial.status, 400);
    assert.match((await notPartial.json()).detail, /not a partial upload/);
    const withLength = await finalOf([urlA, urlB], { 'upload-length': String(a.length + b.length) });
    assert.equal(withLength.status, 400);
    assert.match((await withLength.json()).detail, /no Upload-Length/);
    const foreign = await finalOf(['/api/v1/uploads/x']);
    assert.equal(foreign.status, 400);
    const other = await signIn(server.url, 'other-concat@example.com');
    assert.equal((await finalOf([urlA, urlB], {}, other)).status, 404);

    const res = await finalOf([urlA, urlB], {
      'upload-metadata': `filename ${Buffer.from('joined.txt').toString('base64')}`,
    });
    assert.equal(res.status, 201);
    const id = uploadIdOf(res.headers.get('location'));
    const f = await fileOf(id);
    const whole = Buffer.concat([a, b]);
    assert.equal(f.name, 'joined.txt');
    assert.equal(f.size, whole.length);
    assert.equal(f.sha256, createHash('sha256').update(whole).digest('hex'));
    assert.equal(f.sha256_source, 'received');
    assert.equal(await downloadedSha256(f.id), f.sha256);
    // Its partials are released; the incomplete one is still the caller's.
    assert.equal((await tusCall('HEAD', urlA)).status, 410);
    assert.equal((await finalOf([urlA, urlB])).status, 409);
    assert.equal((await tusCall('HEAD', urlC)).status, 200);
  });

  test('checksum: a body that matches its Upload-Checksum is kept; one that does not is 460 and nothing of it is kept', async () => {
    const digest = (alg, bytes) => `${alg} ${createHash(alg).update(bytes).digest('base64')}`;
    const probe = await tusCall('POST', endpoint, { 'upload-length': String(64 * MIB) });
    const chunk = (await apiCall(server.url, 'GET', `/api/v1/uploads/${uploadIdOf(probe.headers.get('location'))}`, { token })).chunk_size;
    await tusCall('DELETE', probe.headers.get('location'));

    const source = (await import('node:crypto')).randomBytes(2 * chunk + 1000);
    const created = await tusCall('POST', endpoint, {
      'upload-length': String(source.length),
      'upload-metadata': `filename ${Buffer.from('checked.bin').toString('base64')},filetype ${Buffer.from('application/octet-stream').toString('base64')}`,
    });
    const url = created.headers.get('location');
    const id = uploadIdOf(url);
    const stream = { 'content-type': 'application/offset+octet-stream' };
    const offset = async () => Number((await tusCall('HEAD', url)).headers.get('upload-offset'));

    // A whole chunk and a piece of the next, one byte flipped on the way: nothing is kept,
    // neither the whole chunk (written, never recorded) nor the piece.
    const first = source.subarray(0, chunk + 500);
    const flipped = Buffer.from(first);
    flipped[chunk - 7] ^= 0x01;
    const bad = await tusCall('PATCH', url, { ...stream, 'upload-offset': '0', 'upload-checksum': digest('sha1', first) }, flipped);
    assert.equal(bad.status, 460);
    assert.equal(bad.headers.get('content-type'), 'application/problem+json');
    const problem = await bad.json();
    assert.equal(problem.type, 'https://lfusys.io/problems/checksum-mismatch');
    assert.match(problem.detail, /nothing of it was kept/);
    assert.equal(bad.headers.get('upload-offset'), '0');
    assert.equal(await offset(), 0);
    assert.deepEqual((await apiCall(server.url, 'GET', `/api/v1/uploads/${id}`, { token })).received_chunks, []);

    // The same bytes, unflipped: kept.
    const good = await tusCall('PATCH', url, { ...stream, 'upload-offset': '0', 'upload-checksum': digest('sha1', first) }, first);
    assert.equal(good.status, 204, await good.text());
    assert.equal(good.headers.get('upload-offset'), String(chunk + 500));
    assert.equal(await offset(), chunk + 500);

    // The rest with a SHA-256 of other bytes: refused, the offset stays; then the right one.
    const rest = source.subarray(chunk + 500);
    const wrong = await tusCall('PATCH', url, { ...stream, 'upload-offset': String(chunk + 500), 'upload-checksum': digest('sha256', Buffer.from('other')) }, rest);
    assert.equal(wrong.status, 460);
    assert.equal(await offset(), chunk + 500);
    const unspoken = await tusCall('PATCH', url, { ...stream, 'upload-offset': String(chunk + 500), 'upload-checksum': digest('md5', rest) }, rest);
    assert.equal(unspoken.status, 400);
    assert.match((await unspoken.json()).detail, /`md5` is not spoken here/);
    // Chunked (a stream body): one byte, so that it is all sent before the early answer.
    const unframed = await tusCall('PATCH', url, { ...stream, 'upload-offset': String(chunk + 500), 'upload-checksum': digest('sha256', rest) },
      new Blob([rest.subarray(0, 1)]).stream());
    assert.equal(unframed.status, 411);
    const last = await tusCall('PATCH', url, { ...stream, 'upload-offset': String(chunk + 500), 'upload-checksum': digest('sha256', rest) }, rest);
    assert.equal(last.status, 204, await last.text());
    assert.equal(last.headers.get('upload-offset'), String(source.length));

    const f = await fileOf(id);
    assert.equal(f.sha256, createHash('sha256').update(source).digest('hex'));
    assert.equal(f.sha256_source, 'received');
    assert.equal(await downloadedSha256(f.id), f.sha256);
  });

  test('checksum: a creation whose body does not match is 460; the upload exists, empty', async () => {
    const body = Buffer.from('the first bytes of a file');
    const res = await tusCall('POST', endpoint, {
      'upload-length': '1000',
      'content-type': 'application/offset+octet-stream',
      'upload-checksum': `sha1 ${createHash('sha1').update('something else').digest('base64')}`,
    }, body);
    assert.equal(res.status, 460);
    const url = res.headers.get('location');
    assert.match(url, /\/api\/v1\/tus\/[\w-]+$/);
    assert.equal((await tusCall('HEAD', url)).headers.get('upload-offset'), '0');
    const again = await tusCall('PATCH', url, {
      'upload-offset': '0',
      'content-type': 'application/offset+octet-stream',
      'upload-checksum': `sha1 ${createHash('sha1').update(body).digest('base64')}`,
    }, body);
    assert.equal(again.status, 204);
    assert.equal(again.headers.get('upload-offset'), String(body.length));
  });

  test('creation-defer-length: HEAD says the length is deferred until a PATCH declares it', async () => {
    const source = (await import('node:crypto')).randomBytes(3000);
    const both = await tusCall('POST', endpoint, { 'upload-length': '10', 'upload-defer-length': '1' });
    assert.equal(both.status, 400);
    assert.match((await both.json()).detail, /not both/);
    assert.equal((await tusCall('POST', endpoint, { 'upload-defer-length': '2' })).status, 400);

    const created = await tusCall('POST', endpoint, { 'upload-defer-length': '1' });
    assert.equal(created.status, 201);
    const url = created.headers.get('location');
    const id = uploadIdOf(url);
    let head = await tusCall('HEAD', url);
    assert.equal(head.headers.get('upload-defer-length'), '1');
    assert.equal(head.headers.get('upload-length'), null);
    const stream = { 'content-type': 'application/offset+octet-stream' };
    const first = await tusCall('PATCH', url, { ...stream, 'upload-offset': '0' }, source.subarray(0, 1000));
    assert.equal(first.status, 204);
    assert.equal(first.headers.get('upload-offset'), '1000');
    const listed = await apiCall(server.url, 'GET', `/api/v1/uploads/${id}`, { token });
    assert.equal(listed.length_deferred, true);

    // A length shorter than what is stored with this body is refused, and nothing changes.
    const short = await tusCall('PATCH', url, { ...stream, 'upload-offset': '1000', 'upload-length': '1500' }, source.subarray(1000));
    assert.equal(short.status, 400);
    assert.match((await short.json()).detail, /shorter than/);
    head = await tusCall('HEAD', url);
    assert.equal(head.headers.get('upload-defer-length'), '1');
    assert.equal(head.headers.get('upload-offset'), '1000');

    const last = await tusCall('PATCH', url, { ...stream, 'upload-offset': '1000', 'upload-length': '3000' }, source.subarray(1000));
    assert.equal(last.status, 204, await last.text());
    assert.equal(last.headers.get('upload-offset'), '3000');
    const f = await fileOf(id);
    assert.equal(f.size, 3000);
    assert.equal(f.sha256, createHash('sha256').update(source).digest('hex'));
    assert.equal(await downloadedSha256(f.id), f.sha256);
    // Once set, the length does not change.
    head = await tusCall('HEAD', url);
    assert.equal(head.headers.get('upload-length'), '3000');
  });

  test('creation-defer-length: an empty PATCH declaring the length at a chunk boundary completes the upload', async () => {
    const created = await tusCall('POST', endpoint, { 'upload-defer-length': '1' });
    const url = created.headers.get('location');
    const id = uploadIdOf(url);
    const chunk = (await apiCall(server.url, 'GET', `/api/v1/uploads/${id}`, { token })).chunk_size;
    const source = (await import('node:crypto')).randomBytes(2 * chunk);
    const stream = { 'content-type': 'application/offset+octet-stream' };
    for (const at of [0, chunk]) {
      const res = await tusCall('PATCH', url, { ...stream, 'upload-offset': String(at) }, source.subarray(at, at + chunk));
      assert.equal(res.status, 204);
    }
    let up = await apiCall(server.url, 'GET', `/api/v1/uploads/${id}`, { token });
    assert.deepEqual([up.state, up.length_deferred, up.received_chunks], ['uploading', true, [0, 1]]);
    const last = await tusCall('PATCH', url, { ...stream, 'upload-offset': String(2 * chunk), 'upload-length': String(2 * chunk) }, Buffer.alloc(0));
    assert.equal(last.status, 204, await last.text());
    assert.equal(last.headers.get('upload-offset'), String(2 * chunk));
    const f = await fileOf(id);
    assert.equal(f.size, 2 * chunk);
    assert.equal(f.sha256, createHash('sha256').update(source).digest('hex'));
    assert.equal(await downloadedSha256(f.id), f.sha256);
  });
});

describe('the IETF resumable-upload draft on the same endpoint', () => {
  for (const protocol of ['ietf-draft-03', 'ietf-draft-05']) {
    test(`tus-js-client with protocol ${protocol}: an upload in PATCHes, resumed after an abort`, async () => {
      const file = path.join(dir, `${protocol}.bin`);
      const size = 19 * MIB + 77;
      await makeFile(file, size);
      const seen = [];
      let aborted = false;
      const { upload } = await tusUpload(file, {
        protocol,
        source: await readFile(file),
        chunkSize: 6 * MIB + 1,
        onBeforeRequest(req) {
          seen.push([req.getMethod(), req.getHeader('Upload-Draft-Interop-Version'), req.getHeader('Upload-Complete') ?? null, req.getHeader('Tus-Resumable') ?? null]);
        },
        onProgress(bytes, up) {
          // Cut the second PATCH short once: the client asks HEAD and goes on from the offset.
          if (!aborted && bytes > 8 * MIB) {
            aborted = true;
            up.abort().then(() => up.start());
          }
        },
      });
      const version = protocol === 'ietf-draft-03' ? '5' : '6';
      assert.ok(seen.every(([, v, , t]) => v === version && t === null), JSON.stringify(seen));
      assert.equal(seen[0][0], 'POST');
      assert.ok(seen.some(([m]) => m === 'HEAD'), 'resumed with HEAD');
      const patches = seen.filter(([m]) => m === 'PATCH');
      assert.equal(patches.at(-1)[2], '?1');
      assert.ok(patches.slice(0, -1).every(([, , c]) => c === '?0'));
      const head = await fetch(upload.url, { method: 'HEAD', headers: { authorization: `Bearer ${token}`, 'upload-draft-interop-version': version } });
      assert.equal(head.status, 204);
      assert.equal(head.headers.get('upload-complete'), '?1');
      assert.equal(head.headers.get('upload-offset'), String(size));
      assert.equal(head.headers.get('upload-draft-interop-version'), version);
      assert.match(head.headers.get('upload-limit'), /max-size=\d+/);
      await assertPublished(uploadIdOf(upload.url), file);
    });
  }

  const draft = (version, headers = {}) => ({ authorization: `Bearer ${token}`, 'upload-draft-interop-version': version, ...headers });

  test('interop version 3 (URLSession on iOS 17): Upload-Incomplete, creation with the first part, HEAD, the rest', async () => {
    const source = (await import('node:crypto')).randomBytes(3 * MIB + 11);
    const created = await fetch(endpoint, {
      method: 'POST',
      headers: draft('3', { 'upload-incomplete': '?1', 'content-type': 'image/png', 'content-disposition': 'attachment; filename="photo.png"' }),
      body: source.subarray(0, MIB),
    });
    assert.equal(created.status, 201, await created.text());
    assert.equal(created.headers.get('upload-incomplete'), '?1');
    assert.equal(created.headers.get('upload-offset'), String(MIB));
    const url = new URL(created.headers.get('location'), endpoint).href;
    const head = await fetch(url, { method: 'HEAD', headers: draft('3') });
    assert.equal(head.status, 204);
    assert.equal(head.headers.get('upload-offset'), String(MIB));
    assert.equal(head.headers.get('upload-incomplete'), '?1');
    assert.equal(head.headers.get('upload-length'), null, 'the length is not known yet');
    // An append at another offset: the draft's problem, with both offsets.
    const wrong = await fetch(url, { method: 'PATCH', headers: draft('3', { 'upload-offset': '5', 'upload-incomplete': '?0' }), body: source.subarray(5) });
    assert.equal(wrong.status, 409);
    const problem = await wrong.json();
    assert.equal(problem.type, 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset');
    assert.deepEqual([problem['expected-offset'], problem['provided-offset']], [MIB, 5]);
    const rest = await fetch(url, { method: 'PATCH', headers: draft('3', { 'upload-offset': String(MIB), 'upload-incomplete': '?0' }), body: source.subarray(MIB) });
    assert.equal(rest.status, 204, await rest.text());
    assert.equal(rest.headers.get('upload-incomplete'), '?0');
    assert.equal(rest.headers.get('upload-offset'), String(source.length));
    const f = await fileOf(uploadIdOf(url));
    assert.deepEqual([f.name, f.content_type, f.size], ['photo.png', 'image/png', source.length]);
    assert.equal(f.sha256, createHash('sha256').update(source).digest('hex'));
  });

  test('interop version 6: one complete creation with a Content-Digest; a wrong digest keeps nothing; bad requests', async () => {
    const source = (await import('node:crypto')).randomBytes(2 * MIB + 3);
    const digest = (bytes) => `sha-256=:${createHash('sha256').update(bytes).digest('base64')}:`;
    const bad = await fetch(endpoint, {
      method: 'POST',
      headers: draft('6', { 'upload-complete': '?1', 'content-digest': digest(Buffer.from('not it')) }),
      body: source,
    });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).type, 'https://lfusys.io/problems/checksum-mismatch');
    const badUrl = new URL(bad.headers.get('location'), endpoint).href;
    assert.equal((await fetch(badUrl, { method: 'HEAD', headers: draft('6') })).headers.get('upload-offset'), '0');

    const whole = await fetch(endpoint, {
      method: 'POST',
      headers: draft('6', { 'upload-complete': '?1', 'content-digest': digest(source), 'content-disposition': 'attachment; filename=whole.bin' }),
      body: source,
    });
    assert.equal(whole.status, 201, await whole.text());
    assert.equal(whole.headers.get('upload-complete'), '?1');
    assert.equal(whole.headers.get('upload-length'), String(source.length));
    const f = await fileOf(uploadIdOf(whole.headers.get('location')));
    assert.equal(f.name, 'whole.bin');
    assert.equal(f.sha256, createHash('sha256').update(source).digest('hex'));

    // Version 6 appends are application/partial-upload; versions not spoken are refused.
    const open = await fetch(endpoint, { method: 'POST', headers: draft('6', { 'upload-complete': '?0', 'upload-length': '10' }) });
    const openUrl = new URL(open.headers.get('location'), endpoint).href;
    const typeless = await fetch(openUrl, { method: 'PATCH', headers: draft('6', { 'upload-offset': '0', 'upload-complete': '?1' }), body: Buffer.alloc(10) });
    assert.equal(typeless.status, 415);
    const short = await fetch(openUrl, { method: 'PATCH', headers: draft('6', { 'upload-offset': '0', 'upload-complete': '?1', 'content-type': 'application/partial-upload' }), body: Buffer.alloc(4) });
    assert.equal(short.status, 400);
    assert.equal((await fetch(endpoint, { method: 'POST', headers: draft('2') })).status, 400);
    const gone = await fetch(openUrl, { method: 'DELETE', headers: draft('6') });
    assert.equal(gone.status, 204);
    assert.equal(gone.headers.get('upload-draft-interop-version'), '6');
  });

  test('Repr-Digest: the whole file\'s SHA-256 declared at creation is checked against the bytes received', async () => {
    const source = (await import('node:crypto')).randomBytes(MIB + 17);
    const repr = (bytes) => `sha-256=:${createHash('sha256').update(bytes).digest('base64')}:`;
    const upload = async (declared) => {
      const created = await fetch(endpoint, { method: 'POST', headers: draft('6', { 'upload-complete': '?0', 'upload-length': String(source.length), 'repr-digest': declared }) });
      assert.equal(created.status, 201, await created.text());
      const url = new URL(created.headers.get('location'), endpoint).href;
      const done = await fetch(url, { method: 'PATCH', headers: draft('6', { 'upload-offset': '0', 'upload-complete': '?1', 'content-type': 'application/partial-upload' }), body: source });
      assert.equal(done.status, 204, await done.text());
      return uploadIdOf(url);
    };
    const f = await fileOf(await upload(repr(source)));
    assert.equal(f.sha256, createHash('sha256').update(source).digest('hex'));
    assert.equal(f.sha256_source, 'received');

    const wrongId = await upload(repr(Buffer.from('another file')));
    let up;
    for (let i = 0; i < 30; i++) {
      up = await apiCall(server.url, 'GET', `/api/v1/uploads/${wrongId}?wait=20`, { token });
      if (!['uploading', 'assembling'].includes(up.state)) break;
    }
    assert.equal(up.state, 'failed');
    assert.match(up.error, /SHA-256 mismatch/);
    assert.equal(up.file_id, undefined);
  });
});

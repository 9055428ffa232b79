// One tus-js-client upload in a process of its own, for the tus end-to-end test's "resume from
// a second process": `node tus-client.mjs '<json options>'`. Prints one JSON line per event
// (`{"url"}` once the upload exists, `{"progress"}` as bytes are acknowledged, `{"done"}` or
// `{"error"}` at the end). With `stopAfter`, the process exits abruptly (no abort, no
// goodbye) once that many bytes are acknowledged, as a crashed client would.
import { createReadStream } from 'node:fs';

import * as tus from 'tus-js-client';

const opts = JSON.parse(process.argv[2]);
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

const upload = new tus.Upload(createReadStream(opts.file), {
  endpoint: opts.endpoint,
  uploadUrl: opts.uploadUrl ?? null,
  headers: { Authorization: `Bearer ${opts.token}` },
  chunkSize: opts.chunkSize ?? Infinity,
  retryDelays: [0, 200, 500],
  metadata: { filename: opts.name, filetype: 'application/octet-stream' },
  onUploadUrlAvailable() {
    say({ url: upload.url });
  },
  onChunkComplete(_chunk, accepted) {
    say({ progress: accepted });
    if (opts.stopAfter && accepted >= opts.stopAfter) process.exit(3);
  },
  onSuccess() {
    say({ done: upload.url });
  },
  onError(err) {
    say({ error: String(err) });
    process.exitCode = 1;
  },
});
upload.start();

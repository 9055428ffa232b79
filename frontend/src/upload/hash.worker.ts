/// <reference lib="webworker" />
// A file's pass worker: the first message opens the file, the rest drive pass.ts.

import { PassRunner } from './pass';
import type { PassReply, PassRequest } from './protocol';

declare const self: DedicatedWorkerGlobalScope;

let runner: PassRunner | null = null;

self.onmessage = (ev: MessageEvent<PassRequest>) => {
  const req = ev.data;
  if (req.op === 'open') {
    runner = new PassRunner(req.file, req.plan, (msg: PassReply) => self.postMessage(msg));
    return;
  }
  runner?.handle(req);
};

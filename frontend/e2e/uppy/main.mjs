// The page of the Uppy end-to-end test (uppy.e2e.test.mjs), bundled by Vite: Uppy's Dashboard
// with @uppy/tus, as an Uppy user sets it up — only the endpoint and the Authorization header
// are LFUSYS's. `window.startUppy` starts it; `window.uppyLog` records what the test checks:
// the requests tus-js-client sent (method, URL, Upload-Offset) and Uppy's events.
import Uppy from '@uppy/core';
import Dashboard from '@uppy/dashboard';
import Tus from '@uppy/tus';
import '@uppy/core/css/style.min.css';
import '@uppy/dashboard/css/style.min.css';

window.uppyLog = { requests: [], events: [] };

window.startUppy = ({ endpoint, token, chunkSize }) => {
  const log = window.uppyLog;
  const uppy = new Uppy({ autoProceed: false, debug: false })
    .use(Dashboard, { inline: true, target: '#uppy', proudlyDisplayPoweredByUppy: false })
    .use(Tus, {
      endpoint,
      headers: { Authorization: `Bearer ${token}` },
      chunkSize,
      retryDelays: [0, 500, 1000],
      onBeforeRequest(req) {
        log.requests.push({ method: req.getMethod(), url: req.getURL(), offset: req.getHeader('Upload-Offset') ?? null });
      },
    });
  for (const name of ['upload-progress', 'upload-pause', 'upload-success', 'upload-error', 'complete']) {
    uppy.on(name, (...args) => {
      const [file] = args;
      log.events.push({ name, file: file && file.name ? file.name : null });
    });
  }
  window.uppy = uppy;
};

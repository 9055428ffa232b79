import { useEffect, useId, useRef, useState, useSyncExternalStore } from 'react';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { DropZone } from '../components/DropZone';
import { CheckIcon, FileIcon, FolderIcon, PauseIcon, PlayIcon, XIcon } from '../components/Icons';
import { formatBytes, formatDuration, formatRate, percent } from '../lib/format';
import { combine } from '../lib/progress';
import { Link } from '../router';
import type { UploadManager, UploadView } from '../upload/manager';

export function UploadPage({
  manager,
  active,
  onComputeSha256,
}: {
  manager: UploadManager;
  active: boolean;
  onComputeSha256: (on: boolean) => void;
}) {
  const views = useSyncExternalStore(manager.subscribe, manager.getSnapshot);
  const [sha256, setSha256] = useState(manager.computesSha256);
  const sha256Hint = useId();
  const [confirmCancelAll, setConfirmCancelAll] = useState(false);
  const headingRef = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    if (active) document.title = summaryTitle(views);
  }, [active, views]);

  const live = views.filter((v) => v.phase !== 'interrupted');
  const interrupted = views.filter((v) => v.phase === 'interrupted');
  const counted = live.filter((v) => v.phase !== 'cancelled' && v.phase !== 'expired' && !(v.phase === 'error' && v.size === 0));
  const totals = combine(
    counted.map((v) => ({ done: v.uploaded, total: v.size, rate: v.phase === 'uploading' ? v.speed : null, active: v.phase === 'uploading' })),
  );
  const anyPausable = views.some((v) => v.can.pause);
  const anyPaused = views.some((v) => v.phase === 'paused' && v.hasFile);
  const anyCancellable = live.some((v) => v.can.cancel);
  const anyFinished = views.some((v) => v.can.remove);
  const done = counted.filter((v) => v.phase === 'completed').length;
  const uploading = counted.filter((v) => v.phase === 'uploading').length;

  return (
    <section aria-labelledby="upload-heading">
      <div className="page-head">
        <h1 id="upload-heading" ref={headingRef} tabIndex={-1}>
          Upload
        </h1>
      </div>
      <DropZone onFiles={(files) => manager.addFiles(files)} compact={views.length > 0} />
      <div className="option">
        <label>
          <input
            type="checkbox"
            checked={sha256}
            aria-describedby={sha256Hint}
            onChange={(e) => {
              setSha256(e.target.checked);
              onComputeSha256(e.target.checked);
            }}
          />{' '}
          Also compute each file's SHA-256
        </label>
        <p id={sha256Hint} className="muted small">
          Every byte is verified end to end by CRC-64/NVME either way. A SHA-256 lets you compare the file with a published checksum, but
          computing it in the browser slows a fast upload by about 40 %. Applies to the files whose upload starts from now on.
        </p>
      </div>

      {interrupted.length > 0 && (
        <section className="panel" aria-labelledby="interrupted-heading">
          <div className="panel-head">
            <div>
              <h2 id="interrupted-heading">Unfinished uploads</h2>
              <p className="muted small">Select the same file again to continue: only the missing parts are sent.</p>
            </div>
          </div>
          <ul className="upload-list">
            {interrupted.map((v) => (
              <UploadRow key={v.key} view={v} manager={manager} />
            ))}
          </ul>
        </section>
      )}

      {live.length > 0 && (
        <section className="panel" aria-labelledby="queue-heading">
          <div className="panel-head">
            <div>
              <h2 id="queue-heading">
                {live.length} {live.length === 1 ? 'file' : 'files'}
                <span className="muted small heading-sub">
                  {done > 0 && ` · ${done} done`}
                  {uploading > 0 && ` · ${uploading} uploading`}
                </span>
              </h2>
              <p className="muted small" data-testid="totals">
                {formatBytes(totals.done)} of {formatBytes(totals.total)}
                {totals.rate !== null && ` · ${formatRate(totals.rate)}`}
                {totals.eta !== null && ` · ${formatDuration(totals.eta)} left`}
              </p>
            </div>
            <div className="toolbar" role="group" aria-label="All uploads">
              <button type="button" className="btn small" onClick={() => manager.pauseAll()} disabled={!anyPausable}>
                <PauseIcon /> Pause all
              </button>
              <button type="button" className="btn small" onClick={() => manager.resumeAll()} disabled={!anyPaused}>
                <PlayIcon /> Resume all
              </button>
              <button type="button" className="btn small" onClick={() => setConfirmCancelAll(true)} disabled={!anyCancellable}>
                <XIcon /> Cancel all
              </button>
              <button type="button" className="btn small ghost" onClick={() => manager.clearFinished()} disabled={!anyFinished}>
                Clear finished
              </button>
            </div>
          </div>
          <div
            className="bar overall"
            role="progressbar"
            aria-label="All uploads"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={percent(totals.done, totals.total)}
          >
            <div className="fill" style={{ width: `${(totals.total ? totals.done / totals.total : 0) * 100}%` }} />
          </div>
          <ul className="upload-list">
            {live.map((v) => (
              <UploadRow key={v.key} view={v} manager={manager} />
            ))}
          </ul>
        </section>
      )}

      {views.length === 0 && <p className="empty muted">Files you add appear here with their progress, speed and time left.</p>}

      <ConfirmDialog
        open={confirmCancelAll}
        title="Cancel all uploads?"
        confirmLabel="Cancel uploads"
        cancelLabel="Keep uploading"
        danger
        onCancel={() => setConfirmCancelAll(false)}
        onConfirm={() => {
          setConfirmCancelAll(false);
          void manager.cancelAll();
        }}
      >
        <p>Every unfinished upload stops and the parts already sent are deleted from the server. Finished files are kept.</p>
      </ConfirmDialog>
    </section>
  );
}

function summaryTitle(views: UploadView[]): string {
  const active = views.filter((v) => v.phase === 'uploading');
  if (active.length === 0) return 'Upload · LFUSYS';
  const t = combine(active.map((v) => ({ done: v.uploaded, total: v.size, rate: v.speed, active: true })));
  return `${percent(t.done, t.total)}% · Uploading · LFUSYS`;
}

function UploadRow({ view: v, manager }: { view: UploadView; manager: UploadManager }) {
  const nameId = useId();
  const statsId = useId();
  const fileRef = useRef<HTMLInputElement>(null);
  const fraction = v.uploaded / v.size;
  const pct = percent(v.uploaded, v.size);
  const { label } = v;
  const canPause = v.can.pause;
  const showToggle = canPause || v.can.resume;

  let stats: string;
  if (v.phase === 'uploading') {
    stats = `${formatBytes(v.uploaded)} of ${formatBytes(v.size)} · ${formatRate(v.speed)} · ${v.eta !== null ? `${formatDuration(v.eta)} left` : 'estimating…'}`;
  } else if (v.phase === 'completed') {
    stats = formatBytes(v.size);
  } else {
    stats = `${formatBytes(v.uploaded)} of ${formatBytes(v.size)}`;
  }

  return (
    <li
      className={`upload-row phase-${v.phase}`}
      data-testid="upload-row"
      data-name={v.name}
      data-phase={v.phase}
      data-percent={percent(v.uploaded, v.size)}
      data-uploaded={v.uploaded}
      data-upload-ms={v.uploadMs ?? ''}
      data-total-ms={v.totalMs ?? ''}
      data-chunks-received={v.receivedChunks}
      data-chunks-total={v.totalChunks}
      data-file-id={v.fileId ?? ''}
    >
      <div className="row-top">
        <span className="row-icon">
          <FileIcon />
        </span>
        <div className="row-title">
          <span className="row-name" id={nameId} title={v.name}>
            {v.name}
          </span>
          <span className="row-size">{formatBytes(v.size)}</span>
        </div>
        <span className={`badge badge-${v.verifying ? 'checking' : v.phase}`} data-testid="state">
          {v.phase === 'completed' && <CheckIcon />}
          {label}
        </span>
      </div>

      <div
        className={`bar${v.verifying ? ' checking' : ''}`}
        role="progressbar"
        aria-labelledby={nameId}
        aria-describedby={statsId}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={pct}
        aria-valuetext={`${label}: ${pct}%`}
      >
        <div className="fill" style={{ width: `${Math.min(1, fraction) * 100}%` }} />
      </div>

      <div className="row-bottom">
        <p className="row-stats" id={statsId}>
          <span className="pct" data-testid="percent">
            {pct}%
          </span>
          <span>{stats}</span>
        </p>
        <div className="row-actions">
          {v.phase === 'interrupted' && (
            <>
              <button type="button" className="btn small primary" onClick={() => fileRef.current?.click()} aria-label={`Select ${v.name} again to resume`}>
                <FolderIcon /> Select file…
              </button>
              <input
                ref={fileRef}
                type="file"
                className="sr-only"
                tabIndex={-1}
                aria-label={`File to resume ${v.name}`}
                data-testid="resume-input"
                onChange={(e) => {
                  const f = e.target.files?.[0];
                  e.target.value = '';
                  if (f) manager.attachFile(v.key, f);
                }}
              />
            </>
          )}
          {showToggle && (
            <button
              type="button"
              className="btn small"
              onClick={() => (canPause ? manager.pause(v.key) : manager.resume(v.key))}
              aria-label={`${canPause ? 'Pause' : v.phase === 'error' ? 'Retry' : 'Resume'} ${v.name}`}
              data-testid="toggle"
            >
              {canPause ? <PauseIcon /> : <PlayIcon />}
              {canPause ? 'Pause' : v.phase === 'error' ? 'Retry' : 'Resume'}
            </button>
          )}
          {v.can.cancel && (
            <button type="button" className="btn small ghost" onClick={() => void manager.cancel(v.key)} aria-label={`Cancel the upload of ${v.name}`} data-testid="cancel">
              <XIcon /> Cancel
            </button>
          )}
          {v.phase === 'completed' && (
            <Link to="/files" className="btn small ghost">
              View in Files
            </Link>
          )}
          {v.can.remove && (
            <button type="button" className="btn small ghost" onClick={() => manager.remove(v.key)} aria-label={`Remove ${v.name} from the list`}>
              Remove
            </button>
          )}
        </div>
      </div>
      {v.note && <p className="row-note">{v.note}</p>}
      {v.message && <p className="row-error">{v.message}</p>}
    </li>
  );
}

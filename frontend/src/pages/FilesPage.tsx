import { useCallback, useEffect, useRef, useState, type MouseEvent } from 'react';
import { ApiError, describeError } from '../api/client';
import type { FileInfo } from '../api/types';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { DownloadIcon, FileIcon, TrashIcon } from '../components/Icons';
import { formatBytes, formatDate, formatExactBytes } from '../lib/format';
import { Link } from '../router';
import { api, onFileCompleted } from '../session';

const PAGE_SIZE = 20;

interface PageState {
  items: FileInfo[];
  next: string | null;
}

export function FilesPage() {
  // Cursors of the pages visited so far: [null (first page), cursor of page 2, …].
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [page, setPage] = useState<PageState | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState('');
  const [toDelete, setToDelete] = useState<FileInfo | null>(null);
  const [deleting, setDeleting] = useState(false);
  const [reloadTick, setReloadTick] = useState(0);
  const headingRef = useRef<HTMLHeadingElement>(null);
  const cursor = cursors[cursors.length - 1] ?? null;
  const pageNo = cursors.length;

  useEffect(() => {
    document.title = 'Files · LFUSYS';
  }, []);

  useEffect(() => {
    let live = true;
    const ctrl = new AbortController();
    api.files(cursor, PAGE_SIZE).then(
      (p) => {
        if (!live) return;
        setPage({ items: p.items, next: p.next_cursor });
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (!live) return;
        setError(describeError(e));
        setLoading(false);
      },
    );
    return () => {
      live = false;
      ctrl.abort();
    };
  }, [cursor, reloadTick]);

  const reload = useCallback(() => {
    setLoading(true);
    setReloadTick((n) => n + 1);
  }, []);

  // A finished upload appears without a manual refresh.
  useEffect(() => onFileCompleted(() => reload()), [reload]);

  const go = (next: (string | null)[]) => {
    setLoading(true);
    setCursors(next);
    headingRef.current?.focus();
  };

  const confirmDelete = async () => {
    if (!toDelete) return;
    setDeleting(true);
    try {
      await api.deleteFile(toDelete.id);
      setStatus(`Deleted ${toDelete.name}.`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) setStatus(`${toDelete.name} was already deleted.`);
      else setError(`Could not delete ${toDelete.name}: ${describeError(e)}`);
    } finally {
      setDeleting(false);
      setToDelete(null);
      // The page may now be empty: go back one page if so.
      if (page && page.items.length === 1 && cursors.length > 1) go(cursors.slice(0, -1));
      else reload();
      headingRef.current?.focus();
    }
  };

  // Downloads are plain links (streamed to disk by the browser); the session is renewed first
  // when needed, so that an expired access token does not end in an error page.
  const download = async (e: MouseEvent<HTMLAnchorElement>, f: FileInfo) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    const anchor = e.currentTarget;
    try {
      await api.file(f.id);
      const a = document.createElement('a');
      a.href = anchor.href;
      a.download = f.name;
      a.rel = 'noopener';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setStatus(`Downloading ${f.name}.`);
    } catch (err) {
      setError(`Could not download ${f.name}: ${describeError(err)}`);
    }
  };

  const items = page?.items ?? [];
  return (
    <section aria-labelledby="files-heading" aria-busy={loading}>
      <div className="page-head">
        <h1 id="files-heading" ref={headingRef} tabIndex={-1}>
          Files
        </h1>
        <button type="button" className="btn small ghost" onClick={reload} disabled={loading}>
          Refresh
        </button>
      </div>
      <p className="sr-only" role="status" aria-live="polite">
        {status}
      </p>
      {status && (
        <p className="notice" aria-hidden="true">
          {status}
        </p>
      )}
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {page && items.length === 0 && pageNo === 1 && !loading && (
        <div className="empty card">
          <p>No files yet.</p>
          <Link to="/" className="btn primary">
            Upload files
          </Link>
        </div>
      )}
      {items.length > 0 && (
        <div className="card table-card">
          <table className="files-table">
            <caption className="sr-only">Your files, newest first (page {pageNo})</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col" className="num">
                  Size
                </th>
                <th scope="col">Uploaded</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((f) => (
                <tr key={f.id} data-testid="file-row" data-name={f.name} data-size={f.size} data-id={f.id}>
                  <th scope="row">
                    <span className="file-name">
                      <span className="row-icon">
                        <FileIcon />
                      </span>
                      <span className="name-text" title={f.name}>
                        {f.name}
                      </span>
                    </span>
                  </th>
                  <td className="num" title={formatExactBytes(f.size)} data-label="Size">
                    {formatBytes(f.size)}
                  </td>
                  <td data-label="Uploaded">
                    <time dateTime={f.created_at}>{formatDate(f.created_at)}</time>
                  </td>
                  <td className="actions">
                    <a
                      className="btn small"
                      href={api.contentUrl(f.id)}
                      download={f.name}
                      onClick={(e) => void download(e, f)}
                      aria-label={`Download ${f.name}`}
                      data-testid="download"
                    >
                      <DownloadIcon /> Download
                    </a>
                    <button
                      type="button"
                      className="btn small ghost danger-text"
                      onClick={() => setToDelete(f)}
                      aria-label={`Delete ${f.name}`}
                      data-testid="delete"
                    >
                      <TrashIcon /> Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {(pageNo > 1 || page?.next) && (
        <nav className="pager" aria-label="Pages">
          <button type="button" className="btn small" disabled={pageNo === 1 || loading} onClick={() => go(cursors.slice(0, -1))}>
            ← Previous
          </button>
          <span className="muted small">Page {pageNo}</span>
          <button
            type="button"
            className="btn small"
            disabled={!page?.next || loading}
            onClick={() => page?.next && go([...cursors, page.next])}
          >
            Next →
          </button>
        </nav>
      )}
      <ConfirmDialog
        open={toDelete !== null}
        title="Delete this file?"
        confirmLabel={deleting ? 'Deleting…' : 'Delete'}
        danger
        busy={deleting}
        onCancel={() => setToDelete(null)}
        onConfirm={() => void confirmDelete()}
      >
        <p>
          <strong className="break">{toDelete?.name}</strong> ({formatBytes(toDelete?.size ?? 0)}) will be deleted permanently. This cannot be undone.
        </p>
      </ConfirmDialog>
    </section>
  );
}

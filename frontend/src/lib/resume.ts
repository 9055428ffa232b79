// Resuming after a reload: which unfinished uploads on the server a re-selected file may belong
// to. A name and a size only make a candidate: the file proves to be an upload's from the
// server's CRC-64/NVME of each chunk it holds (the engine compares them as it reads the file),
// and a file that is not the upload's is never resumed into. This browser remembers each upload's
// file modification time (localStorage), which the server does not know: a candidate with the
// file's recorded time is tried first.

export interface FileIdentity {
  name: string;
  size: number;
  lastModified: number;
}

export interface UnfinishedUpload {
  upload_id: string;
  name: string;
  size: number;
  state: string;
}

export interface UploadRecord extends FileIdentity {
  /** When this browser created the upload (ms since the epoch). */
  createdAt: number;
}

export type Records = Record<string, UploadRecord>;

/**
 * The unfinished uploads `file` may continue, in the order to try them: same name and size, still
 * uploading, not being worked on in this tab (`exclude`); the one this browser recorded with the
 * file's modification time first, then those it created (newest first), then the others.
 */
export function candidatesFor<U extends UnfinishedUpload>(
  file: FileIdentity,
  unfinished: readonly U[],
  records: Records,
  exclude: ReadonlySet<string> = new Set(),
): U[] {
  const candidates = unfinished.filter(
    (u) => u.state === 'uploading' && !exclude.has(u.upload_id) && u.name === file.name && u.size === file.size,
  );
  const rank = (u: U): number => {
    const r = records[u.upload_id];
    if (!r) return 0;
    return r.lastModified === file.lastModified ? Number.MAX_SAFE_INTEGER : r.createdAt;
  };
  // Array.prototype.sort is stable: equal ranks keep the server's order.
  return [...candidates].sort((a, b) => rank(b) - rank(a));
}

/** Why a file picked for a given interrupted upload is refused, or null when it may be it. */
export function wrongFileReason(file: FileIdentity, upload: UnfinishedUpload): string | null {
  if (file.name !== upload.name) return `This upload is of “${upload.name}”, not “${file.name}”.`;
  if (file.size !== upload.size) {
    return `“${file.name}” has a different size (${file.size} bytes) than the interrupted upload (${upload.size} bytes).`;
  }
  return null;
}

// ---- the browser-side store ----

export const RECORDS_KEY = 'lfusys.uploads.v1';

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

function isRecord(v: unknown): v is UploadRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    typeof r.name === 'string' &&
    typeof r.size === 'number' &&
    typeof r.lastModified === 'number' &&
    typeof r.createdAt === 'number'
  );
}

export function loadRecords(store: KeyValueStore | null): Records {
  if (!store) return {};
  try {
    const parsed: unknown = JSON.parse(store.getItem(RECORDS_KEY) ?? '{}');
    if (typeof parsed !== 'object' || parsed === null) return {};
    const out: Records = {};
    for (const [id, v] of Object.entries(parsed)) if (isRecord(v)) out[id] = v;
    return out;
  } catch {
    return {};
  }
}

function save(store: KeyValueStore | null, records: Records): void {
  if (!store) return;
  try {
    store.setItem(RECORDS_KEY, JSON.stringify(records));
  } catch {
    // Storage full or disabled: candidates are tried in the server's order.
  }
}

export function rememberUpload(store: KeyValueStore | null, uploadId: string, record: UploadRecord): void {
  const records = loadRecords(store);
  records[uploadId] = record;
  save(store, records);
}

export function forgetUpload(store: KeyValueStore | null, uploadId: string): void {
  const records = loadRecords(store);
  if (uploadId in records) {
    delete records[uploadId];
    save(store, records);
  }
}

/** Drops the records of uploads the server no longer lists as unfinished. */
export function pruneRecords(store: KeyValueStore | null, unfinishedIds: Iterable<string>): void {
  const keep = new Set(unfinishedIds);
  const records = loadRecords(store);
  let changed = false;
  for (const id of Object.keys(records)) {
    if (!keep.has(id)) {
      delete records[id];
      changed = true;
    }
  }
  if (changed) save(store, records);
}

// Resuming after a reload: which unfinished upload on the server a re-selected file belongs to.
// The server knows each upload's name, size and SHA-256; this browser remembers each upload's
// file modification time (localStorage), which the server does not know.

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
  sha256?: string;
}

export interface UploadRecord extends FileIdentity {
  /** When this browser created the upload (ms since the epoch). */
  createdAt: number;
}

export type Records = Record<string, UploadRecord>;

export type ResumeMatch<U extends UnfinishedUpload> =
  /** Same name, size and modification time as recorded for this upload: continue it. */
  | { kind: 'resume'; upload: U }
  /** Same name and size but the modification time is unknown or different: compare SHA-256 first. */
  | { kind: 'verify'; candidates: U[] }
  | { kind: 'new' };

const RESUMABLE = new Set(['uploading', 'assembling']);

export function matchFile<U extends UnfinishedUpload>(
  file: FileIdentity,
  unfinished: readonly U[],
  records: Records,
  /** Uploads already being worked on in this tab. */
  exclude: ReadonlySet<string> = new Set(),
): ResumeMatch<U> {
  const candidates = unfinished.filter(
    (u) => RESUMABLE.has(u.state) && !exclude.has(u.upload_id) && u.name === file.name && u.size === file.size,
  );
  const exact = candidates.find((u) => records[u.upload_id]?.lastModified === file.lastModified);
  if (exact) return { kind: 'resume', upload: exact };
  const verifiable = candidates.filter((u) => typeof u.sha256 === 'string' && u.sha256.length === 64);
  if (verifiable.length > 0) return { kind: 'verify', candidates: verifiable };
  return { kind: 'new' };
}

/** After hashing: the candidate whose whole-file SHA-256 is the file's. */
export function pickBySha<U extends UnfinishedUpload>(candidates: readonly U[], sha256: string): U | undefined {
  const want = sha256.toLowerCase();
  return candidates.find((u) => u.sha256?.toLowerCase() === want);
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
    // Storage full or disabled: resuming falls back to comparing SHA-256.
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

// The signed-in session: the user and their upload engine, created on sign-in and disposed on
// sign-out (uploads on the server stay resumable).

import { ApiClient } from './api/client';
import type { User } from './api/types';
import { Hasher } from './upload/hasher';
import { UploadManager } from './upload/manager';
import { xhrTransport } from './upload/transport';
import type { KeyValueStore } from './lib/resume';

export const api = new ApiClient();

/** Chunks in flight at once over all files (browsers open at most 6 connections per host). */
export const PARALLEL_CHUNKS = 6;

/** `localStorage['lfusys.parallel']` (1–6) overrides the number of chunks in flight. */
function parallelChunks(store: KeyValueStore | null): number {
  const v = Number(store?.getItem('lfusys.parallel'));
  return Number.isInteger(v) && v >= 1 && v <= 6 ? v : PARALLEL_CHUNKS;
}

/** `localStorage['lfusys.sha256']`: `'1'` when the user asked for each file's SHA-256 (upload page). */
export const SHA256_KEY = 'lfusys.sha256';

export interface Session {
  user: User;
  manager: UploadManager;
  hasher: Hasher;
}

function storage(): KeyValueStore | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

type Listener = (message: string) => void;
const announcers = new Set<Listener>();
const completions = new Set<(fileId: string) => void>();

/** Screen-reader announcements from the engine. */
export function onAnnounce(fn: Listener): () => void {
  announcers.add(fn);
  return () => announcers.delete(fn);
}

/** Called whenever an upload becomes a file (the files page refreshes). */
export function onFileCompleted(fn: (fileId: string) => void): () => void {
  completions.add(fn);
  return () => completions.delete(fn);
}

export function openSession(user: User): Session {
  const hasher = new Hasher();
  const store = storage();
  const manager = new UploadManager({
    api,
    hasher,
    transport: xhrTransport,
    parallel: parallelChunks(store),
    sha256: store?.getItem(SHA256_KEY) === '1',
    storage: store,
    announce: (m) => announcers.forEach((fn) => fn(m)),
    onCompleted: (id) => completions.forEach((fn) => fn(id)),
  });
  void manager.loadUnfinished().catch((e: unknown) => console.warn('could not list unfinished uploads', e));
  return { user, manager, hasher };
}

/** Turns the whole-file SHA-256 on or off for the uploads that start from now on, and remembers it. */
export function setComputeSha256(s: Session, on: boolean): void {
  s.manager.setComputeSha256(on);
  const store = storage();
  try {
    store?.setItem(SHA256_KEY, on ? '1' : '0');
  } catch {
    // private mode: the choice lasts for this session only
  }
}

export function closeSession(s: Session): void {
  s.manager.dispose();
  s.hasher.dispose();
}

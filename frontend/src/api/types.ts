// The JSON documents of the LFUSYS HTTP API (DESIGN §3–§4; gateway/src/dto.rs).

export interface User {
  id: string;
  email: string;
  name: string;
}

export interface TokenResponse {
  user: User;
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
}

export interface CreatedUpload {
  upload_id: string;
  chunk_size: number;
  total_chunks: number;
  upload_url: string;
  upload_token: string;
  expires_at: string;
  upload_token_expires_at: string;
  state: string;
}

export interface UploadToken {
  upload_token: string;
  expires_at: string;
  upload_url: string;
}

export type UploadState = 'uploading' | 'assembling' | 'completed' | 'failed' | 'cancelled' | 'expired';

export interface UploadStatus {
  upload_id: string;
  name: string;
  /** The file's size; while `length_deferred`, the most the upload may hold. */
  size: number;
  /** Created without a length (a tus client's `Upload-Defer-Length`) not declared yet. */
  length_deferred?: boolean;
  content_type: string;
  /** The whole file's SHA-256 declared (at creation, or with the checksums). */
  sha256?: string;
  /** The whole file's CRC-64/NVME (16 hex digits) the client declared (`PATCH`), once it did. */
  crc64nvme?: string;
  chunk_size: number;
  total_chunks: number;
  state: UploadState | string;
  /** Indices of the stored chunks, ascending. */
  received_chunks: number[];
  /** The server's CRC-64/NVME (16 hex digits) of each stored chunk, in the order of `received_chunks`. */
  received_crc64nvme?: string[];
  bytes_received: number;
  file_id?: string;
  error?: string;
  created_at: string;
  expires_at: string;
}

export interface FileInfo {
  id: string;
  name: string;
  size: number;
  content_type: string;
  /** The whole-file SHA-256, null when none is known; `sha256_source` says who vouches for it. */
  sha256: string | null;
  /**
   * `client`: computed by the uploading client in the pass that computed the CRC-64/NVME the
   * server verified; `declared`: declared at creation, checked by no one; `received`: hashed by the
   * workers in the order they received the bytes (a tus upload); `server`: hashed by the
   * server (files of earlier versions). Null without a SHA-256.
   */
  sha256_source?: 'client' | 'declared' | 'received' | 'server' | null;
  /** The whole-file CRC-64/NVME (16 hex digits) the server computed and verified; null for files of earlier versions. */
  crc64nvme?: string | null;
  created_at: string;
}

/** The body of `PATCH /api/v1/uploads/{id}`: the whole-file checksums, declared before the last chunk. */
export interface DeclaredChecksums {
  /** 16 lowercase hex digits. */
  crc64nvme: string;
  /** 64 lowercase hex digits. */
  sha256?: string;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** The reply to a chunk PUT. */
export interface ChunkReceipt {
  index: number;
  size: number;
  /** CRC-64/NVME of the stored chunk (16 lowercase hex digits). */
  crc64nvme: string;
  /** The chunk's SHA-256, when the client declared one. */
  sha256?: string;
  received_count: number;
  total_chunks: number;
  complete: boolean;
}

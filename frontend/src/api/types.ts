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
  size: number;
  content_type: string;
  sha256?: string;
  chunk_size: number;
  total_chunks: number;
  state: UploadState | string;
  received_chunks: number[];
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
  /** The declared, verified whole-file SHA-256; null when the uploader declared none. */
  sha256: string | null;
  created_at: string;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** The reply to a chunk PUT. */
export interface ChunkReceipt {
  index: number;
  size: number;
  sha256: string;
  received_count: number;
  total_chunks: number;
  complete: boolean;
}

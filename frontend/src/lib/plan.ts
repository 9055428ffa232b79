// Chunk planning: which byte range each chunk covers and which chunks are still missing.
// Mirrors commons::plan::UploadPlan on the server.

export interface ChunkPlan {
  readonly size: number;
  readonly chunkSize: number;
  readonly totalChunks: number;
}

export function makePlan(size: number, chunkSize: number, totalChunks?: number): ChunkPlan {
  if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError('size must be a positive integer');
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
    throw new RangeError('chunk size must be a positive integer');
  }
  const computed = Math.ceil(size / chunkSize);
  if (totalChunks !== undefined && totalChunks !== computed) {
    throw new RangeError(`the server planned ${totalChunks} chunks, expected ${computed}`);
  }
  return { size, chunkSize, totalChunks: computed };
}

export interface ChunkRange {
  readonly index: number;
  readonly start: number;
  /** Exclusive. */
  readonly end: number;
}

export function chunkRange(plan: ChunkPlan, index: number): ChunkRange {
  if (!Number.isInteger(index) || index < 0 || index >= plan.totalChunks) {
    throw new RangeError(`chunk ${index} is outside the plan (0..${plan.totalChunks - 1})`);
  }
  const start = index * plan.chunkSize;
  return { index, start, end: Math.min(start + plan.chunkSize, plan.size) };
}

export function chunkLength(plan: ChunkPlan, index: number): number {
  const r = chunkRange(plan, index);
  return r.end - r.start;
}

/** Indices not yet received, ascending. */
export function missingChunks(plan: ChunkPlan, received: Iterable<number>): number[] {
  const have = new Set(received);
  const out: number[] = [];
  for (let i = 0; i < plan.totalChunks; i += 1) if (!have.has(i)) out.push(i);
  return out;
}

/** Bytes covered by the given (distinct, in-plan) chunk indices. */
export function bytesOf(plan: ChunkPlan, indices: Iterable<number>): number {
  let total = 0;
  for (const i of new Set(indices)) {
    if (i >= 0 && i < plan.totalChunks) total += chunkLength(plan, i);
  }
  return total;
}

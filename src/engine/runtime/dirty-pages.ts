// The dirty map of one instance: a small memory the rewritten module imports (`wasmhost.dirty`),
// one byte per 4 KiB chunk of its linear memory, set to 1 by the module before every write it makes
// (see compile/wasm-code.ts) and by the host before every write it makes into linear memory (WASI).
// A reset visits only the marked chunks, so its cost follows what a call wrote, not the memory's size.
import {
  DIRTY_CHUNK,
  DIRTY_CHUNK_SHIFT,
  DIRTY_MAP_PAGES,
  GROW_BUDGET_OFFSET,
  LAST_CHUNK,
  TABLE_BUDGET_OFFSET,
} from '../compile/wasm-rewrite.ts';

export { DIRTY_CHUNK };

const PAGE = 65536;

/**
 * Below this many bytes left to scan, a loop finds the next mark sooner than Buffer.indexOf (memchr),
 * whose call alone costs about as much: a 1 MiB memory's map is 257 bytes.
 */
const SCAN_IN_JS_BELOW = 256;

/** Index of the first mark in `bytes` (of `limit` bytes) from `from`, or -1. */
function marked(bytes: Buffer, limit: number, from: number): number {
  if (limit - from >= SCAN_IN_JS_BELOW) return bytes.indexOf(1, from);
  for (let i = from; i < limit; i++) if (bytes[i] === 1) return i;
  return -1;
}

export class DirtyPageMap {
  readonly memory = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
  // The map never grows, so this view stays valid. A Buffer: its indexOf is memchr, and a call
  // usually marks a few chunks of thousands.
  readonly #bytes = Buffer.from(this.memory.buffer);
  #cover: Buffer | null = null;
  readonly #words = new DataView(this.memory.buffer);

  /**
   * Pages the grow shims of the modules importing this map may still add to their memories together
   * (the shim refuses a memory.grow past it and lowers it by what it grows). Never marked or cleared.
   */
  get growBudget(): number {
    return this.#words.getInt32(GROW_BUDGET_OFFSET, true);
  }

  set growBudget(pages: number) {
    this.#words.setInt32(GROW_BUDGET_OFFSET, pages, true);
  }

  /**
   * Elements the table-grow shims of the modules importing this map may still add to their tables
   * together (a `table.grow` past it answers -1). Never marked or cleared.
   */
  get tableBudget(): number {
    return this.#words.getInt32(TABLE_BUDGET_OFFSET, true);
  }

  set tableBudget(elements: number) {
    this.#words.setInt32(TABLE_BUDGET_OFFSET, elements, true);
  }

  /** Marks the chunks of a host write of `length` bytes at `start` (before it is made). */
  markWritten(start: number, length: number): void {
    if (length <= 0) return;
    const first = start >>> DIRTY_CHUNK_SHIFT;
    const last = Math.min(Math.floor((start + length - 1) / DIRTY_CHUNK), LAST_CHUNK);
    this.#bytes.fill(1, first, last + 1);
  }

  /**
   * Calls `visit` with every run of marked chunks below `chunks` ([first, end), in order) and clears
   * them. Marks at or above `chunks` (a write that crossed the end of memory, or trapped out of
   * bounds) are left, or only cleared: a mark only ever costs a look at a chunk that may not have changed.
   */
  drain(chunks: number, visit: (first: number, end: number) => void): void {
    const bytes = this.#covering(chunks);
    const limit = bytes.length;
    let first = marked(bytes, limit, 0);
    while (first !== -1) {
      bytes[first] = 0;
      let end = first + 1;
      for (; end < limit && bytes[end] !== 0; end++) bytes[end] = 0;
      if (first < chunks) visit(first, Math.min(end, chunks));
      first = end < limit ? marked(bytes, limit, end) : -1;
    }
  }

  /** Drains the marks below `chunks` (see drain): the 64 KiB pages holding a marked chunk, in order. */
  drainPages(chunks: number): number[] {
    const pages: number[] = [];
    this.drain(chunks, (first, end) => {
      for (let page = Math.floor((first * DIRTY_CHUNK) / PAGE); page * PAGE < end * DIRTY_CHUNK; page++) pages.push(page);
    });
    return pages;
  }

  /**
   * The part of the map that covers a memory of `chunks` chunks, and the one after (a write wider
   * than a byte also marks the chunk after its own). Only this part is ever read, so the rest of the
   * map is never touched (nor resident). Kept: a memory's size changes seldom.
   */
  #covering(chunks: number): Buffer {
    const limit = Math.min(chunks + 1, this.#bytes.length);
    if (this.#cover?.length !== limit) this.#cover = this.#bytes.subarray(0, limit);
    return this.#cover;
  }

  /** Clears the marks of a memory of `chunks` chunks (and the one after). */
  clear(chunks: number): void {
    this.#covering(chunks).fill(0);
  }
}

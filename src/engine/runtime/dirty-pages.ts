// The dirty map of one instance: a small memory the rewritten module imports (`wasmhost.dirty`),
// one byte per 64 KiB page of its linear memory, set by the module before every write it makes
// (see compile/wasm-code.ts) and by the host before every write it makes into linear memory (WASI).
// A reset visits only the marked pages, so its cost follows what a call wrote, not the memory's size.
import { DIRTY_MAP_PAGES } from '../compile/wasm-rewrite.ts';

const PAGE_SHIFT = 16;

export class DirtyPageMap {
  readonly memory = new WebAssembly.Memory({ initial: DIRTY_MAP_PAGES, maximum: DIRTY_MAP_PAGES });
  // The map never grows, so these views stay valid.
  readonly #bytes = new Uint8Array(this.memory.buffer);
  readonly #words = new Uint32Array(this.memory.buffer);

  /** Marks the pages of a host write of `length` bytes at `start` (before it is made). */
  markWritten(start: number, length: number): void {
    if (length <= 0) return;
    const first = start >>> PAGE_SHIFT;
    const last = Math.min((start + length - 1) / 2 ** PAGE_SHIFT, 0xffff) | 0;
    this.#bytes.fill(1, first, last + 1);
  }

  /**
   * Calls `visit` with every marked page below `pages` (in order) and clears the map. Marks at or
   * above `pages` (a write that crossed the end of memory trapped) are only cleared.
   */
  drain(pages: number, visit: (page: number) => void): void {
    const words = this.#words;
    // A write wider than a byte also marks the page after its own: one more byte to look at.
    const lastWord = Math.min(words.length - 1, pages >>> 2);
    for (let w = 0; w <= lastWord; w++) {
      const word = words[w]!;
      if (word === 0) continue;
      words[w] = 0;
      for (let i = 0; i < 4; i++) {
        const page = (w << 2) + i;
        if ((word >>> (i << 3)) & 0xff && page < pages) visit(page);
      }
    }
  }

  clear(): void {
    this.#bytes.fill(0);
  }
}

// Walks function bodies instruction by instruction (wasm-instructions.ts decodes every immediate, so
// no byte of an immediate is ever mistaken for an opcode) and rewrites what the engine needs changed:
// - `memory.size 0` / `memory.grow 0` become calls to the engine's shims (virtual growth);
// - with dirty-page tracking, every write to memory 0 first marks the 4 KiB chunks it may touch in
//   the dirty map (a second memory the engine reads after the call): each store width, atomic
//   stores and read-modify-writes, SIMD stores, and memory.fill/copy/init (through a helper);
// - writes to tables (table.set/fill/copy/init/grow) set a flag global, so a reset only walks the
//   tables after a call that may have changed them.
// Opcodes it does not know make it throw: the caller then keeps the module without any of this.
import { concat, leb, Reader, skipValType, sleb, WasmRewriteError } from './wasm-binary.ts';
import { InstructionReader, PREFIX_ATOMIC, PREFIX_MISC, PREFIX_SIMD } from './wasm-instructions.ts';

const I32 = 0x7f;
const I64 = 0x7e;
const F32 = 0x7d;
const F64 = 0x7c;
const V128 = 0x7b;
type ValType = typeof I32 | typeof I64 | typeof F32 | typeof F64 | typeof V128;

/**
 * The dirty map has one byte per 4 KiB chunk of memory (a mark is always 1). Finer than a 64 KiB page
 * so a reset copies what a call wrote, not the pages around it: a stack write or a small allocation
 * costs a 4 KiB compare, and a write that may cross into the next chunk marks 4 KiB more, not 64.
 */
export const DIRTY_CHUNK_SHIFT = 12;
/** Bytes of linear memory per byte of the map. */
export const DIRTY_CHUNK = 2 ** DIRTY_CHUNK_SHIFT;
/** The chunk of the last byte of a 32-bit memory. */
export const LAST_CHUNK = 2 ** (32 - DIRTY_CHUNK_SHIFT) - 1;
/** V8's limit on a function's locals, and the most scratch locals a rewrite adds (see Scratch). */
const MAX_LOCALS = 50_000;
const MAX_SCRATCH_LOCALS = 8;

export interface CodeRewrite {
  sizeFn: number;
  growFn: number;
  /** The shim that replaces `table.grow` of this table (see tableGrowBody). */
  tableGrowFn: (table: number) => number;
  /** Dirty-page tracking; null leaves writes alone. */
  dirty: {
    /** Index of the dirty-map memory (one byte per chunk of memory 0). */
    memory: number;
    /** `(start: i32, length: i32) -> ()`: marks the pages of a bulk write. */
    markRangeFn: number;
    /** Global set to 1 by any instruction that writes a table. */
    tablesWrittenGlobal: number;
  } | null;
}

/**
 * A store-like instruction: what it pops after the address (`values`), and whether it may write
 * into two chunks (wider than a byte and not necessarily aligned). `bytes`: its width, for plain
 * stores (whose marks may be shared, see MarkedAddresses).
 */
interface Write {
  values: ValType[];
  crosses: boolean;
  bytes?: number;
}

/** Plain stores 0x36–0x3e (only the 8-bit ones cannot cross a chunk boundary). */
const STORES: Record<number, Write> = {
  0x36: { values: [I32], crosses: true, bytes: 4 },
  0x37: { values: [I64], crosses: true, bytes: 8 },
  0x38: { values: [F32], crosses: true, bytes: 4 },
  0x39: { values: [F64], crosses: true, bytes: 8 },
  0x3a: { values: [I32], crosses: false, bytes: 1 },
  0x3b: { values: [I32], crosses: true, bytes: 2 },
  0x3c: { values: [I64], crosses: false, bytes: 1 },
  0x3d: { values: [I64], crosses: true, bytes: 2 },
  0x3e: { values: [I64], crosses: true, bytes: 4 },
};

/** [pops, pushes] of an instruction without side effects on locals or control (or a plain load or store); null for any other. */
function plainEffect(op: number): [number, number] | null {
  if (op === 0x20 || op === 0x23 || (op >= 0x41 && op <= 0x44)) return [0, 1]; // local.get global.get const
  if (op === 0x21) return [1, 0]; // local.set
  if (op === 0x22) return [1, 1]; // local.tee
  if (op >= 0x28 && op <= 0x35) return [1, 1]; // loads
  if (op >= 0x36 && op <= 0x3e) return [2, 0]; // stores
  // prettier-ignore
  if (op === 0x45 || op === 0x50 || (op >= 0x67 && op <= 0x69) || (op >= 0x79 && op <= 0x7b) ||
      (op >= 0x8b && op <= 0x91) || (op >= 0x99 && op <= 0x9f) || (op >= 0xa7 && op <= 0xc4)) return [1, 1]; // unary, conversions
  if (op >= 0x46 && op <= 0xa6) return [2, 1]; // comparisons, binary (the unary ones in between are above)
  return null;
}

/** How many plain instructions back a store's address is looked for. */
const ADDRESS_LOOKBACK = 32;

/** Offsets [lo, hi) from a local's value whose chunks are marked, and when (a step, see MarkedAddresses). */
interface Mark {
  readonly lo: number;
  readonly hi: number;
  readonly at: number;
}

/** An open block, if, loop or try: where the logs stood when it began. */
interface Frame {
  kind: 'block' | 'if' | 'loop' | 'try';
  /** Length of the undo log: rolling back to it restores the marks (and floor) as they were. */
  undoAt: number;
  /** Length of the write log (for an if's else). */
  writesAt: number;
}

/** Work an else may spend per byte of the body before sharing stops for the function (see MarkedAddresses). */
const ELSE_WORK_PER_BYTE = 4;

/**
 * Marks already made for addresses held in locals, so a store into a chunk its function already
 * marked is not marked again: compilers write a stack frame, or a struct's fields, through one
 * pointer in a local, and each mark costs about as much as the store.
 * - A store's address is known to be local $p's value only when the instruction that pushed it is a
 *   `local.get`/`local.tee $p` a few plain instructions back, with no write of $p in between.
 * - A mark made for $p + lo covers $p + [lo, lo + 1 chunk) (the next chunk is marked too) for as
 *   long as $p keeps its value: a write of $p forgets its marks.
 * - Where paths join, only what holds on every path is kept: after a block or an if, what was known
 *   when it began, but for the locals written inside it; the else branch starts from what was known
 *   at its if; at a loop's start (its back edges come later) and in catch handlers, nothing.
 *   Branches out (br_if, br_table, br_on_*, a try_table's catch clauses) and calls change neither
 *   the marks nor the locals.
 * Linear in the body: no copies. Each mark records the step it was made at, and holds while it is
 * later than the last write of its local and than the floor (the step of the last forgetting of
 * everything: a loop, a catch). Changes to marks and floor go on an undo log, so a block's end rolls
 * back to what held when it began in the time it took to make them; the writes inside it are later
 * than every mark it restores, so those lapse by themselves. An else restores what held at its if,
 * where its then-branch's writes must not count: the marks they cancel are made again (one step per
 * local written there); past ELSE_WORK_PER_BYTE of that per byte (nested ifs each rewriting many
 * locals), sharing stops for the rest of the function, which only marks more.
 */
class MarkedAddresses {
  readonly #marks = new Map<number, Mark>();
  /** Step of each local's last write. */
  readonly #written = new Map<number, number>();
  #floor = 0;
  #step = 0;
  /** Pairs: a local and its mark before a change (undefined: none), or -1 and the floor before a change. */
  readonly #undo: (number | Mark | undefined)[] = [];
  /** Pairs: a local written and the step of its write before. */
  readonly #writes: number[] = [];
  readonly #frames: Frame[] = [];
  #elseWork: number;
  /** Per local, the last else that looked at it (#elses counts them). */
  readonly #seenAt = new Map<number, number>();
  #elses = 0;
  #off = false;
  /** The plain instructions since the last other one: [pops, pushes, local read or -1, local written or -1]. */
  #steps: [number, number, number, number][] = [];

  /** `bodyBytes`: the function body's size, which bounds the work of else branches. */
  constructor(bodyBytes: number) {
    this.#elseWork = ELSE_WORK_PER_BYTE * bodyBytes + 1024;
  }

  /** After each instruction (`local`: the index of a local.get/set/tee). */
  after(op: number, local: number): void {
    if (this.#off) return;
    const effect = plainEffect(op);
    if (effect) {
      const read = op === 0x20 || op === 0x22 ? local : -1;
      const written = op === 0x21 || op === 0x22 ? local : -1;
      if (written >= 0) {
        this.#writes.push(written, this.#written.get(written) ?? 0);
        this.#written.set(written, ++this.#step);
      }
      if (this.#steps.length === ADDRESS_LOOKBACK) this.#steps.shift();
      this.#steps.push([effect[0], effect[1], read, written]);
      return;
    }
    this.#steps = [];
    const open = (kind: Frame['kind']) => this.#frames.push({ kind, undoAt: this.#undo.length, writesAt: this.#writes.length });
    const top = this.#frames[this.#frames.length - 1];
    // prettier-ignore
    switch (op) {
      case 0x02: case 0x1f: open('block'); break; // block, try_table (its catches branch out, as br does)
      case 0x04: open('if'); break;
      case 0x06: open('try'); break;
      case 0x03: open('loop'); this.#forgetAll(); break;
      case 0x05: if (top) this.#else(top); break;
      case 0x07: case 0x19: this.#forgetAll(); break; // catch, catch_all
      case 0x0b: case 0x18: { // end, delegate
        const frame = this.#frames.pop();
        // A loop's end is reached only by falling through; the function's end ends everything.
        if (frame?.kind === 'block' || frame?.kind === 'if') this.#rollBack(frame.undoAt);
        else if (frame?.kind === 'try') this.#forgetAll();
        break;
      }
    }
  }

  #valid(local: number): Mark | undefined {
    const mark = this.#marks.get(local);
    return mark && mark.at > this.#floor && mark.at > (this.#written.get(local) ?? 0) ? mark : undefined;
  }

  #set(local: number, mark: Mark): void {
    this.#undo.push(local, this.#marks.get(local));
    this.#marks.set(local, mark);
  }

  #forgetAll(): void {
    this.#undo.push(-1, this.#floor);
    this.#floor = ++this.#step;
  }

  #rollBack(to: number): void {
    const undo = this.#undo;
    while (undo.length > to) {
      const before = undo.pop() as Mark | number | undefined;
      const local = undo.pop() as number;
      if (local === -1) this.#floor = before as number;
      else if (before === undefined) this.#marks.delete(local);
      else this.#marks.set(local, before as Mark);
    }
  }

  /** An else: back to what held at its if, with the marks its then-branch's writes cancel made again. */
  #else(frame: Frame): void {
    this.#rollBack(frame.undoAt);
    const writes = this.#writes;
    this.#elseWork -= (writes.length - frame.writesAt) / 2;
    if (this.#elseWork < 0) {
      this.#off = true;
      this.#marks.clear();
      return;
    }
    const serial = ++this.#elses;
    for (let i = frame.writesAt; i < writes.length; i += 2) {
      const local = writes[i]!;
      if (this.#seenAt.get(local) === serial) continue;
      this.#seenAt.set(local, serial);
      // The first write of this local in the then-branch says when it was written before the if.
      const mark = this.#marks.get(local);
      if (mark && mark.at > this.#floor && mark.at > writes[i + 1]!)
        this.#set(local, { lo: mark.lo, hi: mark.hi, at: ++this.#step });
    }
  }

  /** The local whose current value is the address of a store about to run (`values` operands above it), or -1. */
  addressLocal(values: number): number {
    let depth = values;
    const written: number[] = [];
    for (let i = this.#steps.length - 1; i >= 0; i--) {
      const [pops, pushes, read, wrote] = this.#steps[i]!;
      if (depth < pushes) return read >= 0 && !written.includes(read) ? read : -1;
      depth += pops - pushes;
      if (wrote >= 0) written.push(wrote);
    }
    return -1;
  }

  covered(local: number, lo: number, hi: number): boolean {
    const marked = this.#off ? undefined : this.#valid(local);
    return marked !== undefined && marked.lo <= lo && hi <= marked.hi;
  }

  add(local: number, lo: number, hi: number): void {
    if (this.#off) return;
    const marked = this.#valid(local);
    const joined = marked && lo <= marked.hi && hi >= marked.lo;
    const at = ++this.#step;
    this.#set(local, joined ? { lo: Math.min(marked.lo, lo), hi: Math.max(marked.hi, hi), at } : { lo, hi, at });
  }
}

/** Atomic stores (0xFE 0x17–0x1d), read-modify-writes (0x1e–0x47) and cmpxchg (0x48–0x4e): aligned, so one page. */
function atomicWrite(op: number): Write | null {
  if (op < 0x17 || op > 0x4e) return null;
  // Each group of seven: i32, i64, i32 8-bit, i32 16-bit, i64 8-bit, i64 16-bit, i64 32-bit.
  const kind = (op - 0x17) % 7;
  const type = kind === 0 || kind === 2 || kind === 3 ? I32 : I64;
  return { values: op >= 0x48 ? [type, type] : [type], crosses: false };
}

/** SIMD stores: v128.store (11) and v128.storeN_lane (88–91; the 8-bit lane cannot cross). */
function simdWrite(op: number): Write | null {
  if (op === 11) return { values: [V128], crosses: true };
  if (op >= 88 && op <= 91) return { values: [V128], crosses: op !== 88 };
  return null;
}

/** Adds scratch locals to a function as a rewrite needs them: one per value type and role. */
class Scratch {
  readonly #first: number;
  readonly #types: ValType[] = [];
  readonly #byRole = new Map<string, number>();
  constructor(first: number) {
    this.#first = first;
  }
  local(type: ValType, role: number): number[] {
    const key = `${type}:${role}`;
    let index = this.#byRole.get(key);
    if (index === undefined) {
      index = this.#first + this.#types.length;
      this.#types.push(type);
      this.#byRole.set(key, index);
    }
    return leb(index);
  }
  /** Local declarations to append (one group per local). */
  declarations(): number[] {
    return this.#types.flatMap((type) => [0x01, type]);
  }
  get count(): number {
    return this.#types.length;
  }
}

/** i32.const `value` (as the signed 32-bit immediate the encoding wants). */
export function i32Const(value: number): number[] {
  return [0x41, ...sleb(value | 0)];
}

/**
 * Returns the body rewritten per `rewrite`, or null when nothing in it needed a change.
 * `body` is one function body without its size prefix; `params` is its function's parameter count
 * (new scratch locals are numbered after the params and the declared locals).
 */
export function rewriteCode(body: Uint8Array, params: number, rewrite: CodeRewrite): Uint8Array | null {
  const r = new Reader(body, 0, body.length);
  const localGroups = r.u32();
  const groupsStart = r.pos;
  let declared = 0;
  for (let i = 0; i < localGroups; i++) {
    declared += r.u32();
    skipValType(r);
  }
  const localsEnd = r.pos;
  if (params + declared + MAX_SCRATCH_LOCALS > MAX_LOCALS) throw new WasmRewriteError('too many locals to add scratch locals');
  const scratch = new Scratch(params + declared);
  const dirty = rewrite.dirty;
  const marks = new MarkedAddresses(body.length);
  const parts: (Uint8Array | number[])[] = [];
  let copiedUpTo = localsEnd;
  let changed = false;

  /** Inserts `code` before the instruction that starts at `at`. */
  const before = (at: number, code: number[]) => {
    parts.push(body.subarray(copiedUpTo, at), code);
    copiedUpTo = at;
    changed = true;
  };

  /** Marks the chunk(s) of a store: saves its operands, marks, and puts them back. */
  /** Marks the chunk(s) of a store (`offset`: its memarg's) before it. */
  const markStore = (at: number, write: Write, offset: number) => {
    if (!dirty) return;
    const local = write.bytes ? marks.addressLocal(write.values.length) : -1;
    if (local >= 0) {
      const lo = offset;
      if (marks.covered(local, lo, lo + write.bytes!)) return;
      // A crossing mark covers a whole chunk from the address on; a byte's, that byte.
      marks.add(local, lo, write.crosses ? lo + DIRTY_CHUNK : lo + 1);
    }
    const address = scratch.local(I32, 0);
    const code: number[] = [];
    const values = write.values.map((type, role) => scratch.local(type, role + 1));
    for (let i = values.length - 1; i >= 0; i--) code.push(0x21, ...values[i]!); // local.set value(s)
    code.push(0x22, ...address); // local.tee address
    if (offset !== 0) code.push(...i32Const(offset), 0x6a); // + offset (a wrap traps the store anyway)
    code.push(...i32Const(DIRTY_CHUNK_SHIFT), 0x76); // >> 12: the chunk
    // A write that may cross into the next chunk marks that one too, in the same 16-bit store.
    if (write.crosses)
      code.push(...i32Const(0x0101), 0x3b, 0x40, ...leb(dirty.memory), 0x00); // i32.store16 memory=dirty
    else code.push(...i32Const(1), 0x3a, 0x40, ...leb(dirty.memory), 0x00); // i32.store8 memory=dirty
    code.push(0x20, ...address);
    for (const value of values) code.push(0x20, ...value);
    before(at, code);
  };

  /** memory.fill/copy/init: (destination, x, length) on the stack; marks [destination, +length). */
  const markBulk = (at: number) => {
    if (!dirty) return;
    const [d, x, n] = [scratch.local(I32, 0), scratch.local(I32, 1), scratch.local(I32, 2)];
    // prettier-ignore
    before(at, [
      0x21, ...n, 0x21, ...x, 0x22, ...d,
      0x20, ...n, 0x10, ...leb(dirty.markRangeFn),
      0x20, ...d, 0x20, ...x, 0x20, ...n,
    ]);
  };

  const markTables = (at: number) => {
    if (!dirty) return;
    before(at, [...i32Const(1), 0x24, ...leb(dirty.tablesWrittenGlobal)]);
  };

  // Every memory index is 0 (the decoder checks): the module has one memory.
  const code = new InstructionReader(r, params + declared);
  while (code.more) {
    const at = code.pos;
    code.next();
    const { op, sub } = code;
    // prettier-ignore
    switch (op) {
      case 0x3f: case 0x40: // memory.size / memory.grow
        parts.push(body.subarray(copiedUpTo, at), [0x10, ...leb(op === 0x3f ? rewrite.sizeFn : rewrite.growFn)]);
        copiedUpTo = code.pos;
        changed = true;
        break;
      case 0x26: markTables(at); break; // table.set
      case PREFIX_MISC:
        // memory.init, memory.copy, memory.fill; table.init, table.copy, table.grow, table.fill
        if (sub === 8 || sub === 10 || sub === 11) markBulk(at);
        else if (sub === 12 || sub === 14 || sub === 15 || sub === 17) markTables(at);
        if (sub === 15) {
          // table.grow goes through its shim (same operands and result), which keeps to the budget.
          parts.push(body.subarray(copiedUpTo, at), [0x10, ...leb(rewrite.tableGrowFn(code.index))]);
          copiedUpTo = code.pos;
          changed = true;
        }
        break;
      case PREFIX_SIMD: {
        const write = simdWrite(sub);
        if (write) markStore(at, write, code.offset);
        break;
      }
      case PREFIX_ATOMIC: {
        const write = atomicWrite(sub);
        if (write) markStore(at, write, code.offset);
        break;
      }
      default: {
        const write = STORES[op];
        if (write) markStore(at, write, code.offset);
      }
    }
    marks.after(op, code.index);
  }
  if (!changed) return null;
  parts.push(body.subarray(copiedUpTo));
  const locals =
    scratch.count === 0
      ? [body.subarray(0, localsEnd)]
      : [leb(localGroups + scratch.count), body.subarray(groupsStart, localsEnd), scratch.declarations()];
  return concat([...locals, ...parts]);
}

/**
 * `(value: ref, n: i32) -> i32`, appended to the module for each table a `table.grow` grows: that
 * table.grow, unless `n` is more than the budget of elements kept as an i32 at `budgetOffset` in
 * memory `dirtyMemory` (then -1, as a table at its maximum answers); what it grows is taken from the budget.
 */
export function tableGrowBody(table: number, dirtyMemory: number, budgetOffset: number): number[] {
  const [value, n, left, result] = [0, 1, 2, 3];
  const budget = [0x42, ...leb(dirtyMemory), ...leb(budgetOffset)]; // memarg: align 4, explicit memory
  // prettier-ignore
  return [
    0x01, 0x02, I32, // locals: left, result
    ...i32Const(0), 0x28, ...budget, 0x21, left, // left = budget
    0x20, n, 0x20, left, 0x4b, // n > left (unsigned)?
    0x04, 0x40, ...i32Const(-1), 0x0f, 0x0b, //   return -1
    0x20, value, 0x20, n, 0xfc, ...leb(15), ...leb(table), 0x22, result, // result = table.grow
    ...i32Const(-1), 0x47, // result != -1?
    0x04, 0x40, ...i32Const(0), 0x20, left, 0x20, n, 0x6b, 0x36, ...budget, 0x0b, //   budget = left - n
    0x20, result,
    0x0b,
  ];
}

/**
 * `(start: i32, length: i32) -> ()`, appended to the module: sets the dirty-map bytes of every chunk
 * in [start, start + length) (none for length 0; the range is clamped to the map, and computed in 64
 * bits so it cannot wrap: an out-of-bounds write traps right after anyway).
 */
export function markRangeBody(dirtyMemory: number): number[] {
  const [start, length, first, last] = [0, 1, 2, 3];
  const lastChunk = i64Const(LAST_CHUNK);
  // prettier-ignore
  const code = [
    0x02, 0x01, I32, 0x01, I64, // locals: first (i32), last (i64)
    0x20, length, 0x45, 0x04, 0x40, 0x0f, 0x0b, // if length == 0: return
    0x20, start, ...i32Const(DIRTY_CHUNK_SHIFT), 0x76, 0x21, first,
    0x20, start, 0xad, 0x20, length, 0xad, 0x7c, 0x42, 0x01, 0x7d, 0x42, DIRTY_CHUNK_SHIFT, 0x88, 0x22, last, // last = (start + length - 1) >> 12
    ...lastChunk, 0x56, 0x04, 0x40, ...lastChunk, 0x21, last, 0x0b, // clamp to the last chunk of 4 GiB
    0x20, first, ...i32Const(1), 0x20, last, 0xa7, 0x20, first, 0x6b, ...i32Const(1), 0x6a, // (first, 1, last - first + 1)
    0xfc, 0x0b, ...leb(dirtyMemory), // memory.fill memory=dirty
    0x0b,
  ];
  return code;
}

/** i64.const `value` (a non-negative safe integer). */
function i64Const(value: number): number[] {
  return [0x42, ...sleb(value)];
}

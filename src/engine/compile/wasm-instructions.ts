// Decodes a function body's instructions one at a time: every immediate of every instruction V8
// (Node 24) accepts by default, so the rewriter (wasm-code.ts) reads a body exactly as V8 does.
// A byte read out of step with V8 would hide a store from the dirty map or a memory.grow from the
// grow shim, so anything not known for certain throws WasmRewriteError (the module is then run
// without the rewrite: see wasm-rewrite.ts), and so does a body that does not end exactly at its
// last `end` with every block closed.
// Immediates per the WebAssembly 3.0 binary format: core, sign extension, saturating conversions,
// multi-value, bulk memory, reference types, typed function references, tail calls, GC, exception
// handling (legacy try/catch/delegate and try_table/throw_ref), SIMD and relaxed SIMD, threads
// (atomics), multi-memory memargs, extended constants. test/wasm-rewrite.test.ts holds the opcode
// set against what V8 accepts.
import { skipValType, WasmRewriteError, type Reader } from './wasm-binary.ts';

export const PREFIX_GC = 0xfb;
export const PREFIX_MISC = 0xfc;
export const PREFIX_SIMD = 0xfd;
export const PREFIX_ATOMIC = 0xfe;

/** What an instruction's immediates are made of. */
const Imm = {
  None: 0,
  /** One LEB128 u32 (an index or a label). */
  U32: 1,
  /** Two LEB128 u32s. */
  U32x2: 2,
  Memarg: 3,
  /** A memarg, then a lane index (one byte). */
  MemargLane: 4,
  /** One lane index byte. */
  Lane: 5,
  /** 16 bytes: v128.const, i8x16.shuffle. */
  Bytes16: 6,
  Bytes4: 7,
  Bytes8: 8,
  /** A signed LEB128 of any width: i32/i64.const, a heap type (s33). */
  Sleb: 9,
  BlockType: 10,
  /** br_table: a vector of labels and a default. */
  LabelTable: 11,
  /** select t*: a vector of value types. */
  ValTypes: 12,
  /** try_table: a block type and a vector of catch clauses. */
  TryTable: 13,
  /** br_on_cast(_fail): cast flags (one byte), a label and two heap types. */
  BrOnCast: 14,
  /** atomic.fence: one reserved byte. */
  Byte: 15,
} as const;
type Imm = (typeof Imm)[keyof typeof Imm];

/** Single-byte opcodes (0x00–0xd6; the prefixes are read apart). Absent: unknown. */
const SINGLE = new Map<number, Imm>();
/** Sub-opcodes of each prefix. */
const PREFIXED = new Map<number, Map<number, Imm>>([
  [PREFIX_GC, new Map()],
  [PREFIX_MISC, new Map()],
  [PREFIX_SIMD, new Map()],
  [PREFIX_ATOMIC, new Map()],
]);

function define(table: Map<number, Imm>, imm: Imm, ...ranges: [number, number][]): void {
  for (const [first, last] of ranges) for (let op = first; op <= last; op++) table.set(op, imm);
}
const one = (op: number): [number, number] => [op, op];

// prettier-ignore
{
  define(SINGLE, Imm.None,
    one(0x00), one(0x01), // unreachable nop
    one(0x05), one(0x0a), one(0x0b), one(0x0f), one(0x19), // else throw_ref end return catch_all
    one(0x1a), one(0x1b), // drop select
    [0x45, 0xc4], // numeric (comparisons, arithmetic, conversions, sign extension)
    one(0xd1), one(0xd3), one(0xd4)); // ref.is_null ref.eq ref.as_non_null
  define(SINGLE, Imm.BlockType, [0x02, 0x04], one(0x06)); // block loop if try
  define(SINGLE, Imm.U32,
    [0x07, 0x09], // catch throw rethrow
    one(0x0c), one(0x0d), // br br_if
    one(0x10), one(0x12), one(0x14), one(0x15), // call return_call call_ref return_call_ref
    one(0x18), // delegate
    [0x20, 0x26], // local.get/set/tee global.get/set table.get/set
    [0x3f, 0x40], // memory.size memory.grow (memory index)
    one(0xd2), // ref.func
    [0xd5, 0xd6]); // br_on_null br_on_non_null
  define(SINGLE, Imm.U32x2, one(0x11), one(0x13)); // call_indirect return_call_indirect: type table
  define(SINGLE, Imm.LabelTable, one(0x0e));
  define(SINGLE, Imm.ValTypes, one(0x1c));
  define(SINGLE, Imm.TryTable, one(0x1f));
  define(SINGLE, Imm.Memarg, [0x28, 0x3e]); // loads, stores
  define(SINGLE, Imm.Sleb, [0x41, 0x42], one(0xd0)); // i32.const i64.const ref.null (heap type)
  define(SINGLE, Imm.Bytes4, one(0x43));
  define(SINGLE, Imm.Bytes8, one(0x44));

  const gc = PREFIXED.get(PREFIX_GC)!;
  define(gc, Imm.U32, [0, 1], [6, 7], [11, 14], one(16)); // struct.new(_default) array.new(_default) array.get(_s/_u) array.set array.fill
  define(gc, Imm.U32x2, [2, 5], [8, 10], [17, 19]); // struct.get(_s/_u)/set array.new_fixed/_data/_elem array.copy/init_data/init_elem
  define(gc, Imm.None, one(15), [26, 30]); // array.len any.convert_extern extern.convert_any ref.i31 i31.get_s/u
  define(gc, Imm.Sleb, [20, 23]); // ref.test ref.cast (nullable or not): a heap type
  define(gc, Imm.BrOnCast, [24, 25]);

  const misc = PREFIXED.get(PREFIX_MISC)!;
  define(misc, Imm.None, [0, 7]); // trunc_sat
  define(misc, Imm.U32x2, one(8), one(10), one(12), one(14)); // memory.init (data, memory) memory.copy table.init table.copy
  define(misc, Imm.U32, one(9), one(11), one(13), [15, 17]); // data.drop memory.fill elem.drop table.grow/size/fill

  const simd = PREFIXED.get(PREFIX_SIMD)!;
  define(simd, Imm.Memarg, [0x00, 0x0b], [0x5c, 0x5d]); // loads, v128.store, load32/64_zero
  define(simd, Imm.Bytes16, [0x0c, 0x0d]); // v128.const i8x16.shuffle
  define(simd, Imm.Lane, [0x15, 0x22]); // extract/replace_lane
  define(simd, Imm.MemargLane, [0x54, 0x5b]); // load/store lane
  define(simd, Imm.None,
    [0x0e, 0x14], [0x23, 0x53], [0x5e, 0x99], [0x9b, 0xa1], [0xa3, 0xa4], [0xa7, 0xae], one(0xb1), [0xb5, 0xba],
    [0xbc, 0xc1], [0xc3, 0xc4], [0xc7, 0xce], one(0xd1), [0xd5, 0xe1], [0xe3, 0xed], [0xef, 0xff],
    [0x100, 0x113]); // the relaxed SIMD operations

  const atomic = PREFIXED.get(PREFIX_ATOMIC)!;
  define(atomic, Imm.Memarg, [0x00, 0x02], [0x10, 0x4e]); // notify, wait32/64, loads, stores, read-modify-writes, cmpxchg
  define(atomic, Imm.Byte, one(0x03)); // atomic.fence
}

/** Opens a block (its `end` closes it). */
function opensBlock(op: number): boolean {
  return (op >= 0x02 && op <= 0x04) || op === 0x06 || op === 0x1f;
}

/**
 * Reads one function body's instructions in order. After `next()`: `op` (the first byte), `sub`
 * (the sub-opcode after a prefix, else -1), `index` (a one-index immediate, e.g. local.get's; else
 * -1) and, for a load or store, `offset` (its memarg's; every memory index is 0, or it throws).
 */
export class InstructionReader {
  op = -1;
  sub = -1;
  index = -1;
  offset = 0;
  /** Blocks open, the function's own included: the body ends when its last `end` closes it. */
  #depth = 1;
  readonly #r: Reader;
  readonly #locals: number;

  /** `r` at the first instruction, its end at the body's end; `locals`: params plus declared locals. */
  constructor(r: Reader, locals: number) {
    this.#r = r;
    this.#locals = locals;
  }

  /** Position of the next instruction. */
  get pos(): number {
    return this.#r.pos;
  }

  /** False once the body's last `end` was read (which must be its last byte). */
  get more(): boolean {
    if (this.#depth > 0) {
      if (this.#r.pos >= this.#r.end) throw new WasmRewriteError('a function body ends before its last end');
      return true;
    }
    if (this.#r.pos !== this.#r.end) throw new WasmRewriteError('a function body goes on after its last end');
    return false;
  }

  next(): void {
    const r = this.#r;
    const op = r.byte();
    this.op = op;
    this.sub = -1;
    this.index = -1;
    let imm: Imm | undefined;
    if (op >= PREFIX_GC && op <= PREFIX_ATOMIC) {
      this.sub = r.u32();
      imm = PREFIXED.get(op)!.get(this.sub);
      if (imm === undefined) throw new WasmRewriteError(`unknown instruction 0x${op.toString(16)} ${this.sub}`);
    } else {
      imm = SINGLE.get(op);
      if (imm === undefined) throw new WasmRewriteError(`unknown instruction 0x${op.toString(16)}`);
    }
    this.#immediates(imm);
    if (opensBlock(op)) this.#depth++;
    else if (op === 0x0b || op === 0x18) this.#depth--; // end, delegate (ends a try)
    if (op >= 0x20 && op <= 0x22 && this.index >= this.#locals) throw new WasmRewriteError(`local ${this.index} does not exist`);
  }

  #immediates(imm: Imm): void {
    const r = this.#r;
    // prettier-ignore
    switch (imm) {
      case Imm.None: break;
      case Imm.U32: this.index = r.u32(); break;
      case Imm.U32x2: {
        const first = r.u32();
        const second = r.u32();
        if (this.op === PREFIX_MISC && this.sub === 8) this.#memoryIndex(second); // memory.init data memory
        if (this.op === PREFIX_MISC && this.sub === 10) this.#memoryIndex(first).#memoryIndex(second); // memory.copy
        break;
      }
      case Imm.Memarg: this.#memarg(); break;
      case Imm.MemargLane: this.#memarg(); r.skip(1); break;
      case Imm.Lane: r.skip(1); break;
      case Imm.Bytes16: r.skip(16); break;
      case Imm.Bytes4: r.skip(4); break;
      case Imm.Bytes8: r.skip(8); break;
      case Imm.Sleb: r.skipLeb(); break;
      case Imm.BlockType: skipBlockType(r); break;
      case Imm.LabelTable: for (let n = r.u32(), i = 0; i <= n; i++) r.u32(); break;
      case Imm.ValTypes: for (let n = r.u32(), i = 0; i < n; i++) skipValType(r); break;
      case Imm.TryTable: {
        skipBlockType(r);
        for (let n = r.u32(), i = 0; i < n; i++) {
          const kind = r.byte();
          if (kind > 3) throw new WasmRewriteError(`unknown catch clause ${kind}`);
          if (kind < 2) r.u32(); // catch, catch_ref: a tag
          r.u32(); // the label
        }
        break;
      }
      case Imm.BrOnCast: {
        const flags = r.byte();
        if (flags > 3) throw new WasmRewriteError(`unknown cast flags ${flags}`);
        r.u32();
        r.skipLeb();
        r.skipLeb();
        break;
      }
      case Imm.Byte: r.skip(1); break;
    }
    // memory.size, memory.grow, memory.fill: a memory index.
    if (this.op === 0x3f || this.op === 0x40 || (this.op === PREFIX_MISC && this.sub === 11)) this.#memoryIndex(this.index);
  }

  #memarg(): void {
    const r = this.#r;
    const align = r.u32();
    // Bit 6: an explicit memory index (multi-memory). The alignment exponent is at most 4 (v128).
    if ((align & ~0x40) > 4) throw new WasmRewriteError(`alignment 2^${align & ~0x40} is not valid`);
    if (align & 0x40) this.#memoryIndex(r.u32());
    this.offset = r.u32();
  }

  /** The rewriter runs on modules with (at most) one memory: another index means it is out of step. */
  #memoryIndex(index: number): this {
    if (index !== 0) throw new WasmRewriteError(`memory ${index} does not exist (the module has one memory)`);
    return this;
  }
}

/** A block type: empty (0x40), a value type, or a type index (s33). */
function skipBlockType(r: Reader): void {
  const b = r.bytes[r.pos];
  if (b === undefined || r.pos >= r.end) throw new WasmRewriteError('unexpected end of code');
  if (b === 0x63 || b === 0x64) {
    r.pos++;
    r.skipLeb(); // (ref null? ht)
  } else {
    r.skipLeb(); // 0x40, a one-byte value type, or a type index
  }
}

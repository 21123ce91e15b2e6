// Walks function bodies instruction by instruction (decoding every immediate, so no byte of an
// immediate is ever mistaken for an opcode) and replaces `memory.size 0` / `memory.grow 0` with
// calls to the engine's shims. Opcodes it does not know make it throw: the caller then keeps
// the module without the shims.
import { concat, leb, Reader, skipValType, WasmRewriteError } from './wasm-binary.ts';

function skipBlockType(r: Reader): void {
  const b = r.bytes[r.pos];
  if (b === undefined) throw new WasmRewriteError('unexpected end of code');
  if (b === 0x40 || (b >= 0x6e && b <= 0x7f)) {
    r.pos++;
  } else if (b === 0x63 || b === 0x64) {
    r.pos++;
    r.skipLeb();
  } else {
    r.skipLeb(); // type index (s33)
  }
}

function skipMemarg(r: Reader): void {
  const align = r.u32();
  if (align & 0x40) r.u32(); // multi-memory: explicit memory index
  r.u32(); // offset
}

/** 0xFD (SIMD) sub-opcodes and their immediates. */
function skipSimd(r: Reader): void {
  const op = r.u32();
  if (op <= 11 || op === 92 || op === 93) skipMemarg(r);
  else if (op === 12 || op === 13) r.skip(16);
  else if (op >= 21 && op <= 34) r.skip(1);
  else if (op >= 84 && op <= 91) {
    skipMemarg(r);
    r.skip(1);
  } else if (op > 0xff) throw new WasmRewriteError(`unknown SIMD instruction ${op}`);
}

function skipMisc(r: Reader): void {
  const op = r.u32();
  // prettier-ignore
  switch (op) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7: return; // trunc_sat
    case 8: r.u32(); r.u32(); return; // memory.init data mem
    case 9: r.u32(); return; // data.drop
    case 10: r.u32(); r.u32(); return; // memory.copy
    case 11: r.u32(); return; // memory.fill
    case 12: r.u32(); r.u32(); return; // table.init
    case 13: r.u32(); return; // elem.drop
    case 14: r.u32(); r.u32(); return; // table.copy
    case 15: case 16: case 17: r.u32(); return; // table.grow/size/fill
    default: throw new WasmRewriteError(`unknown 0xFC instruction ${op}`);
  }
}

function skipAtomic(r: Reader): void {
  const op = r.u32();
  if (op === 3)
    r.skip(1); // atomic.fence
  else skipMemarg(r);
}

/**
 * Returns the body with memory.size/memory.grow (memory 0) replaced by `call size`/`call grow`,
 * or null when the body has neither. `body` is one function body without its size prefix.
 */
export function replaceMemoryOps(body: Uint8Array, sizeFn: number, growFn: number): Uint8Array | null {
  const r = new Reader(body, 0, body.length);
  const localGroups = r.u32();
  for (let i = 0; i < localGroups; i++) {
    r.u32();
    skipValType(r);
  }
  const parts: (Uint8Array | number[])[] = [];
  let copiedUpTo = 0;
  while (r.pos < r.end) {
    const at = r.pos;
    const op = r.byte();
    // prettier-ignore
    switch (op) {
      case 0x3f: case 0x40: { // memory.size / memory.grow
        const memory = r.u32();
        if (memory !== 0) break;
        parts.push(body.subarray(copiedUpTo, at), [0x10, ...leb(op === 0x3f ? sizeFn : growFn)]);
        copiedUpTo = r.pos;
        break;
      }
      case 0x02: case 0x03: case 0x04: case 0x06: skipBlockType(r); break; // block loop if try
      case 0x0c: case 0x0d: case 0x07: case 0x08: case 0x09: case 0x18: case 0xd4: case 0xd6: r.u32(); break;
      case 0x0e: { // br_table
        const n = r.u32();
        for (let i = 0; i <= n; i++) r.u32();
        break;
      }
      case 0x10: case 0x12: case 0x14: case 0x15: case 0xd2: r.u32(); break; // calls, ref.func
      case 0x11: case 0x13: r.u32(); r.u32(); break; // call_indirect type table
      case 0x1c: { // select t*
        const n = r.u32();
        for (let i = 0; i < n; i++) skipValType(r);
        break;
      }
      case 0x20: case 0x21: case 0x22: case 0x23: case 0x24: case 0x25: case 0x26: r.u32(); break;
      case 0x41: case 0x42: r.skipLeb(); break;
      case 0x43: r.skip(4); break;
      case 0x44: r.skip(8); break;
      case 0xd0: r.skipLeb(); break; // ref.null ht
      case 0xfc: skipMisc(r); break;
      case 0xfd: skipSimd(r); break;
      case 0xfe: skipAtomic(r); break;
      default:
        if (op >= 0x28 && op <= 0x3e) skipMemarg(r);
        else if (
          op === 0x00 || op === 0x01 || op === 0x05 || op === 0x0a || op === 0x0b || op === 0x0f || op === 0x19 ||
          op === 0x1a || op === 0x1b || (op >= 0x45 && op <= 0xc4) || op === 0xd1 || op === 0xd3 || op === 0xd5
        ) {
          // no immediates
        } else {
          throw new WasmRewriteError(`unsupported instruction 0x${op.toString(16)}`);
        }
    }
  }
  if (parts.length === 0) return null;
  parts.push(body.subarray(copiedUpTo));
  return concat(parts);
}

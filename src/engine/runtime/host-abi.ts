// The Extism ABI passes addresses, lengths and values as i64, which V8 hands to a JS import as a
// BigInt: one allocated per argument and per result, and a conversion to a Number on every use (a
// runtime call). A plugin makes a host call per byte or word it moves (~48 for a count_vowels call),
// so the engine puts a small Wasm module of its own (the adapter) between the plugin and the JS host
// functions: it gives the plugin each function with the signature it imports and calls the JS one
// with every i64 argument split into two i32 halves (high, low), which reach JS as plain numbers.
// An i64 result comes back as a block index (an address: index << 48), a length (an f64, exact below
// 2^53), or 8 bytes the JS side left in a scratch memory (load_u64).
import { concat, leb, nameBytes, section, SECTION, sleb } from '../compile/wasm-binary.ts';
import type { Signature } from './signatures.ts';

/** How a host function's i64 result reaches the plugin (see the header). */
export type I64Result = 'index' | 'length' | 'scratch';

export interface AdaptedFunction {
  name: string;
  /** What the plugin imports. */
  signature: Signature;
  /** For an i64 result. */
  result?: I64Result;
}

const SPLIT = 2 ** 32;

/** The low 48 bits of an address (its offset in the block), from its halves. */
export const offsetOf = (hi: number, lo: number): number => (hi & 0xffff) * SPLIT + (lo >>> 0);
/** The top 16 bits of an address (its block index), from its high half. */
export const indexOf = (hi: number): number => hi >>> 16;
/** A signed i64 as a Number, rounded as Number(bigint) rounds (one rounding of an exact sum). */
export const numberOf = (hi: number, lo: number): number => hi * SPLIT + (lo >>> 0);
/** A signed i64 from its halves, exactly (for messages). */
export const bigintOf = (hi: number, lo: number): bigint => (BigInt(hi) << 32n) | BigInt(lo >>> 0);
/** The halves of an i64 (the JSPI http_request still receives BigInts). */
export const halvesOf = (value: bigint): [number, number] => [
  Number(BigInt.asIntN(32, value >> 32n)),
  Number(BigInt.asIntN(32, value)),
];

const I32 = 0x7f;
const I64 = 0x7e;
const F64 = 0x7c;
const VALTYPE = { i32: I32, i64: I64, f32: 0x7d, f64: F64 } as const;
const FUNC_TYPE = 0x60;

/** The JS side's parameter types: each i64 as two i32. */
function splitParams(signature: Signature): number[] {
  return signature.params.flatMap((p) => (p === 'i64' ? [I32, I32] : [VALTYPE[p]]));
}

function jsResults(fn: AdaptedFunction): number[] {
  if (fn.signature.results.length === 0 || fn.result === 'scratch') return [];
  if (fn.result === 'index') return [I32];
  if (fn.result === 'length') return [F64];
  return fn.signature.results.map((r) => VALTYPE[r]);
}

function funcType(params: number[], results: number[]): number[] {
  return [FUNC_TYPE, ...leb(params.length), ...params, ...leb(results.length), ...results];
}

/** The adapter's body for one function: split the i64 arguments, call the JS import, rebuild the i64 result. */
function body(fn: AdaptedFunction, importIndex: number): Uint8Array {
  const code: number[] = [];
  fn.signature.params.forEach((p, i) => {
    if (p === 'i64') {
      // high: i32.wrap(x >> 32); low: i32.wrap(x)
      code.push(0x20, ...leb(i), 0x42, ...sleb(32), 0x88, 0xa7, 0x20, ...leb(i), 0xa7);
    } else code.push(0x20, ...leb(i));
  });
  code.push(0x10, ...leb(importIndex));
  if (fn.result === 'index')
    code.push(0xad, 0x42, ...sleb(48), 0x86); // i64.extend_i32_u, << 48
  else if (fn.result === 'length')
    code.push(0xfc, ...leb(7)); // i64.trunc_sat_f64_u
  else if (fn.result === 'scratch') code.push(0x41, 0x00, 0x29, 0x03, 0x00); // i64.load (scratch) at 0
  code.push(0x0b);
  const locals = [0x00];
  return concat([leb(locals.length + code.length), locals, code]);
}

/** Scratch memory import name and the adapter's JS imports' module. */
const JS_MODULE = 'host';
const SCRATCH = 'scratch';

/** The adapter module's bytes: imports `host.<name>` (split) and `host.scratch`, exports `<name>` (the plugin's signature). */
export function adapterBytes(functions: readonly AdaptedFunction[]): Uint8Array {
  const types = functions.flatMap((fn) => [
    funcType(splitParams(fn.signature), jsResults(fn)),
    funcType(
      fn.signature.params.map((p) => VALTYPE[p]),
      fn.signature.results.map((r) => VALTYPE[r]),
    ),
  ]);
  const imports = [
    ...functions.map((fn, i) => [...nameBytes(JS_MODULE), ...nameBytes(fn.name), 0x00, ...leb(2 * i)]),
    [...nameBytes(JS_MODULE), ...nameBytes(SCRATCH), 0x02, 0x01, 0x01, 0x01], // memory, min 1 max 1 page
  ];
  const count = functions.length;
  return concat([
    [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    section(SECTION.type, concat([leb(types.length), ...types])),
    section(SECTION.import, concat([leb(imports.length), ...imports])),
    section(SECTION.function, concat([leb(count), ...functions.map((_, i) => leb(2 * i + 1))])),
    section(SECTION.export, concat([leb(count), ...functions.map((fn, i) => [...nameBytes(fn.name), 0x00, ...leb(count + i)])])),
    section(SECTION.code, concat([leb(count), ...functions.map((fn, i) => body(fn, i))])),
  ]);
}

/** One per thread: every adapter instance of this thread shares it (a u64 is written and read within one host call). */
let scratch: WebAssembly.Memory | null = null;
const scratchMemory = () => (scratch ??= new WebAssembly.Memory({ initial: 1, maximum: 1 }));

/** The scratch memory's first bytes (it never grows, so the view stays valid): a 'scratch' result is the 8 bytes at 0, little-endian. */
export function scratchBytes(): Uint8Array {
  return new Uint8Array(scratchMemory().buffer, 0, 8);
}

const modules = new WeakMap<readonly AdaptedFunction[], WebAssembly.Module>();

/** The plugin-facing functions for `functions`, calling `js` (by name, split arguments). */
export function instantiateAdapter(
  functions: readonly AdaptedFunction[],
  js: Record<string, (...args: never[]) => unknown>,
): Record<string, unknown> {
  let module = modules.get(functions);
  if (!module) {
    module = new WebAssembly.Module(adapterBytes(functions) as Uint8Array<ArrayBuffer>);
    modules.set(functions, module);
  }
  const instance = new WebAssembly.Instance(module, { [JS_MODULE]: { ...js, [SCRATCH]: scratchMemory() } });
  return instance.exports as Record<string, unknown>;
}

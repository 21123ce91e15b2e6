// The Extism host ABI (`extism:host/env`), as @extism/extism 2.0.0-rc13's CallContext defines it
// (blocks addressed as index << 48, vars, config, logs, HTTP), but with all state in a per-call
// `CallState`: a recycled instance's imports stay bound to one `HostSlot`, and every call installs
// a fresh state there, so vars, blocks, config, log level and HTTP status never outlive a call.
//
// A failed host call fails the call for good: Wasm exception handling (catch_all) can catch the JS
// exception a host function throws, so the first failure is kept in the CallState, every later host
// call throws it again, and the call answers with it whatever the export returns (see bindHost).
import { CallFailure, WasiExit } from './call-failure.ts';
import {
  bigintOf,
  halvesOf,
  indexOf,
  instantiateAdapter,
  numberOf,
  offsetOf,
  scratchBytes as scratchBytesOf,
  type AdaptedFunction,
  type I64Result,
} from './host-abi.ts';
import { LOG_PRIORITY, type LogCollector } from './logs.ts';
import { sig, type Signature } from './signatures.ts';

export const EXTISM_ENV = 'extism:host/env';

/** Block indices a call may use: an address keeps the index in its top 16 bits. */
const MAX_BLOCKS = 65536;
/** Reused slots kept in the queue below its head before it is compacted. */
const FREED_QUEUE_SLACK = 4096;
/** Longest error text a plugin can set that the call's answer carries (the rest is cut). */
const ERROR_TEXT_MAX_BYTES = 64 * 1024;
/** Longest http_request description (URL, method, headers as JSON). */
const HTTP_REQUEST_JSON_MAX_BYTES = 1024 * 1024;
// Addresses, sizes and u64 values arrive as the two i32 halves of the plugin's i64 (`hi`, `lo`:
// host-abi.ts); an address is a block index in its top 16 bits and an offset in the rest.

/** The caps a CallState enforces, derived from the call's limits (CallLimits) by the worker. */
export interface HostLimits {
  /** Bytes of Extism blocks (host-side memory) a call may hold at once. */
  hostBytes: number;
  outputBytes: number;
  varBytes: number;
  httpResponseBytes: number;
}

export type CallFetch = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: Uint8Array },
) => Promise<Response>;

export class CallState {
  readonly blocks: (Uint8Array | null)[] = [null];
  readonly #views: (DataView | null)[] = [null];
  /**
   * Freed indices, oldest first. Like the SDK, a call never gets an index twice while unused ones are
   * left: PDKs free blocks the host already took (the Haskell PDK frees a config key after config_get,
   * others free log messages), and a second free must not hit a block handed out since. Only once all
   * MAX_BLOCKS indices were used does a long call (one log per block, say) reuse them, longest-freed first.
   */
  #freed: number[] = [];
  #freedHead = 0;
  #hostBytes = 0;
  /** An allocation was refused for the host memory cap (the call's failure is then MEMORY_LIMIT). */
  memoryRefused = false;
  /** The first host call that failed (or proc_exit): every later host call throws it again. */
  failure: Error | null = null;
  inputIndex = 0;
  outputIndex = 0;
  outputOffset = 0;
  outputLength = 0;
  errorIndex = 0;
  readonly vars = new Map<string, Uint8Array>();
  /** Bytes of var values (what the SDK counts against maxVarBytes) and, kept apart, of their keys. */
  #varBytes = 0;
  #varKeyBytes = 0;
  httpStatus = 0;
  /**
   * The last HTTP response's headers when the call lets the plugin read them (httpResponseHeaders),
   * `{}` before any; null otherwise, and http_headers then answers 0.
   */
  responseHeaders: Record<string, string> | null = null;
  readonly config: Record<string, string>;
  /** UTF-8 length of the longest config key: a longer key block cannot match, so it is not decoded. */
  readonly #longestConfigKey: number;
  readonly logs: LogCollector;
  readonly limits: HostLimits;
  readonly fetch: CallFetch | null;
  /** Start-up (a start function, _initialize) rather than a call: no HTTP. */
  readonly startup: boolean;

  constructor(
    input: Uint8Array | null,
    config: Record<string, string>,
    logs: LogCollector,
    limits: HostLimits,
    fetch: CallFetch | null,
    startup = false,
  ) {
    this.config = config;
    this.#longestConfigKey = Object.keys(config).reduce((max, key) => Math.max(max, Buffer.byteLength(key)), 0);
    this.logs = logs;
    this.limits = limits;
    this.fetch = fetch;
    this.startup = startup;
    if (input && input.length > 0) this.inputIndex = this.push(input);
  }

  /**
   * Records `err` from host function `fn` as the call's failure unless one is already recorded, and
   * returns the recorded one (what the host function throws). Errors of the engine's own checks
   * (a DataView out of range, a bad conversion) become PLUGIN_ERROR naming the function.
   */
  fail(fn: string, err: unknown): Error {
    if (this.failure) return this.failure;
    if (err instanceof RangeError || err instanceof TypeError) {
      this.failure = new CallFailure('PLUGIN_ERROR', `${fn}: ${err.message}`);
    } else if (err instanceof Error) {
      this.failure = err;
    } else {
      this.failure = new CallFailure('PLUGIN_ERROR', `${fn} failed: ${String(err)}`);
    }
    return this.failure;
  }

  /** Counts `size` bytes against the call's host memory budget before anything is allocated. */
  #reserve(size: number): void {
    if (this.#hostBytes + size > this.limits.hostBytes) {
      this.memoryRefused = true;
      throw new CallFailure(
        'MEMORY_LIMIT',
        `host memory limit exceeded: the plugin asked for ${this.#hostBytes + size} bytes of Extism blocks, ` +
          `the limit is ${this.limits.hostBytes} bytes`,
      );
    }
    this.#hostBytes += size;
  }

  push(bytes: Uint8Array, reserve = true): number {
    if (reserve) this.#reserve(bytes.length);
    if (this.blocks.length < MAX_BLOCKS) {
      this.blocks.push(bytes);
      this.#views.push(null);
      return this.blocks.length - 1;
    }
    const reused = this.#takeFreed();
    if (reused === undefined) {
      throw new CallFailure('MEMORY_LIMIT', `the plugin holds more than ${MAX_BLOCKS - 1} Extism blocks at once`);
    }
    this.blocks[reused] = bytes;
    return reused;
  }

  #takeFreed(): number | undefined {
    if (this.#freedHead >= this.#freed.length) return undefined;
    const index = this.#freed[this.#freedHead++];
    if (this.#freedHead > FREED_QUEUE_SLACK && this.#freedHead * 2 > this.#freed.length) {
      this.#freed = this.#freed.slice(this.#freedHead);
      this.#freedHead = 0;
    }
    return index;
  }

  /**
   * The size as the plugin passed it (a signed i64, in halves): negative or past the cap fails
   * before any accounting. Compared as a Number (the cap is far below 2^53, where rounding cannot
   * flip a comparison with it).
   */
  alloc(hi: number, lo: number): number {
    const bytes = numberOf(hi, lo);
    if (bytes < 0) throw new CallFailure('PLUGIN_ERROR', `alloc: invalid size ${bigintOf(hi, lo)}`);
    if (bytes > this.limits.hostBytes) {
      this.memoryRefused = true;
      throw new CallFailure(
        'MEMORY_LIMIT',
        `host memory limit exceeded: the plugin asked for a block of ${bigintOf(hi, lo)} bytes, the limit is ${this.limits.hostBytes} bytes`,
      );
    }
    this.#reserve(bytes);
    return this.push(new Uint8Array(bytes), false);
  }

  free(index: number): void {
    const block = this.blocks[index];
    if (index === 0 || !block) return;
    this.#hostBytes -= block.length;
    this.blocks[index] = null;
    this.#views[index] = null;
    if (index !== this.outputIndex && index !== this.errorIndex && index !== this.inputIndex) this.#freed.push(index);
  }

  block(hi: number, lo: number): Uint8Array {
    const block = this.blocks[indexOf(hi)];
    if (!block) {
      throw new CallFailure(
        'PLUGIN_ERROR',
        `invalid Extism memory address 0x${BigInt.asUintN(64, bigintOf(hi, lo)).toString(16)}`,
      );
    }
    return block;
  }

  view(index: number): DataView {
    let view = this.#views[index];
    if (!view) {
      const block = this.blocks[index];
      if (!block) throw new CallFailure('PLUGIN_ERROR', `invalid Extism block ${index}`);
      view = new DataView(block.buffer, block.byteOffset, block.byteLength);
      this.#views[index] = view;
    }
    return view;
  }

  /** The byte at an address; out of range or in no block, the DataView's own error (what the SDK throws). */
  loadU8(hi: number, lo: number): number {
    const block = this.blocks[indexOf(hi)];
    const offset = offsetOf(hi, lo);
    if (block && offset < block.length) return block[offset]!;
    return this.view(indexOf(hi)).getUint8(offset);
  }

  /** Stores the low byte of `value` at an address; out of range or in no block, the DataView's own error. */
  storeU8(hi: number, lo: number, value: number): void {
    const block = this.blocks[indexOf(hi)];
    const offset = offsetOf(hi, lo);
    if (block && offset < block.length) {
      block[offset] = value;
      return;
    }
    this.view(indexOf(hi)).setUint8(offset, value);
  }

  /**
   * The 8 bytes at `offset` of block `index` into the adapter's scratch (a u64 result); out of range
   * or in no block, getBigUint64's own error (what the SDK throws), before anything is written.
   */
  loadU64(index: number, offset: number): void {
    const block = this.blocks[index];
    if (!block || offset + 8 > block.length) {
      this.view(index).getBigUint64(offset, true);
      return;
    }
    const scratch = (scratchBytes ??= scratchBytesOf());
    for (let i = 0; i < 8; i++) scratch[i] = block[offset + i]!;
  }

  /** Stores a u64 (halves) at an address, little-endian; out of range or in no block, setBigUint64's own error, before anything is written. */
  storeU64(hi: number, lo: number, valueHi: number, valueLo: number): void {
    const index = indexOf(hi);
    const block = this.blocks[index];
    const offset = offsetOf(hi, lo);
    if (!block || offset + 8 > block.length) {
      this.view(index).setBigUint64(offset, bigintOf(valueHi, valueLo), true);
      return;
    }
    // A Uint8Array store keeps the low 8 bits.
    block[offset] = valueLo;
    block[offset + 1] = valueLo >>> 8;
    block[offset + 2] = valueLo >>> 16;
    block[offset + 3] = valueLo >>> 24;
    block[offset + 4] = valueHi;
    block[offset + 5] = valueHi >>> 8;
    block[offset + 6] = valueHi >>> 16;
    block[offset + 7] = valueHi >>> 24;
  }

  /** Input byte `offset` (the input's block may have been freed: see input_load_u8). */
  inputU8(offset: number): number {
    const block = this.blocks[this.inputIndex];
    if (block && offset < block.length) return block[offset]!;
    return this.view(this.inputIndex).getUint8(offset);
  }

  /** A new block holding `text`: its index (the address's top 16 bits). */
  storeText(text: string): number {
    return this.push(encoder.encode(text));
  }

  configValue(hi: number, lo: number): string | undefined {
    const block = this.block(hi, lo);
    if (block.length > this.#longestConfigKey) return undefined;
    const key = decoder.decode(block);
    return Object.hasOwn(this.config, key) ? this.config[key] : undefined;
  }

  /** A key block longer than the whole var budget names no var (and is not decoded). */
  varKey(hi: number, lo: number): string | null {
    const block = this.block(hi, lo);
    return block.length > this.limits.varBytes ? null : decoder.decode(block);
  }

  /**
   * Values count against maxVarBytes as in the SDK (same message); keys have a budget of the same
   * size of their own, so a plugin cannot hold unbounded memory in keys of empty values either.
   */
  setVar(key: string | null, value: Uint8Array | null): void {
    if (key === null) {
      if (!value) return;
      throw this.#varFailure(`var memory limit exceeded: the key is longer than ${this.limits.varBytes} bytes`);
    }
    const old = this.vars.get(key);
    const keyBytes = Buffer.byteLength(key);
    const size = this.#varBytes - (old?.length ?? 0) + (value?.length ?? 0);
    const keySize = this.#varKeyBytes - (old ? keyBytes : 0) + (value ? keyBytes : 0);
    if (value && size > this.limits.varBytes) {
      throw this.#varFailure(`var memory limit exceeded: ${size} bytes requested, ${this.limits.varBytes} allowed`);
    }
    if (value && keySize > this.limits.varBytes) {
      throw this.#varFailure(`var memory limit exceeded: keys of ${keySize} bytes, ${this.limits.varBytes} allowed`);
    }
    this.#varBytes = size;
    this.#varKeyBytes = keySize;
    if (value) this.vars.set(key, value);
    else this.vars.delete(key);
  }

  /** The SDK logs the failure as an error line too, then fails the call with it. */
  #varFailure(message: string): CallFailure {
    if (this.logs.wants(LOG_PRIORITY.error)) this.logs.add('error', message, Buffer.byteLength(message));
    return new CallFailure('PLUGIN_ERROR', message);
  }

  setOutput(hi: number, lo: number, lengthHi: number, lengthLo: number): void {
    const block = this.block(hi, lo);
    const offset = offsetOf(hi, lo);
    // As a Number, as in alloc: past 2^53 it rounds, but stays past the block.
    const size = numberOf(lengthHi, lengthLo);
    if (size < 0 || offset + size > block.length) {
      throw new CallFailure(
        'PLUGIN_ERROR',
        `output_set: length ${bigintOf(lengthHi, lengthLo)} at offset ${offset} is outside the block (${block.length} bytes)`,
      );
    }
    if (size > this.limits.outputBytes) {
      throw new CallFailure('OUTPUT_TOO_LARGE', `the output is ${size} bytes; the limit is ${this.limits.outputBytes} bytes`);
    }
    this.outputIndex = indexOf(hi);
    this.outputOffset = offset;
    this.outputLength = size;
  }

  /**
   * The output the plugin set, or the error text it set (null when it set none; cut at ERROR_TEXT_MAX_BYTES).
   * As in the SDK, an error block freed after error_set leaves neither an error nor an output.
   */
  result(): { output: Uint8Array | null; error: string | null } {
    if (this.errorIndex && !this.blocks[this.errorIndex]) return { output: null, error: null };
    const error = this.errorIndex ? this.blocks[this.errorIndex] : null;
    if (error) {
      const cut = error.length > ERROR_TEXT_MAX_BYTES;
      const text = decoder.decode(cut ? error.subarray(0, ERROR_TEXT_MAX_BYTES) : error);
      return { output: null, error: cut ? `${text}… (cut: the plugin's error text is ${error.length} bytes)` : text };
    }
    const block = this.outputIndex ? this.blocks[this.outputIndex] : null;
    if (!block) return { output: null, error: null };
    return { output: block.subarray(this.outputOffset, this.outputOffset + this.outputLength), error: null };
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** The adapter's scratch: where a u64 result is left (host-abi.ts); made on first use. */
let scratchBytes: Uint8Array | null = null;

/** Where an instance's imports find the call they are serving. */
export interface HostSlot {
  call: CallState | null;
}

function current(slot: HostSlot): CallState {
  const call = slot.call;
  if (!call) throw new CallFailure('PLUGIN_ERROR', 'Extism host function used outside of a call');
  return call;
}

/** A host function: its Wasm signature and what it does with the call's state and its arguments. */
export interface HostFunction {
  signature: Signature;
  run: (call: CallState, ...args: never[]) => unknown;
}

/**
 * An Extism function: `run` takes each i64 argument as its two i32 halves and gives an i64 result
 * as `result` says (host-abi.ts); the adapter turns them into the signature the plugin imports.
 */
interface ExtismFunction extends HostFunction {
  result?: I64Result;
}

/** `host('i64 i32', '', fn)`: a host function taking an i64 (two halves) and an i32 and returning nothing. */
function host<A extends number[]>(
  params: string,
  results: string,
  run: (call: CallState, ...args: A) => unknown,
  result?: I64Result,
): ExtismFunction {
  const fn: ExtismFunction = { signature: sig(params, results), run: run as unknown as HostFunction['run'] };
  if (result) fn.result = result;
  return fn;
}

/**
 * The import the plugin sees: refuses to run once the call has failed, and records what it throws as
 * the call's failure (bound with a fixed arity: most host calls take one to four arguments and are hot).
 * `arity`: how many arguments `run` takes after the call (an Extism i64 is two).
 */
export function bindHost(
  slot: HostSlot,
  name: string,
  fn: HostFunction,
  arity = fn.signature.params.length,
): (...args: never[]) => unknown {
  const { run } = fn;
  const enter = (): CallState => {
    const call = current(slot);
    if (call.failure) throw call.failure;
    return call;
  };
  if (arity === 0) {
    return () => {
      const call = enter();
      try {
        return run(call);
      } catch (err) {
        throw call.fail(name, err);
      }
    };
  }
  if (arity === 1) {
    return (a: never) => {
      const call = enter();
      try {
        return run(call, a);
      } catch (err) {
        throw call.fail(name, err);
      }
    };
  }
  if (arity === 2) {
    return (a: never, b: never) => {
      const call = enter();
      try {
        return run(call, a, b);
      } catch (err) {
        throw call.fail(name, err);
      }
    };
  }
  if (arity === 3) {
    return (a: never, b: never, c: never) => {
      const call = enter();
      try {
        return run(call, a, b, c);
      } catch (err) {
        throw call.fail(name, err);
      }
    };
  }
  if (arity === 4) {
    return (a: never, b: never, c: never, d: never) => {
      const call = enter();
      try {
        return run(call, a, b, c, d);
      } catch (err) {
        throw call.fail(name, err);
      }
    };
  }
  return (...args: never[]) => {
    const call = enter();
    try {
      return run(call, ...args);
    } catch (err) {
      throw call.fail(name, err);
    }
  };
}

function log(level: 'trace' | 'debug' | 'info' | 'warn' | 'error'): ExtismFunction {
  return host('i64', '', (call, hi: number) => {
    const index = indexOf(hi);
    const block = call.blocks[index];
    if (!block) throw new CallFailure('PLUGIN_ERROR', `log_${level}: invalid Extism memory address`);
    if (call.logs.wants(LOG_PRIORITY[level])) call.logs.addBytes(level, block);
    call.free(index);
  });
}

const blockLength = (call: CallState, hi: number): number => call.blocks[indexOf(hi)]?.length ?? 0;

/**
 * Every function of `extism:host/env`: what a module may import (with this signature) and what it
 * gets. An i64 argument is two (high, low); an i64 result is an index, a length, or in the scratch.
 */
const EXTISM_FUNCTIONS: Readonly<Record<string, ExtismFunction>> = {
  alloc: host('i64', 'i64', (call, hi: number, lo: number) => call.alloc(hi, lo), 'index'),
  free: host('i64', '', (call, hi: number) => call.free(indexOf(hi))),
  length: host('i64', 'i64', blockLength, 'length'),
  length_unsafe: host('i64', 'i64', blockLength, 'length'),
  load_u8: host('i64', 'i32', (call, hi: number, lo: number) => call.loadU8(hi, lo)),
  load_u64: host('i64', 'i64', (call, hi: number, lo: number) => call.loadU64(indexOf(hi), offsetOf(hi, lo)), 'scratch'),
  store_u8: host('i64 i32', '', (call, hi: number, lo: number, value: number) => call.storeU8(hi, lo, value)),
  store_u64: host('i64 i64', '', (call, hi: number, lo: number, valueHi: number, valueLo: number) =>
    call.storeU64(hi, lo, valueHi, valueLo),
  ),
  input_offset: host('', 'i64', (call) => call.inputIndex, 'index'),
  input_length: host('', 'i64', (call) => call.blocks[call.inputIndex]?.length ?? 0, 'length'),
  // Once the plugin freed its input, the SDK and the runtime both read zeros (its length is 0).
  input_load_u8: host('i64', 'i32', (call, hi: number, lo: number) =>
    call.inputIndex !== 0 && !call.blocks[call.inputIndex] ? 0 : call.inputU8(offsetOf(hi, lo)),
  ),
  input_load_u64: host(
    'i64',
    'i64',
    (call, hi: number, lo: number) => call.loadU64(call.inputIndex, offsetOf(hi, lo)),
    'scratch',
  ),
  output_set: host('i64 i64', '', (call, hi: number, lo: number, lengthHi: number, lengthLo: number) =>
    call.setOutput(hi, lo, lengthHi, lengthLo),
  ),
  error_set: host('i64', '', (call, hi: number, lo: number) => {
    call.block(hi, lo);
    call.errorIndex = indexOf(hi);
  }),
  error_get: host('', 'i64', (call) => call.errorIndex, 'index'),
  config_get: host(
    'i64',
    'i64',
    (call, hi: number, lo: number) => {
      const value = call.configValue(hi, lo);
      call.free(indexOf(hi));
      return value === undefined ? 0 : call.storeText(value);
    },
    'index',
  ),
  var_get: host(
    'i64',
    'i64',
    (call, hi: number, lo: number) => {
      const key = call.varKey(hi, lo);
      call.free(indexOf(hi));
      const value = key === null ? undefined : call.vars.get(key);
      return value ? call.push(value.slice()) : 0;
    },
    'index',
  ),
  var_set: host('i64 i64', '', (call, keyHi: number, keyLo: number, valueHi: number, valueLo: number) => {
    const key = call.varKey(keyHi, keyLo);
    call.setVar(key, valueHi === 0 && valueLo === 0 ? null : call.block(valueHi, valueLo).slice());
  }),
  // Replaced by a suspending version for modules that import it (createExtismEnv).
  http_request: host('i64 i64', 'i64', () => {
    throw new CallFailure('PLUGIN_ERROR', 'http_request is not available');
  }),
  http_status_code: host('', 'i32', (call) => call.httpStatus),
  // As the SDK's allowHttpResponseHeaders: a JSON object of the last response's headers, names in lower case.
  http_headers: host(
    '',
    'i64',
    (call) => (call.responseHeaders === null ? 0 : call.storeText(JSON.stringify(call.responseHeaders))),
    'index',
  ),
  log_trace: log('trace'),
  log_debug: log('debug'),
  log_info: log('info'),
  log_warn: log('warn'),
  log_error: log('error'),
  get_log_level: host('', 'i32', (call) => call.logs.priority),
};

/** The functions a plugin may import from EXTISM_ENV and their signatures (upload checks imports against it). */
export const EXTISM_ENV_SIGNATURES: ReadonlyMap<string, Signature> = new Map(
  Object.entries(EXTISM_FUNCTIONS).map(([name, fn]) => [name, fn.signature]),
);

type SuspendingConstructor = new (fn: (...args: never[]) => Promise<unknown>) => unknown;

/** Through the adapter (host-abi.ts): every function with an i64 but http_request, which keeps BigInts (it is rare, and may suspend). */
const ADAPTED: readonly AdaptedFunction[] = Object.entries(EXTISM_FUNCTIONS)
  .filter(([name, fn]) => name !== 'http_request' && [...fn.signature.params, ...fn.signature.results].includes('i64'))
  .map(([name, fn]) => (fn.result ? { name, signature: fn.signature, result: fn.result } : { name, signature: fn.signature }));
const ADAPTED_NAMES = new Set(ADAPTED.map((fn) => fn.name));

/** The `extism:host/env` import object; `jspi` makes http_request suspend the plugin while it waits (Node 24). */
export function createExtismEnv(slot: HostSlot, jspi: boolean): Record<string, unknown> {
  const env: Record<string, unknown> = {};
  const split: Record<string, (...args: never[]) => unknown> = {};
  for (const [name, fn] of Object.entries(EXTISM_FUNCTIONS)) {
    if (!ADAPTED_NAMES.has(name)) env[name] = bindHost(slot, name, fn);
    else
      split[name] = bindHost(
        slot,
        name,
        fn,
        fn.signature.params.reduce((n, p) => n + (p === 'i64' ? 2 : 1), 0),
      );
  }
  Object.assign(env, instantiateAdapter(ADAPTED, split));
  if (jspi) {
    const Suspending = (WebAssembly as unknown as { Suspending: SuspendingConstructor }).Suspending;
    env.http_request = new Suspending((reqAddr: bigint, bodyAddr: bigint) => suspendingHttpRequest(slot, reqAddr, bodyAddr));
  }
  return env;
}

/**
 * http_request under JSPI. What can be refused is refused before any promise exists (during start-up
 * nothing can suspend, and a promise rejecting after V8 refused to suspend would be unhandled and take
 * the worker down); a failure later rejects into the plugin and is recorded like any other.
 */
function suspendingHttpRequest(slot: HostSlot, reqAddr: bigint, bodyAddr: bigint): Promise<bigint> {
  const call = current(slot);
  if (call.failure) throw call.failure;
  if (call.startup)
    throw call.fail('http_request', new CallFailure('PLUGIN_ERROR', 'http_request cannot be used during start-up'));
  const pending = httpRequest(call, reqAddr, bodyAddr).catch((err: unknown) => {
    throw call.fail('http_request', err);
  });
  pending.catch(() => {});
  return pending;
}

interface HttpRequestJson {
  url?: unknown;
  method?: unknown;
  headers?: unknown;
  header?: unknown;
}

async function httpRequest(call: CallState, reqAddr: bigint, bodyAddr: bigint): Promise<bigint> {
  call.httpStatus = 0;
  if (call.responseHeaders !== null) call.responseHeaders = {};
  const description = call.block(...halvesOf(reqAddr));
  if (description.length > HTTP_REQUEST_JSON_MAX_BYTES) {
    throw new CallFailure('PLUGIN_ERROR', `http_request: the request description is over ${HTTP_REQUEST_JSON_MAX_BYTES} bytes`);
  }
  let request: HttpRequestJson;
  try {
    request = JSON.parse(decoder.decode(description)) as HttpRequestJson;
  } catch {
    throw new CallFailure('PLUGIN_ERROR', 'http_request: the request is not valid JSON');
  }
  if (typeof request !== 'object' || request === null || typeof request.url !== 'string') {
    throw new CallFailure('PLUGIN_ERROR', 'http_request: the request has no url');
  }
  if (!call.fetch)
    throw new CallFailure('HOST_NOT_ALLOWED', `HTTP request to ${hostOf(request.url)} is not allowed (no egress for this call)`);
  const method = typeof request.method === 'string' ? request.method.toUpperCase() : 'GET';
  const rawHeaders = request.headers ?? request.header ?? {};
  const headers: Record<string, string> = {};
  if (typeof rawHeaders === 'object' && rawHeaders !== null) {
    for (const [k, v] of Object.entries(rawHeaders)) if (typeof v === 'string') headers[k] = v;
  }
  // Not copied: the plugin is suspended (and blocks are host-side) until the request is over. The
  // egress fetch refuses a body over EGRESS_MAX_REQUEST_BODY_BYTES.
  const body = bodyAddr === 0n || method === 'GET' || method === 'HEAD' ? undefined : call.block(...halvesOf(bodyAddr));

  const response = await call.fetch(request.url, { method, headers, ...(body ? { body } : {}) });
  call.httpStatus = response.status;
  if (call.responseHeaders !== null) call.responseHeaders = headersObject(response.headers);
  const bytes = await readBody(response, call.limits.httpResponseBytes);
  return BigInt(call.push(bytes)) << 48n;
}

/** What the SDK's `Object.fromEntries(response.headers)` gives: lower-case names, repeated ones joined (set-cookie: the last). */
function headersObject(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => (out[name] = value));
  return out;
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return JSON.stringify(url.slice(0, 200));
  }
}

/** The egress fetch hands over a body it already read under the exact cap; the check here is a backstop. */
async function readBody(response: Response, maxBytes: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (bytes.length > maxBytes) {
    throw new CallFailure('EGRESS_ERROR', `HTTP response body exceeded ${maxBytes} bytes (maxHttpResponseBytes)`);
  }
  return bytes;
}

/** WasiExit is a failure too: a plugin that catches proc_exit's unwinding still ends with that exit. */
export function isExit(err: Error | null): err is WasiExit {
  return err instanceof WasiExit;
}

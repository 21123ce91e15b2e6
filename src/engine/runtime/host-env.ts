// The Extism host ABI (`extism:host/env`), as @extism/extism 2.0.0-rc13's CallContext defines it
// (blocks addressed as index << 48, vars, config, logs, HTTP), but with all state in a per-call
// `CallState`: a recycled instance's imports stay bound to one `HostSlot`, and every call installs
// a fresh state there, so vars, blocks, config, log level and HTTP status never outlive a call.
import { CallFailure } from './call-failure.ts';
import { LOG_PRIORITY, type LogCollector } from './logs.ts';

export const EXTISM_ENV = 'extism:host/env';

const INDEX_SHIFT = 48n;
const OFFSET_MASK = (1n << 48n) - 1n;
const MAX_BLOCKS = 65536;
// Wasm passes i64 as signed BigInt: an index of 2^15 or more arrives negative.
const indexOf = (addr: bigint): number => Number(BigInt.asUintN(64, addr) >> INDEX_SHIFT);
const offsetOf = (addr: bigint): number => Number(addr & OFFSET_MASK);
const addressOf = (index: number): bigint => BigInt(index) << INDEX_SHIFT;

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
  /** Freed indices, reused so a long call (e.g. one log per block) never runs out of addresses. */
  readonly #free: number[] = [];
  #hostBytes = 0;
  /** An allocation was refused for the host memory cap (the call's failure is then MEMORY_LIMIT). */
  memoryRefused = false;
  inputIndex = 0;
  outputIndex = 0;
  outputOffset = 0;
  outputLength = 0;
  errorIndex = 0;
  readonly vars = new Map<string, Uint8Array>();
  #varBytes = 0;
  httpStatus = 0;
  readonly config: Record<string, string>;
  readonly logs: LogCollector;
  readonly limits: HostLimits;
  readonly fetch: CallFetch | null;

  constructor(
    input: Uint8Array | null,
    config: Record<string, string>,
    logs: LogCollector,
    limits: HostLimits,
    fetch: CallFetch | null,
  ) {
    this.config = config;
    this.logs = logs;
    this.limits = limits;
    this.fetch = fetch;
    if (input && input.length > 0) this.inputIndex = this.push(input);
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
    const reused = this.#free.pop();
    if (reused !== undefined) {
      this.blocks[reused] = bytes;
      return reused;
    }
    if (this.blocks.length >= MAX_BLOCKS) {
      throw new CallFailure('MEMORY_LIMIT', `the plugin holds more than ${MAX_BLOCKS - 1} Extism blocks at once`);
    }
    this.blocks.push(bytes);
    this.#views.push(null);
    return this.blocks.length - 1;
  }

  alloc(size: number): number {
    this.#reserve(size);
    return this.push(new Uint8Array(size), false);
  }

  free(index: number): void {
    const block = this.blocks[index];
    if (index === 0 || !block) return;
    this.#hostBytes -= block.length;
    this.blocks[index] = null;
    this.#views[index] = null;
    if (index !== this.outputIndex && index !== this.errorIndex && index !== this.inputIndex) this.#free.push(index);
  }

  block(addr: bigint): Uint8Array {
    const block = this.blocks[indexOf(addr)];
    if (!block) throw new CallFailure('PLUGIN_ERROR', `invalid Extism memory address 0x${addr.toString(16)}`);
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

  text(addr: bigint): string {
    return decoder.decode(this.block(addr));
  }

  storeText(text: string): bigint {
    return addressOf(this.push(encoder.encode(text)));
  }

  setVar(key: string, value: Uint8Array | null): void {
    const old = this.vars.get(key);
    const size = this.#varBytes - (old ? old.length + key.length : 0) + (value ? value.length + key.length : 0);
    if (value && size > this.limits.varBytes) {
      throw new CallFailure(
        'PLUGIN_ERROR',
        `var memory limit exceeded: ${size} bytes requested, ${this.limits.varBytes} allowed`,
      );
    }
    this.#varBytes = size;
    if (value) this.vars.set(key, value);
    else this.vars.delete(key);
  }

  /** The output the plugin set, or the error text it set (null when it set none). */
  result(): { output: Uint8Array | null; error: string | null } {
    const error = this.errorIndex ? this.blocks[this.errorIndex] : null;
    if (error) return { output: null, error: decoder.decode(error) };
    const block = this.outputIndex ? this.blocks[this.outputIndex] : null;
    if (!block) return { output: null, error: null };
    return { output: block.subarray(this.outputOffset, this.outputOffset + this.outputLength), error: null };
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Where an instance's imports find the call they are serving. */
export interface HostSlot {
  call: CallState | null;
}

function current(slot: HostSlot): CallState {
  const call = slot.call;
  if (!call) throw new CallFailure('PLUGIN_ERROR', 'Extism host function used outside of a call (during start-up)');
  return call;
}

function log(slot: HostSlot, level: 'trace' | 'debug' | 'info' | 'warn' | 'error', addr: bigint): void {
  const call = current(slot);
  const index = indexOf(addr);
  const block = call.blocks[index];
  if (!block) throw new CallFailure('PLUGIN_ERROR', `log_${level}: invalid Extism memory address`);
  if (call.logs.wants(LOG_PRIORITY[level])) call.logs.addBytes(level, block);
  call.free(index);
}

/** The `extism:host/env` import object; `jspi` wraps http_request for suspension (Node 24). */
export function createExtismEnv(slot: HostSlot, jspi: boolean): Record<string, unknown> {
  const env: Record<string, unknown> = {
    alloc: (size: bigint): bigint => addressOf(current(slot).alloc(Number(size))),
    free: (addr: bigint): void => current(slot).free(indexOf(addr)),
    length: (addr: bigint): bigint => {
      const block = current(slot).blocks[indexOf(addr)];
      return block ? BigInt(block.length) : 0n;
    },
    length_unsafe: (addr: bigint): bigint => BigInt(current(slot).blocks[indexOf(addr)]?.length ?? 0),
    load_u8: (addr: bigint): number => current(slot).view(indexOf(addr)).getUint8(offsetOf(addr)),
    load_u64: (addr: bigint): bigint => current(slot).view(indexOf(addr)).getBigUint64(offsetOf(addr), true),
    store_u8: (addr: bigint, value: number): void => current(slot).view(indexOf(addr)).setUint8(offsetOf(addr), value),
    store_u64: (addr: bigint, value: bigint): void => current(slot).view(indexOf(addr)).setBigUint64(offsetOf(addr), value, true),
    input_offset: (): bigint => addressOf(current(slot).inputIndex),
    input_length: (): bigint => BigInt(current(slot).blocks[current(slot).inputIndex]?.length ?? 0),
    input_load_u8: (addr: bigint): number => {
      const call = current(slot);
      return call.view(call.inputIndex).getUint8(offsetOf(addr));
    },
    input_load_u64: (addr: bigint): bigint => {
      const call = current(slot);
      return call.view(call.inputIndex).getBigUint64(offsetOf(addr), true);
    },
    output_set: (addr: bigint, length: bigint): void => {
      const call = current(slot);
      const block = call.block(addr);
      const offset = offsetOf(addr);
      const size = Number(length);
      if (offset + size > block.length) throw new CallFailure('PLUGIN_ERROR', 'output_set: length longer than the block');
      if (size > call.limits.outputBytes) {
        throw new CallFailure('OUTPUT_TOO_LARGE', `the output is ${size} bytes; the limit is ${call.limits.outputBytes} bytes`);
      }
      call.outputIndex = indexOf(addr);
      call.outputOffset = offset;
      call.outputLength = size;
    },
    error_set: (addr: bigint): void => {
      const call = current(slot);
      call.block(addr);
      call.errorIndex = indexOf(addr);
    },
    error_get: (): bigint => addressOf(current(slot).errorIndex),
    config_get: (addr: bigint): bigint => {
      const call = current(slot);
      const key = call.text(addr);
      call.free(indexOf(addr));
      const value = Object.hasOwn(call.config, key) ? call.config[key] : undefined;
      return value === undefined ? 0n : call.storeText(value);
    },
    var_get: (addr: bigint): bigint => {
      const call = current(slot);
      const key = call.text(addr);
      call.free(indexOf(addr));
      const value = call.vars.get(key);
      return value ? addressOf(call.push(value.slice())) : 0n;
    },
    var_set: (keyAddr: bigint, valueAddr: bigint): void => {
      const call = current(slot);
      const key = call.text(keyAddr);
      call.setVar(key, valueAddr === 0n ? null : call.block(valueAddr).slice());
    },
    http_request: (): bigint => {
      throw new CallFailure('PLUGIN_ERROR', 'http_request is not available');
    },
    http_status_code: (): number => current(slot).httpStatus,
    // Like the SDK without allowHttpResponseHeaders: headers are not exposed.
    http_headers: (): bigint => 0n,
    log_trace: (addr: bigint) => log(slot, 'trace', addr),
    log_debug: (addr: bigint) => log(slot, 'debug', addr),
    log_info: (addr: bigint) => log(slot, 'info', addr),
    log_warn: (addr: bigint) => log(slot, 'warn', addr),
    log_error: (addr: bigint) => log(slot, 'error', addr),
    get_log_level: (): number => current(slot).logs.priority,
  };
  if (jspi) {
    const Suspending = (WebAssembly as unknown as { Suspending: new (fn: (...args: never[]) => unknown) => unknown }).Suspending;
    env.http_request = new Suspending((reqAddr: bigint, bodyAddr: bigint) => httpRequest(current(slot), reqAddr, bodyAddr));
  }
  return env;
}

interface HttpRequestJson {
  url?: unknown;
  method?: unknown;
  headers?: unknown;
  header?: unknown;
}

async function httpRequest(call: CallState, reqAddr: bigint, bodyAddr: bigint): Promise<bigint> {
  call.httpStatus = 0;
  let request: HttpRequestJson;
  try {
    request = JSON.parse(call.text(reqAddr)) as HttpRequestJson;
  } catch {
    throw new CallFailure('PLUGIN_ERROR', 'http_request: the request is not valid JSON');
  }
  if (typeof request.url !== 'string') throw new CallFailure('PLUGIN_ERROR', 'http_request: the request has no url');
  if (!call.fetch)
    throw new CallFailure('HOST_NOT_ALLOWED', `HTTP request to ${hostOf(request.url)} is not allowed (no egress for this call)`);
  const method = typeof request.method === 'string' ? request.method.toUpperCase() : 'GET';
  const rawHeaders = (request.headers ?? request.header ?? {}) as Record<string, unknown>;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawHeaders)) if (typeof v === 'string') headers[k] = v;
  const body = bodyAddr === 0n || method === 'GET' || method === 'HEAD' ? undefined : call.block(bodyAddr).slice();

  const response = await call.fetch(request.url, { method, headers, ...(body ? { body } : {}) });
  call.httpStatus = response.status;
  const bytes = await readBody(response, call.limits.httpResponseBytes);
  return addressOf(call.push(bytes));
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return JSON.stringify(url);
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

/** The functions a plugin may import from EXTISM_ENV (upload checks imports against it). */
export const EXTISM_ENV_FUNCTIONS: ReadonlySet<string> = new Set(Object.keys(createExtismEnv({ call: null }, false)));

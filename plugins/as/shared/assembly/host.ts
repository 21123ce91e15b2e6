// Helpers shared by the AssemblyScript plugins: the pieces @extism/as-pdk 1.0 leaves out.
import { Memory } from "@extism/as-pdk";
import {
  alloc, error_set, length, load_u64, load_u8, log_debug, log_error, log_info, log_warn,
  output_set, store_u64, store_u8,
} from "@extism/as-pdk/lib/env";

// Host functions the PDK does not declare.
@external("extism:host/env", "log_trace")
export declare function log_trace(offset: u64): void;
@external("extism:host/env", "http_status_code")
export declare function http_status_code(): i32;
@external("extism:host/env", "http_headers")
export declare function http_headers(): u64;

// Wired in with `--use abort=...` (see plugins/build.mjs) so the module does not import
// env.abort, which Extism does not provide.
export function pluginAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const where = (fileName === null ? "?" : fileName) + ":" + line.toString() + ":" + column.toString();
  setError("abort: " + (message === null ? "" : message) + " at " + where);
  unreachable();
}

/** Copies bytes into a fresh Extism block and returns its offset. */
export function storeBytes(bytes: Uint8Array): u64 {
  const size = bytes.length;
  const offset = alloc(size);
  const start = bytes.dataStart;
  let i = 0;
  for (; i + 8 <= size; i += 8) store_u64(offset + i, load<u64>(start + i));
  for (; i < size; i++) store_u8(offset + i, load<u8>(start + i));
  return offset;
}

/** Reads a whole Extism block into a new byte array. */
export function readBlock(offset: u64): Uint8Array {
  const size = <i32>length(offset);
  const bytes = new Uint8Array(size);
  const start = bytes.dataStart;
  let i = 0;
  for (; i + 8 <= size; i += 8) store<u64>(start + i, load_u64(offset + i));
  for (; i < size; i++) store<u8>(start + i, load_u8(offset + i));
  return bytes;
}

export function storeText(text: string): u64 {
  return storeBytes(Uint8Array.wrap(String.UTF8.encode(text)));
}

export function outputBytes(bytes: Uint8Array): void {
  output_set(storeBytes(bytes), bytes.length);
}

/** Sets the call output to the UTF-8 bytes of `text` (Host.outputString miscounts non-ASCII). */
export function outputText(text: string): void {
  outputBytes(Uint8Array.wrap(String.UTF8.encode(text)));
}

/** Sets the call's error message; the export should then return non-zero. */
export function setError(message: string): void {
  error_set(Memory.allocateString(message).offset);
}

export function logTrace(message: string): void { log_trace(storeText(message)); }
export function logDebug(message: string): void { log_debug(storeText(message)); }
export function logInfo(message: string): void { log_info(storeText(message)); }
export function logWarn(message: string): void { log_warn(storeText(message)); }
export function logError(message: string): void { log_error(storeText(message)); }

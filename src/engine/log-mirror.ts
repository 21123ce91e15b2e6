// A worker's log entries, mirrored into shared memory as they are captured, so that a call stopped
// at its deadline (its worker terminated mid-call) still answers with the logs it wrote so far.
// Layout: Int32 [callId, bytes used, truncated], then JSON lines.
import type { LogEntry } from './runtime/logs.ts';

const HEADER = 12;
export const LOG_MIRROR_BYTES = 1024 * 1024;

export function createLogMirrorBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER + LOG_MIRROR_BYTES);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Worker side: one writer per worker, restarted for every call. */
export class LogMirrorWriter {
  readonly #header: Int32Array;
  readonly #bytes: Uint8Array;

  constructor(buffer: SharedArrayBuffer) {
    this.#header = new Int32Array(buffer, 0, 3);
    this.#bytes = new Uint8Array(buffer, HEADER);
  }

  start(callId: number): void {
    Atomics.store(this.#header, 1, 0);
    Atomics.store(this.#header, 2, 0);
    Atomics.store(this.#header, 0, callId);
  }

  write(entry: LogEntry): void {
    if (Atomics.load(this.#header, 2)) return;
    const used = Atomics.load(this.#header, 1);
    const line = `${JSON.stringify(entry)}\n`;
    const { read, written } = encoder.encodeInto(line, this.#bytes.subarray(used));
    if (read !== line.length) {
      Atomics.store(this.#header, 2, 1); // did not fit: keep what is complete
      return;
    }
    Atomics.store(this.#header, 1, used + (written ?? 0));
  }
}

/** Main side: the entries the worker captured for `callId` before it was stopped. */
export function readLogMirror(buffer: SharedArrayBuffer, callId: number): { logs: LogEntry[]; truncated: boolean } {
  const header = new Int32Array(buffer, 0, 3);
  if (Atomics.load(header, 0) !== callId) return { logs: [], truncated: false };
  const used = Atomics.load(header, 1);
  const text = decoder.decode(new Uint8Array(buffer, HEADER, used).slice());
  const logs = text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as LogEntry);
  return { logs, truncated: Atomics.load(header, 2) === 1 };
}

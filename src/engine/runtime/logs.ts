// A call's captured logs: the plugin's own log calls (filtered by the call's level) and, for WASI
// plugins, its stdout/stderr lines. Bounded by entry count and bytes; beyond that, `truncated`.

export const CALL_LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'off'] as const;
export type CallLogLevel = (typeof CALL_LOG_LEVELS)[number];
export type LogEntryLevel = Exclude<CallLogLevel, 'off'> | 'stdout' | 'stderr';

export interface LogEntry {
  level: LogEntryLevel;
  message: string;
  time: string;
}

/** Extism's level priorities (what `get_log_level` reports); off is i32 max, like the SDK's silent. */
export const LOG_PRIORITY: Record<CallLogLevel, number> = {
  trace: 0,
  debug: 1,
  info: 2,
  warn: 3,
  error: 4,
  off: 0x7fffffff,
};

/** Longest stdout/stderr entry, in UTF-16 code units (a longer line is cut into pieces). */
const STREAM_LINE_MAX = 64 * 1024;
const encoder = new TextEncoder();
/** For whole log messages (not streaming: one decoder serves every collector). */
const decoder = new TextDecoder();

/** Size of `text` in UTF-8 bytes, what the byte cap counts. */
function utf8Bytes(text: string): number {
  return encoder.encode(text).length;
}

/** Cuts `text` at most `max` code units in, never between the halves of a surrogate pair. */
function cutAt(text: string, max: number): number {
  const code = text.charCodeAt(max - 1);
  return code >= 0xd800 && code <= 0xdbff ? max - 1 : max;
}

export class LogCollector {
  readonly entries: LogEntry[] = [];
  /** Sees every entry as it is kept (the worker mirrors them to shared memory). */
  onEntry: ((entry: LogEntry) => void) | null = null;
  truncated = false;
  readonly priority: number;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #bytes = 0;
  /**
   * One streaming decoder per fd: a UTF-8 character split across two writes decodes whole. Made on
   * first use: most calls write nothing, and a TextDecoder per stream per call showed in profiles.
   */
  readonly #streams: { stdout: TextDecoder | null; stderr: TextDecoder | null } = { stdout: null, stderr: null };
  /** Partial stdout/stderr lines waiting for their newline. */
  readonly #pending: { stdout: string; stderr: string } = { stdout: '', stderr: '' };

  constructor(level: CallLogLevel, maxEntries: number, maxBytes: number) {
    this.priority = LOG_PRIORITY[level];
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  get off(): boolean {
    return this.priority === LOG_PRIORITY.off;
  }

  wants(priority: number): boolean {
    return priority >= this.priority && !this.truncated;
  }

  /** `size` is the message's size in bytes (known to callers that decoded it). */
  add(level: LogEntryLevel, message: string, size: number): void {
    if (this.truncated) return;
    if (this.entries.length >= this.#maxEntries || this.#bytes + size > this.#maxBytes) {
      this.truncated = true;
      return;
    }
    this.#bytes += size;
    const entry = { level, message, time: new Date().toISOString() };
    this.entries.push(entry);
    this.onEntry?.(entry);
  }

  /** A message over the bytes still allowed truncates without being decoded (it could be hundreds of MiB). */
  addBytes(level: LogEntryLevel, bytes: Uint8Array): void {
    if (this.truncated) return;
    if (this.#bytes + bytes.length > this.#maxBytes) {
      this.truncated = true;
      return;
    }
    this.add(level, decoder.decode(bytes), bytes.length);
  }

  /**
   * WASI output: split into lines; a line longer than STREAM_LINE_MAX is cut into pieces. Only what
   * the byte cap can still take is decoded (plus a line's worth, for the cut to land where it would).
   */
  stream(level: 'stdout' | 'stderr', bytes: Uint8Array): void {
    if (this.off || this.truncated) return;
    const room = this.#maxBytes - this.#bytes + STREAM_LINE_MAX;
    const taken = bytes.length > room ? bytes.subarray(0, room) : bytes;
    const stream = (this.#streams[level] ??= new TextDecoder());
    this.#lines(level, this.#pending[level] + stream.decode(taken, { stream: true }));
    if (taken !== bytes) this.truncated = true;
  }

  #lines(level: 'stdout' | 'stderr', text: string): void {
    let newline = text.indexOf('\n');
    while (newline !== -1) {
      const line = text.slice(0, newline);
      this.add(level, line, utf8Bytes(line));
      text = text.slice(newline + 1);
      newline = text.indexOf('\n');
    }
    while (text.length > STREAM_LINE_MAX) {
      const piece = text.slice(0, cutAt(text, STREAM_LINE_MAX));
      this.add(level, piece, utf8Bytes(piece));
      text = text.slice(piece.length);
    }
    this.#pending[level] = text;
  }

  /** Ends the call: unterminated stdout/stderr lines become entries. */
  flush(): void {
    // Lines wait only in a stream that was written to.
    if (!this.#streams.stdout && !this.#streams.stderr) return;
    for (const level of ['stdout', 'stderr'] as const) {
      // An incomplete character left at the end decodes as U+FFFD.
      const tail = this.#streams[level]?.decode() ?? '';
      if (tail !== '' && !this.off && !this.truncated) this.#lines(level, this.#pending[level] + tail);
      const rest = this.#pending[level];
      if (rest !== '') this.add(level, rest, utf8Bytes(rest));
      this.#pending[level] = '';
    }
  }
}

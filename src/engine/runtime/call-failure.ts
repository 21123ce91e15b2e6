// A typed failure raised inside a worker (by a host function or the call runner). It crosses the
// thread boundary as { code, message } and becomes an AppError on the main thread.
import type { ErrorCode } from '../../errors.ts';

export type CallFailureCode = Extract<
  ErrorCode,
  | 'PLUGIN_ERROR'
  | 'HOST_NOT_ALLOWED'
  | 'MEMORY_LIMIT'
  | 'OUTPUT_TOO_LARGE'
  | 'EGRESS_ERROR'
  | 'FUNCTION_NOT_FOUND'
  | 'INTERNAL_ERROR'
>;

export class CallFailure extends Error {
  override name = 'CallFailure';
  readonly code: CallFailureCode;
  constructor(code: CallFailureCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** WASI proc_exit unwinds the plugin's stack with this. */
export class WasiExit extends Error {
  override name = 'WasiExit';
  readonly exitCode: number;
  constructor(exitCode: number) {
    super(`plugin exited with code ${exitCode}`);
    this.exitCode = exitCode;
  }
}

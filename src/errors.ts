// Domain errors with a stable code. No HTTP here: api/error-status.ts maps each code to a status, and
// api/error-handler.ts turns an AppError into a response (a retryAfterMs becomes Retry-After).

/** Every error code the service answers with. */
export const ERROR_CODES = [
  // request shape
  'INVALID_REQUEST',
  'INVALID_NAME',
  'INVALID_CONFIG',
  'INVALID_ALLOWED_HOSTS',
  'MISSING_FILE',
  'EMPTY_BODY',
  'UNSUPPORTED_MEDIA_TYPE',
  'LIMIT_ABOVE_CEILING',
  'REQUEST_TIMEOUT',
  'HEADERS_TOO_LARGE',
  // uploads
  'INVALID_WASM',
  'UNSUPPORTED_IMPORTS',
  'NO_CALLABLE_EXPORTS',
  'INVALID_MANIFEST',
  'UNSUPPORTED_MANIFEST',
  'LINK_ERROR',
  'PLUGIN_TOO_LARGE',
  // lookups
  'PLUGIN_NOT_FOUND',
  'FUNCTION_NOT_FOUND',
  'NOT_FOUND',
  'PLUGIN_IN_USE',
  'PRECONDITION_FAILED',
  // calls
  'INPUT_TOO_LARGE',
  'PLUGIN_ERROR',
  'HOST_NOT_ALLOWED',
  'MEMORY_LIMIT',
  'OUTPUT_TOO_LARGE',
  'EGRESS_ERROR',
  'EGRESS_TIMEOUT',
  'TIMEOUT',
  'OVERLOADED',
  'CLIENT_CLOSED',
  // access and operations
  'UNAUTHORIZED',
  'FORBIDDEN',
  'CROSS_SITE_REQUEST',
  'UNTRUSTED_HOST',
  'RATE_LIMITED',
  'SHUTTING_DOWN',
  'NOT_READY',
  'UNDER_PRESSURE',
  'STORE_ERROR',
  'STORE_UNAVAILABLE',
  'INTERNAL_ERROR',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface AppErrorOptions {
  /** Extra top-level fields of the error body (e.g. `logs`, `egress`, `exports`). */
  details?: Record<string, unknown>;
  /** When the caller may usefully try again (overload, rate limits, shutdown). */
  retryAfterMs?: number;
  cause?: unknown;
}

export class AppError extends Error {
  override name = 'AppError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly retryAfterMs: number | null;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    this.retryAfterMs = options.retryAfterMs ?? null;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

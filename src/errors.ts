// Typed errors with a stable code and an HTTP status; api/error-handler.ts maps them to JSON in one place.

/** Every error code the API can answer with, and its HTTP status. */
export const ERROR_STATUS = {
  // request shape
  INVALID_REQUEST: 400,
  INVALID_NAME: 400,
  INVALID_CONFIG: 400,
  INVALID_ALLOWED_HOSTS: 400,
  MISSING_FILE: 400,
  EMPTY_BODY: 400,
  UNSUPPORTED_MEDIA_TYPE: 415,
  LIMIT_ABOVE_CEILING: 400,
  // uploads
  INVALID_WASM: 400,
  UNSUPPORTED_IMPORTS: 400,
  NO_CALLABLE_EXPORTS: 400,
  PLUGIN_TOO_LARGE: 413,
  // lookups
  PLUGIN_NOT_FOUND: 404,
  FUNCTION_NOT_FOUND: 404,
  NOT_FOUND: 404,
  // calls
  INPUT_TOO_LARGE: 413,
  PLUGIN_ERROR: 422,
  HOST_NOT_ALLOWED: 422,
  MEMORY_LIMIT: 422,
  OUTPUT_TOO_LARGE: 422,
  EGRESS_ERROR: 422,
  EGRESS_TIMEOUT: 504,
  TIMEOUT: 504,
  OVERLOADED: 503,
  // access and operations
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  SHUTTING_DOWN: 503,
  NOT_READY: 503,
  UNDER_PRESSURE: 503,
  STORE_ERROR: 500,
  INTERNAL_ERROR: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface AppErrorOptions {
  /** Extra top-level fields of the JSON body (e.g. `logs`, `egress`, `exports`). */
  details?: Record<string, unknown>;
  headers?: Record<string, string>;
  cause?: unknown;
}

export class AppError extends Error {
  override name = 'AppError';
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly details: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.statusCode = ERROR_STATUS[code];
    this.details = options.details ?? {};
    this.headers = options.headers ?? {};
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

// The one table from error codes (errors.ts) to HTTP statuses.
import type { ErrorCode } from '../errors.ts';

export const ERROR_STATUS: Readonly<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  INVALID_NAME: 400,
  INVALID_CONFIG: 400,
  INVALID_ALLOWED_HOSTS: 400,
  MISSING_FILE: 400,
  EMPTY_BODY: 400,
  UNSUPPORTED_MEDIA_TYPE: 415,
  LIMIT_ABOVE_CEILING: 400,
  INVALID_WASM: 400,
  UNSUPPORTED_IMPORTS: 400,
  NO_CALLABLE_EXPORTS: 400,
  PLUGIN_TOO_LARGE: 413,
  PLUGIN_NOT_FOUND: 404,
  FUNCTION_NOT_FOUND: 404,
  NOT_FOUND: 404,
  INPUT_TOO_LARGE: 413,
  PLUGIN_ERROR: 422,
  HOST_NOT_ALLOWED: 422,
  MEMORY_LIMIT: 422,
  OUTPUT_TOO_LARGE: 422,
  EGRESS_ERROR: 422,
  EGRESS_TIMEOUT: 504,
  TIMEOUT: 504,
  OVERLOADED: 503,
  // nginx's "client closed request": never sent (the client is gone), seen in logs and metrics.
  CLIENT_CLOSED: 499,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  SHUTTING_DOWN: 503,
  NOT_READY: 503,
  UNDER_PRESSURE: 503,
  STORE_ERROR: 500,
  STORE_UNAVAILABLE: 503,
  INTERNAL_ERROR: 500,
};

export function statusOf(code: ErrorCode): number {
  return ERROR_STATUS[code];
}

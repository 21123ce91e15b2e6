// Per-call limits: what a caller asked for, checked against the operator's ceilings, else defaults.
import type { Config, Limit } from '../config.ts';
import { AppError } from '../errors.ts';

export interface RequestedLimits {
  timeoutMs?: number | undefined;
  memoryMaxPages?: number | undefined;
  maxOutputBytes?: number | undefined;
  maxHttpResponseBytes?: number | undefined;
  maxVarBytes?: number | undefined;
  maxLogEntries?: number | undefined;
  maxLogBytes?: number | undefined;
}

export interface ResolvedLimits {
  timeoutMs: number;
  memoryPages: number;
  outputBytes: number;
  httpResponseBytes: number;
  varBytes: number;
  logEntries: number;
  logBytes: number;
}

function pick(field: string, requested: number | undefined, limit: Limit, ceilingEnv: string): number {
  if (requested === undefined) return limit.default;
  if (requested > limit.ceiling) {
    throw new AppError('LIMIT_ABOVE_CEILING', `${field} ${requested} is above the ceiling of ${limit.ceiling} (${ceilingEnv})`, {
      details: { field, requested, ceiling: limit.ceiling },
    });
  }
  return requested;
}

export function resolveLimits(config: Config['engine']['limits'], requested: RequestedLimits): ResolvedLimits {
  return {
    timeoutMs: pick('timeoutMs', requested.timeoutMs, config.timeoutMs, 'CALL_TIMEOUT_MS_CEILING'),
    memoryPages: pick('memoryMaxPages', requested.memoryMaxPages, config.memoryPages, 'CALL_MEMORY_PAGES_CEILING'),
    outputBytes: pick('maxOutputBytes', requested.maxOutputBytes, config.outputBytes, 'CALL_OUTPUT_BYTES_CEILING'),
    httpResponseBytes: pick(
      'maxHttpResponseBytes',
      requested.maxHttpResponseBytes,
      config.httpResponseBytes,
      'CALL_HTTP_RESPONSE_BYTES_CEILING',
    ),
    varBytes: pick('maxVarBytes', requested.maxVarBytes, config.varBytes, 'CALL_VAR_BYTES_CEILING'),
    logEntries: pick('maxLogEntries', requested.maxLogEntries, config.logEntries, 'CALL_LOG_ENTRIES_CEILING'),
    logBytes: pick('maxLogBytes', requested.maxLogBytes, config.logBytes, 'CALL_LOG_BYTES_CEILING'),
  };
}

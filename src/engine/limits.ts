// Per-call limits: what a caller asked for, checked against the operator's ceilings, else defaults.
// The limits themselves (request field, env var, default, ceiling) are the CALL_LIMITS table in config.ts.
import {
  CALL_LIMIT_NAMES,
  CALL_LIMITS,
  type CallLimitField,
  type CallLimitName,
  type CallLimits,
  type Limit,
} from '../config.ts';
import { AppError } from '../errors.ts';

/**
 * `plugin`: limits the plugin's manifest sets (by request field). Each is that plugin's default and
 * its calls' ceiling (under the operator's, which may have been lowered since the upload).
 */
export function resolveLimits(
  settings: Readonly<Record<CallLimitName, Limit>>,
  requested: Readonly<Partial<Record<CallLimitField, number>>>,
  plugin: Readonly<Partial<Record<CallLimitField, number>>> = {},
): CallLimits {
  const limits = {} as CallLimits;
  for (const name of CALL_LIMIT_NAMES) {
    const { field, env } = CALL_LIMITS[name];
    const { default: fallback, ceiling } = settings[name];
    const asked = requested[field];
    const own = plugin[field];
    if (asked !== undefined && asked > ceiling) {
      throw new AppError('LIMIT_ABOVE_CEILING', `${field} ${asked} is above the ceiling of ${ceiling} (${env}_CEILING)`, {
        details: { field, requested: asked, ceiling },
      });
    }
    if (asked !== undefined && own !== undefined && asked > own) {
      throw new AppError('LIMIT_ABOVE_CEILING', `${field} ${asked} is above the ${own} the plugin's manifest sets`, {
        details: { field, requested: asked, ceiling: own },
      });
    }
    limits[name] = asked ?? (own === undefined ? fallback : Math.min(own, ceiling));
  }
  return limits;
}

// openapi.yaml (generated from the routes) and the error catalogue (src/errors.ts): every code a route
// can answer is documented under the status the catalogue gives it, and nothing else is.
import { describe, expect, it } from 'vitest';
import { ERROR_STATUS } from '../src/api/error-status.ts';
import { documentedOperations, resolveRef } from './openapi-contract.ts';

type Json = Record<string, unknown>;

/** Error codes a route never answers with, so no operation documents them. */
const UNDOCUMENTED_CODES: Record<string, string> = {
  NOT_FOUND: 'no route matched: answered outside every operation',
  CLIENT_CLOSED: 'never sent: the client is gone (a call outcome in logs and metrics)',
  HEADERS_TOO_LARGE: 'answered before any route is matched: the request line and headers are over what Node parses',
};

/** Every `const`/`enum` string under a `code` property of a schema, following local $refs. */
function codesIn(schema: unknown, seen = new Set<unknown>()): string[] {
  if (schema === null || typeof schema !== 'object' || seen.has(schema)) return [];
  seen.add(schema);
  const node = (schema as Json).$ref !== undefined ? resolveRef(schema) : (schema as Json);
  const codes: string[] = [];
  const code = ((node.properties ?? {}) as Json).code as Json | undefined;
  if (code) {
    const c = code.$ref !== undefined ? resolveRef(code) : code;
    if (typeof c.const === 'string') codes.push(c.const);
    if (Array.isArray(c.enum)) codes.push(...c.enum.filter((v): v is string => typeof v === 'string'));
  }
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) for (const item of value) codes.push(...codesIn(item, seen));
    else if (value !== null && typeof value === 'object') codes.push(...codesIn(value, seen));
  }
  return codes;
}

describe('openapi.yaml and the error catalogue (src/errors.ts)', () => {
  it('documents every error code under a response with the status the catalogue gives it', () => {
    const documentedAt = new Map<string, Set<string>>();
    for (const op of documentedOperations()) {
      for (const [status, response] of Object.entries((op.operation.responses ?? {}) as Json)) {
        for (const code of codesIn(resolveRef(response))) {
          if (!documentedAt.has(code)) documentedAt.set(code, new Set());
          documentedAt.get(code)!.add(status);
        }
      }
    }
    const problems: string[] = [];
    for (const [code, status] of Object.entries(ERROR_STATUS)) {
      if (code in UNDOCUMENTED_CODES) continue;
      const statuses = documentedAt.get(code);
      if (!statuses) problems.push(`${code} (${status}) is not documented by any operation`);
      else if (!statuses.has(String(status)))
        problems.push(`${code} is documented under ${[...statuses].join(', ')}, the catalogue says ${status}`);
    }
    for (const code of documentedAt.keys()) {
      if (!(code in ERROR_STATUS)) problems.push(`${code} is documented but not in src/errors.ts`);
    }
    expect(problems).toEqual([]);
  });
});

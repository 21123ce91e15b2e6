// One source of truth: the routes the app registers and openapi.yaml must describe the same API.
// Fails when a route is added without documenting it, when the document describes a route that does
// not exist, or when a route's own schema (params, query, body, response codes) disagrees with it.
import type { RouteOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_STATUS } from '../src/api/error-status.ts';
import { documentedOperations, openApiDocument, resolveRef } from './openapi-contract.ts';
import { removeDir, startServer, type TestServer } from './helpers.ts';

type Json = Record<string, unknown>;

interface Registered {
  method: string;
  /** OpenAPI path template: /plugins/:id → /plugins/{id} */
  path: string;
  hidden: boolean;
  schema: Json;
}

const toTemplate = (url: string): string => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

let server: TestServer;
const registered: Registered[] = [];

beforeAll(async () => {
  server = await startServer({
    appOptions: {
      onRoute: (route: RouteOptions) => {
        const methods = Array.isArray(route.method) ? route.method : [route.method];
        const schema = (route.schema ?? {}) as Json;
        for (const method of methods) {
          registered.push({ method: method.toUpperCase(), path: toTemplate(route.url), hidden: schema.hide === true, schema });
        }
      },
    },
  });
});

afterAll(async () => {
  await server?.close();
  if (server) await removeDir(server.dataDir);
});

const key = (r: { method: string; path: string }): string => `${r.method} ${r.path}`;

/** Routes a client can call: hidden ones are Swagger UI's own assets, HEAD mirrors GET. */
function publicRoutes(): Registered[] {
  const gets = new Set(registered.filter((r) => r.method === 'GET').map((r) => r.path));
  return registered.filter((r) => !r.hidden && !(r.method === 'HEAD' && gets.has(r.path)));
}

function documented(method: string, path: string): Json | undefined {
  return documentedOperations().find((op) => op.method === method && op.path === path)?.operation;
}

function parameterNames(operation: Json, pathItemParams: unknown[], location: string): string[] {
  const params = [...pathItemParams, ...((operation.parameters ?? []) as unknown[])].map(resolveRef);
  return params
    .filter((p) => p.in === location)
    .map((p) => String(p.name))
    .sort();
}

/** Parameters declared once for all operations of a path. */
function pathItemParameters(path: string): unknown[] {
  const item = ((openApiDocument().paths ?? {}) as Json)[path] as Json | undefined;
  return (item?.parameters ?? []) as unknown[];
}

describe('openapi.yaml and the registered routes', () => {
  it('the app registers routes and the document describes operations', () => {
    expect(publicRoutes().length).toBeGreaterThan(0);
    expect(documentedOperations().length).toBeGreaterThan(0);
  });

  it('documents every route the app registers', () => {
    const missing = publicRoutes()
      .filter((r) => documented(r.method, r.path) === undefined)
      .map(key);
    expect(missing, 'routes missing from openapi.yaml').toEqual([]);
  });

  it('registers every operation the document describes', () => {
    const all = new Set(registered.map(key));
    const missing = documentedOperations()
      .filter((op) => !all.has(key(op)))
      .map(key);
    expect(missing, 'operations in openapi.yaml that the app does not serve').toEqual([]);
  });

  it('documents the same path and query parameters as each route schema declares', () => {
    const mismatches: string[] = [];
    for (const route of publicRoutes()) {
      const operation = documented(route.method, route.path);
      if (!operation) continue;
      const inheritedParams = pathItemParameters(route.path);
      const pathParams = [...route.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!).sort();
      const docPath = parameterNames(operation, inheritedParams, 'path');
      if (JSON.stringify(pathParams) !== JSON.stringify(docPath)) {
        mismatches.push(`${key(route)}: path params ${pathParams.join(',')} vs documented ${docPath.join(',')}`);
      }
      const querystring = route.schema.querystring as Json | undefined;
      if (querystring) {
        const routeQuery = Object.keys((querystring.properties ?? {}) as Json).sort();
        const docQuery = parameterNames(operation, inheritedParams, 'query');
        if (JSON.stringify(routeQuery) !== JSON.stringify(docQuery)) {
          mismatches.push(`${key(route)}: query ${routeQuery.join(',')} vs documented ${docQuery.join(',')}`);
        }
      }
    }
    expect(mismatches).toEqual([]);
  });

  // Success codes only: routes share one catalogue of error schemas for serialisation, whether or not
  // a route can produce each error; the contract tests check the errors a route really answers.
  it('documents a request body and every success status that a route schema declares', () => {
    const mismatches: string[] = [];
    for (const route of publicRoutes()) {
      const operation = documented(route.method, route.path);
      if (!operation) continue;
      if (route.schema.body !== undefined && operation.requestBody === undefined) {
        mismatches.push(`${key(route)}: route validates a body, openapi.yaml documents none`);
      }
      const documentedStatuses = Object.keys((operation.responses ?? {}) as Json);
      for (const status of Object.keys((route.schema.response ?? {}) as Json).filter((s) => s.startsWith('2'))) {
        const normalized = status.toUpperCase();
        if (!documentedStatuses.includes(normalized) && !documentedStatuses.includes(`${normalized[0]}XX`)) {
          mismatches.push(`${key(route)}: route schema has response ${status}, openapi.yaml does not`);
        }
      }
    }
    expect(mismatches).toEqual([]);
  });
});

/** Property names and required names of an object schema (after $ref); undefined when it lists none. */
function shape(schema: unknown): { properties: string[]; required: string[] } | undefined {
  if (schema === null || typeof schema !== 'object') return undefined;
  const node = resolveRef(schema);
  if (node.properties === undefined) return undefined;
  return { properties: Object.keys(node.properties as Json).sort(), required: [...((node.required ?? []) as string[])].sort() };
}

describe('openapi.yaml and the route schemas', () => {
  it('documents the same JSON body fields (and required ones) as each route validates', () => {
    const mismatches: string[] = [];
    let compared = 0;
    for (const route of publicRoutes()) {
      const body = shape(route.schema.body);
      if (!body) continue;
      compared++;
      const requestBody = documented(route.method, route.path)?.requestBody;
      const content = requestBody === undefined ? undefined : (resolveRef(requestBody).content as Json | undefined);
      const documentedBody = shape((content?.['application/json'] as Json | undefined)?.schema);
      if (JSON.stringify(body) !== JSON.stringify(documentedBody)) {
        mismatches.push(`${key(route)}: route body ${JSON.stringify(body)} vs documented ${JSON.stringify(documentedBody)}`);
      }
    }
    expect(compared, 'routes with a JSON body schema').toBeGreaterThan(0);
    expect(mismatches).toEqual([]);
  });

  it('documents the same success response fields as each route serialises', () => {
    const mismatches: string[] = [];
    let compared = 0;
    for (const route of publicRoutes()) {
      const operation = documented(route.method, route.path);
      for (const [status, schema] of Object.entries((route.schema.response ?? {}) as Json)) {
        const routeShape = status.startsWith('2') ? shape(schema) : undefined;
        if (!routeShape || !operation) continue;
        compared++;
        const response = ((operation.responses ?? {}) as Json)[status];
        const content = response === undefined ? undefined : (resolveRef(response).content as Json | undefined);
        const documentedShape = shape((content?.['application/json'] as Json | undefined)?.schema);
        // Fastify drops fields its response schema does not list, so these must agree exactly.
        if (JSON.stringify(routeShape.properties) !== JSON.stringify(documentedShape?.properties)) {
          mismatches.push(
            `${key(route)} ${status}: route serialises ${routeShape.properties.join(',')}; documented ${documentedShape?.properties.join(',')}`,
          );
        }
      }
    }
    expect(compared, 'success responses with an object schema').toBeGreaterThan(2);
    expect(mismatches).toEqual([]);
  });
});

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

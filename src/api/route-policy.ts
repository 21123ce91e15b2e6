// Who may use each route and which operational rules apply to it, in one table.
import type { FastifyRequest } from 'fastify';

/** `open`: anyone; `metrics`: METRICS_TOKEN when set; `invoke` and `admin`: token roles (admin ⊃ invoke). */
export type Access = 'open' | 'metrics' | 'invoke' | 'admin';

export interface RoutePolicy {
  access: Access;
  /** Rate-limit bucket (per token, or per client address when the service runs open); null: none. */
  rateLimit: 'call' | 'upload' | null;
  /** A plugin call: shed under pressure, counted and logged with its report, drained at shutdown. */
  call: boolean;
  /** Health and metrics: logged at debug, still answered while shutting down. */
  ops: boolean;
}

const OPS: RoutePolicy = { access: 'open', rateLimit: null, call: false, ops: true };
const DOCS: RoutePolicy = { access: 'open', rateLimit: null, call: false, ops: false };
const READ: RoutePolicy = { access: 'invoke', rateLimit: null, call: false, ops: false };
/** Routes nobody listed here: admin only (fail closed). */
const UNLISTED: RoutePolicy = { access: 'admin', rateLimit: null, call: false, ops: false };
/** No route matched: there is nothing to protect, and the 404 says so. */
const NOT_FOUND: RoutePolicy = { access: 'open', rateLimit: null, call: false, ops: false };

const ROUTES = new Map<string, RoutePolicy>([
  ['GET /healthz', OPS],
  ['GET /readyz', OPS],
  ['GET /metrics', { ...OPS, access: 'metrics' }],
  ['GET /openapi.yaml', DOCS],
  ['GET /openapi.json', DOCS],
  ['GET /plugins', READ],
  ['GET /plugins/:id', READ],
  ['GET /plugins/:id/wasm', READ],
  ['POST /plugins', { access: 'admin', rateLimit: 'upload', call: false, ops: false }],
  ['DELETE /plugins/:id', { access: 'admin', rateLimit: null, call: false, ops: false }],
  ['POST /plugins/:id/call', { access: 'invoke', rateLimit: 'call', call: true, ops: false }],
]);

/** The policy of the request's route, worked out once per request (every hook asks; routeOptions builds an object per read). */
export function routePolicy(request: FastifyRequest): RoutePolicy {
  return (request.routePolicy ??= policyOf(request));
}

function policyOf(request: FastifyRequest): RoutePolicy {
  const url = request.routeOptions.url;
  if (url === undefined) return NOT_FOUND;
  if (url === '/docs' || url.startsWith('/docs/')) return DOCS;
  // The playground page and its assets (api/playground.ts): no data, the page asks for a token itself.
  if (url === '/' || url.startsWith('/playground/')) return DOCS;
  const method = request.method === 'HEAD' ? 'GET' : request.method;
  return ROUTES.get(`${method} ${url}`) ?? UNLISTED;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Cache of routePolicy(request); null until first asked. */
    routePolicy: RoutePolicy | null;
  }
}

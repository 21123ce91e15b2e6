// Each route declares who may use it and which operational rules apply to it, in its own options
// (`config: { policy }`). A route without one stops the server at start (fail closed). Routes that
// other plugins register (Swagger UI's pages, the playground's files) get theirs from the context
// that registers them (policyForRoutes).
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';

/** `open`: anyone; `metrics`: METRICS_TOKEN when set; `invoke` and `admin`: token roles (admin ⊃ invoke). */
export type Access = 'open' | 'metrics' | 'invoke' | 'admin';

export interface RoutePolicy {
  access: Access;
  /** Rate-limit bucket (per token, or per client address when the service runs open); null: none. */
  rateLimit: 'call' | 'upload' | null;
  /**
   * `call`: a plugin call (shed under pressure, counted and logged with its report, drained at
   * shutdown); `ops`: health and metrics (logged at debug, still answered while shutting down).
   */
  kind: 'call' | 'ops' | 'other';
}

export const ROUTE_POLICIES = {
  /** Health and readiness. */
  ops: { access: 'open', rateLimit: null, kind: 'ops' },
  metrics: { access: 'metrics', rateLimit: null, kind: 'ops' },
  /** The document, Swagger UI and the playground: no data. */
  open: { access: 'open', rateLimit: null, kind: 'other' },
  read: { access: 'invoke', rateLimit: null, kind: 'other' },
  upload: { access: 'admin', rateLimit: 'upload', kind: 'other' },
  admin: { access: 'admin', rateLimit: null, kind: 'other' },
  call: { access: 'invoke', rateLimit: 'call', kind: 'call' },
} as const satisfies Record<string, RoutePolicy>;

/** No route matched: there is nothing to protect, and the 404 says so. */
const NOT_FOUND: RoutePolicy = ROUTE_POLICIES.open;

/** The request's route config, read once per request: every hook asks, and routeOptions builds an object per read. */
function routeConfig(request: FastifyRequest): FastifyRequest['routeOptions']['config'] {
  return (request.routeConfig ??= request.routeOptions.config);
}

/** The policy of the request's route. */
export function routePolicy(request: FastifyRequest): RoutePolicy {
  return routeConfig(request).policy ?? NOT_FOUND;
}

/** The request's route template (as `request.routeOptions.url`); undefined when no route matched. */
export function routeUrl(request: FastifyRequest): string | undefined {
  return routeConfig(request).url;
}

/** Gives the routes registered in this context (and its children) that declare no policy this one. */
export function policyForRoutes(app: FastifyInstance, policy: RoutePolicy): void {
  app.addHook('onRoute', (route) => {
    if (route.config?.policy === undefined) route.config = { ...route.config, policy };
  });
}

/** Registered before every route: at ready, a route without a declared access level is an error. */
async function routePolicies(app: FastifyInstance): Promise<void> {
  app.decorateRequest('routeConfig', null);
  const routes: RouteOptions[] = [];
  app.addHook('onRoute', (route) => void routes.push(route));
  app.addHook('onReady', async () => {
    const undeclared = routes.filter((route) => route.config?.policy?.access === undefined);
    if (undeclared.length > 0) {
      const names = undeclared.map((route) => `${String(route.method)} ${route.url}`).join(', ');
      throw new Error(`routes without a declared access level (config.policy): ${names}`);
    }
  });
}

export const routePolicyPlugin = fp(routePolicies, { name: 'route-policy' });

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may use the route and which operational rules apply to it (required: see routePolicyPlugin). */
    policy?: RoutePolicy;
  }
  interface FastifyRequest {
    /** Cache of the route's config (routePolicy, routeUrl); null until first asked. */
    routeConfig: FastifyRequest['routeOptions']['config'] | null;
  }
}

// Builds the Fastify app from a Config. Tests build it directly; main.ts only listens.
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify';
import type { DestinationStream } from 'pino';
import type { Config } from './config.ts';
import { accessControlPlugin } from './api/auth.ts';
import { docsRoutes } from './api/docs.ts';
import { openApiPlugin } from './api/openapi.ts';
import { routePolicyPlugin } from './api/route-policy.ts';
import { playgroundRoutes } from './api/playground.ts';
import { errorHandlerPlugin, frameworkErrorHandler } from './api/error-handler.ts';
import { Lifecycle, lifecyclePlugin } from './api/lifecycle.ts';
import { loadSheddingPlugin } from './api/load-shedding.ts';
import { Readiness, opsRoutes } from './api/ops.ts';
import { clientErrorHandler, slowClientLimitsPlugin } from './api/slow-clients.ts';
import { connectionLimitsPlugin } from './api/connection-limits.ts';
import { requestOriginPlugin } from './api/request-origin.ts';
import { RequestLogController, genRequestId, loggerOptions, telemetryPlugin } from './api/telemetry.ts';
import { ServiceMetrics, pluginLabel } from './metrics.ts';
import { pluginRoutes } from './api/plugins.ts';
import { callRoutes, isCallPath } from './api/call.ts';
import { CallEngine } from './engine/engine.ts';
import { ModuleCache } from './engine/compile/module-cache.ts';
import { moduleCheckLimits } from './engine/compile/module-check.ts';
import { ModulePreparer } from './engine/compile/prepare.ts';
import { openStore } from './store/open-store.ts';
import type { PluginStore } from './store/store.ts';

export interface AppOptions {
  /** Where pino writes (tests capture logs here); stdout by default. */
  logStream?: DestinationStream;
  /** Sees every route as it is registered (the OpenAPI drift test lists them). */
  onRoute?: (route: RouteOptions) => void;
  /**
   * Tests only: host name → address(es) for plugin egress instead of DNS, so a test can aim a
   * public-looking name at a loopback server. Never set from the environment.
   */
  egressHosts?: Record<string, string | string[]>;
}

export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: loggerOptions(config, options.logStream),
    logController: new RequestLogController(),
    genReqId: genRequestId,
    requestIdHeader: false,
    trustProxy: fastifyTrustProxy(config.ops.trustProxy),
    // Shutdown is answered by api/lifecycle.ts with our error shape.
    return503OnClosing: false,
    bodyLimit: 1024 * 1024,
    // A malformed path or an over-long id answers in our error shape (see frameworkErrorHandler).
    frameworkErrors: frameworkErrorHandler(isCallPath),
    // Malformed requests and headers past HEADERS_TIMEOUT_MS answer in our error shape too.
    clientErrorHandler: clientErrorHandler(config.requests),
    // Unknown fields in a body are an error (schemas say additionalProperties: false), never dropped; a
    // value of the wrong type is an error, never converted ({"timeoutMs":"100"}, {"config":{"k":1}}).
    // No querystring or params field is a number, so nothing needs coercion (a new one would need its own).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  });
  if (options.onRoute) app.addHook('onRoute', options.onRoute);
  // First: it sees every route, and refuses to start when one declares no access level.
  await app.register(routePolicyPlugin);
  await app.register(errorHandlerPlugin);
  await app.register(slowClientLimitsPlugin, { requests: config.requests });

  const metrics = new ServiceMetrics();
  await app.register(connectionLimitsPlugin, { config, metrics });
  const readiness = new Readiness();
  app.decorate('metrics', metrics);
  app.decorate('readiness', readiness);
  app.decorate('lifecycle', new Lifecycle());
  // Hook order matters: request id first (every answer carries it), then shutdown, then tokens and rate limits.
  await app.register(telemetryPlugin, { config, metrics });
  await app.register(lifecyclePlugin, { lifecycle: app.lifecycle });
  await app.register(requestOriginPlugin, { config });
  await app.register(accessControlPlugin, { config });
  await app.register(loadSheddingPlugin, { config });

  // Opened before any route is served: the index must be loaded before the first request.
  const store = await openStore(config, app.log, metrics.storeObserver);
  app.decorate('store', store);
  app.decorate('moduleCache', new ModuleCache(config.moduleCacheBytes));
  // Deleted here or through another replica: its prepared module is of no further use.
  store.onDelete((id) => app.moduleCache.delete(id));

  if (store.health() !== null) metrics.watchStoreHealth(() => store.health()!);
  metrics.watch({
    store: () => store.stats(),
    pluginLabels: async () => new Set(store.known().map(pluginLabel)),
    moduleCache: () => app.moduleCache.stats(),
  });
  readiness.add('store', () => store.check());
  // Before any documented route: it collects their schemas into the document.
  await app.register(openApiPlugin);
  await app.register(opsRoutes, { metrics, readiness });
  await app.register(docsRoutes);
  await app.register(playgroundRoutes);
  const preparer = new ModulePreparer(moduleCheckLimits(config.engine), { timeoutMs: config.engine.prepareTimeoutMs });
  app.addHook('onClose', () => preparer.close());
  await app.register(pluginRoutes, { config, prepare: preparer.prepare });

  const engine = new CallEngine(config, {
    store,
    moduleCache: app.moduleCache,
    prepare: preparer.prepare,
    egressHosts: options.egressHosts ?? null,
  });
  app.decorate('engine', engine);
  app.addHook('onClose', () => engine.close());
  // After the engine: a call still preparing its module may read the store until then.
  app.addHook('onClose', () => store.close());
  engine.observe({
    onWorkerRestart: (reason) => metrics.workerRestarted(reason),
    onCompile: (ms) => metrics.observeCompile(ms / 1000),
  });
  metrics.watch({ workerPool: () => engine.stats() });
  // Ready once a worker thread has started and is not lost to a call the pool no longer tracks.
  readiness.add('workers', () => engine.whenReady(1_500));
  // At the drain deadline the engine stops the calls still running; they answer 503 SHUTTING_DOWN.
  app.lifecycle.drainSignal.addEventListener('abort', () => void engine.close(), { once: true });
  await app.register(callRoutes, { config, engine });

  return app;
}

/** A hop count as the function Fastify's types take (its runtime takes numbers too). */
function fastifyTrustProxy(trust: Config['ops']['trustProxy']): boolean | string[] | ((address: string, hop: number) => boolean) {
  return typeof trust === 'number' ? (_address, hop) => hop < trust : trust;
}

declare module 'fastify' {
  interface FastifyInstance {
    store: PluginStore;
    moduleCache: ModuleCache;
    engine: CallEngine;
  }
}

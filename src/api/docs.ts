// The HTTP contract as the service serves it: the document generated from the routes (api/openapi.ts)
// as YAML (byte for byte the committed openapi.yaml) and JSON, and a Swagger UI at /docs to click through.
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { openApiYaml } from './openapi.ts';
import { ROUTE_POLICIES, policyForRoutes } from './route-policy.ts';
import { ShuttingDown } from './schemas.ts';

/** CSP hash of the <style> element swagger-ui-bundle.js (as @fastify/swagger-ui 6 ships it) inserts. */
const SWAGGER_UI_STYLE_HASH = 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w=';

const OpenApiJsonSchema = Type.Object({
  openapi: Type.String({ pattern: '^3[.]1[.][0-9]+$' }),
  info: Type.Object({}),
  paths: Type.Object({}),
});

export async function docsRoutes(app: FastifyInstance): Promise<void> {
  // The document and Swagger UI's pages and assets are open to everyone.
  policyForRoutes(app, ROUTE_POLICIES.open);
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    // The bundle adds one <style> element of its own; allow exactly that one by its hash (the browser
    // test of /docs fails on any CSP violation, so a new swagger-ui that changes it is noticed).
    transformStaticCSP: (header) =>
      header.replace("style-src 'self' https:", `style-src 'self' https: '${SWAGGER_UI_STYLE_HASH}'`),
    uiConfig: { deepLinking: true, defaultModelsExpandDepth: 0, tryItOutEnabled: false },
    // "Try it out" should reach the server the page came from (a container's published port, say),
    // not only the document's example server.
    transformSpecification: (document, request) => ({
      ...document,
      servers: [
        { url: `${request.protocol}://${request.host}`, description: 'this server' },
        ...((document.servers ?? []) as unknown[]),
      ],
    }),
  });

  // Generated once, on the first request (every route is registered by then).
  let yaml: string | undefined;
  let json: string | undefined;
  app.get(
    '/openapi.yaml',
    {
      schema: {
        tags: ['docs'],
        operationId: 'getOpenApiYaml',
        summary: 'This document, as YAML',
        security: [],
        response: {
          200: { description: 'The OpenAPI document (YAML).', content: { 'application/yaml': { schema: Type.String() } } },
          503: ShuttingDown,
        },
      },
    },
    async (_request, reply) => reply.type('application/yaml; charset=utf-8').send((yaml ??= openApiYaml(app))),
  );
  app.get(
    '/openapi.json',
    {
      schema: {
        tags: ['docs'],
        operationId: 'getOpenApiJson',
        summary: 'This document, as JSON',
        security: [],
        response: {
          200: { description: 'The OpenAPI document.', content: { 'application/json': { schema: OpenApiJsonSchema } } },
          503: ShuttingDown,
        },
      },
    },
    // A string: sent as it is, not through the (partial) response schema.
    async (_request, reply) => reply.type('application/json; charset=utf-8').send((json ??= JSON.stringify(app.swagger()))),
  );
}

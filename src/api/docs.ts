// The HTTP contract as the service serves it: openapi.yaml (the one source of truth, read once at
// start), the same document as JSON, and a Swagger UI at /docs to click through.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import swagger, { type StaticDocumentSpec } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { parse } from 'yaml';

/** openapi.yaml at the repo root; from the built dist/api/ it is two levels up as well. */
export const OPENAPI_FILE = fileURLToPath(new URL('../../openapi.yaml', import.meta.url));

/** CSP hash of the <style> element swagger-ui-bundle.js (as @fastify/swagger-ui 6 ships it) inserts. */
const SWAGGER_UI_STYLE_HASH = 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w=';

export interface OpenApiSpec {
  text: string;
  document: Record<string, unknown>;
}

export function readOpenApi(file = OPENAPI_FILE): OpenApiSpec {
  const text = readFileSync(file, 'utf8');
  return { text, document: parse(text) as Record<string, unknown> };
}

export async function docsRoutes(app: FastifyInstance): Promise<void> {
  const spec = readOpenApi();
  const json = JSON.stringify(spec.document);

  // The typings know OpenAPI 3.0 only; the document is 3.1, which the plugin serves as it is.
  const document = spec.document as unknown as StaticDocumentSpec['document'];
  await app.register(swagger, { mode: 'static', specification: { document } });
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

  // The file as written (comments and order kept), not a re-serialisation.
  app.get('/openapi.yaml', async (_request, reply) => reply.type('application/yaml; charset=utf-8').send(spec.text));
  app.get('/openapi.json', async (_request, reply) => reply.type('application/json; charset=utf-8').send(json));
}

// openapi.yaml is generated: @fastify/swagger reads every route's schema (api/schemas.ts and the
// routes' own) as the routes are registered, and this module adds only what no route says: the
// document's head, the security schemes and the Swagger UI page. `npm run openapi` writes the file,
// `npm run openapi -- --check` (in .ci/run) fails when the committed one differs; the service serves
// the same document (api/docs.ts).
import { fileURLToPath } from 'node:url';
import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { stringify } from 'yaml';
import { SHARED_SCHEMAS } from './schemas.ts';

/** openapi.yaml at the repo root; from the built dist/api/ it is two levels up as well. */
export const OPENAPI_FILE = fileURLToPath(new URL('../../openapi.yaml', import.meta.url));

const HEADER = '# Generated from the routes by `npm run openapi` (src/api/openapi.ts): do not edit by hand.\n';

const DOCUMENT_HEAD = {
  openapi: '3.1.0',
  info: {
    title: 'wasmhost',
    version: '0.1.0',
    summary: 'Stores Extism WebAssembly plugins and runs their exported functions on request.',
    description: `Upload Extism plugins (Wasm modules), list, describe, download and delete them, and call their
exported functions over HTTP. A plugin's id is the lowercase hex sha256 of its bytes; a name is a
movable alias for the newest upload that carried it. Every \`{id}\` accepts an id or a name.

Every error answers with the same JSON shape (\`Error\`): \`statusCode\`, a stable upper-snake
\`code\`, the HTTP reason phrase as \`error\`, and a human \`message\`; some errors add details.

A path that is not valid percent-encoding (e.g. \`/plugins/%zz\`) is \`400 INVALID_REQUEST\`, and a
\`{id}\` longer than 100 characters is \`404 PLUGIN_NOT_FOUND\` (no id or name is that long); both are
answered while routing, before tokens are checked, and carry \`X-Request-Id\` like every answer.
`,
    license: { name: 'MIT', identifier: 'MIT' },
  },
  servers: [{ url: 'http://127.0.0.1:8080', description: 'npm start with the embedded defaults' }],
  // With AUTH_TOKENS set every route needs a bearer token unless it says otherwise; without, the service runs open.
  security: [{ bearerAuth: [] }, {}],
  tags: [
    { name: 'plugins', description: 'Upload, list, describe, download and delete plugins.' },
    { name: 'docs', description: 'This document, as YAML and JSON, and a browsable UI. Open to everyone.' },
    { name: 'ops', description: 'Liveness, readiness and Prometheus metrics, for orchestrators and monitoring.' },
  ],
  components: {
    securitySchemes: {
      bearerAuth: {
        type: 'http',
        scheme: 'bearer',
        description:
          'A token from AUTH_TOKENS / AUTH_TOKENS_FILE, with the role `admin` (everything) or `invoke` (list, get, download, call).',
      },
      metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN: may only read /metrics.' },
    },
  },
};

/** Swagger UI's own route is hidden by its plugin; the document still lists the page (answered like the document). */
const docsPage = (shuttingDown: unknown) => ({
  get: {
    tags: ['docs'],
    operationId: 'getDocs',
    summary: 'Browsable API documentation (Swagger UI)',
    security: [],
    responses: {
      200: {
        description: 'The Swagger UI page; it loads this document from /docs/json.',
        content: { 'text/html': { schema: { type: 'string' } } },
      },
      503: shuttingDown,
    },
  },
});

type Json = Record<string, unknown>;

/**
 * A multipart body's `encoding` (how each part is sent) is part of the media type, which
 * @fastify/swagger builds from the schema alone: a schema says it as `x-encoding`.
 */
function liftEncodings(document: Json): void {
  for (const item of Object.values(document.paths as Json)) {
    for (const operation of Object.values(item as Json)) {
      const content = ((operation as Json).requestBody as Json | undefined)?.content as Json | undefined;
      for (const media of Object.values(content ?? {}) as Json[]) {
        const schema = media.schema as Json;
        if (schema?.['x-encoding'] === undefined) continue;
        media.encoding = schema['x-encoding'];
        delete schema['x-encoding'];
      }
    }
  }
}

async function openApi(app: FastifyInstance): Promise<void> {
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  await app.register(swagger, {
    openapi: DOCUMENT_HEAD as never,
    // Shared schemas appear under their own $id (Plugin, CallRequest, …), not def-0, def-1.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (json.$id as string | undefined) ?? `def-${i}` },
    transformObject: (documentObject) => {
      const document = (documentObject as unknown as { openapiObject: Json }).openapiObject;
      liftEncodings(document);
      const paths = document.paths as Record<string, { get: { responses: Json } }>;
      paths['/docs'] = docsPage(paths['/openapi.yaml']!.get.responses['503']) as never;
      return document as never;
    },
  });
}

export const openApiPlugin = fp(openApi, { name: 'openapi' });

/** The document as the file holds it. */
export function openApiYaml(app: FastifyInstance): string {
  return HEADER + stringify(app.swagger(), { lineWidth: 0 });
}

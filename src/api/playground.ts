// The playground at `/`: a page built by Vite from playground/ into playground/dist at build time
// (`npm run build:playground`; `npm start` and `npm test` build it when missing or stale) and served
// with a strict Content-Security-Policy: only this origin's own scripts, styles and API, nothing inline,
// nothing from elsewhere.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { AppError } from '../errors.ts';
import { ROUTE_POLICIES, policyForRoutes } from './route-policy.ts';

/** playground/dist at the repo root; from the built dist/api/ it is two levels up as well. */
export const PLAYGROUND_DIR = fileURLToPath(new URL('../../playground/dist', import.meta.url));

/** Where Vite puts the built files (its `base`); the page itself is served at `/`. */
export const PLAYGROUND_PREFIX = '/playground/';

export const PLAYGROUND_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': PLAYGROUND_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

export interface PlaygroundOptions {
  /** The built playground (tests may point elsewhere); PLAYGROUND_DIR by default. */
  dir?: string;
}

export async function playgroundRoutes(app: FastifyInstance, options: PlaygroundOptions = {}): Promise<void> {
  const dir = options.dir ?? PLAYGROUND_DIR;
  const indexFile = path.join(dir, 'index.html');
  // Read once at start: the page is small and never changes while the service runs.
  const index = existsSync(indexFile) ? readFileSync(indexFile, 'utf8') : null;

  // The page and its assets hold no data (the page asks for a token itself): open to everyone.
  policyForRoutes(app, ROUTE_POLICIES.open);
  // Encapsulated: these headers go on the playground's answers only, not on the API's.
  app.addHook('onSend', async (_request, reply, payload) => {
    void reply.headers(SECURITY_HEADERS);
    return payload;
  });

  if (index === null) {
    app.log.warn({ dir }, 'the playground is not built: `/` answers 404 until `npm run build:playground` has run');
  } else {
    await app.register(fastifyStatic, {
      root: dir,
      prefix: PLAYGROUND_PREFIX,
      index: false,
      decorateReply: false,
      schemaHide: true,
      // Vite names assets by their content hash: they never change under a name.
      setHeaders: (reply, file) => {
        if (file.includes(`${path.sep}assets${path.sep}`))
          void reply.header('cache-control', 'public, max-age=31536000, immutable');
      },
    });
  }

  app.get('/', { schema: { hide: true } }, async (_request, reply) => {
    if (index === null) {
      throw new AppError(
        'NOT_FOUND',
        'the playground is not built: run `npm run build:playground` (npm start does it when missing)',
      );
    }
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(index);
  });
}

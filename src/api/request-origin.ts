// Requests a browser sends on behalf of another site's page. A cross-site form POST needs no CORS
// preflight, so without a check any page the operator visits could upload, rename and delete plugins
// of a service running open (the `npm start` default); and a page whose name an attacker rebinds to
// 127.0.0.1 (DNS rebinding) is same-origin to the browser, so it could also read what it answers.
// So: a request that changes something must come from this service's own pages (or no page at all),
// and while open the service answers only to the names of its address.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The Host header's name, lower case, without its port (an IPv6 address keeps its brackets). */
export function hostName(host: string): string {
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d*$/, '');
  return name.toLowerCase();
}

/** Why a browser sent this request for another site's page; null when it did not. */
function crossSite(request: FastifyRequest): string | null {
  const fetchSite = request.headers['sec-fetch-site'];
  // `none`: the user typed it or followed a bookmark; `same-origin`: one of this service's pages.
  if (fetchSite !== undefined && fetchSite !== 'same-origin' && fetchSite !== 'none') return `Sec-Fetch-Site: ${fetchSite}`;
  const origin = request.headers.origin;
  if (origin === undefined) return null;
  let originHost: string;
  try {
    originHost = new URL(origin).host.toLowerCase();
  } catch {
    return `Origin: ${origin.slice(0, 100)}`;
  }
  // The request's own Host, or (TRUST_PROXY) the host the proxy says the client asked for.
  const hosts = [request.headers.host, request.host].filter((h): h is string => h !== undefined).map((h) => h.toLowerCase());
  return hosts.includes(originHost) ? null : `Origin: ${origin.slice(0, 100)}`;
}

async function requestOrigin(app: FastifyInstance, { config }: { config: Config }): Promise<void> {
  const names = config.ops.authTokens.size === 0 ? config.ops.allowedHostNames : null;
  const allowed = names === null ? null : new Set(names);
  // A `done` hook: it runs on every request.
  app.addHook('onRequest', (request, _reply, done) => {
    if (allowed !== null && !allowed.has(hostName(request.headers.host ?? ''))) {
      done(
        new AppError(
          'UNTRUSTED_HOST',
          `this service runs open and answers only to ${[...allowed].join(', ')} (ALLOWED_HOST_NAMES), not to this Host`,
        ),
      );
      return;
    }
    if (!SAFE_METHODS.has(request.method)) {
      const why = crossSite(request);
      if (why !== null) {
        done(new AppError('CROSS_SITE_REQUEST', `a page of another site may not send this request (${why})`));
        return;
      }
    }
    done();
  });
}

/** Before access control: a browser's cross-site request is refused as such, whatever its token. */
export const requestOriginPlugin = fp(requestOrigin, { name: 'request-origin', dependencies: ['error-handler'] });

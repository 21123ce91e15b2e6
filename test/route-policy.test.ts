// Routes declare their own policy (config.policy); the app does not start with one that declares no
// access level (fail closed), and routes other plugins register get their context's policy.
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { ROUTE_POLICIES, policyForRoutes, routePolicy, routePolicyPlugin } from '../src/api/route-policy.ts';

describe('route policies', () => {
  it('refuses to start when a route declares no access level, naming it', async () => {
    const app = Fastify();
    await app.register(routePolicyPlugin);
    app.get('/declared', { config: { policy: ROUTE_POLICIES.read } }, async () => 'ok');
    app.post('/forgotten', async () => 'ok');
    await expect(app.ready()).rejects.toThrow(/without a declared access level.*POST \/forgotten/);
    await app.close();
  });

  it('starts when every route declares one, and gives routes registered by other plugins their context’s', async () => {
    const app = Fastify();
    await app.register(routePolicyPlugin);
    app.get('/declared', { config: { policy: ROUTE_POLICIES.admin } }, async (request) => routePolicy(request));
    await app.register(async (child) => {
      policyForRoutes(child, ROUTE_POLICIES.open);
      // As a third-party plugin would: no policy of its own.
      await child.register(async (thirdParty) => {
        thirdParty.get('/third-party', async (request) => routePolicy(request));
      });
    });
    await app.ready();
    expect((await app.inject({ method: 'GET', url: '/declared' })).json()).toEqual(ROUTE_POLICIES.admin);
    expect((await app.inject({ method: 'GET', url: '/third-party' })).json()).toEqual(ROUTE_POLICIES.open);
    // HEAD mirrors GET, with its policy.
    expect((await app.inject({ method: 'HEAD', url: '/declared' })).statusCode).toBe(200);
    await app.close();
  });
});

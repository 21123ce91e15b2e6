// The contract as served: the committed openapi.yaml byte for byte (what the routes generate), the same document as JSON, and Swagger UI at /docs.
import { readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { OPENAPI_FILE } from '../src/api/openapi.ts';
import { expectContract } from './openapi-contract.ts';
import { useServer } from './helpers.ts';

const ADMIN = 'docs-test-admin-token-0001';

// Tokens configured: the docs must stay readable without one.
const server = useServer({ env: { AUTH_TOKENS: `${ADMIN}:admin` } });
let fileText: string;

beforeAll(async () => {
  fileText = await readFile(OPENAPI_FILE, 'utf8');
});

describe('served API documentation', () => {
  it('serves openapi.yaml exactly as the file in the repo, without a token', async () => {
    const res = await fetch(`${server.url}/openapi.yaml`);
    await expectContract('GET', '/openapi.yaml', res);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/yaml/);
    expect(await res.text()).toBe(fileText);
  });

  it('serves the same document as JSON at /openapi.json', async () => {
    const res = await fetch(`${server.url}/openapi.json`);
    await expectContract('GET', '/openapi.json', res);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(parse(fileText));
  });

  it('serves a Swagger UI page at /docs that loads the document', async () => {
    const page = await fetch(`${server.url}/docs`);
    await expectContract('GET', '/docs', page);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('swagger-ui');

    const init = await fetch(`${server.url}/docs/static/swagger-initializer.js`);
    expect(init.status).toBe(200);
    expect(await init.text()).toContain('./json');
    // The UI's copy lists the server it was loaded from first, so "Try it out" reaches it.
    const spec = (await (await fetch(`${server.url}/docs/json`)).json()) as { paths: unknown; servers: { url: string }[] };
    const file = parse(fileText) as { paths: unknown; servers: { url: string }[] };
    expect(spec.paths).toEqual(file.paths);
    expect(spec.servers).toEqual([{ url: server.url, description: 'this server' }, ...file.servers]);
  });

  it('still protects the API itself while the docs are open', async () => {
    const res = await fetch(`${server.url}/plugins`);
    await expectContract('GET', '/plugins', res);
    expect(res.status).toBe(401);
  });
});

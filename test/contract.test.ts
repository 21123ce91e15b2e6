// Contract suite: produces every status code openapi.yaml documents for every operation, over real
// HTTP, and checks each response against the document (status, content type, schema, required
// headers). The last test fails when a documented status was never produced here.
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkEveryResponse, documentedOperations, expectContract, matchPath } from './openapi-contract.ts';
import { readPlugin, removeDir, sendStreaming, startServer, type StartOptions, type TestServer } from './helpers.ts';

const ADMIN = 'contract-admin-token-000001';
const INVOKE = 'contract-invoke-token-00001';
const METRICS = 'contract-metrics-token-0001';
const MAX_PLUGIN_BYTES = 256 * 1024;

/** "METHOD /template STATUS" of every response checked in this file. */
const covered = new Set<string>();
/** Mismatches seen server-side in any response of these servers, set-up requests included. */
const serverSideProblems: string[] = [];
const servers: TestServer[] = [];

async function start(options: StartOptions = {}): Promise<TestServer> {
  const server = await startServer({
    ...options,
    env: { MAX_PLUGIN_BYTES: String(MAX_PLUGIN_BYTES), ...options.env },
    appOptions: { onRoute: checkEveryResponse(serverSideProblems) },
  });
  servers.push(server);
  return server;
}

/** fetch, check the response against openapi.yaml and record the status it covered. */
async function call(server: TestServer, method: string, url: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(`${server.url}${url}`, { ...init, method });
  await expectContract(method, url, res);
  const template = matchPath(new URL(url, server.url).pathname);
  covered.add(`${method} ${template} ${res.status}`);
  return res;
}

const wasmBody = (bytes: Uint8Array, headers: Record<string, string> = {}): RequestInit => ({
  headers: { 'content-type': 'application/wasm', ...headers },
  body: new Uint8Array(bytes),
});

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

let vowels: Buffer;
let echo: Buffer;
let vowelsId: string;

/** A concrete request for a documented operation: {id} filled with a stored plugin, a valid body. */
function requestFor(method: string, path: string, headers: Record<string, string> = {}): { url: string; init: RequestInit } {
  const url = path.replace('{id}', vowelsId);
  if (method === 'POST' && path === '/plugins') return { url, init: wasmBody(echo, headers) };
  if (method === 'POST' && path.endsWith('/call')) {
    return {
      url,
      init: {
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ function: 'count_vowels', input: 'a' }),
      },
    };
  }
  return { url, init: { headers } };
}

beforeAll(async () => {
  vowels = await readPlugin('count_vowels');
  echo = await readPlugin('echo');
});

afterAll(async () => {
  for (const server of servers) {
    await server.close().catch(() => undefined);
    await removeDir(server.dataDir);
  }
});

describe('plugin routes', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await start();
  });

  it('uploads (201), re-uploads the same bytes (200) and refuses bad uploads (400, 413, 415)', async () => {
    const created = await call(server, 'POST', '/plugins?name=contract-vowels', wasmBody(vowels));
    expect(created.status).toBe(201);
    vowelsId = ((await created.json()) as { id: string }).id;
    expect((await call(server, 'POST', '/plugins', wasmBody(vowels))).status).toBe(200);

    const notWasm = await call(server, 'POST', '/plugins', wasmBody(new TextEncoder().encode('not wasm at all')));
    expect(notWasm.status).toBe(400);
    const tooLarge = await call(server, 'POST', '/plugins', wasmBody(new Uint8Array(MAX_PLUGIN_BYTES + 1)));
    expect(tooLarge.status).toBe(413);
    const wrongType = await call(server, 'POST', '/plugins', { headers: { 'content-type': 'text/plain' }, body: 'hello' });
    expect(wrongType.status).toBe(415);
  });

  it('lists, describes and downloads plugins (200, 304) and answers 404 for unknown ones', async () => {
    expect((await call(server, 'GET', '/plugins')).status).toBe(200);
    const twice = await call(server, 'GET', '/plugins?name=a&name=b');
    expect(twice.status).toBe(400);
    expect(await twice.json()).toMatchObject({ code: 'INVALID_REQUEST' });
    expect((await call(server, 'GET', `/plugins/${vowelsId}`)).status).toBe(200);
    expect((await call(server, 'GET', '/plugins/no-such-plugin')).status).toBe(404);

    const wasm = await call(server, 'GET', `/plugins/${vowelsId}/wasm`);
    expect(wasm.status).toBe(200);
    const etag = wasm.headers.get('etag') ?? '';
    expect((await call(server, 'GET', `/plugins/${vowelsId}/wasm`, { headers: { 'if-none-match': etag } })).status).toBe(304);
    expect((await call(server, 'GET', '/plugins/no-such-plugin/wasm')).status).toBe(404);
  });

  it('answers a path that is not valid percent-encoding with 400 INVALID_REQUEST and an over-long id with 404 PLUGIN_NOT_FOUND, in our shape', async () => {
    const tooLong = 'a'.repeat(101);
    const cases: [string, string, number, string][] = [
      ['GET', '/plugins/%zz', 400, 'INVALID_REQUEST'],
      ['GET', '/plugins/%zz/wasm', 400, 'INVALID_REQUEST'],
      ['DELETE', '/plugins/%zz', 400, 'INVALID_REQUEST'],
      ['POST', '/plugins/%zz/call', 400, 'INVALID_REQUEST'],
      ['GET', `/plugins/${tooLong}`, 404, 'PLUGIN_NOT_FOUND'],
      ['GET', `/plugins/${tooLong}/wasm`, 404, 'PLUGIN_NOT_FOUND'],
      ['DELETE', `/plugins/${tooLong}`, 404, 'PLUGIN_NOT_FOUND'],
      ['POST', `/plugins/${tooLong}/call`, 404, 'PLUGIN_NOT_FOUND'],
    ];
    for (const [method, url, status, code] of cases) {
      const init: RequestInit =
        method === 'POST'
          ? { headers: { 'content-type': 'application/json', 'x-request-id': 'bad-path-1' }, body: '{"function":"f"}' }
          : { headers: { 'x-request-id': 'bad-path-1' } };
      const res = await call(server, method, url, init);
      expect(res.status, `${method} ${url}`).toBe(status);
      expect(res.headers.get('x-request-id')).toBe('bad-path-1');
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ statusCode: status, code, error: status === 400 ? 'Bad Request' : 'Not Found' });
      // The call route's errors always carry logs and egress.
      if (url.endsWith('/call')) expect(body).toMatchObject({ logs: [], logsTruncated: false, egress: [] });
      else expect(body).not.toHaveProperty('logs');
    }
  });

  it('refuses to delete a module a stored manifest names (409), stores a manifest (201) and downloads it (200)', async () => {
    const manifest = await call(server, 'POST', '/plugins?name=contract-manifest', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ wasm: [{ hash: vowelsId }], config: { vowels: 'a' } }),
    });
    expect(manifest.status).toBe(201);
    expect((await call(server, 'GET', '/plugins/contract-manifest/wasm')).status).toBe(200);
    expect((await call(server, 'DELETE', `/plugins/${vowelsId}`)).status).toBe(409);
    expect((await call(server, 'DELETE', '/plugins/contract-manifest')).status).toBe(204);
  });

  it('deletes a plugin (204; 412 when If-Match names another) and answers 404 when it is gone', async () => {
    const uploaded = await call(server, 'POST', '/plugins?name=contract-echo', wasmBody(echo));
    expect(uploaded.status).toBe(201);
    // If-Match naming another plugin: 412, nothing deleted.
    const stale = await call(server, 'DELETE', '/plugins/contract-echo', { headers: { 'if-match': `"${'0'.repeat(64)}"` } });
    expect(stale.status).toBe(412);
    expect((await call(server, 'DELETE', '/plugins/contract-echo')).status).toBe(204);
    expect((await call(server, 'DELETE', '/plugins/contract-echo')).status).toBe(404);
  });

  it('answers 500 STORE_ERROR when the store cannot write or delete', async () => {
    const broken = await start();
    expect((await call(broken, 'POST', '/plugins?name=contract-vowels', wasmBody(vowels))).status).toBe(201);
    // Root ignores permission bits, so DATA_DIR is swapped for a regular file instead.
    const away = `${broken.dataDir}.away`;
    await rename(broken.dataDir, away);
    await writeFile(broken.dataDir, 'not a directory');
    try {
      const upload = await call(broken, 'POST', '/plugins', wasmBody(echo));
      expect(upload.status).toBe(500);
      expect(await upload.json()).toMatchObject({ code: 'STORE_ERROR' });
      const del = await call(broken, 'DELETE', `/plugins/${vowelsId}`);
      expect(del.status).toBe(500);
    } finally {
      await rm(broken.dataDir, { force: true });
      await rename(away, broken.dataDir);
    }
  });
});

describe('call route', () => {
  let server: TestServer;
  const body = (fields: Record<string, unknown>): RequestInit => ({
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(fields),
  });

  beforeAll(async () => {
    server = await start({ env: { WORKERS: '1', MAX_INPUT_BYTES: '1024' } });
    for (const name of ['count_vowels', 'fail', 'loop']) {
      const res = await fetch(`${server.url}/plugins?name=${name}`, { method: 'POST', ...wasmBody(await readPlugin(name)) });
      expect(res.status).toBe(201);
    }
  });

  it('runs a function (200) and refuses bad calls (400, 404, 413)', async () => {
    const ok = await call(
      server,
      'POST',
      '/plugins/count_vowels/call',
      body({ function: 'count_vowels', input: 'Hello, World!' }),
    );
    expect(ok.status).toBe(200);
    expect((await call(server, 'POST', '/plugins/count_vowels/call', body({ function: 'count_vowels', nope: 1 }))).status).toBe(
      400,
    );
    expect((await call(server, 'POST', '/plugins/count_vowels/call', body({ function: 'no_such_export' }))).status).toBe(404);
    expect((await call(server, 'POST', '/plugins/no-such-plugin/call', body({ function: 'count_vowels' }))).status).toBe(404);
    expect(
      (await call(server, 'POST', '/plugins/count_vowels/call', body({ function: 'count_vowels', input: 'a'.repeat(2048) })))
        .status,
    ).toBe(413);
  });

  it('answers 500 STORE_ERROR when the stored bytes were damaged on disk, runs nothing from them, and a re-upload repairs them', async () => {
    const first = await start();
    const uploaded = await fetch(`${first.url}/plugins?name=damaged`, { method: 'POST', ...wasmBody(vowels) });
    expect(uploaded.status).toBe(201);
    await first.close();
    const blob = `${first.dataDir}/blobs/${((await uploaded.json()) as { id: string }).id}.wasm`;
    const bytes = await readFile(blob);
    bytes[bytes.length - 1]! ^= 0xff;
    await writeFile(blob, bytes);

    // A restart starts with an empty module cache: the call has to read the blob.
    const restarted = await start({ dataDir: first.dataDir });
    const res = await call(restarted, 'POST', '/plugins/damaged/call', body({ function: 'count_vowels', input: 'a' }));
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({
      code: 'STORE_ERROR',
      message: expect.stringContaining('damaged'),
      logs: [],
      egress: [],
    });

    // As the message says: uploading the same bytes again repairs it.
    expect((await call(restarted, 'POST', '/plugins', wasmBody(vowels))).status).toBe(200);
    expect((await call(restarted, 'POST', '/plugins/damaged/call', body({ function: 'count_vowels', input: 'a' }))).status).toBe(
      200,
    );

    // A blob lost from disk: the download answers 500 STORE_ERROR, not 404 (the plugin is still stored).
    await rm(blob);
    const download = await call(restarted, 'GET', '/plugins/damaged/wasm');
    expect(download.status).toBe(500);
    expect(await download.json()).toMatchObject({ code: 'STORE_ERROR', message: expect.stringContaining('missing') });
    expect((await call(restarted, 'POST', '/plugins', wasmBody(vowels))).status).toBe(200);
    expect((await call(restarted, 'GET', '/plugins/damaged/wasm')).status).toBe(200);
  });

  it('refuses a body that is not application/json with 415 UNSUPPORTED_MEDIA_TYPE naming what was sent', async () => {
    const sent: [string, string][] = [
      ['application/xml', '<call function="count_vowels"/>'],
      ['text/plain', '{"function":"count_vowels"}'],
      ['text/plain; charset=utf-8', 'hi'],
    ];
    for (const [type, payload] of sent) {
      const res = await call(server, 'POST', '/plugins/count_vowels/call', { headers: { 'content-type': type }, body: payload });
      expect(res.status, type).toBe(415);
      const answer = (await res.json()) as { code: string; message: string };
      expect(answer).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE', logs: [], egress: [] });
      expect(answer.message).toBe(`send the call as application/json, not ${type.split(';')[0]!}`);
    }
    // JSON with parameters is JSON; no body at all is the schema's 400.
    const withCharset = await call(server, 'POST', '/plugins/count_vowels/call', {
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: '{"function":"count_vowels","input":"a"}',
    });
    expect(withCharset.status).toBe(200);
    const empty = await call(server, 'POST', '/plugins/count_vowels/call');
    expect(empty.status).toBe(400);
    expect(await empty.json()).toMatchObject({ code: 'INVALID_REQUEST' });
  });

  it('refuses values of the wrong type instead of converting them (400 INVALID_REQUEST)', async () => {
    for (const wrong of [
      { config: { k: 1 } },
      { timeoutMs: '100' },
      { input: 5 },
      { maxOutputBytes: true },
      { allowedHosts: '127.0.0.1' },
    ]) {
      const res = await call(server, 'POST', '/plugins/count_vowels/call', body({ function: 'count_vowels', ...wrong }));
      expect(res.status, JSON.stringify(wrong)).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'INVALID_REQUEST' });
    }
  });

  it('reports plugin failures (422) and timeouts (504)', async () => {
    expect((await call(server, 'POST', '/plugins/fail/call', body({ function: 'fail' }))).status).toBe(422);
    expect((await call(server, 'POST', '/plugins/loop/call', body({ function: 'spin', timeoutMs: 200 }))).status).toBe(504);
  });
});

describe('slow clients', () => {
  /** Sends the first bytes of a body and then nothing: the server cuts it at BODY_TIMEOUT_MS. */
  async function stalledBody(server: TestServer, url: string, contentType: string, first: string): Promise<number> {
    async function* firstThenNothing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from(first);
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    }
    const answer = await sendStreaming(server.url, {
      path: url,
      headers: { 'content-type': contentType, 'content-length': String(first.length + 1000) },
      chunks: firstThenNothing(),
    });
    const response = new Response(answer.body, { status: answer.status, headers: answer.headers });
    await expectContract('POST', url, response);
    covered.add(`POST ${matchPath(url)} ${answer.status}`);
    return answer.status;
  }

  it('cuts an upload or a call whose body does not arrive within BODY_TIMEOUT_MS (408)', async () => {
    const server = await start({ env: { BODY_TIMEOUT_MS: '500', BODY_MIN_BYTES_PER_SECOND: '0' } });
    const stored = await fetch(`${server.url}/plugins?name=count_vowels`, {
      method: 'POST',
      ...wasmBody(await readPlugin('count_vowels')),
    });
    expect(stored.status).toBe(201);
    expect(await stalledBody(server, '/plugins', 'application/wasm', '\0asm')).toBe(408);
    expect(await stalledBody(server, '/plugins/count_vowels/call', 'application/json', '{"function":')).toBe(408);
  });
});

describe('operations routes', () => {
  it('answers liveness, readiness and metrics (200), and readiness 503 NOT_READY when the store is unusable', async () => {
    const server = await start();
    expect((await call(server, 'GET', '/healthz')).status).toBe(200);
    expect((await call(server, 'GET', '/readyz')).status).toBe(200);
    expect((await call(server, 'GET', '/metrics')).status).toBe(200);
    const away = `${server.dataDir}.away`;
    await rename(server.dataDir, away);
    await writeFile(server.dataDir, 'not a directory');
    try {
      const ready = await call(server, 'GET', '/readyz');
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ code: 'NOT_READY' });
    } finally {
      await rm(server.dataDir, { force: true });
      await rename(away, server.dataDir);
    }
  });
});

describe('documentation routes', () => {
  it('serves the document and the UI (200)', async () => {
    const server = await start();
    for (const url of ['/openapi.yaml', '/openapi.json', '/docs']) expect((await call(server, 'GET', url)).status).toBe(200);
  });
});

describe('rules every documented operation shares', () => {
  it('answers 401 without a token and 403 for a token without the role, on every operation documenting them', async () => {
    const server = await start({ env: { AUTH_TOKENS: `${ADMIN}:admin,${INVOKE}:invoke`, METRICS_TOKEN: METRICS } });
    const stored = await fetch(`${server.url}/plugins`, { method: 'POST', ...wasmBody(vowels, bearer(ADMIN)) });
    expect(stored.status).toBe(201);
    for (const op of documentedOperations()) {
      if (op.statuses.includes('401')) {
        const { url, init } = requestFor(op.method, op.path);
        const res = await call(server, op.method, url, init);
        expect(res.status, `${op.method} ${op.path} without a token`).toBe(401);
      }
      if (op.statuses.includes('403')) {
        // The metrics token may only scrape; the invoke token may not manage plugins or scrape.
        const statuses: number[] = [];
        for (const token of [METRICS, INVOKE]) {
          const { url, init } = requestFor(op.method, op.path, bearer(token));
          statuses.push((await call(server, op.method, url, init)).status);
        }
        expect(statuses, `${op.method} ${op.path} with a token lacking the role`).toContain(403);
      }
    }
  });

  it('answers 429 RATE_LIMITED on every operation documenting it: once its bucket is spent, or after failed token attempts', async () => {
    const server = await start({
      env: { AUTH_TOKENS: `${ADMIN}:admin`, METRICS_TOKEN: METRICS, RATE_LIMIT_MAX: '1', AUTH_FAILURE_MAX: '1' },
    });
    const stored = await fetch(`${server.url}/plugins`, { method: 'POST', ...wasmBody(vowels, bearer(ADMIN)) });
    expect(stored.status).toBe(201);
    const limitedOps = documentedOperations().filter((o) => o.statuses.includes('429'));
    // Calls and uploads have a bucket per token.
    const bucketless: typeof limitedOps = [];
    for (const op of limitedOps) {
      const statuses: number[] = [];
      for (let i = 0; i < 3 && !statuses.includes(429); i++) {
        const { url, init } = requestFor(op.method, op.path, bearer(ADMIN));
        statuses.push((await call(server, op.method, url, init)).status);
      }
      if (!statuses.includes(429)) bucketless.push(op);
    }
    expect(bucketless.length, 'operations without a bucket').toBeLessThan(limitedOps.length);
    // One wrong token spends this address's failures: every operation needing a token answers 429, a valid token too.
    const guess = await call(server, 'GET', '/plugins', { headers: bearer('contract-wrong-guess-00001') });
    expect(guess.status).toBe(401);
    for (const op of bucketless) {
      const { url, init } = requestFor(op.method, op.path, bearer(op.path === '/metrics' ? METRICS : ADMIN));
      const res = await call(server, op.method, url, init);
      expect(res.status, `${op.method} ${op.path} after a failed token attempt`).toBe(429);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    }
  });

  it('answers 503 SHUTTING_DOWN on every operation documenting it once shutdown began', async () => {
    const server = await start();
    const stored = await fetch(`${server.url}/plugins`, { method: 'POST', ...wasmBody(vowels) });
    expect(stored.status).toBe(201);
    server.app.lifecycle.beginShutdown();
    for (const op of documentedOperations().filter((o) => o.statuses.includes('503'))) {
      const { url, init } = requestFor(op.method, op.path);
      const res = await call(server, op.method, url, init);
      expect(res.status, `${op.method} ${op.path} during shutdown`).toBe(503);
    }
  });
});

describe('coverage', () => {
  it('every response the servers sent, set-up requests included, matched openapi.yaml', () => {
    expect(serverSideProblems).toEqual([]);
  });

  it('produced every status code openapi.yaml documents for every operation', () => {
    const seen = (op: { method: string; path: string }, status: string): boolean =>
      /^[1-5]XX$/.test(status)
        ? [...covered].some((c) => c.startsWith(`${op.method} ${op.path} ${status[0]}`))
        : covered.has(`${op.method} ${op.path} ${status}`);
    const missing = documentedOperations().flatMap((op) =>
      op.statuses.filter((s) => s !== 'default' && !seen(op, s)).map((s) => `${op.method} ${op.path} ${s}`),
    );
    expect(missing, 'documented statuses no test here produced').toEqual([]);
  });
});

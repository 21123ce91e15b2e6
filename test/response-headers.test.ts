// `httpResponseHeaders: true` (extism call --enable-http-response-headers): http_headers answers the last
// response's headers as a JSON object, exactly as @extism/extism with allowHttpResponseHeaders does;
// without it, 0. The http plugin's fetch_headers export makes one request to a loopback upstream and
// answers what http_headers returned.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import createPlugin from '@extism/extism';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, useServer, type TestServer } from './helpers.ts';
import type { CallBody } from './test-client.ts';

/** Answers every path with fixed headers (no Date: two answers must be byte-identical), a 404 on /missing. */
async function startHeaderUpstream(): Promise<{ base: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.sendDate = false;
    res.statusCode = req.url === '/missing' ? 404 : 200;
    res.setHeader('content-type', 'text/plain; charset=utf-8');
    res.setHeader('X-Custom-Thing', 'Mixed Case Value');
    res.setHeader('x-repeated', ['one', 'two']);
    res.setHeader('connection', 'close');
    res.end(req.url === '/missing' ? 'not here' : 'hello');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface Answer {
  status: number;
  output: string | null;
  error: string | null;
}

/** The service's answer to the same request, in the shape viaSdk's is compared in. */
async function viaService(server: TestServer, plugin: string, input: string, extra: Partial<CallBody>): Promise<Answer> {
  const res = await server.api.call(plugin, { function: 'fetch_headers', input, allowedHosts: ['127.0.0.1'], ...extra });
  return res.ok
    ? { status: res.status, output: res.data.output ?? null, error: null }
    : { status: res.status, output: null, error: res.error.message };
}

const quiet = Object.fromEntries(['trace', 'debug', 'info', 'warn', 'error'].map((l) => [l, () => {}])) as unknown as Console;

/** The SDK's output for the same request, with or without allowHttpResponseHeaders. */
async function viaSdk(input: string, allowHttpResponseHeaders: boolean): Promise<string> {
  const sdk = await createPlugin(
    { wasm: [{ data: new Uint8Array(await readPlugin('http')) }] },
    { useWasi: false, allowedHosts: ['127.0.0.1'], allowHttpResponseHeaders, logger: quiet },
  );
  try {
    return (await sdk.call('fetch_headers', input))!.text();
  } finally {
    await sdk.close();
  }
}

describe('http_headers', () => {
  const server = useServer({
    env: { WORKERS: '1', EGRESS_ALLOW_PRIVATE: 'true', EGRESS_ALLOWED_HOSTS: '127.0.0.1', RATE_LIMIT_MAX: '0' },
  });
  let upstream: Awaited<ReturnType<typeof startHeaderUpstream>>;
  let plugin: string;

  beforeAll(async () => {
    upstream = await startHeaderUpstream();
    const res = await server.api.upload(await readPlugin('http'), { name: 'http' });
    expect(res.status).toBe(201);
    plugin = 'http';
  });

  afterAll(async () => {
    await upstream?.close();
  });

  it('answers 0 unless the call asks for response headers, as the SDK does', async () => {
    const input = JSON.stringify({ url: `${upstream.base}/ok` });
    const expected = await viaSdk(input, false);
    expect(JSON.parse(expected)).toEqual({ status: 200, body: 'hello', headers: null });
    for (const extra of [{}, {}, { httpResponseHeaders: false }]) {
      expect(await viaService(server, plugin, input, extra)).toEqual({ status: 200, output: expected, error: null });
    }
  });

  it('with httpResponseHeaders: true gives the last response headers as the SDK does, on a fresh and a recycled instance', async () => {
    for (const path of ['/ok', '/missing']) {
      const input = JSON.stringify({ url: `${upstream.base}${path}` });
      const expected = await viaSdk(input, true);
      expect(JSON.parse(expected)).toEqual({
        status: path === '/ok' ? 200 : 404,
        body: path === '/ok' ? 'hello' : 'not here',
        headers: {
          connection: 'close',
          'content-length': path === '/ok' ? '5' : '8',
          'content-type': 'text/plain; charset=utf-8',
          'x-custom-thing': 'Mixed Case Value',
          'x-repeated': 'one, two',
        },
      });
      for (let i = 0; i < 2; i++) {
        expect(await viaService(server, plugin, input, { httpResponseHeaders: true })).toEqual({
          status: 200,
          output: expected,
          error: null,
        });
      }
    }
  });

  it('does not carry one call’s response headers into the next call', async () => {
    const input = JSON.stringify({ url: `${upstream.base}/ok` });
    expect(JSON.parse((await viaService(server, plugin, input, { httpResponseHeaders: true })).output!).headers).not.toBeNull();
    expect(JSON.parse((await viaService(server, plugin, input, {})).output!).headers).toBeNull();
  });
});

// Malformed requests and slow clients, through HTTP against the service in a process of its own:
// bodies and headers that trickle or never come, forms without a boundary or cut short, names and
// configs given twice or too big, broken HTTP. Each gets a clear answer in the service's error shape
// and lets go of what it held (an upload slot); afterwards /healthz answers, a normal call works and
// RSS stays bounded.
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { type ChildServer, childServerForTest, metricsOf, useContainedServer } from './child-server.ts';
import { sampleValue } from './prom-text.ts';
import { loadConfig } from '../src/config.ts';
import type { Plugin } from './test-client.ts';
import { RATE_WINDOW_MS } from '../src/api/slow-clients.ts';
import { clientOf } from '../src/api/connection-limits.ts';
import { readPlugin, sendStreaming, tinyPluginWat, wat } from './helpers.ts';

const MiB = 1024 * 1024;
const ENV = {
  WORKERS: '2',
  BURST_WORKERS: '1',
  UPLOAD_CONCURRENCY: '2',
  HEADERS_TIMEOUT_MS: '1000',
  BODY_TIMEOUT_MS: '8000',
  BODY_MIN_BYTES_PER_SECOND: '200',
  CONFIG_MAX_KEYS: '256',
  CONFIG_MAX_BYTES: String(64 * 1024),
  MAX_EVENT_LOOP_DELAY_MS: '0',
};
const RSS_LIMIT = 1024 * MiB;

let server: ChildServer;
let plugins = 0;

useContainedServer(ENV, RSS_LIMIT, (started) => (server = started));

/** `bytes` in pieces of `size` with a pause of `pauseMs` before each. */
async function* trickle(bytes: Uint8Array, size: number, pauseMs: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) {
    await sleep(pauseMs);
    yield bytes.subarray(at, at + size);
  }
}

const json = (text: string): { code?: string; message?: string; statusCode?: number; error?: string } => JSON.parse(text);

/** Writes `text` on a raw connection (in pieces of `size` every `pauseMs`, or at once) and returns what came back. */
async function rawExchange(text: string | Buffer, options: { size?: number; pauseMs?: number } = {}): Promise<string> {
  const { port } = new URL(server.url);
  const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
  await once(socket, 'connect');
  let received = '';
  const closed = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      if (isWholeAnswer(received)) resolve();
    });
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  const bytes = Buffer.from(text);
  const size = options.size ?? bytes.length;
  for (let at = 0; at < bytes.length && !socket.destroyed && received === ''; at += size) {
    if (options.pauseMs) await sleep(options.pauseMs);
    if (!socket.destroyed) socket.write(bytes.subarray(at, at + size));
  }
  // Nothing more is sent; the server answers (or closes) on its own.
  await Promise.race([closed, sleep(30_000)]);
  socket.destroy();
  return received;
}

function isWholeAnswer(text: string): boolean {
  const end = text.indexOf('\r\n\r\n');
  const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1];
  return end > 0 && length !== undefined && Buffer.byteLength(text.slice(end + 4), 'latin1') >= Number(length);
}

/** Status line and JSON body of a raw HTTP answer. */
function parseRaw(text: string): { status: number; body: ReturnType<typeof json> } {
  const end = text.indexOf('\r\n\r\n');
  expect(end, `no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`).toBeGreaterThan(0);
  return { status: Number(text.slice(0, end).split(' ')[1]), body: json(text.slice(end + 4)) };
}

function form(parts: { name: string; value: string | Uint8Array; filename?: string }[], boundary = 'wasmhost-boundary'): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.filename ? `; filename="${part.filename}"` : ''}`;
    const type = part.filename ? '\r\ncontent-type: application/wasm' : '';
    chunks.push(
      Buffer.from(`--${boundary}\r\ncontent-disposition: ${disposition}${type}\r\n\r\n`),
      Buffer.from(part.value),
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

describe('slow bodies', () => {
  it('cuts an upload trickled below BODY_MIN_BYTES_PER_SECOND with 408 REQUEST_TIMEOUT and stores nothing', async () => {
    const bytes = await readPlugin('count_vowels');
    const answer = await sendStreaming(server.url, {
      path: '/plugins?name=trickled',
      headers: { 'content-type': 'application/wasm', 'content-length': String(bytes.length) },
      chunks: trickle(bytes, 1, 500),
    });
    expect([answer.status, json(answer.body).code]).toEqual([408, 'REQUEST_TIMEOUT']);
    expect(json(answer.body).message).toMatch(/BODY_MIN_BYTES_PER_SECOND/);
    expect(answer.bytesSent).toBeLessThan(bytes.length);
    expect((await server.api.list({ name: 'trickled' })).data.plugins).toEqual([]);
  });

  it('frees the upload slots of two trickling uploads: both are cut (408), then uploads are taken again (201)', async () => {
    const bytes = await readPlugin('count_vowels');
    const slow = (name: string) =>
      sendStreaming(server.url, {
        path: `/plugins?name=${name}`,
        headers: { 'content-type': 'application/wasm', 'content-length': String(bytes.length) },
        chunks: trickle(bytes, 1, 1000),
      });
    const first = slow('slow-a');
    const second = slow('slow-b');
    // Both slots are held while they trickle (UPLOAD_CONCURRENCY 2): a third is refused, as documented.
    await sleep(300);
    const refused = await server.api.upload(await wat(tinyPluginWat(++plugins)), { name: 'third' });
    expect([refused.status, refused.error.code]).toEqual([503, 'OVERLOADED']);
    const answers = await Promise.all([first, second]);
    expect(answers.map((a) => [a.status, json(a.body).code])).toEqual([
      [408, 'REQUEST_TIMEOUT'],
      [408, 'REQUEST_TIMEOUT'],
    ]);
    // Two at once: both slots are free again.
    const uploads = await Promise.all(
      [1, 2].map(async () => {
        const name = `after-${++plugins}`;
        return server.api.upload(await wat(tinyPluginWat(plugins)), { name });
      }),
    );
    expect(uploads.map((u) => u.status)).toEqual([201, 201]);
  });

  it('cuts a multipart upload trickled below the minimum rate with 408 REQUEST_TIMEOUT', async () => {
    const body = form([{ name: 'file', value: await readPlugin('count_vowels'), filename: 'a.wasm' }]);
    const answer = await sendStreaming(server.url, {
      path: '/plugins?name=trickled-form',
      headers: { 'content-type': 'multipart/form-data; boundary=wasmhost-boundary', 'content-length': String(body.length) },
      chunks: trickle(body, 1, 500),
    });
    expect([answer.status, json(answer.body).code]).toEqual([408, 'REQUEST_TIMEOUT']);
    expect((await server.api.list({ name: 'trickled-form' })).data.plugins).toEqual([]);
  });

  it('cuts an upload that keeps the minimum rate but passes BODY_TIMEOUT_MS with 408 REQUEST_TIMEOUT', async () => {
    const bytes = Buffer.alloc(4 * MiB, 1);
    const answer = await sendStreaming(server.url, {
      path: '/plugins?name=too-long',
      headers: { 'content-type': 'application/wasm', 'content-length': String(bytes.length) },
      chunks: trickle(bytes, 1000, 250),
    });
    expect([answer.status, json(answer.body).code]).toEqual([408, 'REQUEST_TIMEOUT']);
    expect(json(answer.body).message).toMatch(/BODY_TIMEOUT_MS/);
  });

  it('cuts a call body that does not arrive with 408 REQUEST_TIMEOUT, with the fields of every call answer', async () => {
    const body = Buffer.from(JSON.stringify({ function: 'count_vowels', input: 'a'.repeat(100) }));
    const answer = await sendStreaming(server.url, {
      path: '/plugins/count_vowels/call',
      headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
      chunks: trickle(body, 1, 600),
    });
    expect(answer.status).toBe(408);
    expect(json(answer.body)).toMatchObject({ code: 'REQUEST_TIMEOUT', logs: [], egress: [] });
  });

  it('cuts a chunked call body that stops after its first chunk with 408 REQUEST_TIMEOUT', async () => {
    async function* stalled(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('{"function":"count_vowels",');
      // Past the first rate window: the answer has come by then, and nothing more is sent.
      await sleep(RATE_WINDOW_MS + 3_000);
    }
    const answer = await sendStreaming(server.url, {
      path: '/plugins/count_vowels/call',
      headers: { 'content-type': 'application/json' },
      chunks: stalled(),
    });
    expect([answer.status, json(answer.body).code]).toEqual([408, 'REQUEST_TIMEOUT']);
  });

  it.each([
    ['a call answered 415 before its body is read', 'POST /plugins/count_vowels/call', 'text/plain', '415'],
    ['a GET whose route takes no body', 'GET /plugins', 'application/json', '200'],
  ])('closes the connection of %s once its body is past BODY_TIMEOUT_MS (it stayed open)', async (_what, line, type, status) => {
    const { port } = new URL(server.url);
    const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
    await once(socket, 'connect');
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = once(socket, 'close').then(() => 'closed');
    socket.write(`${line} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: ${type}\r\ncontent-length: 100\r\n\r\nx`);
    // The server answers at once; the other 99 bytes never come. BODY_TIMEOUT_MS is 8 s here.
    const outcome = await Promise.race([closed, sleep(20_000).then(() => 'still open')]);
    socket.destroy();
    expect(received.split(' ')[1]).toBe(status);
    expect(outcome).toBe('closed');
  });

  it('frees the upload slot of a client that hangs up mid-body (two uploads are taken after)', async () => {
    const bytes = await readPlugin('count_vowels');
    const { port } = new URL(server.url);
    for (let i = 0; i < 2; i++) {
      const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
      await once(socket, 'connect');
      socket.write(
        `POST /plugins HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/wasm\r\ncontent-length: ${bytes.length}\r\n\r\n`,
      );
      socket.write(bytes.subarray(0, 100));
      await sleep(100);
      socket.destroy();
    }
    await sleep(200);
    const uploads = await Promise.all(
      [1, 2].map(async () => {
        const name = `hung-${++plugins}`;
        return server.api.upload(await wat(tinyPluginWat(plugins)), { name });
      }),
    );
    expect(uploads.map((u) => u.status)).toEqual([201, 201]);
  });
});

describe('slow and broken headers', () => {
  it('answers headers that trickle past HEADERS_TIMEOUT_MS with 408 REQUEST_TIMEOUT in the service error shape', async () => {
    const text = await rawExchange('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ' + 'a'.repeat(100), {
      size: 1,
      pauseMs: 100,
    });
    const { status, body } = parseRaw(text);
    expect(status).toBe(408);
    expect(body).toMatchObject({ statusCode: 408, code: 'REQUEST_TIMEOUT', error: 'Request Timeout' });
    expect(body.message).toMatch(/HEADERS_TIMEOUT_MS/);
  });

  it('answers a connection that never sends a byte with 408 REQUEST_TIMEOUT and closes it', async () => {
    const { status, body } = parseRaw(await rawExchange(''));
    expect([status, body.code]).toEqual([408, 'REQUEST_TIMEOUT']);
  });

  it('answers 50 idle connections each with 408 and keeps serving meanwhile', async () => {
    const idle = Array.from({ length: 50 }, () => rawExchange('POST /plugins HTTP/1.1\r\nhost: 127.0.0.1\r\n'));
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const answers = await Promise.all(idle);
    expect(answers.map((a) => parseRaw(a).body.code)).toEqual(Array(50).fill('REQUEST_TIMEOUT'));
  });

  it('answers headers over the size Node accepts with 431 HEADERS_TOO_LARGE', async () => {
    const { status, body } = parseRaw(
      await rawExchange(`GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ${'b'.repeat(64 * 1024)}\r\n\r\n`),
    );
    expect([status, body.code]).toEqual([431, 'HEADERS_TOO_LARGE']);
  });

  it('answers a 100 KB URL with 431 HEADERS_TOO_LARGE', async () => {
    const { status, body } = parseRaw(
      await rawExchange(`GET /plugins/${'x'.repeat(100_000)} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`),
    );
    expect([status, body.code]).toEqual([431, 'HEADERS_TOO_LARGE']);
  });

  it('answers a request line that is not HTTP with 400 INVALID_REQUEST', async () => {
    const { status, body } = parseRaw(await rawExchange('HELLO THERE\r\n\r\n'));
    expect([status, body.code]).toEqual([400, 'INVALID_REQUEST']);
  });

  it('answers a broken chunk size with 400 INVALID_REQUEST', async () => {
    const { status, body } = parseRaw(
      await rawExchange(
        'POST /plugins/count_vowels/call HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
      ),
    );
    expect([status, body.code]).toEqual([400, 'INVALID_REQUEST']);
  });

  it('answers both Content-Length and Transfer-Encoding (request smuggling) with 400 INVALID_REQUEST', async () => {
    const { status, body } = parseRaw(
      await rawExchange(
        'POST /plugins/count_vowels/call HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n',
      ),
    );
    expect([status, body.code]).toEqual([400, 'INVALID_REQUEST']);
  });
});

describe('malformed uploads', () => {
  // Bodies built by hand: what no client would send.

  it('answers a multipart upload without a boundary with 400 INVALID_REQUEST (it answered 500)', async () => {
    const res = await server.api.request('POST', '/plugins', {
      headers: { 'content-type': 'multipart/form-data' },
      body: form([{ name: 'file', value: 'x', filename: 'a.wasm' }]) as Uint8Array<ArrayBuffer>,
    });
    expect([res.status, res.error.code]).toEqual([400, 'INVALID_REQUEST']);
  });

  it('answers a multipart upload cut before its closing boundary with 400 INVALID_REQUEST (it answered 500)', async () => {
    const whole = form([
      { name: 'name', value: 'cut-form' },
      { name: 'file', value: await readPlugin('count_vowels'), filename: 'a.wasm' },
    ]);
    const res = await server.api.request('POST', '/plugins', {
      headers: { 'content-type': 'multipart/form-data; boundary=wasmhost-boundary' },
      body: whole.subarray(0, whole.length - 40) as Uint8Array<ArrayBuffer>,
    });
    const body = res.error;
    expect([res.status, body.code]).toEqual([400, 'INVALID_REQUEST']);
    expect(body.message).toMatch(/multipart/);
    expect((await server.api.list({ name: 'cut-form' })).data.plugins).toEqual([]);
  });

  it('answers a multipart body of garbage with 400 (no file part)', async () => {
    const res = await server.api.request('POST', '/plugins', {
      headers: { 'content-type': 'multipart/form-data; boundary=wasmhost-boundary' },
      body: 'this is not a form at all',
    });
    expect(res.status).toBe(400);
    expect(['INVALID_REQUEST', 'MISSING_FILE']).toContain(res.error.code);
  });

  it('answers a multipart boundary of 200 characters (over the RFC limit) with 400, not 500', async () => {
    const boundary = 'b'.repeat(200);
    const res = await server.api.request('POST', '/plugins', {
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      body: form([{ name: 'file', value: 'x', filename: 'a.wasm' }], boundary) as Uint8Array<ArrayBuffer>,
    });
    expect(res.status).toBeLessThan(500);
  });

  it('answers a name given both as form field and query with 400 INVALID_REQUEST and stores nothing (it picked one)', async () => {
    const body = form([
      { name: 'name', value: 'from-form' },
      { name: 'file', value: await readPlugin('count_vowels'), filename: 'a.wasm' },
    ]);
    const res = await server.api.request('POST', '/plugins?name=from-query', {
      headers: { 'content-type': 'multipart/form-data; boundary=wasmhost-boundary' },
      body: body as Uint8Array<ArrayBuffer>,
    });
    const answer = res.error;
    expect([res.status, answer.code]).toEqual([400, 'INVALID_REQUEST']);
    expect(answer.message).toMatch(/name is given twice/);
    expect((await server.api.list({ name: 'from-form' })).data.plugins).toEqual([]);
    expect((await server.api.list({ name: 'from-query' })).data.plugins).toEqual([]);
  });

  it('takes the form field name when the query name is empty (a cleared input), 201', async () => {
    const body = form([
      { name: 'name', value: 'form-wins' },
      { name: 'file', value: await wat(tinyPluginWat(++plugins)), filename: 'a.wasm' },
    ]);
    const res = await server.api.request<Plugin>('POST', '/plugins?name=', {
      headers: { 'content-type': 'multipart/form-data; boundary=wasmhost-boundary' },
      body: body as Uint8Array<ArrayBuffer>,
    });
    expect([res.status, res.data.name]).toEqual([201, 'form-wins']);
  });

  it('answers a form config of 300 keys with 400 INVALID_CONFIG naming CONFIG_MAX_KEYS', async () => {
    const config = JSON.stringify(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, 'v'])));
    const body = form([
      { name: 'config', value: config },
      { name: 'file', value: await readPlugin('count_vowels'), filename: 'a.wasm' },
    ]);
    const res = await server.api.request('POST', '/plugins', {
      headers: { 'content-type': 'multipart/form-data; boundary=wasmhost-boundary' },
      body: body as Uint8Array<ArrayBuffer>,
    });
    const answer = res.error;
    expect([res.status, answer.code]).toEqual([400, 'INVALID_CONFIG']);
    expect(answer.message).toMatch(/CONFIG_MAX_KEYS/);
  });

  it('answers a Content-Length over MAX_PLUGIN_BYTES with 413 before reading the body', async () => {
    const { status, body } = parseRaw(
      await rawExchange(
        `POST /plugins HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/wasm\r\ncontent-length: ${64 * MiB}\r\n\r\n`,
      ),
    );
    expect([status, body.code]).toEqual([413, 'PLUGIN_TOO_LARGE']);
  });
});

describe('malformed calls', () => {
  it('answers a call config of 200,000 keys with 400 INVALID_CONFIG naming CONFIG_MAX_KEYS (it ran, and logged 4.5 MB)', async () => {
    const config = Object.fromEntries(Array.from({ length: 200_000 }, (_, i) => [`k${i}`, 'v']));
    const answer = await server.api.call('count_vowels', { function: 'count_vowels', input: 'x', config });
    expect([answer.status, answer.error.code]).toEqual([400, 'INVALID_CONFIG']);
    expect(answer.error.message).toMatch(/200000 keys; the limit is 256 \(CONFIG_MAX_KEYS\)/);
  });

  it('answers a call config holding 100 KiB with 400 INVALID_CONFIG naming CONFIG_MAX_BYTES', async () => {
    const answer = await server.api.call('count_vowels', {
      function: 'count_vowels',
      config: { big: 'x'.repeat(100 * 1024) },
    });
    expect([answer.status, answer.error.code]).toEqual([400, 'INVALID_CONFIG']);
    expect(answer.error.message).toMatch(/CONFIG_MAX_BYTES/);
  });

  it('runs a call config at the limits (256 keys, 200)', async () => {
    const config = Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`k${i}`, 'v']));
    expect((await server.api.call('count_vowels', { function: 'count_vowels', input: 'aa', config })).status).toBe(200);
  });

  it('answers a config nested 10,000 levels deep with 400 INVALID_REQUEST', async () => {
    const body = `{"function":"count_vowels","config":${'{"a":'.repeat(10_000)}"x"${'}'.repeat(10_000)}}`;
    const res = await server.api.request('POST', '/plugins/count_vowels/call', {
      headers: { 'content-type': 'application/json' },
      body,
    });
    expect([res.status, res.error.code]).toEqual([400, 'INVALID_REQUEST']);
  });

  it('answers a body that is not JSON with 400 INVALID_REQUEST', async () => {
    const res = await server.api.request('POST', '/plugins/count_vowels/call', {
      headers: { 'content-type': 'application/json' },
      body: '{"function": "count_vowels", ',
    });
    expect([res.status, res.error.code]).toEqual([400, 'INVALID_REQUEST']);
  });

  it('answers a JSON body with __proto__ keys without polluting anything (400 INVALID_REQUEST)', async () => {
    const res = await server.api.request('POST', '/plugins/count_vowels/call', {
      headers: { 'content-type': 'application/json' },
      body: '{"function":"count_vowels","__proto__":{"polluted":true}}',
    });
    expect(res.status).toBe(400);
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
  });

  it('answers a function name of 10,000 characters with 400 INVALID_REQUEST', async () => {
    const answer = await server.api.call('count_vowels', { function: 'f'.repeat(10_000) });
    expect([answer.status, answer.error.code]).toEqual([400, 'INVALID_REQUEST']);
  });
});

/** A raw connection that sends `request` and reads the answer as `read` says: `stall` stops after the first chunk. */
function rawCall(request: string, url = server.url): { socket: net.Socket; chunks: Buffer[]; closed: Promise<void> } {
  const { port } = new URL(url);
  const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
  const chunks: Buffer[] = [];
  socket.on('connect', () => socket.write(request));
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => undefined);
  return { socket, chunks, closed: once(socket, 'close').then(() => undefined) };
}

function hugeCall(outputBytes: number): string {
  // The deadline at its ceiling: making 16 MB on a loaded machine can pass the default 5 s.
  const body = JSON.stringify({ function: 'huge', input: String(outputBytes), maxOutputBytes: 16 * MiB, timeoutMs: 60_000 });
  return `POST /plugins/huge/call HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
}

/** The content-length of a raw answer and how many body bytes came. */
function bodyProgress(chunks: Buffer[]): { length: number; received: number } {
  const text = Buffer.concat(chunks);
  const end = text.indexOf('\r\n\r\n');
  const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.subarray(0, end).toString('latin1'))?.[1]);
  return { length, received: text.length - end - 4 };
}

describe('slow readers', () => {
  it('closes the connection of a client that stops reading a 16 MB answer, past RESPONSE_MIN_BYTES_PER_SECOND (it was held, with the answer in memory)', async () => {
    await server.api.uploaded(await readPlugin('huge_output'), { name: 'huge' });
    const { socket, chunks, closed } = rawCall(hugeCall(16_000_000));
    await once(socket, 'data');
    socket.pause();
    expect(chunks[0]!.toString('latin1')).toMatch(/^HTTP\/1.1 200/);
    // Two rate windows and some: the server has judged it by then. Then read what is left.
    await sleep(2 * RATE_WINDOW_MS + 3_000);
    socket.resume();
    const outcome = await Promise.race([closed.then(() => 'closed'), sleep(30_000).then(() => 'still open')]);
    socket.destroy();
    expect(outcome).toBe('closed');
    const { length, received } = bodyProgress(chunks);
    expect(length).toBeGreaterThan(16_000_000);
    expect(received).toBeLessThan(length);
  }, 120_000);

  it('sends the whole answer to a client that reads slowly but above the minimum rate', async () => {
    await server.api.uploaded(await readPlugin('huge_output'), { name: 'huge' });
    const { socket, chunks, closed } = rawCall(hugeCall(4_000_000));
    // About 64 KiB per 100 ms: past a rate window, far above 4096 bytes/s.
    socket.on('data', () => {
      socket.pause();
      setTimeout(() => socket.resume(), 100);
    });
    const whole = new Promise<void>((resolve) =>
      socket.on('data', () => {
        const { length, received } = bodyProgress(chunks);
        if (received >= length) resolve();
      }),
    );
    const outcome = await Promise.race([
      whole.then(() => 'whole'),
      closed.then(() => 'closed'),
      sleep(60_000).then(() => 'timeout'),
    ]);
    socket.destroy();
    expect(outcome).toBe('whole');
    expect(bodyProgress(chunks).length).toBeGreaterThan(4_000_000);
  }, 120_000);

  it('closes a keep-alive connection left idle past KEEP_ALIVE_TIMEOUT_MS (Fastify kept it 72 s)', async () => {
    // A server of its own: a short keep-alive would race this file's fetch reusing its idle connections.
    const own = await childServerForTest({ KEEP_ALIVE_TIMEOUT_MS: '2000' });
    const { socket, chunks, closed } = rawCall('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n', own.url);
    const outcome = await Promise.race([closed.then(() => 'closed'), sleep(20_000).then(() => 'still open')]);
    socket.destroy();
    expect(Buffer.concat(chunks).toString('latin1')).toMatch(/^HTTP\/1.1 200/);
    expect(outcome).toBe('closed');
  }, 120_000);
});

/** Connections, each sending GET /healthz and then held open (keep-alive); from `localAddress` when given. */
async function holdConnections(
  url: string,
  count: number,
  localAddress?: string,
): Promise<{ answered: number; refused: number; sockets: net.Socket[] }> {
  const { port } = new URL(url);
  const sockets: net.Socket[] = [];
  const outcomes: Promise<'answered' | 'refused'>[] = [];
  for (let i = 0; i < count; i++) {
    const socket = net.connect({ host: '127.0.0.1', port: Number(port), ...(localAddress ? { localAddress } : {}) });
    sockets.push(socket);
    outcomes.push(
      new Promise((resolve) => {
        socket.on('connect', () => socket.write('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n'));
        socket.once('data', (d: Buffer) => resolve(d.toString('latin1').startsWith('HTTP/1.1 200') ? 'answered' : 'refused'));
        socket.on('close', () => resolve('refused'));
        socket.on('error', () => resolve('refused'));
      }),
    );
    // A pause now and then: the server accepts as the client connects, not all in one burst.
    if (i % 50 === 49) await sleep(50);
  }
  const settled = await Promise.race([Promise.all(outcomes), sleep(30_000).then(() => null)]);
  expect(settled, 'every connection was answered or closed').not.toBeNull();
  const answered = settled!.filter((o) => o === 'answered').length;
  return { answered, refused: count - answered, sockets };
}

/** A raw keep-alive connection that already had one answer, to ask more of the server later. */
async function openedConnection(
  url: string,
): Promise<{ ask: (request: string | Buffer) => Promise<string>; socket: net.Socket }> {
  const { port } = new URL(url);
  const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
  let received = '';
  let waiting: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    received += d.toString('latin1');
    if (isWholeAnswer(received)) waiting?.();
  });
  socket.on('error', () => undefined);
  const ask = async (request: string | Buffer) => {
    received = '';
    const answered = new Promise<void>((resolve) => (waiting = resolve));
    socket.write(request);
    await Promise.race([answered, once(socket, 'close'), sleep(20_000)]);
    return received;
  };
  await once(socket, 'connect');
  expect(parseRaw(await ask('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n')).status).toBe(200);
  return { ask, socket };
}

describe('descriptor exhaustion', () => {
  // The process's own open-files limit: as low as `ulimit -n 256` so a test reaches it with a few hundred connections.
  const OPEN_FILES = 256;
  const OWN_ENV = { WORKERS: '1', BURST_WORKERS: '0' };
  /** A server whose connections are not capped below its descriptors (MAX_CONNECTIONS past ulimit -n), so they run out. */
  const uncappedServer = () =>
    childServerForTest(
      {
        ...OWN_ENV,
        MAX_CONNECTIONS: '1000',
        MAX_CONNECTIONS_PER_ADDRESS: '0',
        MAX_EVENT_LOOP_DELAY_MS: '5000',
        MAX_HEAP_USED_BYTES: String(4096 * MiB),
      },
      undefined,
      { openFiles: OPEN_FILES },
    );

  it('caps connections by default from ulimit -n: per address and in all; past the caps they are closed, and it still serves after', async () => {
    const own = await childServerForTest(OWN_ENV, undefined, { openFiles: OPEN_FILES });
    // What the process derived from its limit (Node raises the soft limit to the hard one, both 256 here).
    const { max, perAddress } = loadConfig(OWN_ENV, { descriptorLimit: OPEN_FILES }).connections;
    expect(perAddress).toBeLessThan(max);
    expect(max).toBeLessThan(OPEN_FILES / 2);

    // One client address (not 127.0.0.1, where this process's fetch keeps connections): only its share.
    const one = await holdConnections(own.url, 300, '127.0.0.2');
    expect(one.answered).toBe(perAddress);
    // Other loopback addresses: the rest of MAX_CONNECTIONS, no more (less the few this process's fetch holds).
    const others = await Promise.all(
      ['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'].map((address) => holdConnections(own.url, 60, address)),
    );
    const answered = one.answered + others.reduce((sum, o) => sum + o.answered, 0);
    expect(answered).toBeLessThanOrEqual(max);
    expect(answered).toBeGreaterThanOrEqual(max - 4);
    expect(own.alive(), own.output().slice(-2000)).toBe(true);

    for (const socket of [one, ...others].flatMap((o) => o.sockets)) socket.destroy();
    await sleep(500);
    const metrics = await metricsOf(own);
    expect(sampleValue(metrics, 'wasmhost_connections_refused_total', { reason: 'per_address' })).toBe(300 - perAddress);
    expect(sampleValue(metrics, 'wasmhost_connections_refused_total', { reason: 'max_connections' })).toBeGreaterThan(0);
    expect((await fetch(`${own.url}/healthz`)).status).toBe(200);
    await own.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
    const call = await own.api.call('count_vowels', { function: 'count_vowels', input: 'Hello, World!' });
    expect([call.status, call.data.output]).toEqual([200, '{"count":3,"total":3,"vowels":"aeiouAEIOU"}']);
  }, 120_000);

  it('survives running out of descriptors (MAX_CONNECTIONS set past ulimit -n): what needs one fails, then it serves again (it exited: EMFILE in a timer)', async () => {
    const own = await uncappedServer();
    expect(own.output()).toContain('MAX_CONNECTIONS may need more descriptors than the process may open');
    await own.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
    const control = await openedConnection(own.url);

    const held = await holdConnections(own.url, 300);
    expect(held.answered).toBeLessThan(OPEN_FILES);
    // The load-shedding sampler runs every 500 ms: it used to throw EMFILE uncaught within 2 s.
    await sleep(2_000);
    expect(own.alive(), own.output().slice(-2000)).toBe(true);
    // Over a connection it already had: what needs a descriptor fails in the error shape; a call still runs.
    const ready = parseRaw(await control.ask('GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n'));
    expect([ready.status, ready.body.code]).toEqual([503, 'NOT_READY']);
    const bytes = await wat(tinyPluginWat(++plugins));
    const upload = parseRaw(
      await control.ask(
        Buffer.concat([
          Buffer.from(
            `POST /plugins HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/wasm\r\ncontent-length: ${bytes.length}\r\n\r\n`,
          ),
          bytes,
        ]),
      ),
    );
    expect([upload.status, upload.body.code]).toEqual([500, 'STORE_ERROR']);
    const body = JSON.stringify({ function: 'count_vowels', input: 'aeiou' });
    const call = parseRaw(
      await control.ask(
        `POST /plugins/count_vowels/call HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      ),
    );
    expect(call.status).toBe(200);

    for (const socket of [...held.sockets, control.socket]) socket.destroy();
    await sleep(500);
    expect(own.alive(), own.output().slice(-2000)).toBe(true);
    expect((await fetch(`${own.url}/readyz`)).status).toBe(200);
    expect((await own.api.upload(bytes, { name: 'after-exhaustion' })).status).toBe(201);
  }, 120_000);

  it('answers a download while out of descriptors 503 STORE_UNAVAILABLE (retry), without marking the plugin damaged (it was 500 STORE_ERROR and counted damaged)', async () => {
    const own = await uncappedServer();
    const stored = await own.api.uploaded(await readPlugin('count_vowels'), { name: 'count_vowels' });
    const control = await openedConnection(own.url);
    const held = await holdConnections(own.url, 300);
    expect(held.answered).toBeLessThan(OPEN_FILES);
    const download = parseRaw(await control.ask('GET /plugins/count_vowels/wasm HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n'));
    expect([download.status, download.body.code]).toEqual([503, 'STORE_UNAVAILABLE']);

    for (const socket of [...held.sockets, control.socket]) socket.destroy();
    await sleep(500);
    expect(sampleValue(await metricsOf(own), 'wasmhost_plugins_damaged')).toBe(0);
    expect(own.output()).not.toContain('the stored bytes of a plugin cannot be read"');
    const again = await fetch(`${own.url}/plugins/count_vowels/wasm`);
    expect([again.status, again.headers.get('etag')]).toEqual([200, `"${stored.id}"`]);
    expect(Buffer.from(await again.arrayBuffer())).toEqual(await readPlugin('count_vowels'));
  });
});

describe('requests from other sites (the service runs open on 127.0.0.1)', () => {
  /** A multipart upload as a browser sends a form, with `headers` added. */
  function formUpload(name: string, bytes: Uint8Array, headers: string): string {
    const body = form([
      { name: 'file', value: bytes, filename: 'a.wasm' },
      { name: 'name', value: name },
    ]).toString('latin1');
    return (
      `POST /plugins HTTP/1.1\r\nhost: ${new URL(server.url).host}\r\n${headers}` +
      `content-type: multipart/form-data; boundary=wasmhost-boundary\r\ncontent-length: ${body.length}\r\n\r\n${body}`
    );
  }

  it('refuses a cross-site form upload with 403 CROSS_SITE_REQUEST and stores nothing (it answered 201)', async () => {
    const bytes = await wat(tinyPluginWat(++plugins));
    const crossSite =
      'origin: http://evil.example\r\nreferer: http://evil.example/page\r\nsec-fetch-site: cross-site\r\nsec-fetch-mode: no-cors\r\n';
    const answer = parseRaw(await rawExchange(Buffer.from(formUpload('csrf-a', bytes, crossSite), 'latin1')));
    expect([answer.status, answer.body.code]).toEqual([403, 'CROSS_SITE_REQUEST']);
    // An Origin of another site alone (an older browser), or of another port of this host.
    for (const origin of ['http://evil.example', 'http://127.0.0.1:1', 'null']) {
      const alone = parseRaw(await rawExchange(Buffer.from(formUpload('csrf-b', bytes, `origin: ${origin}\r\n`), 'latin1')));
      expect([origin, alone.status, alone.body.code]).toEqual([origin, 403, 'CROSS_SITE_REQUEST']);
    }
    expect((await server.api.list({ name: 'csrf-a' })).data.plugins).toEqual([]);
    expect((await server.api.list({ name: 'csrf-b' })).data.plugins).toEqual([]);
  });

  it('refuses a cross-site delete and call, and takes the same from its own pages (Origin and Sec-Fetch-Site of this service)', async () => {
    const name = `kept-${++plugins}`;
    await server.api.uploaded(await wat(tinyPluginWat(plugins)), { name });
    const host = new URL(server.url).host;
    const cross = 'origin: http://evil.example\r\nsec-fetch-site: cross-site\r\n';
    const del = parseRaw(await rawExchange(`DELETE /plugins/${name} HTTP/1.1\r\nhost: ${host}\r\n${cross}\r\n`));
    expect([del.status, del.body.code]).toEqual([403, 'CROSS_SITE_REQUEST']);
    const body = JSON.stringify({ function: 'count_vowels', input: 'aeiou' });
    const callRequest = (headers: string) =>
      `POST /plugins/count_vowels/call HTTP/1.1\r\nhost: ${host}\r\n${headers}content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const call = parseRaw(await rawExchange(callRequest(cross)));
    expect([call.status, call.body.code]).toEqual([403, 'CROSS_SITE_REQUEST']);
    // Reading is not refused: another site's page cannot read the answer (no CORS headers), and links must work.
    expect(parseRaw(await rawExchange(`GET /plugins/${name} HTTP/1.1\r\nhost: ${host}\r\n${cross}\r\n`)).status).toBe(200);

    const own = `origin: ${server.url}\r\nsec-fetch-site: same-origin\r\n`;
    expect(parseRaw(await rawExchange(callRequest(own))).status).toBe(200);
    // A 204 has no length to wait for: the server closes after it.
    const ownDelete = await rawExchange(`DELETE /plugins/${name} HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n${own}\r\n`);
    expect(ownDelete.split(' ')[1]).toBe('204');
  });

  it('answers a Host that is not a name of its loopback address with 403 UNTRUSTED_HOST (DNS rebinding: it served stored config)', async () => {
    const { port } = new URL(server.url);
    const list = (host: string) => rawExchange(`GET /plugins HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
    const rebound = parseRaw(await list(`rebind.evil.example:${port}`));
    expect([rebound.status, rebound.body.code]).toEqual([403, 'UNTRUSTED_HOST']);
    expect(JSON.stringify(rebound.body)).not.toContain('"plugins"');
    expect(parseRaw(await list('127.0.0.1.evil.example')).status).toBe(403);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`, '127.0.0.1']) {
      expect([host, parseRaw(await list(host)).status]).toEqual([host, 200]);
    }
  });
});

describe('after the battery', () => {
  it("logged no unhandled error: every request above was answered as the client's fault or cut", () => {
    expect(server.output()).not.toContain('unhandled error');
  });
});

describe('MAX_CONNECTIONS_PER_ADDRESS counts clients', () => {
  it('as an IPv4 address (IPv4-mapped IPv6 too) or an IPv6 /64, whose every address a client may own', () => {
    // Classification only: no connection is opened to any of these.
    expect(clientOf('127.0.0.1')).toBe('127.0.0.1');
    expect(clientOf('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(clientOf('::ffff:7f00:1')).toBe('127.0.0.1');
    expect(clientOf('::1')).toBe('0:0:0:0::/64');
    const [a, b, c] = ['2001:db8:1:2::1', '2001:db8:1:2:ffff:ffff:ffff:fffe', '2001:db8:1:3::1'].map(clientOf);
    expect(a).toBe('2001:db8:1:2::/64');
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(clientOf('')).toBe('');
  });
});

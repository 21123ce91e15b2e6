import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { contractProblems, expectContract } from './openapi-contract.ts';
import { listFiles, readPlugin, removeDir, sendStreaming, startServer, tinyPluginWat, wat, type TestServer } from './helpers.ts';

const MiB = 1024 * 1024;
v8.setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** fetch, and the response must be one openapi.yaml documents for the route. */
async function api(server: TestServer, path: string, init?: RequestInit): Promise<Response> {
  const res = await fetch(`${server.url}${path}`, init);
  await expectContract(init?.method ?? 'GET', path, res);
  return res;
}

function postRaw(
  server: TestServer,
  bytes: Uint8Array | string,
  query = '',
  contentType = 'application/wasm',
): Promise<Response> {
  const body = typeof bytes === 'string' ? bytes : (bytes as Uint8Array<ArrayBuffer>);
  return api(server, `/plugins${query}`, { method: 'POST', headers: { 'content-type': contentType }, body });
}

function postForm(
  server: TestServer,
  fields: Record<string, string>,
  file?: { bytes: Uint8Array; part?: string },
): Promise<Response> {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  if (file)
    form.set(file.part ?? 'file', new Blob([file.bytes as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }), 'plugin.wasm');
  return api(server, '/plugins', { method: 'POST', body: form });
}

/** A valid module made `extra` bytes larger by a custom section (skipped by every engine). */
function withCustomSection(module: Uint8Array, extra: number): Uint8Array {
  const name = Buffer.from('padding');
  const leb = (n: number): number[] => {
    const out: number[] = [];
    do {
      out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n >>>= 7;
    } while (n > 0);
    return out;
  };
  const content = name.length + 1 + extra;
  return Buffer.concat([module, Buffer.from([0, ...leb(content), name.length]), name, Buffer.alloc(extra, 0x5a)]);
}

async function listIds(server: TestServer): Promise<string[]> {
  const res = await api(server, `/plugins`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { plugins: { id: string }[] }).plugins.map((p) => p.id);
}

describe('plugin upload API', () => {
  let server: TestServer;
  afterEach(async () => {
    await server.close();
    await removeDir(server.dataDir);
  });

  it('stores a raw upload: 201, Location, metadata from the module, compiled module cached', async () => {
    server = await startServer();
    const bytes = await readPlugin('count_vowels');
    const sent = new Date().toISOString();
    const res = await postRaw(server, bytes, '?name=count_vowels');
    expect(res.status).toBe(201);
    const meta = await res.json();
    expect(res.headers.get('location')).toBe(`/plugins/${sha256(bytes)}`);
    expect(meta).toMatchObject({
      id: sha256(bytes),
      name: 'count_vowels',
      description: '',
      size: bytes.length,
      exports: ['count_vowels'],
      wasi: false,
      config: {},
      allowedHosts: [],
    });
    // Set when it was stored: between the request and its answer (ISO strings order as times).
    expect(meta.createdAt >= sent && meta.createdAt <= new Date().toISOString()).toBe(true);
    expect(meta.imports).toContainEqual({ module: 'extism:host/env', name: 'var_set' });
    expect(server.app.moduleCache.get(meta.id)?.module).toBeInstanceOf(WebAssembly.Module);
  });

  it('stores a multipart upload with its description, config and allowed hosts', async () => {
    server = await startServer();
    const bytes = await readPlugin('hello');
    const res = await postForm(
      server,
      {
        name: 'hello',
        description: 'the seed plugin',
        config: '{"route":"http://127.0.0.1:1/todos/1"}',
        allowedHosts: '["127.0.0.1"]',
      },
      { bytes },
    );
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({
      id: sha256(bytes),
      name: 'hello',
      description: 'the seed plugin',
      exports: ['say_hello'],
      config: { route: 'http://127.0.0.1:1/todos/1' },
      allowedHosts: ['127.0.0.1'],
    });
    const wasi = await postForm(server, {}, { bytes: await readPlugin('wasi_io') });
    expect(wasi.status).toBe(201);
    expect((await wasi.json()).wasi).toBe(true);
  });

  it('takes config and allowed hosts as JSON parts (what Swagger UI sends) and an empty field as not given', async () => {
    server = await startServer();
    const form = new FormData();
    form.set(
      'file',
      new Blob([(await readPlugin('hello')) as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }),
      'hello.wasm',
    );
    // A browser sends a Blob part with a file name: still the field, not a second file.
    form.set('config', new Blob(['{"route":"http://127.0.0.1:1/todos/1"}'], { type: 'application/json' }));
    form.set('allowedHosts', new Blob(['["127.0.0.1"]'], { type: 'application/json' }));
    const parts = await api(server, '/plugins', { method: 'POST', body: form });
    expect(parts.status).toBe(201);
    expect(await parts.json()).toMatchObject({ config: { route: 'http://127.0.0.1:1/todos/1' }, allowedHosts: ['127.0.0.1'] });

    const cleared = await postForm(server, { config: '', allowedHosts: '' }, { bytes: await readPlugin('echo') });
    expect(cleared.status).toBe(201);
    expect(await cleared.json()).toMatchObject({ config: {}, allowedHosts: [] });
  });

  it('answers 200 with the existing record for bytes already stored, applying a new name and nothing else', async () => {
    server = await startServer();
    const bytes = await readPlugin('echo');
    const first = await (await postRaw(server, bytes)).json();
    const again = await postRaw(server, bytes);
    expect(again.status).toBe(200);
    expect(again.headers.get('location')).toBeNull();
    expect(await again.json()).toEqual(first);
    // Idempotent as documented: only the name is applied; the other fields of a re-upload are ignored.
    const named = await postForm(
      server,
      { name: 'echo', description: 'new', config: '{"k":"v"}', allowedHosts: '["127.0.0.1"]' },
      { bytes },
    );
    expect(named.status).toBe(200);
    expect(await named.json()).toEqual({ ...first, name: 'echo' });
    expect(await (await api(server, `/plugins/echo`)).json()).toEqual({ ...first, name: 'echo' });
    expect(await listIds(server)).toEqual([first.id]);
  });

  it('describes, downloads and deletes by id or name', async () => {
    server = await startServer();
    const bytes = await readPlugin('count_vowels');
    const meta = await (await postRaw(server, bytes, '?name=cv')).json();

    for (const ref of [meta.id, 'cv']) {
      const got = await api(server, `/plugins/${ref}`);
      expect(got.status).toBe(200);
      expect(await got.json()).toEqual(meta);
    }
    const byId = await api(server, `/plugins/${meta.id}/wasm`);
    expect(byId.status).toBe(200);
    expect(byId.headers.get('content-type')).toBe('application/wasm');
    expect(byId.headers.get('etag')).toBe(`"${meta.id}"`);
    expect(byId.headers.get('cache-control')).toContain('immutable');
    expect(byId.headers.get('content-length')).toBe(String(bytes.length));
    expect(sha256(new Uint8Array(await byId.arrayBuffer()))).toBe(meta.id);
    const byName = await api(server, `/plugins/cv/wasm`);
    expect(byName.headers.get('cache-control')).toBe('no-cache');
    expect(sha256(new Uint8Array(await byName.arrayBuffer()))).toBe(meta.id);

    const cached = await api(server, `/plugins/cv/wasm`, { headers: { 'if-none-match': `W/"x", "${meta.id}"` } });
    expect(cached.status).toBe(304);
    expect(cached.headers.get('content-length')).toBeNull();
    expect(cached.headers.get('etag')).toBe(`"${meta.id}"`);
    expect((await cached.arrayBuffer()).byteLength).toBe(0);
    const stale = await api(server, `/plugins/cv/wasm`, { headers: { 'if-none-match': '"something-else"' } });
    expect(stale.status).toBe(200);
    await stale.arrayBuffer();

    const del = await api(server, `/plugins/cv`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect(server.app.moduleCache.get(meta.id)).toBeUndefined();
    for (const [method, url] of [
      ['GET', `/plugins/${meta.id}`],
      ['GET', '/plugins/cv'],
      ['GET', '/plugins/cv/wasm'],
      ['DELETE', `/plugins/${meta.id}`],
    ] as const) {
      const res = await api(server, `${url}`, { method });
      expect(res.status).toBe(404);
      expect(await res.json()).toMatchObject({ statusCode: 404, code: 'PLUGIN_NOT_FOUND', error: 'Not Found' });
    }
    expect(await listFiles(server.dataDir)).toEqual([]);
  });

  it('streams a large module: byte-exact download with its Content-Length, and 304 when unchanged', async () => {
    server = await startServer();
    const bytes = withCustomSection(await wat(tinyPluginWat(9)), 6 * MiB);
    const meta = await (await postRaw(server, bytes)).json();
    expect(meta.size).toBe(bytes.length);

    const res = await api(server, `/plugins/${meta.id}/wasm`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(bytes.length));
    const hash = createHash('sha256');
    let chunks = 0;
    const reader = res.body!.getReader();
    for (let part = await reader.read(); !part.done; part = await reader.read()) {
      hash.update(part.value);
      chunks++;
    }
    expect(hash.digest('hex')).toBe(meta.id);
    expect(chunks).toBeGreaterThan(1);
    const again = await api(server, `/plugins/${meta.id}/wasm`, { headers: { 'if-none-match': `"${meta.id}"` } });
    expect(again.status).toBe(304);
    expect((await again.arrayBuffer()).byteLength).toBe(0);
  });

  it('never serves damaged bytes whole: a download of a blob damaged on disk is cut before its end', async () => {
    server = await startServer();
    const bytes = withCustomSection(await wat(tinyPluginWat(10)), 1 * MiB);
    const meta = await (await postRaw(server, bytes)).json();
    const blob = path.join(server.dataDir, 'blobs', `${meta.id}.wasm`);
    const damaged = new Uint8Array(bytes);
    damaged[100]! ^= 0xff;
    await writeFile(blob, damaged);

    // Plain fetch: the contract check would read the body, and this one is cut on purpose.
    const res = await fetch(`${server.url}/plugins/${meta.id}/wasm`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(bytes.length));
    let received = 0;
    const reader = res.body!.getReader();
    const read = await (async () => {
      for (let part = await reader.read(); !part.done; part = await reader.read()) received += part.value.length;
    })().catch((err: unknown) => err);
    expect(read).toBeInstanceOf(Error);
    expect(received).toBeLessThan(bytes.length);
    // The server is fine: the next request on it answers.
    expect((await api(server, `/plugins/${meta.id}`)).status).toBe(200);
  });

  it('moves a name to the newest upload carrying it and frees it with the plugin on delete', async () => {
    server = await startServer();
    const a = await (await postRaw(server, await wat(tinyPluginWat(1)), '?name=tool')).json();
    const b = await (await postRaw(server, await wat(tinyPluginWat(2)), '?name=tool')).json();
    expect((await (await api(server, `/plugins/tool`)).json()).id).toBe(b.id);
    expect((await (await api(server, `/plugins/${a.id}`)).json()).name).toBeNull();
    const filtered = await (await api(server, `/plugins?name=tool`)).json();
    expect(filtered.plugins.map((p: { id: string }) => p.id)).toEqual([b.id]);
    expect(await listIds(server)).toEqual([b.id, a.id]);

    expect((await api(server, `/plugins/tool`, { method: 'DELETE' })).status).toBe(204);
    expect((await api(server, `/plugins/tool`)).status).toBe(404);
    expect(await listIds(server)).toEqual([a.id]);
    // The freed name can be given again.
    const again = await postRaw(server, await wat(tinyPluginWat(1)), '?name=tool');
    expect(again.status).toBe(200);
    expect((await again.json()).name).toBe('tool');
  });

  it('lists identical metadata and serves identical bytes after a restart on the same DATA_DIR', async () => {
    server = await startServer();
    const uploads = [await readPlugin('count_vowels'), await readPlugin('hello'), await readPlugin('wasi_io')];
    await postRaw(server, uploads[0]!, '?name=vowels');
    await postForm(server, { name: 'hello', config: '{"route":"x"}', allowedHosts: '["a.test"]' }, { bytes: uploads[1]! });
    await postRaw(server, uploads[2]!);
    const before = await (await api(server, `/plugins`)).json();
    await server.close();

    server = await startServer({ dataDir: server.dataDir });
    expect(await (await api(server, `/plugins`)).json()).toEqual(before);
    for (const bytes of uploads) {
      const res = await api(server, `/plugins/${sha256(bytes)}/wasm`);
      expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(sha256(bytes));
    }
    expect((await (await api(server, `/plugins/vowels`)).json()).id).toBe(sha256(uploads[0]!));
  });
});

describe('rejected uploads', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ env: { MAX_PLUGIN_BYTES: '16384' } });
  });
  afterAll(async () => {
    await server.close();
    await removeDir(server.dataDir);
  });

  const valid = (): Promise<Uint8Array> => wat(tinyPluginWat(42));
  const cases: {
    title: string;
    status: number;
    code: string;
    send: () => Promise<Response>;
    message?: RegExp;
    fields?: Record<string, unknown>;
  }[] = [
    {
      title: 'bytes that are not WebAssembly',
      status: 400,
      code: 'INVALID_WASM',
      send: () => postRaw(server, 'hello world'),
      message: /magic word/,
    },
    {
      title: 'a module cut short',
      status: 400,
      code: 'INVALID_WASM',
      send: async () => postRaw(server, (await readPlugin('echo')).subarray(0, 1000)),
    },
    {
      // The engine's rewrite replaces the memory declaration with an import: only the original shows this is invalid.
      title: 'a memory maximum below its minimum',
      status: 400,
      code: 'INVALID_WASM',
      send: () =>
        postRaw(
          server,
          new Uint8Array([
            0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 127, 3, 2, 1, 0, 5, 4, 1, 1, 2, 1, 7, 7, 1, 3, 114, 117, 110, 0, 0,
            10, 6, 1, 4, 0, 65, 0, 11,
          ]),
        ),
      message: /maximum memory size \(1 pages\) is less than initial \(2 pages\)/,
    },
    {
      title: 'imports the service does not provide',
      status: 400,
      code: 'UNSUPPORTED_IMPORTS',
      send: async () => postRaw(server, await readPlugin('bad_import')),
      message: /env\.abort.*foo\.bar/,
    },
    {
      title: 'custom host functions (extism:host/user, another namespace)',
      status: 400,
      code: 'UNSUPPORTED_IMPORTS',
      send: async () =>
        postRaw(
          server,
          await wat(`(module
  (import "extism:host/user" "lookup" (func (param i64) (result i64)))
  (import "my_host" "notify" (func (param i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 0)))`),
        ),
      message: /extism:host\/user\.lookup, my_host\.notify .*custom host functions .* are not offered/,
      fields: {
        unsupportedImports: [
          { module: 'extism:host/user', name: 'lookup', kind: 'function' },
          { module: 'my_host', name: 'notify', kind: 'function' },
        ],
      },
    },
    {
      title: 'a host function imported with another signature (alloc as (i32) -> i32)',
      status: 400,
      code: 'UNSUPPORTED_IMPORTS',
      send: async () =>
        postRaw(
          server,
          await wat(`(module
  (import "extism:host/env" "alloc" (func (param i32) (result i32)))
  (import "extism:host/env" "output_set" (func (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 0)))`),
        ),
      message: /extism:host\/env\.alloc declared as \(i32\) -> i32, provided as \(i64\) -> i64/,
      fields: {
        unsupportedImports: [
          { module: 'extism:host/env', name: 'alloc', kind: 'function', expected: '(i64) -> i64', actual: '(i32) -> i32' },
        ],
      },
    },
    {
      title: 'no callable export',
      status: 400,
      code: 'NO_CALLABLE_EXPORTS',
      send: async () => postRaw(server, await readPlugin('no_exports')),
    },
    {
      title: 'a raw body over the size limit',
      status: 413,
      code: 'PLUGIN_TOO_LARGE',
      send: async () => postRaw(server, await readPlugin('hello')),
    },
    {
      title: 'a multipart file over the size limit',
      status: 413,
      code: 'PLUGIN_TOO_LARGE',
      send: async () => postForm(server, {}, { bytes: await readPlugin('hello') }),
    },
    { title: 'an empty raw body', status: 400, code: 'EMPTY_BODY', send: () => postRaw(server, new Uint8Array(0)) },
    { title: 'no body at all', status: 400, code: 'EMPTY_BODY', send: () => api(server, `/plugins`, { method: 'POST' }) },
    {
      title: 'an empty file part',
      status: 400,
      code: 'EMPTY_BODY',
      send: () => postForm(server, { name: 'x' }, { bytes: new Uint8Array(0) }),
    },
    { title: 'a form without the file part', status: 400, code: 'MISSING_FILE', send: () => postForm(server, { name: 'x' }) },
    {
      title: 'a file in a part not named file',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => postForm(server, {}, { bytes: await valid(), part: 'wasm' }),
    },
    {
      title: 'a config part that is a file of another type',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => postForm(server, {}, { bytes: await valid(), part: 'config' }),
    },
    {
      title: 'two file parts',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => {
        const form = new FormData();
        const bytes = (await valid()) as Uint8Array<ArrayBuffer>;
        form.append('file', new Blob([bytes], { type: 'application/wasm' }), 'a.wasm');
        form.append('file', new Blob([bytes], { type: 'application/wasm' }), 'b.wasm');
        return api(server, '/plugins', { method: 'POST', body: form });
      },
    },
    {
      title: 'an allowedHosts part over 64 KiB',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => {
        const form = new FormData();
        form.set('file', new Blob([(await valid()) as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }), 'a.wasm');
        form.set('allowedHosts', new Blob([JSON.stringify(['a'.repeat(70_000)])], { type: 'application/json' }));
        return api(server, '/plugins', { method: 'POST', body: form });
      },
      message: /longer than 65536 bytes/,
    },
    {
      title: 'an unknown form field',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => postForm(server, { colour: 'red' }, { bytes: await valid() }),
    },
    { title: 'a text body', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', send: () => postRaw(server, 'abc', '', 'text/plain') },
    {
      title: 'a name with capitals',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => postRaw(server, await valid(), '?name=Hello'),
    },
    {
      title: 'a name of 64 hex digits',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => postRaw(server, await valid(), `?name=${'a'.repeat(64)}`),
    },
    {
      title: 'a name too long',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => postRaw(server, await valid(), `?name=${'n'.repeat(64)}`),
    },
    {
      title: 'a name starting with a dot',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => postForm(server, { name: '.hidden' }, { bytes: await valid() }),
    },
    {
      title: 'config that is not JSON',
      status: 400,
      code: 'INVALID_CONFIG',
      send: async () => postForm(server, { config: '{route:' }, { bytes: await valid() }),
    },
    {
      title: 'config that is an array',
      status: 400,
      code: 'INVALID_CONFIG',
      send: async () => postForm(server, { config: '["a"]' }, { bytes: await valid() }),
    },
    {
      title: 'config with a non-string value',
      status: 400,
      code: 'INVALID_CONFIG',
      send: async () => postForm(server, { config: '{"n":1}' }, { bytes: await valid() }),
    },
    {
      title: 'allowedHosts that is not JSON',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => postForm(server, { allowedHosts: '*.x.com' }, { bytes: await valid() }),
    },
    {
      title: 'allowedHosts that is an object',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => postForm(server, { allowedHosts: '{"a":1}' }, { bytes: await valid() }),
    },
    {
      title: 'allowedHosts with an empty entry',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => postForm(server, { allowedHosts: '[""]' }, { bytes: await valid() }),
    },
    {
      title: 'allowedHosts with a pattern outside the grammar',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => postForm(server, { allowedHosts: '["ok.test", "*x.com"]' }, { bytes: await valid() }),
      message: /\*x\.com/,
      fields: { pattern: '*x.com', problem: expect.stringMatching(/wildcard/) },
    },
    {
      title: 'allowedHosts with a non-string entry',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => postForm(server, { allowedHosts: '[1]' }, { bytes: await valid() }),
    },
  ];

  for (const c of cases) {
    it(`refuses ${c.title} with ${c.status} ${c.code} and stores nothing`, async () => {
      const res = await c.send();
      expect(res.status).toBe(c.status);
      const body = await res.json();
      expect(body).toMatchObject({ statusCode: c.status, code: c.code });
      expect(typeof body.error).toBe('string');
      expect(body.message.length).toBeGreaterThan(10);
      if (c.message) expect(body.message).toMatch(c.message);
      if (c.fields) expect(body).toMatchObject(c.fields);
      expect(await listIds(server)).toEqual([]);
      expect(await listFiles(server.dataDir)).toEqual([]);
    });
  }

  it('lists the unsupported imports in the error', async () => {
    const res = await postRaw(server, await readPlugin('bad_import'));
    expect((await res.json()).unsupportedImports).toEqual([
      { module: 'env', name: 'abort', kind: 'function' },
      { module: 'foo', name: 'bar', kind: 'function' },
    ]);
  });

  it('accepts a valid upload on the same server afterwards', async () => {
    const res = await postRaw(server, await wat(tinyPluginWat(42)), '?name=fine');
    expect(res.status).toBe(201);
    expect(await listFiles(server.dataDir)).toHaveLength(2);
    await api(server, `/plugins/fine`, { method: 'DELETE' });
  });
});

/** An upload whose body is half sent over a raw loopback socket: it holds its slot until finished or aborted. */
async function holdUpload(
  server: TestServer,
  bytes: Uint8Array,
): Promise<{ finish(): Promise<{ status: number; body: string }>; abort(): void }> {
  const { port } = new URL(server.url);
  const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
  await once(socket, 'connect');
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  const closed = once(socket, 'close');
  socket.write(
    `POST /plugins HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/wasm\r\ncontent-length: ${bytes.length}\r\nconnection: close\r\n\r\n`,
  );
  const half = Math.floor(bytes.length / 2);
  socket.write(bytes.subarray(0, half));
  // The server has the connection, then a moment to parse the head and run the route's hooks.
  for (let n = 0; n === 0;) {
    n = await new Promise<number>((resolve) => server.app.server.getConnections((_err, count) => resolve(count)));
    await delay(20);
  }
  await delay(100);
  return {
    async finish() {
      socket.write(bytes.subarray(half)); // not end(): a half-closed request gets no answer from Node's server
      await closed;
      const [head = '', body = ''] = received.split('\r\n\r\n');
      return { status: Number(head.split(' ')[1]), body };
    },
    abort: () => socket.destroy(),
  };
}

describe('uploads in progress at once (UPLOAD_CONCURRENCY)', () => {
  let server: TestServer;
  afterEach(async () => {
    await server.close();
    await removeDir(server.dataDir);
  });

  it('defaults to 2', async () => {
    server = await startServer();
    expect(server.config.uploadConcurrency).toBe(2);
  });

  it('refuses an upload beyond the limit with 503 OVERLOADED and Retry-After, storing nothing; the slot comes back', async () => {
    server = await startServer({ env: { UPLOAD_CONCURRENCY: '1' } });
    const held = await holdUpload(server, await readPlugin('count_vowels'));

    const other = await wat(tinyPluginWat(77));
    const refused = await postRaw(server, other, '?name=other');
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = await refused.json();
    expect(body).toMatchObject({ statusCode: 503, code: 'OVERLOADED' });
    expect(body.message).toMatch(/UPLOAD_CONCURRENCY/);
    expect(await listIds(server)).toEqual([]);
    expect(await listFiles(server.dataDir)).toEqual([]);

    const first = await held.finish();
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body).exports).toEqual(['count_vowels']);
    // The finished upload gave its slot back.
    const accepted = await postRaw(server, other, '?name=other');
    expect(accepted.status).toBe(201);
    expect(await listIds(server)).toHaveLength(2);
  });

  it('gives the slot back when a client goes away mid-upload', async () => {
    server = await startServer({ env: { UPLOAD_CONCURRENCY: '1' } });
    const bytes = await readPlugin('count_vowels');
    const held = await holdUpload(server, bytes);
    held.abort();
    let res: Response;
    const deadline = Date.now() + 2_000;
    do {
      res = await postRaw(server, bytes);
      if (res.status !== 503) break;
      await res.arrayBuffer();
      await delay(20);
    } while (Date.now() < deadline);
    expect(res.status).toBe(201);
    expect(await listIds(server)).toEqual([sha256(bytes)]);
  });
});

describe('a 100 MiB upload to a server limited at 32 MiB', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
    expect(server.config.maxPluginBytes).toBe(32 * MiB);
    // Warm the upload paths (lazy modules, JIT) so their one-time cost is not counted below.
    const warm = await postRaw(server, await wat(tinyPluginWat(1)));
    expect(warm.status).toBe(201);
    const form = await postForm(server, {}, { bytes: await wat(tinyPluginWat(2)) });
    expect(form.status).toBe(201);
    for (const id of await listIds(server)) await api(server, `/plugins/${id}`, { method: 'DELETE' });
  });
  afterAll(async () => {
    await server.close();
    await removeDir(server.dataDir);
  });

  const block = Buffer.alloc(64 * 1024, 0x61);
  // The same block over and over: the client holds 64 KiB, whatever it sends.
  function* body(total: number): Generator<Buffer> {
    for (let sent = 0; sent < total; sent += block.length) yield block;
  }
  const boundary = 'wasmhost-test-boundary';
  function* multipart(total: number): Generator<Buffer> {
    yield Buffer.from(
      `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="big.wasm"\r\ncontent-type: application/wasm\r\n\r\n`,
    );
    yield* body(total);
    yield Buffer.from(`\r\n--${boundary}--\r\n`);
  }

  const variants: { title: string; headers: Record<string, string>; chunks: () => Generator<Buffer> }[] = [
    { title: 'raw, chunked', headers: { 'content-type': 'application/wasm' }, chunks: () => body(100 * MiB) },
    {
      title: 'raw, with Content-Length',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(100 * MiB) },
      chunks: () => body(100 * MiB),
    },
    {
      title: 'multipart, chunked',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      chunks: () => multipart(100 * MiB),
    },
  ];

  for (const v of variants) {
    it(`is refused with 413 (${v.title}) while the server's RSS grows by less than 64 MiB`, async () => {
      collectGarbage(); // what earlier tests left unreferenced must not hide or inflate this request's cost
      const rssBefore = process.memoryUsage().rss;
      let rssPeak = rssBefore;
      const sampler = setInterval(() => {
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
      }, 5);
      const res = await sendStreaming(server.url, { path: '/plugins', headers: v.headers, chunks: v.chunks() });
      clearInterval(sampler);
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss);

      expect(res.status).toBe(413);
      expect(JSON.parse(res.body)).toMatchObject({ statusCode: 413, code: 'PLUGIN_TOO_LARGE' });
      expect(
        contractProblems('POST', '/plugins', { status: res.status, headers: res.headers, body: JSON.parse(res.body) }),
      ).toEqual([]);
      // The server answered without reading the rest of the body.
      expect(res.bytesSent).toBeLessThan(64 * MiB);
      expect(rssPeak - rssBefore).toBeLessThan(64 * MiB);
      expect(await listIds(server)).toEqual([]);
      expect(await listFiles(server.dataDir)).toEqual([]);
    });
  }
});

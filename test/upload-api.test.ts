import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { beforeAll, describe, expect, it } from 'vitest';
import { contractProblems } from './openapi-contract.ts';
import {
  listFiles,
  readPlugin,
  sendStreaming,
  serverForTest,
  tinyPluginWat,
  useServer,
  wat,
  type TestServer,
} from './helpers.ts';
import type { ErrorBody, Plugin, Reply } from './test-client.ts';
import { withCustomSection } from './wasm-builder.ts';

const MiB = 1024 * 1024;
v8.setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A multipart form of text fields, and a module in the part `file` (or another part) when given. */
function formOf(fields: Record<string, string>, file?: { bytes: Uint8Array; part?: string }): FormData {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  if (file)
    form.set(file.part ?? 'file', new Blob([file.bytes as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }), 'plugin.wasm');
  return form;
}

/** A valid module made larger by `extra` bytes in a custom section. */
function padded(module: Uint8Array, extra: number): Uint8Array {
  return withCustomSection(module, 'padding', Buffer.alloc(extra, 0x5a));
}

describe('plugin upload API', () => {
  it('stores a raw upload: 201, Location, metadata from the module, compiled module cached', async () => {
    const server = await serverForTest();
    const bytes = await readPlugin('count_vowels');
    const sent = new Date().toISOString();
    const res = await server.api.upload(bytes, { name: 'count_vowels' });
    expect(res.status).toBe(201);
    const meta = res.data;
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
    const server = await serverForTest();
    const bytes = await readPlugin('hello');
    const res = await server.api.upload(bytes, {
      name: 'hello',
      description: 'the seed plugin',
      config: { route: 'http://127.0.0.1:1/todos/1' },
      allowedHosts: ['127.0.0.1'],
    });
    expect(res.status).toBe(201);
    expect(res.data).toMatchObject({
      id: sha256(bytes),
      name: 'hello',
      description: 'the seed plugin',
      exports: ['say_hello'],
      config: { route: 'http://127.0.0.1:1/todos/1' },
      allowedHosts: ['127.0.0.1'],
    });
    const wasi = await server.api.upload(await readPlugin('wasi_io'), { form: true });
    expect(wasi.status).toBe(201);
    expect(wasi.data.wasi).toBe(true);
  });

  it('takes config and allowed hosts as JSON parts (what Swagger UI sends) and an empty field as not given', async () => {
    const server = await serverForTest();
    const form = new FormData();
    form.set(
      'file',
      new Blob([(await readPlugin('hello')) as Uint8Array<ArrayBuffer>], { type: 'application/wasm' }),
      'hello.wasm',
    );
    // A browser sends a Blob part with a file name: still the field, not a second file.
    form.set('config', new Blob(['{"route":"http://127.0.0.1:1/todos/1"}'], { type: 'application/json' }));
    form.set('allowedHosts', new Blob(['["127.0.0.1"]'], { type: 'application/json' }));
    const parts = await server.api.uploadForm(form);
    expect(parts.status).toBe(201);
    expect(parts.data).toMatchObject({ config: { route: 'http://127.0.0.1:1/todos/1' }, allowedHosts: ['127.0.0.1'] });

    const cleared = await server.api.uploadForm(formOf({ config: '', allowedHosts: '' }, { bytes: await readPlugin('echo') }));
    expect(cleared.status).toBe(201);
    expect(cleared.data).toMatchObject({ config: {}, allowedHosts: [] });
  });

  it('answers 200 with the existing record for bytes already stored, applying a new name and nothing else', async () => {
    const server = await serverForTest();
    const bytes = await readPlugin('echo');
    const first = await server.api.uploaded(bytes);
    const again = await server.api.upload(bytes);
    expect(again.status).toBe(200);
    expect(again.headers.get('location')).toBeNull();
    expect(again.data).toEqual(first);
    // Idempotent as documented: only the name is applied; the other fields of a re-upload are ignored.
    const named = await server.api.upload(bytes, {
      name: 'echo',
      description: 'new',
      config: { k: 'v' },
      allowedHosts: ['127.0.0.1'],
    });
    expect(named.status).toBe(200);
    expect(named.data).toEqual({ ...first, name: 'echo' });
    expect((await server.api.describe('echo')).data).toEqual({ ...first, name: 'echo' });
    expect((await server.api.listAll()).map((p) => p.id)).toEqual([first.id]);
  });

  it('describes, downloads and deletes by id or name', async () => {
    const server = await serverForTest();
    const bytes = await readPlugin('count_vowels');
    const meta = await server.api.uploaded(bytes, { name: 'cv' });

    for (const ref of [meta.id, 'cv']) {
      const got = await server.api.describe(ref);
      expect(got.status).toBe(200);
      expect(got.data).toEqual(meta);
    }
    const byId = await server.api.download(meta.id);
    expect(byId.status).toBe(200);
    expect(byId.headers.get('content-type')).toBe('application/wasm');
    expect(byId.headers.get('etag')).toBe(`"${meta.id}"`);
    expect(byId.headers.get('cache-control')).toContain('immutable');
    expect(byId.headers.get('content-length')).toBe(String(bytes.length));
    expect(sha256(byId.bytes)).toBe(meta.id);
    const byName = await server.api.download('cv');
    expect(byName.headers.get('cache-control')).toBe('no-cache');
    expect(sha256(byName.bytes)).toBe(meta.id);

    const cached = await server.api.download('cv', { headers: { 'if-none-match': `W/"x", "${meta.id}"` } });
    expect(cached.status).toBe(304);
    expect(cached.headers.get('content-length')).toBeNull();
    expect(cached.headers.get('etag')).toBe(`"${meta.id}"`);
    expect(cached.size).toBe(0);
    const stale = await server.api.download('cv', { headers: { 'if-none-match': '"something-else"' } });
    expect(stale.status).toBe(200);

    const del = await server.api.delete('cv');
    expect(del.status).toBe(204);
    expect(server.app.moduleCache.get(meta.id)).toBeUndefined();
    for (const gone of [
      () => server.api.describe(meta.id),
      () => server.api.describe('cv'),
      () => server.api.download('cv'),
      () => server.api.delete(meta.id),
    ]) {
      const res = await gone();
      expect(res.status).toBe(404);
      expect(res.error).toMatchObject({ statusCode: 404, code: 'PLUGIN_NOT_FOUND', error: 'Not Found' });
    }
    expect(await listFiles(server.dataDir)).toEqual([]);
  });

  it('streams a large module: byte-exact download with its Content-Length, and 304 when unchanged', async () => {
    const server = await serverForTest();
    const bytes = padded(await wat(tinyPluginWat(9)), 6 * MiB);
    const meta = await server.api.uploaded(bytes);
    expect(meta.size).toBe(bytes.length);

    // Read as it arrives: the download must come in more than one chunk.
    const res = await server.api.stream('GET', `/plugins/${meta.id}/wasm`);
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
    const again = await server.api.download(meta.id, { headers: { 'if-none-match': `"${meta.id}"` } });
    expect(again.status).toBe(304);
    expect(again.size).toBe(0);
  });

  it('never serves damaged bytes whole: a download of a blob damaged on disk is cut before its end', async () => {
    const server = await serverForTest();
    const bytes = padded(await wat(tinyPluginWat(10)), 1 * MiB);
    const meta = await server.api.uploaded(bytes);
    const blob = path.join(server.dataDir, 'blobs', `${meta.id}.wasm`);
    const damaged = new Uint8Array(bytes);
    damaged[100]! ^= 0xff;
    await writeFile(blob, damaged);

    // Read as it arrives: the body is cut on purpose, and the test counts what came before the cut.
    const res = await server.api.stream('GET', `/plugins/${meta.id}/wasm`);
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
    expect((await server.api.describe(meta.id)).status).toBe(200);
  });

  it('deletes with If-Match only the plugin it names: 412 PRECONDITION_FAILED and nothing deleted when the name points elsewhere', async () => {
    const server = await serverForTest();
    const first = await server.api.uploaded(await readPlugin('count_vowels'), { name: 'moving' });
    const download = await fetch(`${server.url}/plugins/moving/wasm`);
    await download.arrayBuffer();
    const etag = download.headers.get('etag')!;
    expect(etag).toBe(`"${first.id}"`);
    // The name moves to another upload before the delete arrives.
    const second = await server.api.uploaded(await readPlugin('echo'), { name: 'moving' });
    const stale = await server.api.delete('moving', { headers: { 'if-match': etag } });
    expect(stale.status).toBe(412);
    expect(stale.error.code).toBe('PRECONDITION_FAILED');
    expect((await server.api.describe('moving')).data.id).toBe(second.id);
    expect((await server.api.describe(first.id)).status).toBe(200);
    // A list with the current ETag, a weak one alone not (If-Match compares strongly), then *.
    expect((await server.api.delete('moving', { headers: { 'if-match': `W/"${second.id}"` } })).status).toBe(412);
    expect((await server.api.delete('moving', { headers: { 'if-match': `"nope", "${second.id}"` } })).status).toBe(204);
    expect((await server.api.delete(first.id, { headers: { 'if-match': '*' } })).status).toBe(204);
    expect((await server.api.delete(first.id, { headers: { 'if-match': '*' } })).status).toBe(404);
  });

  it('moves a name to the newest upload carrying it and frees it with the plugin on delete', async () => {
    const server = await serverForTest();
    const a = await server.api.uploaded(await wat(tinyPluginWat(1)), { name: 'tool' });
    const b = await server.api.uploaded(await wat(tinyPluginWat(2)), { name: 'tool' });
    expect((await server.api.describe('tool')).data.id).toBe(b.id);
    expect((await server.api.describe(a.id)).data.name).toBeNull();
    const filtered = (await server.api.list({ name: 'tool' })).data;
    expect(filtered.plugins.map((p) => p.id)).toEqual([b.id]);
    expect((await server.api.listAll()).map((p) => p.id)).toEqual([b.id, a.id]);

    expect((await server.api.delete('tool')).status).toBe(204);
    expect((await server.api.describe('tool')).status).toBe(404);
    expect((await server.api.listAll()).map((p) => p.id)).toEqual([a.id]);
    // The freed name can be given again.
    const again = await server.api.upload(await wat(tinyPluginWat(1)), { name: 'tool' });
    expect(again.status).toBe(200);
    expect(again.data.name).toBe('tool');
  });

  it('lists identical metadata and serves identical bytes after a restart on the same DATA_DIR', async () => {
    const first = await serverForTest();
    const uploads = [await readPlugin('count_vowels'), await readPlugin('hello'), await readPlugin('wasi_io')];
    await first.api.upload(uploads[0]!, { name: 'vowels' });
    await first.api.upload(uploads[1]!, { name: 'hello', config: { route: 'x' }, allowedHosts: ['a.test'] });
    await first.api.upload(uploads[2]!);
    const before = (await first.api.list()).data;
    await first.close();

    const restarted = await serverForTest({ dataDir: first.dataDir });
    expect((await restarted.api.list()).data).toEqual(before);
    for (const bytes of uploads) {
      const res = await restarted.api.download(sha256(bytes));
      expect(sha256(res.bytes)).toBe(sha256(bytes));
    }
    expect((await restarted.api.describe('vowels')).data.id).toBe(sha256(uploads[0]!));
  });
});

describe('rejected uploads', () => {
  const server = useServer({ env: { MAX_PLUGIN_BYTES: '16384' } });

  const valid = (): Promise<Uint8Array> => wat(tinyPluginWat(42));
  const cases: {
    title: string;
    status: number;
    code: string;
    send: () => Promise<Reply<unknown, ErrorBody>>;
    message?: RegExp;
    fields?: Record<string, unknown>;
  }[] = [
    {
      title: 'bytes that are not WebAssembly',
      status: 400,
      code: 'INVALID_WASM',
      send: () => server.api.upload(text('hello world')),
      message: /magic word/,
    },
    {
      title: 'a module cut short',
      status: 400,
      code: 'INVALID_WASM',
      send: async () => server.api.upload((await readPlugin('echo')).subarray(0, 1000)),
    },
    {
      // The engine's rewrite replaces the memory declaration with an import: only the original shows this is invalid.
      title: 'a memory maximum below its minimum',
      status: 400,
      code: 'INVALID_WASM',
      send: () =>
        server.api.upload(
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
      send: async () => server.api.upload(await readPlugin('bad_import')),
      message: /env\.abort.*foo\.bar/,
    },
    {
      title: 'custom host functions (extism:host/user, another namespace)',
      status: 400,
      code: 'UNSUPPORTED_IMPORTS',
      send: async () =>
        server.api.upload(
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
        server.api.upload(
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
      send: async () => server.api.upload(await readPlugin('no_exports')),
    },
    {
      title: 'a raw body over the size limit',
      status: 413,
      code: 'PLUGIN_TOO_LARGE',
      send: async () => server.api.upload(await readPlugin('hello')),
    },
    {
      title: 'a multipart file over the size limit',
      status: 413,
      code: 'PLUGIN_TOO_LARGE',
      send: async () => server.api.upload(await readPlugin('hello'), { form: true }),
    },
    { title: 'an empty raw body', status: 400, code: 'EMPTY_BODY', send: () => server.api.upload(new Uint8Array(0)) },
    { title: 'no body at all', status: 400, code: 'EMPTY_BODY', send: () => server.api.request('POST', '/plugins') },
    {
      title: 'an empty file part',
      status: 400,
      code: 'EMPTY_BODY',
      send: () => server.api.upload(new Uint8Array(0), { name: 'x', form: true }),
    },
    {
      title: 'a form without the file part',
      status: 400,
      code: 'MISSING_FILE',
      send: () => server.api.uploadForm(formOf({ name: 'x' })),
    },
    {
      title: 'a file in a part not named file',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => server.api.uploadForm(formOf({}, { bytes: await valid(), part: 'wasm' })),
    },
    {
      title: 'a config part that is a file of another type',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => server.api.uploadForm(formOf({}, { bytes: await valid(), part: 'config' })),
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
        return server.api.uploadForm(form);
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
        return server.api.uploadForm(form);
      },
      message: /longer than 65536 bytes/,
    },
    {
      title: 'an unknown form field',
      status: 400,
      code: 'INVALID_REQUEST',
      send: async () => server.api.uploadForm(formOf({ colour: 'red' }, { bytes: await valid() })),
    },
    {
      title: 'a text body',
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
      send: () => server.api.upload(text('abc'), { contentType: 'text/plain' }),
    },
    {
      title: 'a name with capitals',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => server.api.upload(await valid(), { name: 'Hello' }),
    },
    {
      title: 'a name of 64 hex digits',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => server.api.upload(await valid(), { name: 'a'.repeat(64) }),
    },
    {
      title: 'a name too long',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => server.api.upload(await valid(), { name: 'n'.repeat(64) }),
    },
    {
      title: 'a name starting with a dot',
      status: 400,
      code: 'INVALID_NAME',
      send: async () => server.api.upload(await valid(), { name: '.hidden', form: true }),
    },
    {
      title: 'config that is not JSON',
      status: 400,
      code: 'INVALID_CONFIG',
      send: async () => server.api.uploadForm(formOf({ config: '{route:' }, { bytes: await valid() })),
    },
    {
      title: 'config that is an array',
      status: 400,
      code: 'INVALID_CONFIG',
      send: async () => server.api.uploadForm(formOf({ config: '["a"]' }, { bytes: await valid() })),
    },
    {
      title: 'config with a non-string value',
      status: 400,
      code: 'INVALID_CONFIG',
      send: async () => server.api.uploadForm(formOf({ config: '{"n":1}' }, { bytes: await valid() })),
    },
    {
      title: 'allowedHosts that is not JSON',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => server.api.uploadForm(formOf({ allowedHosts: '*.x.com' }, { bytes: await valid() })),
    },
    {
      title: 'allowedHosts that is an object',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => server.api.uploadForm(formOf({ allowedHosts: '{"a":1}' }, { bytes: await valid() })),
    },
    {
      title: 'allowedHosts with an empty entry',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => server.api.uploadForm(formOf({ allowedHosts: '[""]' }, { bytes: await valid() })),
    },
    {
      title: 'allowedHosts with a pattern outside the grammar',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => server.api.uploadForm(formOf({ allowedHosts: '["ok.test", "*x.com"]' }, { bytes: await valid() })),
      message: /\*x\.com/,
      fields: { pattern: '*x.com', problem: expect.stringMatching(/wildcard/) },
    },
    {
      title: 'allowedHosts with a non-string entry',
      status: 400,
      code: 'INVALID_ALLOWED_HOSTS',
      send: async () => server.api.uploadForm(formOf({ allowedHosts: '[1]' }, { bytes: await valid() })),
    },
  ];

  for (const c of cases) {
    it(`refuses ${c.title} with ${c.status} ${c.code} and stores nothing`, async () => {
      const res = await c.send();
      expect(res.status).toBe(c.status);
      const body = res.error;
      expect(body).toMatchObject({ statusCode: c.status, code: c.code });
      expect(typeof body.error).toBe('string');
      expect(body.message.length).toBeGreaterThan(10);
      if (c.message) expect(body.message).toMatch(c.message);
      if (c.fields) expect(body).toMatchObject(c.fields);
      expect(await server.api.listAll()).toEqual([]);
      expect(await listFiles(server.dataDir)).toEqual([]);
    });
  }

  it('lists the unsupported imports in the error', async () => {
    const res = await server.api.upload(await readPlugin('bad_import'));
    expect(res.error.unsupportedImports).toEqual([
      { module: 'env', name: 'abort', kind: 'function' },
      { module: 'foo', name: 'bar', kind: 'function' },
    ]);
  });

  it('accepts a valid upload on the same server afterwards', async () => {
    const res = await server.api.upload(await wat(tinyPluginWat(42)), { name: 'fine' });
    expect(res.status).toBe(201);
    expect(await listFiles(server.dataDir)).toHaveLength(2);
    await server.api.delete('fine');
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
  it('defaults to 2', async () => {
    const server = await serverForTest();
    expect(server.config.uploadConcurrency).toBe(2);
  });

  it('refuses an upload beyond the limit with 503 OVERLOADED and Retry-After, storing nothing; the slot comes back', async () => {
    const server = await serverForTest({ env: { UPLOAD_CONCURRENCY: '1' } });
    const held = await holdUpload(server, await readPlugin('count_vowels'));

    const other = await wat(tinyPluginWat(77));
    const refused = await server.api.upload(other, { name: 'other' });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = refused.error;
    expect(body).toMatchObject({ statusCode: 503, code: 'OVERLOADED' });
    expect(body.message).toMatch(/UPLOAD_CONCURRENCY/);
    expect(await server.api.listAll()).toEqual([]);
    expect(await listFiles(server.dataDir)).toEqual([]);

    const first = await held.finish();
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body).exports).toEqual(['count_vowels']);
    // The finished upload gave its slot back.
    const accepted = await server.api.upload(other, { name: 'other' });
    expect(accepted.status).toBe(201);
    expect(await server.api.listAll()).toHaveLength(2);
  });

  it('gives the slot back when a client goes away mid-upload', async () => {
    const server = await serverForTest({ env: { UPLOAD_CONCURRENCY: '1' } });
    const bytes = await readPlugin('count_vowels');
    const held = await holdUpload(server, bytes);
    held.abort();
    let res: Reply<Plugin, ErrorBody>;
    const deadline = Date.now() + 2_000;
    do {
      res = await server.api.upload(bytes);
      if (res.status !== 503) break;
      await delay(20);
    } while (Date.now() < deadline);
    expect(res.status).toBe(201);
    expect((await server.api.listAll()).map((p) => p.id)).toEqual([sha256(bytes)]);
  });
});

describe('a 100 MiB upload to a server limited at 32 MiB', () => {
  const server = useServer();
  beforeAll(async () => {
    expect(server.config.maxPluginBytes).toBe(32 * MiB);
    // Warm the upload paths (lazy modules, JIT) so their one-time cost is not counted below.
    const warm = await server.api.upload(await wat(tinyPluginWat(1)));
    expect(warm.status).toBe(201);
    const form = await server.api.upload(await wat(tinyPluginWat(2)), { form: true });
    expect(form.status).toBe(201);
    for (const { id } of await server.api.listAll()) await server.api.delete(id);
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
      expect(await server.api.listAll()).toEqual([]);
      expect(await listFiles(server.dataDir)).toEqual([]);
    });
  }
});

// Extism manifests through HTTP: POST /plugins takes one as JSON or as a multipart `manifest` part
// with its modules as further parts; config, allowed_hosts, memory and timeout_ms become the plugin's
// defaults (lowerable per call); the stored form is canonical (its sha256 is the id) and is what a
// download answers; a module a stored manifest names cannot be deleted from under it. Every answer
// is checked against openapi.yaml.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listFiles, readPlugin, useServer, wat } from './helpers.ts';
import { STORE_BACKENDS, type StoreBackend } from './store-backends.ts';

const sha256 = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');

describe('Extism manifests', () => {
  const server = useServer({
    env: { WORKERS: '1', RATE_LIMIT_MAX: '0', CALL_TIMEOUT_MS_CEILING: '20000', CALL_TIMEOUT_MS: '10000' },
  });
  let vowels: Uint8Array;
  let vowelsId: string;

  beforeAll(async () => {
    vowels = new Uint8Array(await readPlugin('count_vowels'));
    vowelsId = sha256(vowels);
  });

  it('stores a manifest with an inline module under the id of its canonical form, and its config is the default', async () => {
    const manifest = {
      wasm: [{ data: Buffer.from(vowels).toString('base64'), name: 'main' }],
      config: { vowels: 'o' },
      memory: { max_var_bytes: 1024 },
      timeout_ms: 8000,
    };
    const res = await server.api.uploadManifest(manifest, undefined, { name: 'vowels-o' });
    expect(res.status).toBe(201);
    const meta = res.data;
    const canonical = JSON.stringify({
      wasm: [{ hash: vowelsId, name: 'main' }],
      config: { vowels: 'o' },
      memory: { max_var_bytes: 1024 },
      timeout_ms: 8000,
    });
    expect(meta).toMatchObject({
      id: sha256(canonical),
      name: 'vowels-o',
      size: Buffer.byteLength(canonical),
      exports: ['count_vowels'],
      config: { vowels: 'o' },
      manifest: { modules: [{ id: vowelsId, name: 'main' }], main: vowelsId, limits: { maxVarBytes: 1024, timeoutMs: 8000 } },
    });
    expect(res.headers.get('location')).toBe(`/plugins/${meta.id}`);
    // The module is stored as a plugin of its own.
    expect((await server.api.describe(vowelsId)).data.exports).toEqual(['count_vowels']);

    const out = await server.api.call('vowels-o', { function: 'count_vowels', input: 'foo boo' });
    expect(out.status).toBe(200);
    expect(JSON.parse(out.data.output!)).toMatchObject({ count: 4, vowels: 'o' });
    const overridden = await server.api.call('vowels-o', { function: 'count_vowels', input: 'foo', config: { vowels: 'f' } });
    expect(JSON.parse(overridden.data.output!)).toMatchObject({ count: 1, vowels: 'f' });

    // The download is the canonical manifest; the same manifest by hash is the same plugin.
    const download = await server.api.download('vowels-o');
    expect(download.headers.get('content-type')).toMatch(/^application\/json/);
    expect(download.text).toBe(canonical);
    const byHash = await server.api.uploadManifest({
      timeout_ms: 8000,
      memory: { max_var_bytes: 1024 },
      config: { vowels: 'o' },
      wasm: [{ hash: vowelsId, name: 'main' }],
    });
    expect(byHash.status).toBe(200);
    expect(byHash.data.id).toBe(meta.id);

    const listed = (await server.api.list({ name: 'vowels-o' })).data;
    expect(listed.plugins.map((p) => p.id)).toEqual([meta.id]);
  });

  it('gives a manifest the same id whatever the order of its keys and of its allowed_hosts (a set of patterns)', async () => {
    const wasm = [{ data: Buffer.from(await readPlugin('echo')).toString('base64') }];
    const first = await server.api.uploadManifest({ wasm, allowed_hosts: ['b.example.com', 'a.example.com'], timeout_ms: 900 });
    expect(first.status).toBe(201);
    const second = await server.api.uploadManifest({
      timeout_ms: 900,
      allowed_hosts: ['a.example.com', 'b.example.com', 'a.example.com'],
      wasm,
    });
    expect([second.status, second.data.id]).toEqual([200, first.data.id]);
  });

  it('gives several modules whose last is left unnamed the id of the same modules with it named main (it is linked as main either way)', async () => {
    const lhs = { data: Buffer.from(await readPlugin('link_circular_lhs')).toString('base64'), name: 'lhs' };
    const main = Buffer.from(await readPlugin('link_circular_main')).toString('base64');
    const unnamed = await server.api.uploadManifest({ wasm: [lhs, { data: main }] });
    expect(unnamed.status).toBe(201);
    expect(unnamed.data.manifest!.modules.map((m) => m.name)).toEqual(['lhs', 'main']);
    const named = await server.api.uploadManifest({ wasm: [lhs, { data: main, name: 'main' }] });
    expect([named.status, named.data.id]).toEqual([200, unnamed.data.id]);
    expect(JSON.parse((await server.api.download(unnamed.data.id)).text).wasm.map((m: { name?: string }) => m.name)).toEqual([
      'lhs',
      'main',
    ]);
    expect((await server.api.delete(unnamed.data.id)).status).toBe(204);
  });

  it('takes a field given as null as absent (as Extism SDKs may write an unset one)', async () => {
    const wasm = [{ data: Buffer.from(vowels).toString('base64'), name: null, hash: null }];
    const res = await server.api.uploadManifest(
      JSON.stringify({
        wasm,
        config: null,
        allowed_hosts: null,
        allowed_paths: null,
        memory: { max_pages: null },
        timeout_ms: null,
      }),
    );
    expect(res.status).toBe(201);
    expect(res.data.manifest).toMatchObject({ modules: [{ id: vowelsId, name: null }], limits: {} });
    expect((await server.api.delete(res.data.id)).status).toBe(204);
  });

  it('lets a call lower the manifest limits, never raise them', async () => {
    const above = await server.api.call('vowels-o', { function: 'count_vowels', input: 'x', timeoutMs: 9000 });
    expect(above.status).toBe(400);
    expect(above.error).toMatchObject({ code: 'LIMIT_ABOVE_CEILING', field: 'timeoutMs', ceiling: 8000 });
    const lower = await server.api.call('vowels-o', { function: 'count_vowels', input: 'x', timeoutMs: 7000, maxVarBytes: 512 });
    expect(lower.status).toBe(200);
  });

  it('runs a manifest timeout_ms as the deadline of its calls', async () => {
    const loop = new Uint8Array(await readPlugin('loop'));
    const res = await server.api.uploadManifest({ wasm: [{ data: Buffer.from(loop).toString('base64') }], timeout_ms: 300 });
    expect(res.status).toBe(201);
    const { id } = res.data;
    const out = await server.api.call(id, { function: 'spin' });
    expect(out.status).toBe(504);
    expect(out.error.code).toBe('TIMEOUT');
  });

  it('takes a multipart manifest whose path entries name the form’s file parts', async () => {
    const echo = new Uint8Array(await readPlugin('echo'));
    const form = new FormData();
    form.set('manifest', JSON.stringify({ wasm: [{ path: 'echo.wasm' }], config: { k: 'v' } }));
    form.set('echo.wasm', new Blob([echo], { type: 'application/wasm' }), 'echo.wasm');
    form.set('name', 'echo-manifest');
    const res = await server.api.uploadForm(form);
    expect(res.status).toBe(201);
    const meta = res.data;
    expect(meta.manifest!.modules).toEqual([{ id: sha256(echo), name: null }]);
    const out = await server.api.call('echo-manifest', { function: 'echo', input: 'hi ✓' });
    expect(out.data.output).toBe('hi ✓');
  });

  it('refuses to delete a module a stored manifest names (409 with the referrers), until the manifest is gone', async () => {
    const manifest = (await server.api.describe('vowels-o')).data.id;
    const refused = await server.api.delete(vowelsId);
    expect(refused.status).toBe(409);
    expect(refused.error).toMatchObject({ code: 'PLUGIN_IN_USE', referrers: [manifest] });
    expect((await server.api.describe(vowelsId)).status).toBe(200);

    expect((await server.api.delete('vowels-o')).status).toBe(204);
    expect((await server.api.delete(vowelsId)).status).toBe(204);
  });

  describe('refusals store nothing', () => {
    const fresh = useServer({ env: { WORKERS: '1', RATE_LIMIT_MAX: '0' } });

    const data = () => Buffer.from(vowels).toString('base64');
    const plugin = async (name: string) => Buffer.from(await readPlugin(name)).toString('base64');
    const watData = async (source: string) => Buffer.from(await wat(source)).toString('base64');
    const RUN = '(func (export "run") (result i32) (i32.const 0))';
    const cases: { title: string; manifest: () => unknown; code: string; message: RegExp; fields?: Record<string, unknown> }[] = [
      {
        title: 'a url source',
        manifest: () => ({ wasm: [{ url: 'https://example.com/plugin.wasm' }] }),
        code: 'UNSUPPORTED_MANIFEST',
        message: /url sources are not supported: the server fetches nothing/,
        fields: { feature: 'url' },
      },
      {
        title: 'a path source',
        manifest: () => ({ wasm: [{ path: '/etc/plugin.wasm' }] }),
        code: 'UNSUPPORTED_MANIFEST',
        message: /path sources are not supported: the server reads no files/,
        fields: { feature: 'path' },
      },
      {
        title: 'allowed_paths',
        manifest: () => ({ wasm: [{ data: data() }], allowed_paths: { '/tmp': '/data' } }),
        code: 'UNSUPPORTED_MANIFEST',
        message: /allowed_paths is not supported/,
        fields: { feature: 'allowed_paths' },
      },
      {
        title: 'a hash of no stored module',
        manifest: () => ({ wasm: [{ hash: 'b'.repeat(64) }] }),
        code: 'INVALID_MANIFEST',
        message: /no stored module with sha256 b{64}/,
      },
      {
        title: 'data that does not match its hash',
        manifest: () => ({ wasm: [{ data: data(), hash: 'c'.repeat(64) }] }),
        code: 'INVALID_MANIFEST',
        message: /not the hash c{64}/,
      },
      {
        title: 'an unknown field',
        manifest: () => ({ wasm: [{ data: data() }], timeout: 5 }),
        code: 'INVALID_MANIFEST',
        message: /unknown field "timeout"/,
      },
      {
        title: 'data that is not base64',
        manifest: () => ({ wasm: [{ data: 'not base64!' }] }),
        code: 'INVALID_MANIFEST',
        message: /^invalid manifest: wasm\[0\]\.data /,
      },
      {
        title: 'a memory limit of the wrong type',
        manifest: () => ({ wasm: [{ data: data() }], memory: { max_pages: '4' } }),
        code: 'INVALID_MANIFEST',
        message: /^invalid manifest: memory\.max_pages /,
      },
      {
        title: 'a timeout_ms above the operator ceiling',
        manifest: () => ({ wasm: [{ data: data() }], timeout_ms: 10_000_000 }),
        code: 'LIMIT_ABOVE_CEILING',
        message: /timeoutMs 10000000 is above the ceiling/,
      },
      {
        title: 'a module importing what the service does not provide',
        manifest: async () => ({ wasm: [{ data: Buffer.from(await readPlugin('bad_import')).toString('base64') }] }),
        code: 'UNSUPPORTED_IMPORTS',
        message: /env\.abort/,
      },
      {
        title: 'two modules of one name',
        manifest: async () => ({
          wasm: [
            { data: await plugin('link_circular_lhs'), name: 'lhs' },
            { data: data(), name: 'lhs' },
          ],
        }),
        code: 'INVALID_MANIFEST',
        message: /two modules are named "lhs"/,
      },
      {
        title: 'a module named "wasmhost" (the engine’s own imports: every call failed to instantiate)',
        manifest: async () => ({
          wasm: [{ data: data(), name: 'wasmhost' }, { data: await plugin('link_circular_lhs') }],
        }),
        code: 'INVALID_MANIFEST',
        message: /wasm\[0\]\.name "wasmhost" is reserved for the engine's own imports/,
      },
      {
        title: 'several modules none of which is main (the last is named)',
        manifest: async () => ({
          wasm: [
            { data: data(), name: 'a' },
            { data: await plugin('link_circular_lhs'), name: 'lhs' },
          ],
        }),
        code: 'INVALID_MANIFEST',
        message: /no main module: with several modules, one must be named "main" or the last one left unnamed/,
      },
      {
        title: 'an import of a module name the manifest does not have',
        manifest: async () => ({
          wasm: [
            { data: await plugin('link_circular_lhs'), name: 'left' },
            { data: await plugin('link_circular_main'), name: 'main' },
          ],
        }),
        code: 'LINK_ERROR',
        message:
          /^module "main" imports function "lhs" "triple_plus_one": no module of the manifest is named "lhs" \(names: "left", "main"\)/,
        fields: { importer: 'main', import: { module: 'lhs', name: 'triple_plus_one', kind: 'function' } },
      },
      {
        title: 'an import the linked module does not export',
        manifest: async () => ({
          wasm: [
            { data: await plugin('link_memory_side'), name: 'lhs' },
            { data: await plugin('link_circular_main'), name: 'main' },
          ],
        }),
        code: 'LINK_ERROR',
        message: /^module "main" imports function "lhs" "triple_plus_one": module "lhs" exports no function "triple_plus_one"$/,
      },
      {
        title: 'a function import whose type differs from the export',
        manifest: async () => ({
          wasm: [
            { data: await watData('(module (func (export "f") (param i64) (result i64) (local.get 0)))'), name: 'lhs' },
            { data: await watData(`(module (import "lhs" "f" (func (param i32) (result i32))) ${RUN})`) },
          ],
        }),
        code: 'LINK_ERROR',
        message: /imports function "lhs" "f": it is declared as \(i32\) -> i32, the module exports \(i64\) -> i64$/,
      },
      {
        title: 'a memory import larger than the exported memory',
        manifest: async () => ({
          wasm: [
            { data: await watData('(module (memory (export "memory") 1))'), name: 'lhs' },
            { data: await watData(`(module (import "lhs" "memory" (memory 2)) ${RUN})`) },
          ],
        }),
        code: 'LINK_ERROR',
        message: /imports memory "lhs" "memory": it is declared as \{min 2\}, the module exports \{min 1\}$/,
      },
      {
        title: 'a global import of another mutability',
        manifest: async () => ({
          wasm: [
            { data: await watData('(module (global (export "g") i32 (i32.const 7)))'), name: 'lhs' },
            { data: await watData(`(module (import "lhs" "g" (global (mut i32))) ${RUN})`) },
          ],
        }),
        code: 'LINK_ERROR',
        message: /imports global "lhs" "g": it is declared as mutable global 7f, the module exports global 7f$/,
      },
      {
        title: 'a memory imported in an import cycle',
        manifest: async () => ({
          wasm: [
            { data: await watData('(module (import "main" "memory" (memory 1)) (func (export "f")))'), name: 'lhs' },
            { data: await watData(`(module (import "lhs" "f" (func)) (memory (export "memory") 1) ${RUN})`), name: 'main' },
          ],
        }),
        code: 'LINK_ERROR',
        message: /^module "lhs" imports memory "main" "memory": module "main" is still being instantiated \(an import cycle\)/,
      },
      {
        title: 'a side module importing a host function with another signature',
        manifest: async () => ({
          wasm: [
            {
              data: await watData(
                '(module (import "extism:host/env" "alloc" (func (param i32) (result i32))) (memory (export "memory") 1))',
              ),
              name: 'lhs',
            },
            { data: await watData(`(module (import "lhs" "memory" (memory 1)) ${RUN})`) },
          ],
        }),
        code: 'UNSUPPORTED_IMPORTS',
        message: /extism:host\/env\.alloc declared as \(i32\) -> i32/,
      },
      {
        title: 'a main module exporting no function',
        manifest: async () => ({
          wasm: [
            { data: await watData('(module (func (export "f")))'), name: 'lhs' },
            { data: await watData('(module (import "lhs" "f" (func)) (memory (export "memory") 1))') },
          ],
        }),
        code: 'NO_CALLABLE_EXPORTS',
        message: /exports no function a caller could call/,
      },
    ];

    for (const c of cases) {
      it(`refuses ${c.title} with 400 ${c.code}`, async () => {
        // As JSON text: these manifests are wrong on purpose, outside what the contract's type allows.
        const res = await fresh.api.uploadManifest(JSON.stringify(await c.manifest()));
        expect(res.status).toBe(400);
        const body = res.error;
        expect(body).toMatchObject({ statusCode: 400, code: c.code, ...c.fields });
        expect(body.message).toMatch(c.message);
        expect(await listFiles(fresh.dataDir)).toEqual([]);
      });
    }
  });
});

describe.each(STORE_BACKENDS)(
  'a manifest upload raced by deletes of the module it carries ($name store)',
  (backend: StoreBackend) => {
    let env: Record<string, string>;
    beforeAll(async () => {
      env = await backend.env();
    });
    afterAll(async () => {
      await backend.cleanup();
    });
    const server = useServer(() => ({ env: { ...env, WORKERS: '1', RATE_LIMIT_MAX: '0' } }));

    it('stores the module again and the manifest with it: never a 400 blaming the client', async () => {
      const echo = new Uint8Array(await readPlugin('echo'));
      const echoId = sha256(echo);
      const answers: string[] = [];
      for (let round = 0; round < 8; round++) {
        const upload = server.api.uploadManifest({
          wasm: [{ data: Buffer.from(echo).toString('base64') }],
          config: { round: String(round) },
        });
        // Deletes by id while the upload goes on: each finds the module stored alone (204), in use (409) or gone (404).
        const deletes = [0, 5, 15, 30].map(async (ms) => {
          await new Promise((resolve) => setTimeout(resolve, ms));
          return (await server.api.delete(echoId)).status;
        });
        const [res, ...deleted] = await Promise.all([upload, ...deletes]);
        answers.push(`${res.status} ${res.status >= 400 ? JSON.stringify(res.body) : ''}`);
        for (const status of deleted) expect([204, 404, 409]).toContain(status);
        if (res.status === 201) {
          // Stored whole: the manifest runs, and its module is stored while it is.
          expect((await server.api.describe(echoId)).status).toBe(200);
          expect((await server.api.call(res.data.id, { function: 'echo', input: 'x' })).status).toBe(200);
          expect((await server.api.delete(res.data.id)).status).toBe(204);
        }
      }
      expect(answers).toEqual(answers.map(() => '201 '));
    });
  },
);

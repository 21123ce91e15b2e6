// GET /plugins a page at a time (limit + an opaque cursor, newest first), over HTTP, on each store
// backend: every plugin exactly once even while uploads go on, and bad limits and cursors refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyNewPlugin, useServer } from './helpers.ts';
import type { PluginPage } from './test-client.ts';
import { STORE_BACKENDS, type StoreBackend } from './store-backends.ts';

describe.each(STORE_BACKENDS)('GET /plugins pages ($name store)', (backend: StoreBackend) => {
  let env: Record<string, string>;
  const stored: string[] = [];

  beforeAll(async () => {
    env = await backend.env();
  });

  afterAll(async () => {
    await backend.cleanup();
  });

  const server = useServer(() => ({ env }));

  beforeAll(async () => {
    // Filled through the store itself: 2,500 uploads over HTTP would measure the upload path, not paging.
    // Eight at a time (the order within a batch is the store's: the listing's order is checked by the store tests).
    for (let first = 1; first <= 2_500; first += 8) {
      const batch = await Promise.all(Array.from({ length: Math.min(8, 2_501 - first) }, (_, i) => tinyNewPlugin(first + i)));
      await Promise.all(batch.map((plugin) => server.app.store.put(plugin).then(({ meta }) => stored.push(meta.id))));
    }
  }, 300_000);

  it('lists 2,500 plugins with limit=1000 in three pages, each exactly once, newest first, while uploads go on', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    let marker = 10_000;
    do {
      const page: PluginPage = (await server.api.list({ limit: 1000, cursor })).data;
      seen.push(...page.plugins.map((p) => p.id));
      cursor = page.nextCursor;
      pages++;
      // New uploads between pages are newer than every page's cursor: they never shift a later page.
      const upload = await tinyNewPlugin(marker++);
      expect((await server.api.upload(upload.bytes)).status).toBe(201);
    } while (cursor !== null && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(2_500);
    expect(new Set(seen)).toEqual(new Set(stored));
  });

  it('answers LIST_LIMIT plugins by default and refuses a limit above the ceiling, a limit of 0 and a forged cursor', async () => {
    const first = (await server.api.list()).data;
    expect(first.plugins).toHaveLength(100);
    expect(first.nextCursor).toEqual(expect.any(String));

    const tooMany = await server.api.list({ limit: 1001 });
    expect(tooMany.status).toBe(400);
    expect(tooMany.error).toMatchObject({ code: 'LIMIT_ABOVE_CEILING' });

    for (const query of [
      '?limit=0',
      '?limit=ten',
      '?cursor=not-a-cursor',
      `?cursor=${Buffer.from('u-1').toString('base64url')}`,
    ]) {
      // By hand: the typed list() takes a number.
      const res = await server.api.request('GET', `/plugins${query}`);
      expect({ query, status: res.status, code: res.error.code }).toEqual({
        query,
        status: 400,
        code: 'INVALID_REQUEST',
      });
    }
  });

  it('filters a page by name and ends with a null cursor', async () => {
    const named = await tinyNewPlugin(20_000);
    await server.app.store.put({ ...named, meta: { ...named.meta, name: 'paged' } });
    const page = (await server.api.list({ name: 'paged', limit: 5 })).data;
    expect(page).toEqual({ plugins: [expect.objectContaining({ id: named.meta.id, name: 'paged' })], nextCursor: null });
  });
});

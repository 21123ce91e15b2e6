// How the pool treats calls that wait: a caller that goes away frees its place at once, and a call
// whose deadline passed before it could even be queued says so with its own timeoutMs.
import http from 'node:http';
import { beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, useServer, type TestServer } from './helpers.ts';

/** Sends a call and closes the connection once the request is written, without reading an answer. */
function callAndHangUp(server: TestServer, plugin: string, body: Record<string, unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${server.url}/plugins/${plugin}/call`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
    });
    request.on('error', () => resolve());
    request.end(JSON.stringify(body), () => setTimeout(() => (request.destroy(), resolve()), 100));
    request.on('response', () => reject(new Error('answered before the hang-up')));
  });
}

async function waitFor(condition: () => boolean, ms = 5_000): Promise<void> {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('a one-worker pool with a queue of one (no burst workers)', () => {
  const server = useServer({ env: { WORKERS: '1', BURST_WORKERS: '0', QUEUE_MAX: '1', MAX_EVENT_LOOP_DELAY_MS: '0' } });

  beforeAll(async () => {
    for (const name of ['loop', 'count_vowels'])
      expect((await server.api.upload(await readPlugin(name), { name })).status).toBe(201);
  });

  it('frees the queue place of a caller that disconnects while its call waits, at once (not at its deadline)', async () => {
    const spin = server.api.call('loop', { function: 'spin', timeoutMs: 3_000 });
    await waitFor(() => server.app.engine.stats().busy === 1);
    await callAndHangUp(server, 'count_vowels', { function: 'count_vowels', input: 'a', timeoutMs: 20_000 });
    await waitFor(() => server.app.engine.stats().queued === 0);
    // The place is free again: the next call waits instead of being refused 503 OVERLOADED.
    const next = server.api.call('count_vowels', { function: 'count_vowels', input: 'aeiou', timeoutMs: 20_000 });
    await waitFor(() => server.app.engine.stats().queued === 1);
    expect((await spin).status).toBe(504);
    const answer = await next;
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.data.output!).count).toBe(5);
  });

  it('lets a running call finish when its caller disconnects (the worker is not stopped)', async () => {
    const restarts = server.app.engine.stats().restarts.timeout;
    const controller = new AbortController();
    const gone = server.api
      .call('loop', { function: 'spin', timeoutMs: 500 }, { signal: controller.signal })
      .catch(() => 'aborted');
    await waitFor(() => server.app.engine.stats().busy === 1);
    controller.abort();
    expect(await gone).toBe('aborted');
    // It runs to its deadline, where (as always for a loop) its worker is replaced.
    await waitFor(() => server.app.engine.stats().restarts.timeout === restarts + 1);
    expect((await server.api.call('count_vowels', { function: 'count_vowels', input: 'ab' })).status).toBe(200);
  });
});

describe('a call whose deadline passes while its plugin is prepared (no module cache)', () => {
  const server = useServer({ env: { MODULE_CACHE_BYTES: '0', MAX_EVENT_LOOP_DELAY_MS: '0' } });

  beforeAll(async () => {
    expect((await server.api.upload(await readPlugin('rust_vowels'), { name: 'rust_vowels' })).status).toBe(201);
  });

  it('answers 504 TIMEOUT naming its own timeoutMs, never a negative deadline', async () => {
    const { status, error: body } = await server.api.call('rust_vowels', { function: 'count_vowels', input: 'a', timeoutMs: 1 });
    expect([status, body.code]).toEqual([504, 'TIMEOUT']);
    expect(body.message).toMatch(/1 ms/);
    expect(body.message).not.toMatch(/-\d+ ms/);
  });
});

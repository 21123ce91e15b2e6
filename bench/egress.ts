// Overhead of the egress fetch over a plain undici fetch, sequential GETs to a loopback server.
//   node_modules/.bin/node bench/egress.ts [requests]
// Prints mean µs per request for: plain undici fetch (shared agent), one egress session reused
// (connections pooled, host resolved once), and a fresh session per request (a call that makes one
// request: new agent, new connection).
import { Agent, fetch as undiciFetch } from 'undici';
import { createEgressFetch, type EgressOptions } from '../src/egress/fetch.ts';
import { startUpstream } from '../test/upstream.ts';

const n = Number(process.argv[2] ?? 2000);
const upstream = await startUpstream('127.0.0.1');
const url = `${upstream.urlAs('bench.example.test')}/ok`;
const options: EgressOptions = {
  allowedHosts: ['*.example.test'],
  ceiling: ['*'],
  allowPrivate: true,
  timeoutMs: 5_000,
  deadline: null,
  maxResponseBytes: 1 << 20,
  maxRequests: Number.MAX_SAFE_INTEGER,
  maxRedirects: 5,
  maxRequestBodyBytes: 1 << 20,
  hosts: { 'bench.example.test': '127.0.0.1' },
};

async function time(label: string, once: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 200; i++) await once();
  const start = performance.now();
  for (let i = 0; i < n; i++) await once();
  const us = ((performance.now() - start) * 1000) / n;
  console.log(`${label.padEnd(34)} ${us.toFixed(0).padStart(6)} µs/request`);
  return us;
}

const agent = new Agent();
const plain = await time('plain undici fetch', async () => {
  await (await undiciFetch(`${upstream.url}/ok`, { dispatcher: agent })).arrayBuffer();
});
const shared = createEgressFetch(options);
const reused = await time('egress, one session', async () => {
  await (await shared.fetch(url)).arrayBuffer();
});
const fresh = await time('egress, fresh session per request', async () => {
  const session = createEgressFetch(options);
  await (await session.fetch(url)).arrayBuffer();
  await session.close();
});
console.log(`ratios to plain: one session ${(reused / plain).toFixed(2)}, fresh session ${(fresh / plain).toFixed(2)}`);
await shared.close();
await agent.close();
await upstream.close();

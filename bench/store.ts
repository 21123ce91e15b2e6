// One replica on the filesystem store against one on the PostgreSQL store, in the same run: upload
// latency (sequential uploads of distinct 12 KB plugins) and call throughput (autocannon on
// count_vowels). The two stores take turns, BENCH_ROUNDS times, so both see the same machine.
//   npm run bench:store      (BENCH_UPLOADS=150, BENCH_SECONDS=8, BENCH_CONNECTIONS=50, BENCH_ROUNDS=2,
//                             BENCH_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres)
// The PostgreSQL database is created for the run with the server's default settings (durable commits)
// and dropped at the end. Everything runs on loopback and shares the machine: compare within a run.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { withCustomSection } from '../test/wasm-builder.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const uploads = Number(process.env.BENCH_UPLOADS ?? 150);
const seconds = Number(process.env.BENCH_SECONDS ?? 8);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const adminUrl = process.env.BENCH_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

const vowels = await readFile(path.join(root, 'plugins', 'dist', 'count_vowels.wasm'));

/** count_vowels with a 16-byte custom section appended: a distinct id, the same module to compile. */
function distinctPlugin(): Uint8Array {
  return withCustomSection(vowels, 'n', randomBytes(16));
}

async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  return port;
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** What autocannon's callback hands back. */
type LoadResult = Parameters<Parameters<typeof autocannon>[1]>[1];

interface Server {
  url: string;
  process: ChildProcess;
  dataDir: string;
}

async function startServer(env: Record<string, string>): Promise<Server> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'wasmhost-bench-store-'));
  const port = await freePort();
  const child = spawn(process.execPath, ['src/main.ts'], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: String(port),
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      RATE_LIMIT_MAX: '0',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (
      await fetch(`${url}/readyz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return { url, process: child, dataDir };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error('the server did not become ready');
}

async function stopServer(server: Server): Promise<void> {
  server.process.kill('SIGTERM');
  if (server.process.exitCode === null) await once(server.process, 'exit');
  await rm(server.dataDir, { recursive: true, force: true });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Result {
  store: string;
  uploadMeanMs: number;
  uploadP50Ms: number;
  uploadP95Ms: number;
  callRps: number;
  callP99Ms: number;
  non2xx: number;
}

async function measure(store: string, env: Record<string, string>): Promise<Result> {
  const server = await startServer(env);
  try {
    const latencies: number[] = [];
    for (let i = 0; i < uploads; i++) {
      const body = distinctPlugin();
      const started = performance.now();
      const res = await fetch(`${server.url}/plugins`, {
        method: 'POST',
        headers: { 'content-type': 'application/wasm' },
        body: new Uint8Array(body),
      });
      await res.arrayBuffer();
      if (res.status !== 201) throw new Error(`upload answered ${res.status}`);
      latencies.push(performance.now() - started);
    }
    latencies.sort((a, b) => a - b);

    const named = await fetch(`${server.url}/plugins?name=bench`, {
      method: 'POST',
      headers: { 'content-type': 'application/wasm' },
      body: new Uint8Array(vowels),
    });
    if (named.status !== 201) throw new Error(`upload answered ${named.status}`);
    const run = (duration: number) =>
      new Promise<LoadResult>((resolve, reject) => {
        autocannon(
          {
            url: `${server.url}/plugins/bench/call`,
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ function: 'count_vowels', input: 'Hello, World!' }),
            connections,
            duration,
          },
          (err, result) => (err ? reject(err) : resolve(result)),
        );
      });
    await run(1); // warm-up: workers started, instances cached
    const result = await run(seconds);
    return {
      store,
      uploadMeanMs: latencies.reduce((a, b) => a + b, 0) / latencies.length,
      uploadP50Ms: percentile(latencies, 50),
      uploadP95Ms: percentile(latencies, 95),
      callRps: result.requests.average,
      callP99Ms: result.latency.p99,
      non2xx: result.non2xx + result.errors + result.timeouts,
    };
  } finally {
    await stopServer(server);
  }
}

const results: Result[] = [];
for (let round = 1; round <= rounds; round++) {
  results.push(await measure('filesystem', {}));
  const database = `wasmhost_bench_${process.pid}_${round}`;
  await admin(`CREATE DATABASE ${database}`);
  try {
    const url = new URL(adminUrl);
    url.pathname = `/${database}`;
    results.push(await measure('postgres', { STORE: 'postgres', DATABASE_URL: url.toString() }));
  } finally {
    await admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  }
}

const fmt = (n: number) => n.toFixed(1).padStart(8);
console.log(
  `\n${uploads} uploads (12 KB, sequential), then ${seconds} s of calls at ${connections} connections, ${rounds} round(s)`,
);
console.log('store        upload mean   p50      p95     | calls/s    p99 ms   errors');
for (const r of results) {
  console.log(
    `${r.store.padEnd(12)} ${fmt(r.uploadMeanMs)} ${fmt(r.uploadP50Ms)} ${fmt(r.uploadP95Ms)} | ${fmt(r.callRps)} ${fmt(r.callP99Ms)} ${String(r.non2xx).padStart(8)}`,
  );
}
const mean = (store: string, key: 'uploadMeanMs' | 'callRps') => {
  const of = results.filter((r) => r.store === store).map((r) => r[key]);
  return of.reduce((a, b) => a + b, 0) / of.length;
};
console.log(
  `postgres / filesystem: upload latency ${(mean('postgres', 'uploadMeanMs') / mean('filesystem', 'uploadMeanMs')).toFixed(2)}x, ` +
    `call throughput ${(mean('postgres', 'callRps') / mean('filesystem', 'callRps')).toFixed(2)}x`,
);

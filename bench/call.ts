// Throughput of POST /plugins/:id/call against a bare Fastify POST route, measured in one run.
//   npm run bench                    (BENCH_SECONDS=8 per scenario, BENCH_CONNECTIONS=50)
// The server runs in a child process (same setup as main.ts); autocannon runs here. Both share the
// machine, so only ratios to the baseline measured in the same run mean anything.
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const seconds = Number(process.env.BENCH_SECONDS ?? 8);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);

interface Scenario {
  label: string;
  path: string;
  body: string;
}

interface Measured {
  label: string;
  rps: number;
  /** Server CPU per request, µs: main thread and the whole process (workers too). */
  mainUs: number;
  processUs: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

const child: ChildProcess = fork(path.join(root, 'bench', 'call-server.ts'), {
  env: { ...process.env, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', RATE_LIMIT_MAX: '0', QUEUE_MAX: '1024' },
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const [ready] = (await once(child, 'message')) as [{ port: number; workers: number }];
const base = `http://127.0.0.1:${ready.port}`;

async function upload(name: string): Promise<string | null> {
  const file = path.join(root, 'plugins', 'dist', `${name}.wasm`);
  if (!existsSync(file)) {
    console.warn(`bench: ${file} missing (npm run build:plugins); skipping ${name}`);
    return null;
  }
  const res = await fetch(`${base}/plugins?name=${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: new Uint8Array(readFileSync(file)),
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`upload ${name}: ${res.status} ${await res.text()}`);
  return name;
}

const input = 'The quick brown fox jumps over the lazy dog. Hello, World!';
const callBody = (fn: string) => JSON.stringify({ function: fn, input });
// A heavier call of the Rust plugin: JSON in, word statistics over 1.4 KiB of text (54 sentences), JSON out.
const analyzeText = Array.from({ length: 18 }, (_, i) => `${input} Sentence ${i} ends here.`).join(' ');
const analyzeBody = JSON.stringify({ function: 'analyze', input: JSON.stringify({ text: analyzeText, top: 5 }) });

async function check(name: string, fn: string): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${base}/plugins/${name}/call`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: callBody(fn),
    });
    const body = (await res.json()) as { output?: string };
    const out = JSON.parse(body.output ?? '{}') as { count?: number; total?: number; calls?: number };
    if (res.status !== 200 || out.count !== out.total || (out.calls !== undefined && out.calls !== 1)) {
      throw new Error(`${name}: unexpected answer ${res.status} ${JSON.stringify(body)}`);
    }
  }
}

async function checkAnalyze(): Promise<void> {
  const res = await fetch(`${base}/plugins/rust_vowels/call`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: analyzeBody,
  });
  const body = (await res.json()) as { output?: string };
  const out = JSON.parse(body.output ?? '{}') as { words?: number; sentences?: number };
  if (res.status !== 200 || out.sentences !== 54)
    throw new Error(`rust_vowels analyze: unexpected answer ${res.status} ${JSON.stringify(body)}`);
}

interface Mark {
  cpuUs: number;
  mainCpuUs: number;
}

async function mark(): Promise<Mark> {
  child.send({ kind: 'mark' });
  for (;;) {
    const [msg] = (await once(child, 'message')) as [Mark & { kind: string }];
    if (msg.kind === 'mark') return msg;
  }
}

async function run(s: Scenario, duration: number): Promise<Measured> {
  const before = await mark();
  const measured = await autocannonRun(s, duration);
  const after = await mark();
  const requests = measured.rps * duration;
  return {
    ...measured,
    mainUs: (after.mainCpuUs - before.mainCpuUs) / requests,
    processUs: (after.cpuUs - before.cpuUs) / requests,
  };
}

function autocannonRun(s: Scenario, duration: number): Promise<Omit<Measured, 'mainUs' | 'processUs'>> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: base + s.path,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: s.body,
        connections,
        duration,
      },
      (err, result) => {
        if (err) return reject(err);
        resolve({
          label: s.label,
          rps: result.requests.average,
          p50: result.latency.p50,
          p99: result.latency.p99,
          errors: result.errors + result.timeouts,
          non2xx: result.non2xx,
        });
      },
    );
  });
}

const scenarios: Scenario[] = [{ label: '(a) bare POST route', path: '/bench/bare', body: callBody('count_vowels') }];
if (await upload('count_vowels')) {
  await check('count_vowels', 'count_vowels');
  scenarios.push({ label: '(b) call count_vowels (AS)', path: '/plugins/count_vowels/call', body: callBody('count_vowels') });
}
if (await upload('rust_vowels')) {
  await check('rust_vowels', 'count_vowels');
  scenarios.push({ label: '(c) call rust_vowels (Rust)', path: '/plugins/rust_vowels/call', body: callBody('count_vowels') });
  await checkAnalyze();
  scenarios.push({ label: '(d) rust_vowels analyze 1.4 KiB', path: '/plugins/rust_vowels/call', body: analyzeBody });
}

console.log(
  `bench: ${connections} connections, ${seconds} s per scenario, ${ready.workers} engine workers, node ${process.version}`,
);
const results: Measured[] = [];
for (const s of scenarios) {
  await run(s, 1); // warm-up: JIT, worker module caches
  results.push(await run(s, seconds));
}
// The baseline again at the end: the machine is shared, and drift shows here.
results.push({ ...(await run(scenarios[0]!, seconds)), label: '(a) bare POST route, again' });

const baseline = (results[0]!.rps + results[results.length - 1]!.rps) / 2;
console.log('');
console.log(
  `${'scenario'.padEnd(30)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'ratio'.padStart(6)} ${'main µs/req'.padStart(12)} ${'cpu µs/req'.padStart(11)}  errors/non-2xx`,
);
for (const r of results) {
  console.log(
    `${r.label.padEnd(30)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(1).padStart(7)} ${r.p99.toFixed(1).padStart(7)} ${(r.rps / baseline).toFixed(2).padStart(6)} ${r.mainUs.toFixed(0).padStart(12)} ${r.processUs.toFixed(0).padStart(11)}  ${r.errors}/${r.non2xx}`,
  );
}
console.log(`(ratio = req/s over the mean of the two baseline runs, ${baseline.toFixed(0)} req/s; main µs = CPU time of the`);
console.log(' server main thread per request, cpu µs = whole server process incl. workers: both less noisy than req/s)');

child.send({ kind: 'stats' });
const [stats] = (await once(child, 'message')) as [{ engine: unknown; rss: number }];
// (the stats reply is the next message: marks are only requested around runs)
console.log(`server after run: rss ${(stats.rss / 1048576).toFixed(0)} MiB, engine ${JSON.stringify(stats.engine)}`);
child.disconnect();
await once(child, 'exit');

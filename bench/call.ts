// Throughput, latency and CPU of POST /plugins/:id/call, against a plain Fastify app with one POST
// route in a process of its own (measured at the start, between scenarios and at the end; each
// scenario's ratio is over the runs next to it).
//   npm run bench              (BENCH_SECONDS=8 per scenario, BENCH_CONNECTIONS=50, BENCH_STORED_PLUGINS=1000,
//                              BENCH_BASELINE_SECONDS=4 per baseline run between scenarios)
//   npm run bench -- --only as,rust_regex   (some of: bare, as, rust, analyze, rust_regex, first_byte, linked, stored;
//                                           first_call: only the first-call ratio, which rust_regex measures too)
//   BENCH_CPU_PROF=dir npm run bench        (both servers run with --cpu-prof, writing their profiles to dir)
// Both servers run as child processes; autocannon runs here. All three share the machine, so only
// ratios within one run mean anything: compare runs by their ratios, and repeat runs.
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { withCustomSection } from '../test/wasm-builder.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const seconds = Number(process.env.BENCH_SECONDS ?? 8);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
const storedPlugins = Number(process.env.BENCH_STORED_PLUGINS ?? 1000);
/** The ≥ 1 MB plugin built with cargo from serde_json + regex (plugins/cargo/rust_regex). */
const LARGE_RUST = 'rust_regex';
/** --only a,b: the scenarios to run (by key); the baseline always runs. */
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg === -1 ? null : new Set((process.argv[onlyArg + 1] ?? '').split(','));
const wanted = (key: string) => only === null || only.has(key);
const cpuProfDir = process.env.BENCH_CPU_PROF;

interface Mark {
  cpuUs: number;
  mainCpuUs: number;
  /** The engine's worker threads and V8's background threads (call server only). */
  engineUs?: number;
  v8Us?: number;
}

/** A child server: its messages are tagged with `kind`; `ask` waits for the next one of a kind. */
class Child {
  readonly process: ChildProcess;
  readonly #waiting = new Map<string, ((msg: unknown) => void)[]>();
  #stopping = false;
  constructor(script: string, env: NodeJS.ProcessEnv, execArgv: string[] = []) {
    this.process = fork(path.join(root, 'bench', script), {
      env,
      execArgv: [...process.execArgv, ...execArgv],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.process.on('message', (msg: { kind: string }) => this.#waiting.get(msg.kind)?.shift()?.(msg));
    // A server that dies must end the run, not leave it waiting for an answer.
    this.process.on('exit', (code) => {
      if (this.#stopping) return;
      console.error(`bench: ${script} exited (code ${code})`);
      process.exit(1);
    });
  }
  next<T>(kind: string): Promise<T> {
    return new Promise((resolve) => {
      const list = this.#waiting.get(kind) ?? [];
      list.push(resolve as (msg: unknown) => void);
      this.#waiting.set(kind, list);
    });
  }
  ask<T>(kind: string): Promise<T> {
    const reply = this.next<T>(kind);
    this.process.send({ kind });
    return reply;
  }
  async stop(): Promise<void> {
    this.#stopping = true;
    this.process.disconnect();
    if (this.process.exitCode === null) await once(this.process, 'exit');
  }
}

const profile = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
const plain = new Child('plain-server.ts', { ...process.env }, profile);
const server = new Child(
  'call-server.ts',
  {
    ...process.env,
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    RATE_LIMIT_MAX: '0',
    QUEUE_MAX: '1024',
  },
  profile,
);
const [plainReady, serverReady] = await Promise.all([
  plain.next<{ port: number }>('ready'),
  server.next<{ port: number; workers: number }>('ready'),
]);
const plainBase = `http://127.0.0.1:${plainReady.port}`;
const base = `http://127.0.0.1:${serverReady.port}`;

interface Scenario {
  label: string;
  /** A plugin call (its main-thread CPU counts against the target). */
  call: boolean;
  target: Child;
  url: string;
  body: string;
}

interface Measured {
  label: string;
  call: boolean;
  rps: number;
  /** Server CPU per request, µs: main thread and the whole process (workers too). */
  mainUs: number;
  processUs: number;
  /** Of processUs: the engine's worker threads, and V8's background threads (GC, compilation). */
  engineUs: number;
  v8Us: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

function pluginFile(name: string): string | null {
  const file = path.join(root, 'plugins', 'dist', `${name}.wasm`);
  if (existsSync(file)) return file;
  console.warn(`bench: ${file} missing (npm run build:plugins); skipping ${name}`);
  return null;
}

async function upload(bytes: Uint8Array, name?: string): Promise<string> {
  const res = await fetch(`${base}/plugins${name ? `?name=${name}` : ''}`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`upload ${name ?? ''}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { id: string }).id;
}

async function call(plugin: string, body: string): Promise<{ status: number; output: string }> {
  const res = await fetch(`${base}/plugins/${plugin}/call`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  const answer = (await res.json()) as { output?: string };
  return { status: res.status, output: answer.output ?? JSON.stringify(answer) };
}

/** The same module with a custom section appended: new bytes, so a new plugin id. */
function variant(bytes: Uint8Array, n: number): Uint8Array {
  return withCustomSection(bytes, `bench-${n}`, new Uint8Array(0));
}

const input = 'The quick brown fox jumps over the lazy dog. Hello, World!';
const callBody = (fn: string) => JSON.stringify({ function: fn, input });
// A heavier call of the Rust plugin: JSON in, word statistics over 1.4 KiB of text (54 sentences), JSON out.
const analyzeText = Array.from({ length: 18 }, (_, i) => `${input} Sentence ${i} ends here.`).join(' ');
const analyzeBody = JSON.stringify({ function: 'analyze', input: JSON.stringify({ text: analyzeText, top: 5 }) });
// The memory-size pair: the same trivial call on 1 page and on 1024 pages (64 MiB) of memory.
const firstByteBody = JSON.stringify({ function: 'first_byte', input: 'x', memoryMaxPages: 1024 });

/** Calls a few times and checks every answer (fresh state each time: `calls` stays 1, `total` = `count`). */
async function checkVowels(plugin: string): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const { status, output } = await call(plugin, callBody('count_vowels'));
    const out = JSON.parse(output) as { count?: number; total?: number; calls?: number };
    if (status !== 200 || out.count !== 14 || out.count !== out.total || (out.calls !== undefined && out.calls !== 1)) {
      throw new Error(`${plugin}: unexpected answer ${status} ${output}`);
    }
  }
}

async function checkOutput(plugin: string, body: string, check: (output: string) => boolean): Promise<void> {
  const { status, output } = await call(plugin, body);
  if (status !== 200 || !check(output)) throw new Error(`${plugin}: unexpected answer ${status} ${output}`);
}

async function run(s: Scenario, duration: number): Promise<Measured> {
  const before = await s.target.ask<Mark>('mark');
  const measured = await autocannonRun(s, duration);
  const after = await s.target.ask<Mark>('mark');
  const requests = Math.max(1, measured.rps * duration);
  return {
    ...measured,
    mainUs: (after.mainCpuUs - before.mainCpuUs) / requests,
    processUs: (after.cpuUs - before.cpuUs) / requests,
    engineUs: ((after.engineUs ?? 0) - (before.engineUs ?? 0)) / requests,
    v8Us: ((after.v8Us ?? 0) - (before.v8Us ?? 0)) / requests,
  };
}

function autocannonRun(s: Scenario, duration: number): Promise<Omit<Measured, 'mainUs' | 'processUs' | 'engineUs' | 'v8Us'>> {
  return new Promise((resolve, reject) => {
    autocannon(
      { url: s.url, method: 'POST', headers: { 'content-type': 'application/json' }, body: s.body, connections, duration },
      (err, result) => {
        if (err) return reject(err);
        resolve({
          label: s.label,
          call: s.call,
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

const callScenario = (label: string, plugin: string, body: string): Scenario => ({
  label,
  call: true,
  target: server,
  url: `${base}/plugins/${plugin}/call`,
  body,
});

const baseline: Scenario = {
  label: 'plain Fastify (own process)',
  call: false,
  target: plain,
  url: `${plainBase}/`,
  body: callBody('x'),
};
const scenarios: Scenario[] = [];
if (wanted('bare')) {
  scenarios.push({
    label: 'bare route inside wasmhost',
    call: false,
    target: server,
    url: `${base}/bench/bare`,
    body: callBody('x'),
  });
}
const uploaded = new Map<string, Uint8Array>();
for (const name of ['count_vowels', 'rust_vowels', LARGE_RUST, 'mem_small', 'mem_large']) {
  const file = pluginFile(name);
  if (!file) continue;
  const bytes = new Uint8Array(readFileSync(file));
  await upload(bytes, name);
  uploaded.set(name, bytes);
}
if (uploaded.has('count_vowels') && wanted('as')) {
  await checkVowels('count_vowels');
  scenarios.push(callScenario('AS count_vowels (12 KB)', 'count_vowels', callBody('count_vowels')));
}
if (uploaded.has('rust_vowels') && wanted('rust')) {
  await checkVowels('rust_vowels');
  scenarios.push(callScenario('Rust count_vowels (217 KB)', 'rust_vowels', callBody('count_vowels')));
}
if (uploaded.has('rust_vowels') && wanted('analyze')) {
  await checkOutput('rust_vowels', analyzeBody, (out) => (JSON.parse(out) as { sentences?: number }).sentences === 54);
  scenarios.push(callScenario('Rust analyze 1.4 KiB (217 KB)', 'rust_vowels', analyzeBody));
}
const large = uploaded.get(LARGE_RUST);
const largeLabel = large ? `real-toolchain Rust (${(large.length / 1e6).toFixed(1)} MB)` : '';
const largeWanted = large !== undefined && wanted('rust_regex');
if (largeWanted) {
  await checkVowels(LARGE_RUST);
  scenarios.push(callScenario(largeLabel, LARGE_RUST, callBody('count_vowels')));
}
const memorySizePair = uploaded.has('mem_small') && uploaded.has('mem_large') && wanted('first_byte');
if (memorySizePair) {
  for (const name of ['mem_small', 'mem_large']) await checkOutput(name, firstByteBody, (out) => out === 'x');
  scenarios.push(callScenario('first_byte, 1 page', 'mem_small', firstByteBody));
  scenarios.push(callScenario('first_byte, 64 MiB', 'mem_large', firstByteBody));
}

// The same vowel count as one module and as a linked manifest (main calls its "vowels" module for
// every byte): what linking costs a call.
const linkedPair = ['vowels_single', 'link_vowels_main', 'link_vowels_lib'].map(pluginFile);
if (wanted('linked') && linkedPair.every((file) => file !== null)) {
  const [single, main, lib] = linkedPair.map((file) => new Uint8Array(readFileSync(file!)));
  await upload(single!, 'vowels_single');
  const res = await fetch(`${base}/plugins?name=vowels_linked`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      wasm: [{ data: Buffer.from(lib!).toString('base64'), name: 'vowels' }, { data: Buffer.from(main!).toString('base64') }],
    }),
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`upload vowels_linked: ${res.status} ${await res.text()}`);
  for (const name of ['vowels_single', 'vowels_linked']) await checkOutput(name, callBody('count_vowels'), (out) => out === '14');
  scenarios.push(callScenario('WAT vowels, one module', 'vowels_single', callBody('count_vowels')));
  scenarios.push(callScenario('WAT vowels, linked (2 modules)', 'vowels_linked', callBody('count_vowels')));
}

/** The machine's load average (1, 5, 15 min): figures from a busy shared machine are not comparable with a quiet one's. */
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
console.log(
  `bench: ${connections} connections, ${seconds} s per scenario, ${serverReady.workers} engine workers, node ${process.version}, ${availableParallelism()} CPUs, load average ${load()}`,
);
const results: Measured[] = [];
/**
 * The load of a shared machine moves within a run (seen here: the baseline at 3.9k and 10.5k req/s
 * in one run), so each scenario is compared with plain Fastify measured right before and right after
 * it: short baseline runs (BENCH_BASELINE_SECONDS) go between the scenarios.
 */
const betweenSeconds = Number(process.env.BENCH_BASELINE_SECONDS ?? Math.max(2, Math.round(seconds / 2)));
const baselineRuns: number[] = [];
/** Per scenario row: the mean req/s of the plain-Fastify runs next to it. */
const adjacentBaseline = new Map<Measured, number>();
await run(baseline, 1); // warm-up: JIT
results.push(await run(baseline, seconds));
baselineRuns.push(results[0]!.rps);
for (const [i, s] of scenarios.entries()) {
  await run(s, 1); // warm-up: JIT, worker module caches
  const measured = await run(s, seconds);
  results.push(measured);
  // After the last scenario, the final full baseline run is the one next to it.
  if (i === scenarios.length - 1) break;
  const between = await run(baseline, betweenSeconds);
  adjacentBaseline.set(measured, (baselineRuns.at(-1)! + between.rps) / 2);
  baselineRuns.push(between.rps);
}
// The baseline again at the end: the machine is shared, and drift shows here.
results.push({ ...(await run(baseline, seconds)), label: `${baseline.label}, again` });
baselineRuns.push(results.at(-1)!.rps);
if (scenarios.length > 0) adjacentBaseline.set(results.at(-2)!, (baselineRuns.at(-2)! + baselineRuns.at(-1)!) / 2);

/** Over all plain-Fastify runs, for the baseline rows themselves. */
const baselineRps = baselineRuns.reduce((a, b) => a + b, 0) / baselineRuns.length;
/** A row's req/s over the baseline measured next to it. */
const ratioOf = (r: Measured) => r.rps / (adjacentBaseline.get(r) ?? baselineRps);
const byLabel = (label: string) => results.find((r) => r.label === label);
console.log('');
console.log(
  `${'scenario'.padEnd(34)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'ratio'.padStart(6)} ${'main µs/call'.padStart(13)} ${'cpu µs/call'.padStart(12)} ${'workers'.padStart(8)} ${'V8 bg'.padStart(6)}  errors/non-2xx`,
);
for (const r of results) {
  console.log(
    `${r.label.padEnd(34)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(1).padStart(7)} ${r.p99.toFixed(1).padStart(7)} ${ratioOf(r).toFixed(2).padStart(6)} ${r.mainUs.toFixed(1).padStart(13)} ${r.processUs.toFixed(0).padStart(12)} ${r.engineUs.toFixed(0).padStart(8)} ${r.v8Us.toFixed(0).padStart(6)}  ${r.errors}/${r.non2xx}`,
  );
}
console.log(
  `(ratio = req/s over the mean of the plain-Fastify runs just before and after the scenario; all of them: ${baselineRuns.map((r) => r.toFixed(0)).join(', ')} req/s; main µs = CPU`,
);
console.log(' time of the server main thread per call, cpu µs = whole server process incl. workers: less noisy than req/s;');
console.log(' of it, workers = the engine worker threads, V8 bg = V8 background threads (GC, compilation), µs/call from /proc)');

// First call after upload vs a warm call, one request at a time, on fresh uploads of the large plugin.
let firstCall: { firstMs: number; warmMs: number } | null = null;
if (large && (largeWanted || wanted('first_call'))) {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const timed = async (id: string) => {
    const started = performance.now();
    const { status, output } = await call(id, callBody('count_vowels'));
    if (status !== 200) throw new Error(`${LARGE_RUST}: ${status} ${output}`);
    return performance.now() - started;
  };
  const first: number[] = [];
  const warm: number[] = [];
  for (let n = 0; n < 7; n++) {
    const id = await upload(variant(large, n));
    first.push(await timed(id));
    for (let i = 0; i < 15; i++) warm.push(await timed(id));
  }
  firstCall = { firstMs: median(first), warmMs: median(warm) };
}

interface Stats {
  rss: number;
  engine: { size: number; burst: number; instanceBytes: number };
  moduleCache: { entries: number; bytes: number };
  bounds: { moduleCacheBytes: number; workerInstanceCacheBytes: number };
}
const afterRun = await server.ask<Stats>('stats');

// 1,000 stored plugins (variants of the AS plugin), each called once: every cache fills to its bound.
let afterStored: Stats | null = null;
const small = uploaded.get('count_vowels');
if (small && storedPlugins > 0 && wanted('stored')) {
  for (let n = 0; n < storedPlugins; n++) {
    const id = await upload(variant(small, n));
    const { status } = await call(id, callBody('count_vowels'));
    if (status !== 200) throw new Error(`stored plugin ${n}: ${status}`);
  }
  afterStored = await server.ask<Stats>('stats');
}

const ratio = (label: string) => {
  const row = byLabel(label);
  return row ? ratioOf(row) : NaN;
};
const small1 = byLabel('first_byte, 1 page');
const large64 = byLabel('first_byte, 64 MiB');
const memoryRatio = small1 && large64 ? large64.rps / small1.rps : NaN;
const mainUs = results.filter((r) => r.call).map((r) => r.mainUs);
const mib = (bytes: number) => `${(bytes / 1048576).toFixed(0)} MiB`;

console.log('');
if (memorySizePair) {
  console.log(
    `memory-size ratio: ${memoryRatio.toFixed(2)} (first_byte on 64 MiB over 1 page: ${large64!.rps.toFixed(0)} / ${small1!.rps.toFixed(0)} req/s)`,
  );
}
if (firstCall) {
  console.log(
    `first-call ratio: ${(firstCall.firstMs / firstCall.warmMs).toFixed(2)} (${LARGE_RUST}: first call after upload ${firstCall.firstMs.toFixed(2)} ms, warm ${firstCall.warmMs.toFixed(2)} ms; medians, one call at a time)`,
  );
}
console.log(
  `server RSS after the run: ${mib(afterRun.rss)} (module cache ${afterRun.moduleCache.entries} modules, ${mib(afterRun.moduleCache.bytes)} estimated compiled)`,
);
if (afterStored) {
  console.log(
    `server RSS with ${storedPlugins} more stored plugins, each called once: ${mib(afterStored.rss)} (module cache ${afterStored.moduleCache.entries} modules, ${mib(afterStored.moduleCache.bytes)} estimated compiled)`,
  );
}
console.log(`engine: ${JSON.stringify((afterStored ?? afterRun).engine)}`);
// Every cache within its byte bound, at both points.
const bounded = (stats: Stats) => {
  const workers = stats.engine.size + stats.engine.burst;
  const instanceBound = workers * stats.bounds.workerInstanceCacheBytes;
  return {
    ok: stats.moduleCache.bytes <= stats.bounds.moduleCacheBytes && stats.engine.instanceBytes <= instanceBound,
    text: `module cache ${mib(stats.moduleCache.bytes)} of MODULE_CACHE_BYTES ${mib(stats.bounds.moduleCacheBytes)}; worker instances ${mib(stats.engine.instanceBytes)} of ${workers} × WORKER_INSTANCE_CACHE_BYTES ${mib(instanceBound)}`,
  };
};
const boundChecks = [afterRun, ...(afterStored ? [afterStored] : [])].map(bounded);
for (const check of boundChecks) console.log(`caches: ${check.text}`);
console.log(`load average at the end: ${load()}`);

const target = (what: string, value: number | string, ok: boolean) =>
  console.log(
    `  ${ok ? 'met    ' : 'NOT MET'}  ${what}: ${typeof value === 'string' ? value : Number.isNaN(value) ? 'n/a' : value.toFixed(2)}`,
  );
console.log('\ntargets:');
if (largeWanted) {
  target(`${largeLabel} ≥ 0.35× plain Fastify`, ratio(largeLabel), ratio(largeLabel) >= 0.35);
  const p99 = byLabel(largeLabel)!.p99;
  target(`${largeLabel} p99 < 20 ms`, p99, p99 < 20);
}
target('AS count_vowels ≥ 0.45× plain Fastify', ratio('AS count_vowels (12 KB)'), ratio('AS count_vowels (12 KB)') >= 0.45);
target('64 MiB plugin ≥ 0.5× its 1-page rate', memoryRatio, memoryRatio >= 0.5);
const worstMain = Math.max(...mainUs);
target('main-thread CPU ≤ 25 µs per call (worst call scenario)', worstMain, worstMain <= 25);
if (firstCall) {
  const r = firstCall.firstMs / firstCall.warmMs;
  target('first call after upload ≤ 2× a warm call', r, r <= 2);
}
target(
  'every cache within its byte bound (after the run, with the stored plugins)',
  `${boundChecks.filter((c) => c.ok).length} of ${boundChecks.length} checks`,
  boundChecks.every((c) => c.ok),
);

await Promise.all([server.stop(), plain.stop()]);

// One engine worker (src/engine/runtime/worker.ts) in a thread of its own, fed one call at a time as
// the pool sends them, with no HTTP and no pool: what a call costs the worker itself. Prints wall µs
// per call; the instructions per call come from running it under callgrind twice and subtracting:
//
//   valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=out/cg \
//     node_modules/.bin/node --perf-basic-prof bench/worker-calls.ts mem_small first_byte 500 x
//   (the same with 1500 calls; the worker is the last thread file; per call = (total(1500) -
//   total(500)) / 1000; /tmp/perf-<pid>.map names the JIT code for callgrind_annotate's addresses)
//
// Arguments: plugin (plugins/dist/<plugin>.wasm), function, calls (1000), input (a vowel-count text).
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { CALL_LIMITS, type CallLimits } from '../src/config.ts';
import { rewriteForEngine } from '../src/engine/compile/wasm-rewrite.ts';
import { createLogMirrorBuffer } from '../src/engine/log-mirror.ts';
import { WorkerCells, type CallMessage, type ResultMessage, type WorkerSetup } from '../src/engine/protocol.ts';

const [
  plugin = 'count_vowels',
  fn = 'count_vowels',
  callsArg = '1000',
  input = 'The quick brown fox jumps over the lazy dog. Hello, World!',
] = process.argv.slice(2);
const calls = Number(callsArg);
const { bytes, ...layout } = rewriteForEngine(readFileSync(new URL(`../plugins/dist/${plugin}.wasm`, import.meta.url)), {
  maxTableElements: 100_000,
});
const compiled = await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
const cells = new WorkerCells();
const defaultLimits = Object.fromEntries(Object.entries(CALL_LIMITS).map(([name, spec]) => [name, spec.default])) as CallLimits;
const setup: WorkerSetup = {
  cells: cells.buffer,
  logMirror: createLogMirrorBuffer(),
  instanceCacheBytes: 256 * 1024 * 1024,
  memoryCeilingPages: CALL_LIMITS.memoryPages.ceiling,
  resetTimeoutMs: 2000,
  defaultLimits,
};
// As the pool starts its workers (pool/worker-handle.ts): the default WORKER_HEAP_MB.
const worker = new Worker(new URL('../src/engine/runtime/worker.ts', import.meta.url), {
  name: 'wasmhost-engine',
  workerData: setup,
  resourceLimits: { maxOldGenerationSizeMb: 256 },
});
let answer: ((result: ResultMessage) => void) | null = null;
const ready = new Promise<void>((resolve) => {
  worker.on('message', (msg: ResultMessage | { kind: 'ready' }) => {
    if (msg.kind === 'ready') return resolve();
    answer?.(msg);
  });
});
await ready;

let callId = 0;
/** A call on the default limits, as the engine sends one (engine.ts); the first carries the module. */
async function call(): Promise<ResultMessage> {
  callId++;
  Atomics.store(cells.ints, 0, callId);
  const msg: CallMessage = {
    kind: 'call',
    callId,
    claim: 0,
    deadline: performance.timeOrigin + performance.now() + 60_000,
    moduleKey: plugin,
    function: fn,
    input,
    logLevel: 'info',
  };
  if (callId === 1) msg.module = { compiled, layout };
  const result = new Promise<ResultMessage>((resolve) => (answer = resolve));
  worker.postMessage(msg);
  const answered = await result;
  if (!answered.ok) throw new Error(`${plugin} ${fn}: ${JSON.stringify(answered.error)}`);
  return answered;
}

console.log('first answer', JSON.stringify(await call()));
const started = performance.now();
for (let i = 0; i < calls; i++) await call();
console.log(`${calls} calls: ${(((performance.now() - started) * 1000) / calls).toFixed(1)} µs per call (wall)`);
await worker.terminate();

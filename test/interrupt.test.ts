// Stopping a running plugin without ending its thread: the rewritten module reads the thread's
// interrupt flag (runtime/interrupt.ts) at every function start, loop start and bulk instruction,
// and traps once another thread sets it. Each plugin here never ends on its own; it runs in a real
// worker thread (test/fixtures/interrupt-worker.ts, a PluginInstance with the engine's imports), the
// flag is set from this thread once the plugin says it runs, and the same thread then serves a call.
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rewriteForEngine } from '../src/engine/compile/wasm-rewrite.ts';
import type { InterruptWorkerMessage } from './fixtures/interrupt-worker.ts';
import { wat } from './helpers.ts';

// Every export but `ok` logs its input (its own name) once running, then never returns.
const PLUGIN = `(module
  (import "extism:host/env" "input_offset" (func $input (result i64)))
  (import "extism:host/env" "log_info" (func $log (param i64)))
  (memory (export "memory") 4)
  (type $void (func))
  (table 4 funcref)
  (elem (i32.const 0) $ping $pong $tailPing $tailPong)
  (func $started (call $log (call $input)))
  ;; A byte the fill writes: 0 again after the reset.
  (func (export "ok") (result i32) (i32.add (i32.load8_u (i32.const 100)) (i32.const 42)))
  (func (export "spin") (result i32) (call $started) (loop $again (br $again)) (i32.const 1))
  (func $forever (result i32) (return_call $forever))
  (func (export "tail") (result i32) (call $started) (return_call $forever))
  (func $ping (call_indirect (type $void) (i32.const 1)))
  (func $pong (call_indirect (type $void) (i32.const 0)))
  (func (export "mutual") (result i32) (call $started) (call $ping) (i32.const 1))
  (func $tailPing (return_call_indirect (type $void) (i32.const 3)))
  (func $tailPong (return_call_indirect (type $void) (i32.const 2)))
  (func (export "mutual_tail") (result i32) (call $started) (call $tailPing) (i32.const 1))
  (func (export "fill") (result i32)
    (call $started)
    (loop $again
      (memory.fill (i32.const 0) (i32.const 7) (i32.mul (memory.size) (i32.const 65536)))
      (br $again))
    (i32.const 1)))`;

let worker: Worker;
let flag: Int32Array;
let workerThread: number;
const inbox: InterruptWorkerMessage[] = [];
let delivered: (() => void) | null = null;

async function next(): Promise<InterruptWorkerMessage> {
  while (inbox.length === 0) await new Promise<void>((resolve) => (delivered = resolve));
  return inbox.shift()!;
}

/** Runs `name` in the worker; once it has started, sets the flag (when `interrupt`). What ended the call, flag cleared. */
async function run(name: string, interrupt: boolean): Promise<InterruptWorkerMessage> {
  worker.postMessage({ run: name });
  let message = await next();
  if (message.kind === 'started') {
    expect(message.message).toBe(name);
    if (interrupt) Atomics.store(flag, 0, 1);
    message = await next();
  }
  Atomics.store(flag, 0, 0);
  return message;
}

beforeAll(async () => {
  const { bytes, ...layout } = rewriteForEngine(await wat(PLUGIN, { tail_call: true }), { maxTableElements: 100_000 });
  expect(layout.interruptible).toBe(true);
  worker = new Worker(new URL('./fixtures/interrupt-worker.ts', import.meta.url), { workerData: { bytes, layout } });
  worker.on('message', (message: InterruptWorkerMessage) => {
    inbox.push(message);
    delivered?.();
  });
  worker.on('error', (err) => {
    throw err;
  });
  const ready = await next();
  if (ready.kind !== 'ready') throw new Error(`the worker said ${JSON.stringify(ready)} first`);
  flag = new Int32Array(ready.flag, 0, 1);
  workerThread = ready.threadId;
});

afterAll(async () => {
  await worker?.terminate();
});

describe('the interrupt flag', () => {
  it('changes nothing at 0', async () => {
    expect(await run('ok', false)).toEqual({ kind: 'returned', rc: 42, threadId: workerThread });
  });

  it.each([
    ['spin', 'an empty loop (every back edge)'],
    ['tail', 'a function calling itself with return_call (every function start)'],
    ['mutual_tail', 'mutual recursion through return_call_indirect'],
    ['fill', 'a loop filling the whole memory with memory.fill'],
  ])('stops %s, %s, with a trap, and the thread then serves a call', async (name) => {
    const ended = await run(name, true);
    expect(ended).toMatchObject({ kind: 'threw', runtimeError: true, message: expect.stringMatching(/unreachable/) });
    // The same instance, reset after the trap, in the same thread.
    expect(await run('ok', false)).toEqual({ kind: 'returned', rc: 42, threadId: workerThread });
  });

  it('stops mutual recursion through call_indirect, or the stack overflows first; either way the thread serves a call', async () => {
    const ended = await run('mutual', true);
    expect(ended.kind).toBe('threw');
    const { name, message } = ended as Extract<InterruptWorkerMessage, { kind: 'threw' }>;
    expect(`${name}: ${message}`).toMatch(/RuntimeError: .*unreachable|RangeError: Maximum call stack size exceeded/);
    expect(await run('ok', false)).toEqual({ kind: 'returned', rc: 42, threadId: workerThread });
  });
});

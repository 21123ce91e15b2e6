// The interrupt flag of this thread: the one-page shared memory every interruptible module imports as
// `wasmhost.interrupt` (compile/wasm-rewrite.ts), whose first i32 the module reads at every function
// start, loop iteration and bulk instruction, trapping (`unreachable`) when it is not 0. Another
// thread holding this memory (posted to it) stops whatever plugin runs here with
// Atomics.store(flag, 0, 1), without ending this thread; the engine stores 0 again before the next call.
// Module-level, so each thread has its own: a flag stops the plugins of one thread only.

export const interruptMemory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
export const interruptFlag = new Int32Array(interruptMemory.buffer, 0, 1);

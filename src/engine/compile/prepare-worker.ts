// Worker thread entry for ModulePreparer (prepare.ts): rewrites and compiles modules off the main
// thread. The rewrite walks every instruction in JS (~115 ms for 15 MiB of code), which would
// otherwise stall every request the server is answering.
import v8 from 'node:v8';
import { parentPort } from 'node:worker_threads';
import { preparationError, prepareModule } from './prepare.ts';
import type { PrepareReply, PrepareRequest } from './prepare.ts';

const port = parentPort;
if (!port) throw new Error('engine/compile/prepare-worker.ts must run in a worker thread');

/**
 * Compiles every function now (Liftoff, on V8's background threads), not lazily on first use: lazy
 * compilation made the first call of a 1.1 MB Rust plugin ~40x slower than the next one. V8 flags
 * are per process, so eager compilation is switched on only around this synchronous compile (the
 * upload's validating compile of the original bytes stays lazy); this thread compiles nothing else.
 */
function compileEagerly(bytes: Uint8Array<ArrayBuffer>): WebAssembly.Module {
  v8.setFlagsFromString('--no-wasm-lazy-compilation');
  try {
    return new WebAssembly.Module(bytes);
  } finally {
    v8.setFlagsFromString('--wasm-lazy-compilation');
  }
}

port.on('message', (request: PrepareRequest) => {
  prepareModule(request.bytes, request.limits, request.options, compileEagerly).then(
    (prepared) => port.postMessage({ id: request.id, prepared } satisfies PrepareReply),
    (err: unknown) => port.postMessage({ id: request.id, error: preparationError(err) } satisfies PrepareReply),
  );
});

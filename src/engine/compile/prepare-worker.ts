// Worker thread entry for ModulePreparer (prepare.ts): rewrites and compiles modules off the main
// thread. The rewrite walks every instruction in JS (~115 ms for 15 MiB of code), which would
// otherwise stall every request the server is answering.
import { parentPort } from 'node:worker_threads';
import { prepareModule } from './prepare.ts';
import type { PrepareReply, PrepareRequest } from './prepare.ts';

const port = parentPort;
if (!port) throw new Error('engine/compile/prepare-worker.ts must run in a worker thread');

port.on('message', (request: PrepareRequest) => {
  prepareModule(request.bytes).then(
    (prepared) => port.postMessage({ id: request.id, prepared } satisfies PrepareReply),
    (err: unknown) => {
      const { name, message } = err instanceof Error ? err : { name: 'Error', message: String(err) };
      port.postMessage({ id: request.id, error: { name, message } } satisfies PrepareReply);
    },
  );
});

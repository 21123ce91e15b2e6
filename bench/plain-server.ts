// The bench's baseline: a plain Fastify app with one POST route, in a process of its own (no hooks,
// no logger, no plugins), so every call scenario is compared with what Fastify itself costs here.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.post('/', async () => ({ ok: true }));
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
if (address === null || typeof address === 'string') throw new Error('no TCP address');
process.send?.({ kind: 'ready', port: address.port });

process.on('message', (msg: { kind?: string }) => {
  if (msg.kind === 'mark') {
    const cpu = process.cpuUsage();
    const main = process.threadCpuUsage();
    process.send?.({ kind: 'mark', cpuUs: cpu.user + cpu.system, mainCpuUs: main.user + main.system });
  }
});
process.on('disconnect', () => void app.close().finally(() => process.exit(0)));

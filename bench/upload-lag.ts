// How long an upload stalls the server's event loop (every other request waits that long).
//   node bench/upload-lag.ts [MiB of code, default 15]
// Uploads a tiny module (the baseline) and a large generated one, 3 times each, to an in-process
// server, and prints the event-loop delay seen during each upload (perf_hooks, 5 ms resolution).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { startServer, removeDir, tinyPluginWat, wat } from '../test/helpers.ts';
import { leb, withCustomSection } from '../test/wasm-builder.ts';

const mib = Number(process.argv[2] ?? 15);

/** A valid module of about `mib` MiB of code: functions of `i32.const k; drop` runs, one export. */
function largeModule(): Uint8Array {
  const body = [0];
  for (let i = 0; i < 1000; i++) body.push(0x41, ...leb(i * 97), 0x1a);
  body.push(0x41, 0, 0x0b);
  const fn = new Uint8Array([...leb(body.length), ...body]);
  const count = Math.ceil((mib * 2 ** 20) / fn.length);
  const section = (id: number, payload: number[]) => [id, ...leb(payload.length), ...payload];
  const head = [
    ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...section(1, [1, 0x60, 0, 1, 0x7f]),
    ...section(3, [...leb(count), ...new Array<number>(count).fill(0)]),
    ...section(5, [1, 0, 1]),
    ...section(7, [1, 3, 0x72, 0x75, 0x6e, 0, 0]),
    ...[10, ...leb(leb(count).length + count * fn.length), ...leb(count)],
  ];
  const out = new Uint8Array(head.length + count * fn.length);
  out.set(head);
  for (let i = 0; i < count; i++) out.set(fn, head.length + i * fn.length);
  return out;
}

const server = await startServer({ env: { MAX_PLUGIN_BYTES: String((mib + 8) * 2 ** 20), LOG_LEVEL: 'warn' } });
const delay = monitorEventLoopDelay({ resolution: 5 });
const ms = (ns: number) => (ns / 1e6).toFixed(0).padStart(6);

async function measure(label: string, bytes: Uint8Array): Promise<number> {
  let worst = 0;
  for (let i = 0; i < 3; i++) {
    delay.reset();
    delay.enable();
    const started = performance.now();
    const res = await fetch(`${server.url}/plugins`, {
      method: 'POST',
      headers: { 'content-type': 'application/wasm' },
      body: new Uint8Array(withCustomSection(bytes, 'x', new Uint8Array([i]))),
    });
    const took = performance.now() - started;
    delay.disable();
    if (res.status !== 201) throw new Error(`${label}: upload answered ${res.status} ${await res.text()}`);
    console.log(
      `${label.padEnd(28)} upload ${took.toFixed(0).padStart(5)} ms   loop delay max ${ms(delay.max)} ms  p99 ${ms(delay.percentile(99))} ms`,
    );
    worst = Math.max(worst, delay.max);
  }
  return worst;
}

// Warm-up (first request, route and preparation thread), not counted.
await fetch(`${server.url}/plugins`, {
  method: 'POST',
  headers: { 'content-type': 'application/wasm' },
  body: new Uint8Array(await wat(tinyPluginWat(0))),
});
const tiny = await measure('tiny module (baseline)', await wat(tinyPluginWat(1)));
const large = largeModule();
const worst = await measure(`${(large.length / 2 ** 20).toFixed(1)} MiB of code`, large);
console.log(`worst loop delay: large / tiny = ${(worst / tiny).toFixed(1)} (${ms(worst).trim()} ms vs ${ms(tiny).trim()} ms)`);
await server.close();
await removeDir(server.dataDir);

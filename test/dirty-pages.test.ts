// Page-level resets keep fresh state exact: a plugin writes to random pages by every path it has
// (each store width, SIMD and atomic stores, memory.fill/copy, growth, WASI writes into memory),
// and the next call on the same instance must find memory exactly as a fresh instance has it —
// compared with a fresh @extism/extism instance, over HTTP on a real server.
import createPlugin from '@extism/extism';
import type { Plugin } from '@extism/extism';
import { beforeAll, describe, expect, it } from 'vitest';
import { readPlugin, useServer } from './helpers.ts';
import type { CallBody } from './test-client.ts';

const PAGE = 65536;
/** dirty_probe: 64 pages of its own; every round grows it to this many first. */
const SCAN_PAGES = 80;
/** Non-zero bytes of the fresh instance (data segments), where writes of zeros must be undone too. */
const SEGMENTS = [0x20000, 0xa0000, 0x210000, 0x3fffc0];

const STORES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] as const;
const WIDTH: Record<number, number> = {
  1: 1,
  2: 2,
  3: 4,
  4: 1,
  5: 2,
  6: 4,
  7: 8,
  8: 4,
  9: 8,
  10: 16,
  11: 1,
  12: 2,
  13: 4,
  14: 8,
};
const ATOMICS: Record<number, number> = { 15: 4, 16: 1, 17: 4, 18: 8 }; // method → alignment
/** WASI functions writing zeros (only visible where memory was not zero) and those writing data. */
const WASI_ZEROS = [30, 34, 35] as const;
const WASI_DATA = [32, 33, 36, 37] as const;

/** A small deterministic generator: the same writes on every run. */
function generator(seed: number): (below: number) => number {
  let state = seed >>> 0;
  return (below) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return Math.floor((state / 2 ** 32) * below);
  };
}

interface Write {
  method: number;
  address: number;
  length: number;
}

function encode(writes: Write[]): string {
  const bytes = Buffer.alloc(writes.length * 9);
  writes.forEach((w, i) => {
    bytes.writeUInt8(w.method, i * 9);
    bytes.writeUInt32LE(w.address, i * 9 + 1);
    bytes.writeUInt32LE(w.length, i * 9 + 5);
  });
  return bytes.toString('base64');
}

/** One write by every path, at random places (some across a page boundary), after growing to SCAN_PAGES. */
function roundOfWrites(random: (below: number) => number): Write[] {
  const page = () => random(SCAN_PAGES);
  const writes: Write[] = [{ method: 40, address: 0, length: SCAN_PAGES - 64 }];
  const anywhere = (width: number) =>
    random(3) === 0 ? (1 + random(SCAN_PAGES - 1)) * PAGE - 1 - random(width) : page() * PAGE + random(PAGE - width);
  for (const method of STORES) writes.push({ method, address: anywhere(WIDTH[method]!), length: 0 });
  for (const [method, align] of Object.entries(ATOMICS)) {
    writes.push({ method: Number(method), address: page() * PAGE + random(PAGE / align) * align, length: 0 });
  }
  writes.push({ method: 19, address: page() * PAGE + random(PAGE) - 70000 + (random(2) ? 0 : PAGE), length: 0 });
  writes.push({ method: 20, address: page() * PAGE + random(PAGE), length: 1 + random(3 * PAGE) });
  writes.push({ method: 21, address: anywhere(256), length: 1 + random(256) });
  writes.push({ method: 31, address: anywhere(64), length: 1 + random(64) });
  for (const method of WASI_DATA) writes.push({ method, address: anywhere(24), length: 0 });
  // Zeros where the fresh instance has data: a missed host write would leave them zero.
  for (const method of WASI_ZEROS) writes.push({ method, address: SEGMENTS[random(SEGMENTS.length)]! + random(8), length: 0 });
  return writes
    .map((w) => ({ ...w, address: Math.max(0, Math.min(w.address, SCAN_PAGES * PAGE - 80000)) }))
    .map((w) => (w.method === 20 ? { ...w, length: Math.min(w.length, SCAN_PAGES * PAGE - w.address) } : w));
}

describe('page-level reset (dirty-page tracking) keeps every call fresh', () => {
  const server = useServer({ env: { WORKERS: '1' } });
  let reference: Plugin;
  let fresh: string;

  /** A probe call's status and body, as one value to compare. */
  const probe = async (body: CallBody) => {
    const { status, body: answer } = await server.api.call('dirty_probe', body);
    return { status, body: answer as { output?: string; message?: string } };
  };
  const write = (writes: Write[]) => probe({ function: 'write', inputBase64: encode(writes) });
  const scan = () => probe({ function: 'scan', input: String(SCAN_PAGES) });

  beforeAll(async () => {
    expect((await server.api.upload(await readPlugin('dirty_probe'), { name: 'dirty_probe' })).status).toBe(201);
    reference = await createPlugin({ wasm: [{ data: new Uint8Array(await readPlugin('dirty_probe')) }] }, { useWasi: true });
    fresh = (await reference.call('scan', String(SCAN_PAGES)))!.text();
    await reference.close();
  });

  it('reports the fresh instance of the reference SDK on its first call', async () => {
    expect(fresh).toMatch(new RegExp(`^00000040:[0-9a-f]{${8 * SCAN_PAGES}}$`));
    expect(await scan()).toEqual({ status: 200, body: expect.objectContaining({ output: fresh }) });
  });

  it('every path writes where it is told (seen on a reused SDK instance, which never resets)', async () => {
    const random = generator(7);
    const writes = roundOfWrites(random);
    for (const one of writes.filter((w) => w.method !== 40)) {
      const sdk = await createPlugin({ wasm: [{ data: new Uint8Array(await readPlugin('dirty_probe')) }] }, { useWasi: true });
      await sdk.call('write', Buffer.from(encode([writes[0]!, one]), 'base64'));
      const after = (await sdk.call('scan', String(SCAN_PAGES)))!.text();
      await sdk.close();
      const changed = changedPages(fresh, after);
      const first = Math.floor((one.address + (one.method === 19 ? 70000 : 0)) / PAGE);
      expect({ method: one.method, touchesItsPage: changed.includes(first) || changed.includes(first + 1) }).toEqual({
        method: one.method,
        touchesItsPage: true,
      });
    }
  });

  it('after writes by every path to random pages, the next call on the same instance finds fresh memory', async () => {
    const random = generator(12);
    for (let round = 0; round < 25; round++) {
      const writes = roundOfWrites(random);
      expect(await write(writes)).toEqual({ status: 200, body: expect.objectContaining({ output: 'ok' }) });
      const after = await scan();
      expect({ round, changed: changedPages(fresh, after.body.output ?? '') }).toEqual({ round, changed: [] });
    }
  });

  it('stays fresh when writes and scans interleave on every worker, and after a failed call', async () => {
    const random = generator(99);
    const calls = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? write(roundOfWrites(random)) : scan()));
    const results = await Promise.all(calls);
    results.forEach((r, i) => {
      expect(r.status).toBe(200);
      if (i % 2 === 1) expect(changedPages(fresh, r.body.output ?? '')).toEqual([]);
    });
    // A call that writes, then traps (method 0 is `unreachable`), leaves nothing behind either.
    const trapped = await write([...roundOfWrites(random), { method: 0, address: 0, length: 0 }]);
    expect(trapped.status).toBe(422);
    expect(changedPages(fresh, (await scan()).body.output ?? '')).toEqual([]);
  });
});

/** Pages whose hash differs between two scans (and -1 when the memory sizes differ). */
function changedPages(fresh: string, scan: string): number[] {
  const [freshSize, freshHashes] = fresh.split(':') as [string, string];
  const [size, hashes] = scan.split(':') as [string, string | undefined];
  const changed: number[] = size === freshSize && hashes?.length === freshHashes.length ? [] : [-1];
  for (let page = 0; page < SCAN_PAGES; page++) {
    if (hashes?.slice(page * 8, page * 8 + 8) !== freshHashes.slice(page * 8, page * 8 + 8)) changed.push(page);
  }
  return changed;
}

// The filesystem store under a hostile disk, through HTTP against the real service process: a disk
// that fills up, a data dir that turns read-only, a kill -9 mid-upload, and blobs damaged, emptied,
// lost or replaced on disk.
// Each answer's code is checked, nothing half-stored shows up, and the service keeps serving after.
// As root the disk is real: a tiny tmpfs, or a read-only bind mount, in a mount namespace of the
// service's own (unshare -m: nothing is mounted for anyone else). Without root: RLIMIT_FSIZE
// (`ulimit -f`, EFBIG) and permission bits stand in.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTempDir, readPlugin, removeDir, wat } from './helpers.ts';
import { parsePrometheusText, sampleValue } from './prom-text.ts';
import { startReplica, type Replica } from './replica-process.ts';
import { withCustomSection } from './wasm-builder.ts';

const isRoot = process.getuid?.() === 0;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function replica(name: string, options: Parameters<typeof startReplica>[2] = {}): Promise<Replica> {
  // No shedding on event-loop lag: this machine is shared and busy; what is checked is the store's answers.
  const started = await startReplica(name, { RATE_LIMIT_MAX: '0', MAX_EVENT_LOOP_DELAY_MS: '0' }, options);
  cleanups.push(() => started.stop());
  return started;
}

async function dataDir(): Promise<string> {
  const dir = await makeTempDir('wasmhost-hostile-');
  cleanups.push(async () => {
    await chmod(dir, 0o755).catch(() => undefined);
    for (const sub of ['blobs', 'meta']) await chmod(path.join(dir, sub), 0o755).catch(() => undefined);
    await removeDir(dir);
  });
  return dir;
}

/** A valid plugin of about `size` bytes (a custom section pads it), different for each `marker`. */
async function paddedPlugin(marker: number, size: number): Promise<Uint8Array> {
  const module = await wat(
    `(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)) (data (i32.const 0) "m${marker}"))`,
  );
  return withCustomSection(module, 'pad', randomBytes(size));
}

/** wasmhost_plugins_damaged as /metrics reports it. */
async function damagedCount(target: Replica): Promise<number> {
  return sampleValue(parsePrometheusText(await (await fetch(`${target.url}/metrics`)).text()), 'wasmhost_plugins_damaged');
}

/** Still serving: liveness, and a call of a plugin that is fine. */
async function expectAlive(target: Replica, name: string, fn: string): Promise<void> {
  expect((await fetch(`${target.url}/healthz`)).status).toBe(200);
  expect((await target.api.call(name, { function: fn, input: 'hello', timeoutMs: 30_000 })).outcome).toEqual({ status: 200 });
}

describe('filesystem store on a hostile disk', () => {
  it('answers 500 STORE_ERROR when the disk is full, stores nothing of the refused upload, and takes uploads again once there is room', async () => {
    const dir = await dataDir();
    const shell = isRoot
      ? // 256 KiB of disk for DATA_DIR, in the service's own mount namespace.
        'unshare -m sh -c \'mount -t tmpfs -o size=256k tmpfs "$DATA_DIR" && exec "$NODE" src/main.ts\''
      : // Files over 200 KiB cannot be written (EFBIG).
        'ulimit -f 200 && exec "$NODE" src/main.ts';
    const service = await replica('disk-full', { dataDir: dir, shell });
    expect((await service.api.upload(await readPlugin('count_vowels'), { name: 'vowels' })).outcome).toEqual({ status: 201 });

    const outcomes: { id: string; status: number; code?: string }[] = [];
    for (let marker = 1; marker <= 12 && !outcomes.some((o) => o.status === 500); marker++) {
      const bytes = await paddedPlugin(marker, 60 * 1024);
      outcomes.push({ id: sha256(bytes), ...(await service.api.upload(bytes)).outcome });
    }
    const refused = outcomes.filter((o) => o.status !== 201);
    expect(refused).toEqual([{ id: expect.any(String), status: 500, code: 'STORE_ERROR' }]);

    // Listed: exactly what was acknowledged, each whole.
    const stored = outcomes.filter((o) => o.status === 201).map((o) => o.id);
    const listed = (await service.api.listAll()).map((p) => p.id);
    expect(listed.sort()).toEqual([...stored, sha256(await readPlugin('count_vowels'))].sort());
    for (const id of stored) {
      const download = await service.api.download(id);
      expect(sha256(download.data)).toBe(id);
    }
    await expectAlive(service, 'vowels', 'count_vowels');

    // Room again (a delete): the same upload now succeeds.
    expect((await service.api.delete(stored[0]!)).status).toBe(204);
    const retried = outcomes.find((o) => o.status === 500)!;
    const again = await paddedPlugin(outcomes.indexOf(retried) + 1, 60 * 1024);
    expect(sha256(again)).not.toBe(retried.id); // random padding: a fresh module of the same size
    expect((await service.api.upload(again)).outcome).toEqual({ status: 201 });
  });

  it('stores none of a manifest’s modules when the disk fills up part-way through them (500 STORE_ERROR), and their room is free again', async () => {
    const dir = await dataDir();
    const shell = isRoot
      ? 'unshare -m sh -c \'mount -t tmpfs -o size=256k tmpfs "$DATA_DIR" && exec "$NODE" src/main.ts\''
      : 'ulimit -f 200 && exec "$NODE" src/main.ts';
    const service = await replica('disk-full-manifest', { dataDir: dir, shell });
    // Two modules fit (140 KiB); the third (210 KiB) does not, on either disk.
    const sizes = [70, 70, 210];
    const modules = await Promise.all(sizes.map((kib, i) => paddedPlugin(200 + i, kib * 1024)));
    const wasm = modules.map((bytes, i) => ({
      data: Buffer.from(bytes).toString('base64'),
      ...(i < modules.length - 1 ? { name: `m${i}` } : {}),
    }));
    const answer = await service.api.uploadManifest({ wasm }, undefined, { name: 'too-big' });
    expect(answer.outcome).toEqual({ status: 500, code: 'STORE_ERROR' });
    expect(await service.api.listAll()).toEqual([]);
    // The two modules that fit were removed again: 180 KiB fit where only 116 KiB would beside them.
    const large = await paddedPlugin(300, 180 * 1024);
    expect((await service.api.upload(large, { name: 'large' })).outcome).toEqual({ status: 201 });
    expect((await service.api.listAll()).map((p) => p.id)).toEqual([sha256(large)]);
    await expectAlive(service, 'large', 'run');
  });

  it('keeps serving calls and downloads from a read-only data dir, refuses uploads and deletes with 500 STORE_ERROR, and is not ready', async () => {
    const dir = await dataDir();
    const writable = await replica('before-read-only', { dataDir: dir });
    expect((await writable.api.upload(await readPlugin('count_vowels'), { name: 'vowels' })).outcome).toEqual({ status: 201 });
    await writable.stop();

    const shell = isRoot
      ? 'unshare -m sh -c \'mount --bind "$DATA_DIR" "$DATA_DIR" && mount -o remount,bind,ro "$DATA_DIR" && exec "$NODE" src/main.ts\''
      : 'exec "$NODE" src/main.ts';
    if (!isRoot) for (const sub of ['', 'blobs', 'meta']) await chmod(path.join(dir, sub), 0o555);
    const readOnly = await replica('read-only', { dataDir: dir, shell });

    await expectAlive(readOnly, 'vowels', 'count_vowels');
    expect((await readOnly.api.download('vowels')).status).toBe(200);
    expect((await readOnly.api.upload(await readPlugin('echo'), { name: 'echo' })).outcome).toEqual({
      status: 500,
      code: 'STORE_ERROR',
    });
    const del = await readOnly.api.delete('vowels');
    expect({ status: del.status, code: del.error.code }).toEqual({
      status: 500,
      code: 'STORE_ERROR',
    });
    const ready = await fetch(`${readOnly.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ code: 'NOT_READY', checks: { store: 'failed' } });
    // Nothing was lost or half-written by the refused requests.
    expect((await readOnly.api.listAll()).map((p) => p.id)).toEqual([sha256(await readPlugin('count_vowels'))]);
    await expectAlive(readOnly, 'vowels', 'count_vowels');
  });

  it('after a kill -9 in the middle of uploads, lists every acknowledged upload whole and nothing half-written', async () => {
    const dir = await dataDir();
    const first = await replica('before-kill', { dataDir: dir });
    const acknowledged: { id: string; name: string }[] = [];
    let marker = 0;
    let killed = false;
    // Eight uploaders, each with modules of its own, until the process is gone.
    const uploader = async (lane: number): Promise<void> => {
      while (!killed) {
        const bytes = await paddedPlugin(1000 + ++marker, 8 * 1024);
        const name = `lane${lane}-${marker}`;
        try {
          const answer = (await first.api.upload(bytes, { name })).outcome;
          if (answer.status === 201) acknowledged.push({ id: sha256(bytes), name });
        } catch {
          // The connection died with the process: not acknowledged.
        }
      }
    };
    const lanes = Array.from({ length: 8 }, (_, lane) => uploader(lane));
    while (acknowledged.length < 40) await new Promise((resolve) => setTimeout(resolve, 5));
    first.process.kill('SIGKILL');
    killed = true;
    await Promise.all(lanes);
    await first.exited;

    const service = await replica('after-kill', { dataDir: dir });
    const listed = new Set((await service.api.listAll()).map((p) => p.id));
    for (const { id, name } of acknowledged) {
      expect(listed.has(id), name).toBe(true);
      const download = await service.api.download(name);
      expect({ name, status: download.status }).toEqual({ name, status: 200 });
      expect(sha256(download.data)).toBe(id);
    }
    // Whatever else is listed is whole (an upload cut between its commit and its answer): nothing half-written.
    for (const id of listed) {
      const download = await service.api.download(id);
      expect(sha256(download.data)).toBe(id);
    }
    expect((await readdir(path.join(dir, 'blobs'))).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    expect(await damagedCount(service)).toBe(0);
    expect((await service.api.upload(await readPlugin('echo'), { name: 'after' })).outcome).toEqual({ status: 201 });
    await expectAlive(service, 'after', 'echo');
  }, 120_000);

  it('answers 500 STORE_ERROR for blobs damaged, emptied, lost or replaced by a directory on disk, keeps them listed, and serves the rest', async () => {
    const dir = await dataDir();
    const first = await replica('before-damage', { dataDir: dir });
    const names = ['flipped', 'emptied', 'lost', 'directory'];
    const modules = await Promise.all(names.map((_, i) => paddedPlugin(100 + i, 1024)));
    for (const [i, name] of names.entries())
      expect((await first.api.upload(modules[i]!, { name })).outcome).toEqual({ status: 201 });
    expect((await first.api.upload(await readPlugin('echo'), { name: 'healthy' })).outcome).toEqual({ status: 201 });
    await first.stop();

    const blob = (i: number) => path.join(dir, 'blobs', `${sha256(modules[i]!)}.wasm`);
    const flipped = await readFile(blob(0));
    flipped[flipped.length - 1]! ^= 0xff;
    await writeFile(blob(0), flipped);
    await truncate(blob(1), 0);
    await rm(blob(2));
    await rm(blob(3));
    await mkdir(blob(3));

    // A restart: nothing is in the module cache, so every call reads its blob.
    const service = await replica('after-damage', { dataDir: dir });
    expect((await service.api.listAll()).map((p) => p.id).length).toBe(5);
    // The lost blob is reported at start (it used to vanish from the listing silently), not only when used.
    expect(service.output()).toContain('store: a stored plugin has lost its Wasm blob');
    expect(await damagedCount(service)).toBe(1);
    for (const name of names) {
      expect({ name, ...(await service.api.call(name, { function: 'run', input: 'hello', timeoutMs: 30_000 })).outcome }).toEqual(
        { name, status: 500, code: 'STORE_ERROR' },
      );
      const download = await service.api.download(name);
      // Each is found before the first byte goes out (missing, not a file, the wrong size, or, for a
      // blob of one chunk, its hash): a clean 500. A large blob's damage found at its end cuts the body
      // instead (the store tests show that).
      expect({ name, status: download.status, body: download.body }).toMatchObject({
        name,
        status: 500,
        body: { code: 'STORE_ERROR' },
      });
    }
    await expectAlive(service, 'healthy', 'echo');
    expect(await damagedCount(service)).toBe(4);

    // Uploading the same bytes again repairs each (the directory is in the way of that one: still an error).
    for (const [i, name] of names.entries()) {
      const repaired = (await service.api.upload(modules[i]!)).outcome;
      if (name === 'directory') expect(repaired).toEqual({ status: 500, code: 'STORE_ERROR' });
      else {
        expect({ name, ...repaired }).toEqual({ name, status: 200 });
        expect({
          name,
          ...(await service.api.call(name, { function: 'run', input: 'hello', timeoutMs: 30_000 })).outcome,
        }).toEqual({ name, status: 200 });
      }
    }
    expect((await readdir(path.join(dir, 'blobs'))).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    expect(await damagedCount(service)).toBe(1);
    await expectAlive(service, 'healthy', 'echo');
  });
});

// Files written atomically (temp file, fsync, rename, fsync dir) and Wasm blobs read back checked
// against their content id. Used by the filesystem store and by the PostgreSQL store's local cache.
import { createHash, randomBytes } from 'node:crypto';
import { open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';

export const TEMP_PREFIX = '.tmp-';

/**
 * Replaces `target` with `data` whole or not at all. `durable: false` skips the fsyncs: for a cache,
 * whose files are checked against their id when read, a crash may lose a file but never tear one
 * into use.
 */
export async function writeAtomic(target: string, data: Uint8Array | string, { durable = true } = {}): Promise<void> {
  const dir = path.dirname(target);
  const temp = path.join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
  const handle = await open(temp, 'wx', 0o644);
  try {
    await handle.writeFile(data);
    if (durable) await handle.sync();
  } catch (err) {
    await handle.close();
    await unlinkIfPresent(temp);
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, target);
  } catch (err) {
    await unlinkIfPresent(temp);
    throw err;
  }
  if (durable) await fsyncDir(dir);
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function unlinkIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Leftovers of writes a crash interrupted. */
export async function removeTempFiles(dir: string): Promise<void> {
  for (const file of await readdir(dir)) {
    if (file.startsWith(TEMP_PREFIX)) await unlinkIfPresent(path.join(dir, file));
  }
}

/** The file's bytes, or null when it does not exist. */
export async function readIfPresent(file: string): Promise<Buffer | null> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Passes bytes through, holding back the last chunk until they hash to `id`; damaged bytes end the
 * stream with `damaged(actualSha256)`, so a reader never gets them whole under the id's ETag.
 */
export function verifyingStream(id: string, damaged: (actualSha256: string) => Error): Transform {
  const hash = createHash('sha256');
  let held: Buffer | null = null;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      if (held) this.push(held);
      held = chunk;
      done();
    },
    flush(done) {
      const actual = hash.digest('hex');
      if (actual !== id) {
        done(damaged(actual));
        return;
      }
      if (held) this.push(held);
      done();
    },
  });
}

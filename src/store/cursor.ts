// The opaque cursor of a plugin listing: the upload order (a growing integer) of the last plugin a
// page showed. Both backends order by it, so a cursor means the same on each.
import { AppError } from '../errors.ts';
import type { ListPage, PluginMeta } from './store.ts';

const PREFIX = 'u';

function encodeCursor(seq: number): string {
  return Buffer.from(`${PREFIX}${seq}`, 'utf8').toString('base64url');
}

/** The upload order a cursor continues below; INVALID_REQUEST when it is not one this service made. */
export function decodeCursor(cursor: string): number {
  const text = /^[A-Za-z0-9_-]{1,40}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const match = /^u([1-9][0-9]{0,15})$/.exec(text);
  const seq = match ? Number(match[1]) : NaN;
  if (!Number.isSafeInteger(seq)) {
    throw new AppError('INVALID_REQUEST', 'cursor is not valid: pass the nextCursor of an earlier page unchanged');
  }
  return seq;
}

/** The first `limit` of `entries` (newest first), with a cursor to the rest when there is more. */
export function pageOf(entries: readonly { meta: PluginMeta; seq: number }[], limit: number): ListPage {
  const page = entries.slice(0, limit);
  const more = entries.length > page.length;
  return { plugins: page.map((e) => e.meta), nextCursor: more ? encodeCursor(page.at(-1)!.seq) : null };
}

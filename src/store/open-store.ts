// Opens the store the configuration names: the filesystem one (embedded default) or PostgreSQL.
import path from 'node:path';
import type { Config } from '../config.ts';
import { FsPluginStore } from './fs-store.ts';
import { PgPluginStore, type PgStoreLogger } from './pg/pg-store.ts';
import type { PluginStore, StoreObserver } from './store.ts';

export async function openStore(config: Config, log: PgStoreLogger, observer?: StoreObserver): Promise<PluginStore> {
  const store = config.store;
  if (store.kind === 'filesystem') return FsPluginStore.open(config.dataDir, log);
  const { kind: _kind, ...settings } = store;
  return PgPluginStore.open({
    ...settings,
    cacheDir: path.join(config.dataDir, 'blob-cache'),
    log,
    ...(observer ? { observer } : {}),
  });
}

// Versioned SQL migrations of the PostgreSQL store, applied at start. Several replicas may start at
// once: a session advisory lock lets one apply them while the others wait, then find them applied.
// Each migration runs in its own transaction with its version row, so a crash applies it whole or not.
import type { Pool } from 'pg';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Append only: a released migration is never edited (replicas compare versions, not text). */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'plugins, blobs and the change log',
    sql: `
      -- Wasm bytes by content id (sha256 hex): written once, never updated except to repair damage.
      CREATE TABLE wasmhost_blobs (
        id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
        bytes bytea NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
      );
      -- A row here is the commit point of an upload: a blob without one is invisible (and swept).
      CREATE TABLE wasmhost_plugins (
        id text PRIMARY KEY REFERENCES wasmhost_blobs (id),
        seq bigint NOT NULL UNIQUE,
        name text UNIQUE,
        size integer NOT NULL,
        record jsonb NOT NULL
      );
      -- One row: the version every mutation bumps. Its row lock serializes mutations, so versions
      -- commit in order and a replica that has applied version N has seen every change up to N.
      CREATE TABLE wasmhost_state (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version bigint NOT NULL,
        pruned_through bigint NOT NULL
      );
      INSERT INTO wasmhost_state (singleton, version, pruned_through) VALUES (true, 0, 0);
      -- Which plugins each version touched; replicas re-read those rows. Old entries are pruned.
      CREATE TABLE wasmhost_changes (
        version bigint NOT NULL,
        plugin_id text NOT NULL,
        committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (version, plugin_id)
      );
    `,
  },
  {
    version: 2,
    name: 'an index for the manifests naming a module',
    sql: `
      -- A delete looks for the stored manifests naming the module (record->manifest->modules @> [{id}]):
      -- without this index, a scan of every plugin's record under the mutation lock.
      CREATE INDEX wasmhost_plugins_manifest_modules ON wasmhost_plugins
        USING gin ((record->'manifest'->'modules') jsonb_path_ops);
    `,
  },
];

/** Any 64-bit key unique to this purpose; advisory locks are per database. */
const MIGRATION_LOCK_KEY = 0x7761736d686f7374n; // "wasmhost"

export async function migrate(pool: Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  const client = await pool.connect();
  // The server may end the connection between statements: heard here, the next statement fails.
  const ignore = (): void => {};
  client.on('error', ignore);
  const applied: number[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS wasmhost_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const done = new Set(
        (await client.query<{ version: number }>('SELECT version FROM wasmhost_migrations')).rows.map((r) => r.version),
      );
      const newest = Math.max(0, ...done);
      const known = Math.max(0, ...migrations.map((m) => m.version));
      if (newest > known) {
        throw new Error(`the database schema (version ${newest}) is newer than this release knows (${known}): upgrade wasmhost`);
      }
      for (const migration of migrations) {
        if (done.has(migration.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(migration.sql);
          await client.query('INSERT INTO wasmhost_migrations (version, name) VALUES ($1, $2)', [
            migration.version,
            migration.name,
          ]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
        applied.push(migration.version);
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]);
    }
  } finally {
    client.off('error', ignore);
    client.release();
  }
  return applied;
}

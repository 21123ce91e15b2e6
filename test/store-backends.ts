// The store backends a test can run against: each gives the service environment that selects it and
// cleans up what it made. PostgreSQL tests get a database of their own per run (created here, dropped
// at the end), so parallel test files and other developers never see each other's rows.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The test cluster (trust auth on loopback); TEST_PG_ADMIN_URL points elsewhere. */
export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface StoreBackend {
  name: string;
  /** Environment for the service (added to a test server's or a child process's env). */
  env(): Promise<Record<string, string>>;
  cleanup(): Promise<void>;
}

export const fsBackend = (): StoreBackend => ({
  name: 'filesystem',
  env: async () => ({}),
  cleanup: async () => {},
});

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A fresh, empty database; its URL. */
export async function createTestDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `wasmhost_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  await admin(async (client) => {
    await client.query(`CREATE DATABASE ${name}`);
    // Commits return before their WAL reaches the disk: only a crash of the PostgreSQL server itself
    // could lose one (no test does that), and a shared, busy disk no longer paces every upload.
    await client.query(`ALTER DATABASE ${name} SET synchronous_commit = off`);
  });
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => admin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  };
}

/** Runs SQL in a test database (to damage or inspect what the store wrote). */
export async function sql<R extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

export const pgBackend = (): StoreBackend => {
  const dropping: (() => Promise<void>)[] = [];
  return {
    name: 'postgres',
    env: async () => {
      const db = await createTestDatabase();
      dropping.push(db.drop);
      return { STORE: 'postgres', DATABASE_URL: db.url };
    },
    cleanup: async () => {
      for (const drop of dropping.splice(0)) await drop();
    },
  };
};

export const STORE_BACKENDS: StoreBackend[] = [fsBackend(), pgBackend()];

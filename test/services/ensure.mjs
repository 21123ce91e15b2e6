// Before `npm test`: the PostgreSQL and Redis servers the tests use (127.0.0.1:5432, trust auth, and
// 127.0.0.1:6379). Running already: nothing to do. Installed but stopped: started. Missing (a fresh
// Debian machine, as root): installed from Debian's packages like the Rust toolchain, then started,
// PostgreSQL with trust auth on loopback as on the project's machines. Anything else: a clear error,
// never a skipped test.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';

const PG_PORT = 5432;
const REDIS_PORT = 6379;
const START_WAIT_MS = 30_000;

async function isUp(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (up) => {
      socket.destroy();
      resolve(up);
    };
    socket.setTimeout(1_000);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

async function waitUp(port, what) {
  const deadline = Date.now() + START_WAIT_MS;
  while (Date.now() < deadline) {
    if (await isUp(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`services: ${what} did not come up on 127.0.0.1:${port}`);
}

function aptInstall(packages, why) {
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    throw new Error(
      `services: ${why}; the tests need it: install Debian packages ${packages.join(' ')} (or start it on 127.0.0.1)`,
    );
  }
  console.log(`services: ${why}; installing Debian packages ${packages.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...packages], { stdio: 'inherit', env });
}

function pgVersions() {
  return existsSync('/etc/postgresql') ? readdirSync('/etc/postgresql') : [];
}

/** A cluster we installed: trust on loopback, as the project's machines have it (test machines only). */
function trustLoopback(version) {
  const hba = `/etc/postgresql/${version}/main/pg_hba.conf`;
  const text = readFileSync(hba, 'utf8');
  const rule = 'host all all 127.0.0.1/32 trust';
  if (!text.includes(rule)) writeFileSync(hba, `${rule}\nhost all all ::1/128 trust\n${text}`);
}

async function ensurePostgres() {
  if (await isUp(PG_PORT)) return;
  let versions = pgVersions();
  if (versions.length === 0 || !existsSync('/usr/bin/pg_ctlcluster')) {
    aptInstall(['postgresql'], 'PostgreSQL is not installed');
    versions = pgVersions();
    trustLoopback(versions[0]);
  }
  console.log(`services: starting PostgreSQL ${versions[0]}`);
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', versions[0], 'main', 'start'], { stdio: 'inherit' });
  await waitUp(PG_PORT, 'PostgreSQL');
}

async function ensureRedis() {
  if (await isUp(REDIS_PORT)) return;
  if (!existsSync('/usr/bin/redis-server')) aptInstall(['redis-server'], 'Redis is not installed');
  console.log('services: starting Redis');
  execFileSync(
    'redis-server',
    ['--daemonize', 'yes', '--bind', '127.0.0.1', '--port', String(REDIS_PORT), '--save', '', '--appendonly', 'no'],
    {
      stdio: 'inherit',
    },
  );
  await waitUp(REDIS_PORT, 'Redis');
}

await ensurePostgres();
await ensureRedis();

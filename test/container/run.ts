// `npm run test:container`: builds the image with podman, runs it and checks what an operator
// relies on — it serves, runs plugins, exports metrics, runs as non-root, keeps data on its volume,
// stops cleanly on SIGTERM and stays small. No registry and no Docker engine are reachable here, so
// the base images are local stand-ins (base-images.sh). If this machine cannot run containers at
// all, the run says so and exits 0 as SKIPPED; a build or serve failure exits 1.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const repoRoot = path.resolve(import.meta.dirname, '../..');
const IMAGE = 'localhost/wasmhost:test';
const MAX_IMAGE_BYTES = 250_000_000;
const STOP_WITHIN_MS = 5_000;
const resultsFile = path.join(repoRoot, '.container-results.json');
const runId = `${process.pid}-${Date.now().toString(36)}`;
const volume = `wasmhost-ctest-data-${runId}`;

let passed = 0;
let failed = 0;
const started: string[] = [];
const confDir = mkdtempSync(path.join(tmpdir(), 'wasmhost-podman-'));

class SkipError extends Error {}
class FatalError extends Error {}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], options: SpawnSyncOptions = {}): Run {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
  return {
    status: r.error ? null : r.status,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? r.error?.message ?? ''),
  };
}

const podman = (...args: string[]): Run => run('podman', args);

function podmanOk(...args: string[]): string {
  const r = podman(...args);
  if (r.status !== 0) throw new FatalError(`podman ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout.trim();
}

function check(name: string, ok: boolean, detail = ''): boolean {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  return ok;
}

const has = (cmd: string): boolean => run('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** podman, runc and debootstrap from Debian, installed when missing and we are root. */
function ensureTools(): void {
  const missing = ['podman', 'runc', 'debootstrap'].filter((t) => !has(t));
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0 || !has('apt-get')) {
    throw new SkipError(`${missing.join(', ')} not installed, and installing needs root with apt-get`);
  }
  console.log(`container: installing Debian packages podman runc debootstrap (missing: ${missing.join(', ')})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = run('apt-get', ['update', '-qq'], { env });
  const install = run('apt-get', ['install', '-y', '-qq', 'podman', 'runc', 'debootstrap'], { env });
  if (update.status !== 0 || install.status !== 0) {
    throw new SkipError(`apt-get could not install podman: ${(install.stderr || update.stderr).trim().slice(-500)}`);
  }
}

/** A containers.conf of our own: runc, and ulimits the sandbox allows (podman's defaults exceed them). */
function configurePodman(): void {
  const hardNofile = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
  const nofile = Math.min(Number(hardNofile ?? 65536), 65536);
  // A Node service needs a few dozen threads; higher nproc values are refused by runc here.
  const nproc = 4096;
  const conf = path.join(confDir, 'containers.conf');
  writeFileSync(
    conf,
    [
      '[containers]',
      `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
      '[engine]',
      'runtime = "runc"',
      '',
    ].join('\n'),
  );
  process.env.CONTAINERS_CONF = conf;
}

function ensureBaseImages(): void {
  const r = run('bash', [path.join(repoRoot, 'test/container/base-images.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new SkipError('could not create the local base images (see above)');
  const probe = podman('run', '--rm', '--pull=never', '--network=none', 'localhost/debian:bookworm-slim', 'true');
  if (probe.status !== 0) throw new SkipError(`podman cannot start a container: ${probe.stderr.trim().slice(-500)}`);
}

function buildImage(): void {
  const args = ['build', '--format', 'docker', '--pull=never', '--tag', IMAGE, '--file', 'Dockerfile'];
  // npm ci inside the build must trust what the host trusts (a TLS-inspecting proxy's CA, say).
  const ca = [process.env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt'].find((f) => f && existsSync(f));
  if (ca) args.push('--secret', `id=ca,src=${ca}`);
  args.push('.');
  const started = Date.now();
  const r = run('podman', args, { cwd: repoRoot });
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  if (r.status !== 0) {
    console.log((r.stdout + r.stderr).split('\n').slice(-40).join('\n'));
    check('image builds from the Dockerfile', false, `podman build exited ${r.status}`);
    throw new FatalError('image build failed');
  }
  check('image builds from the Dockerfile', true, `${seconds} s`);
}

interface ImageConfig {
  User?: string;
  Entrypoint?: string[] | null;
  Volumes?: Record<string, unknown> | null;
  Env?: string[];
}

function checkImage(): void {
  const size = Number(podmanOk('image', 'inspect', '--format', '{{.Size}}', IMAGE));
  check('image is under 250 MB', size > 0 && size < MAX_IMAGE_BYTES, `${(size / 1e6).toFixed(1)} MB`);

  const [inspected] = JSON.parse(podmanOk('image', 'inspect', IMAGE)) as {
    Config?: ImageConfig;
    Healthcheck?: { Test?: string[] } | null;
  }[];
  const config = inspected?.Config ?? {};
  const healthcheck = inspected?.Healthcheck;
  const user = config.User ?? '';
  check('image declares a non-root USER', user !== '' && !/^(0|root)(:|$)/.test(user), `USER ${user || '(none)'}`);
  check('ENTRYPOINT is exec-form node', config.Entrypoint?.[0] === 'node', JSON.stringify(config.Entrypoint));
  check(
    'DATA_DIR is a declared volume',
    config.Env?.includes('DATA_DIR=/data') === true && config.Volumes?.['/data'] !== undefined,
  );
  check(
    'HEALTHCHECK is declared (kept by --format docker)',
    (healthcheck?.Test?.length ?? 0) > 0,
    JSON.stringify(healthcheck?.Test),
  );

  // Dev tools that must not ship: the package manager, compilers, the TypeScript sources and dev deps.
  const probe = podman(
    'run',
    '--rm',
    '--pull=never',
    '--network=none',
    '--entrypoint',
    'sh',
    IMAGE,
    '-c',
    'for p in /usr/local/bin/npm /usr/local/bin/npx /usr/local/lib/node_modules/npm /app/src /app/node_modules/typescript ' +
      '/app/node_modules/vitest /app/node_modules/assemblyscript /app/node_modules/node /usr/bin/gcc /usr/bin/rustc; ' +
      'do [ -e "$p" ] && echo "$p"; done; true',
  );
  check(
    'no dev tools in the final image',
    probe.status === 0 && probe.stdout.trim() === '',
    probe.status === 0 ? probe.stdout.trim().replace(/\n/g, ' ') : probe.stderr.trim(),
  );
}

function startContainer(name: string): string {
  // The hardening docker-compose.yml applies: read-only root, no capabilities, no privilege gain.
  podmanOk(
    'run',
    '--detach',
    '--pull=never',
    '--name',
    name,
    '--publish',
    '127.0.0.1::8080',
    '--volume',
    `${volume}:/data`,
    '--read-only',
    '--tmpfs',
    '/tmp',
    '--cap-drop',
    'ALL',
    '--security-opt',
    'no-new-privileges',
    '--env',
    'LOG_LEVEL=warn',
    IMAGE,
  );
  started.push(name);
  const port = podmanOk('port', name, '8080/tcp').split('\n')[0]?.split(':').pop();
  if (!port) throw new FatalError(`no published port for ${name}`);
  return `http://127.0.0.1:${port}`;
}

async function waitHealthy(base: string, name: string): Promise<boolean> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return true;
    } catch {
      // not listening yet
    }
    const state = podman('inspect', '--format', '{{.State.Status}}', name).stdout.trim();
    if (state !== 'running') return false;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

function logsOf(name: string): string {
  const r = podman('logs', '--tail', '40', name);
  return (r.stdout + r.stderr).trim();
}

async function exerciseService(): Promise<void> {
  const name = `wasmhost-ctest-${runId}`;
  const base = startContainer(name);
  if (!check('container answers GET /healthz', await waitHealthy(base, name))) {
    console.log(logsOf(name));
    throw new FatalError('the image does not serve');
  }

  const ready = await fetch(`${base}/readyz`);
  check(
    'GET /readyz is 200 (store on the volume writable by the service user)',
    ready.status === 200,
    `${ready.status} ${await ready.text()}`,
  );
  const spec = await fetch(`${base}/openapi.json`);
  const docs = await fetch(`${base}/docs`);
  check('serves /openapi.json and /docs', spec.status === 200 && docs.status === 200, `${spec.status}, ${docs.status}`);
  // The playground's page and the script it loads, bundled at image build time, under its CSP.
  const page = await fetch(`${base}/`);
  const html = await page.text();
  const script = /<script type="module" crossorigin src="([^"]+)"/.exec(html)?.[1];
  const asset = script ? await fetch(`${base}${script}`) : null;
  check(
    'serves the playground at / with its Content-Security-Policy and bundled script',
    page.status === 200 &&
      (page.headers.get('content-security-policy') ?? '').includes("script-src 'self'") &&
      asset?.status === 200 &&
      (asset.headers.get('content-type') ?? '').includes('javascript'),
    `${page.status}, script ${script ?? '(none)'} → ${asset?.status ?? '-'}`,
  );

  const hc = podman('healthcheck', 'run', name);
  check('HEALTHCHECK command reports healthy', hc.status === 0, (hc.stdout + hc.stderr).trim());

  // PID 1 is node itself (exec form), and it runs with a non-zero uid.
  const proc = podman('exec', name, 'sh', '-c', 'tr "\\0" " " </proc/1/cmdline; echo; awk "/^Uid:/ {print \\$2}" /proc/1/status');
  const [cmdline, uid] = proc.stdout.trim().split('\n');
  check('PID 1 is node itself (exec form)', cmdline?.trim() === 'node dist/main.js', `PID 1 is "${cmdline?.trim()}"`);
  check('service runs as non-root', uid !== undefined && uid !== '' && uid !== '0', `uid ${uid}`);

  const wasm = readFileSync(path.join(repoRoot, 'plugins/dist/count_vowels.wasm'));
  const id = createHash('sha256').update(wasm).digest('hex');
  const upload = await fetch(`${base}/plugins?name=count-vowels`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: wasm,
  });
  const uploaded = (await upload.json()) as { id?: string };
  check(
    'uploads plugins/dist/count_vowels.wasm',
    upload.status === 201 && uploaded.id === id,
    `${upload.status} id ${uploaded.id}`,
  );

  const call = await fetch(`${base}/plugins/${id}/call`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ function: 'count_vowels', input: 'Hello, World!' }),
  });
  const callBody = (await call.json()) as { output?: string };
  let count: unknown;
  try {
    count = (JSON.parse(callBody.output ?? '') as { count?: unknown }).count;
  } catch {
    count = undefined;
  }
  check(
    'calls count_vowels and gets its output',
    call.status === 200 && count === 3,
    `${call.status} ${JSON.stringify(callBody).slice(0, 200)}`,
  );

  const metrics = await fetch(`${base}/metrics`);
  const text = await metrics.text();
  check(
    'GET /metrics serves Prometheus text',
    metrics.status === 200 && /^# TYPE \S+ (counter|gauge|histogram)/m.test(text),
    `${metrics.status}, ${text.split('\n').length} lines`,
  );

  // SIGTERM with a call in flight: the call is drained (it ends at its own 1.5 s timeout), then node exits 0.
  const loop = readFileSync(path.join(repoRoot, 'plugins/dist/loop.wasm'));
  const loopUpload = await fetch(`${base}/plugins?name=loop`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: loop,
  });
  const inFlight = loopUpload.ok
    ? fetch(`${base}/plugins/loop/call`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ function: 'spin', timeoutMs: 1500 }),
      }).then(
        async (r) => `${r.status} ${((await r.json()) as { code?: string }).code ?? ''}`,
        (err: unknown) => `failed: ${String(err)}`,
      )
    : Promise.resolve(`upload failed: ${loopUpload.status}`);
  await new Promise((r) => setTimeout(r, 300));
  await stopWithSigterm(name);
  const drained = await inFlight;
  check('a call in flight at SIGTERM still gets its answer', drained.startsWith('504 TIMEOUT'), drained);

  // A new container on the same volume sees the plugin: data lives on the volume, writable by the user.
  const second = `wasmhost-ctest-${runId}-2`;
  const base2 = startContainer(second);
  if (await waitHealthy(base2, second)) {
    const again = await fetch(`${base2}/plugins/${id}`);
    check('plugin survives a restart on the data volume', again.status === 200, `GET /plugins/:id → ${again.status}`);
  } else {
    check('plugin survives a restart on the data volume', false, 'second container did not serve');
    console.log(logsOf(second));
  }
  await stopWithSigterm(second);
}

/** `podman stop` sends the image's stop signal (SIGTERM) and would SIGKILL after 10 s. */
async function stopWithSigterm(name: string): Promise<void> {
  const t0 = Date.now();
  podmanOk('stop', '--time', '10', name);
  const elapsed = Date.now() - t0;
  const exitCode = podman('inspect', '--format', '{{.State.ExitCode}}', name).stdout.trim();
  const ok = check(
    `SIGTERM stops ${name.endsWith('-2') ? 'the second container' : 'the container'} cleanly within ${STOP_WITHIN_MS / 1000} s`,
    exitCode === '0' && elapsed < STOP_WITHIN_MS,
    `exit code ${exitCode} after ${elapsed} ms`,
  );
  if (!ok) console.log(logsOf(name));
}

function cleanup(): void {
  for (const name of started) podman('rm', '--force', '--time', '0', name);
  podman('volume', 'rm', '--force', volume);
  rmSync(confDir, { recursive: true, force: true });
}

function report(skipped: string | null): void {
  rmSync(confDir, { recursive: true, force: true });
  writeFileSync(resultsFile, JSON.stringify({ passed, failed, skipped: skipped === null ? 0 : 1, reason: skipped }) + '\n');
  if (skipped !== null) console.log(`container: SKIPPED — ${skipped}`);
  else console.log(`container: ${passed} passed, ${failed} failed`);
}

async function main(): Promise<number> {
  const build = run(process.execPath, [path.join(repoRoot, 'plugins/build.mjs'), '--if-missing'], {
    cwd: repoRoot,
    stdio: 'inherit',
  });
  if (build.status !== 0) throw new FatalError('plugins/build.mjs failed');
  try {
    ensureTools();
    configurePodman();
    ensureBaseImages();
  } catch (err) {
    if (err instanceof SkipError) {
      report(err.message);
      return 0;
    }
    throw err;
  }
  try {
    buildImage();
    checkImage();
    await exerciseService();
  } catch (err) {
    if (!(err instanceof FatalError)) throw err;
    console.log(`container: ${err.message}`);
    failed = Math.max(failed, 1);
  } finally {
    cleanup();
  }
  report(null);
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    failed++;
    report(null);
    process.exit(1);
  },
);

// Builds the playground (playground/ → playground/dist/, served by the service at `/`) with Vite.
//   node playground/build.mjs            build
//   node playground/build.mjs --if-stale build only when dist/ is missing or older than a source
//                                         (npm start and npm test: a fresh clone serves a working page)
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const playgroundDir = dirname(fileURLToPath(import.meta.url));
const rootDir = dirname(playgroundDir);
const builtIndex = join(playgroundDir, 'dist', 'index.html');
// What goes into the bundle: the page, its code, and the typed client it uses.
const sources = ['index.html', 'vite.config.ts', 'src', 'public'].map((p) => join(playgroundDir, p));
sources.push(join(rootDir, 'src', 'client'));

function newestMtime(path) {
  if (!existsSync(path)) return 0;
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return readdirSync(path).reduce((newest, entry) => Math.max(newest, newestMtime(join(path, entry))), stat.mtimeMs);
}

function isStale() {
  if (!existsSync(builtIndex)) return true;
  const built = statSync(builtIndex).mtimeMs;
  return sources.some((source) => newestMtime(source) > built);
}

if (process.argv.includes('--if-stale') && !isStale()) process.exit(0);

const { build } = await import('vite');
await build({ configFile: join(playgroundDir, 'vite.config.ts'), logLevel: 'warn' });
console.log('playground: built into playground/dist/');

// `npm run openapi`: writes openapi.yaml, generated from the app's routes (src/api/openapi.ts).
// `npm run openapi -- --check` writes nothing and fails when the committed file differs (.ci/run).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { OPENAPI_FILE, openApiYaml } from '../src/api/openapi.ts';
import { buildApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';

const check = process.argv.includes('--check');
const dataDir = await mkdtemp(path.join(tmpdir(), 'wasmhost-openapi-'));
let generated: string;
try {
  const app = await buildApp(loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent' }));
  await app.ready();
  generated = openApiYaml(app);
  await app.close();
} finally {
  await rm(dataDir, { recursive: true, force: true });
}

const relative = path.relative(process.cwd(), OPENAPI_FILE);
if (check) {
  const committed = await readFile(OPENAPI_FILE, 'utf8').catch(() => '');
  if (committed !== generated) {
    console.error(`${relative} is not what the routes generate: run npm run openapi (and npm run generate:client)`);
    process.exit(1);
  }
  console.log(`${relative} is up to date`);
} else {
  await writeFile(OPENAPI_FILE, generated);
  console.log(`wrote ${relative}`);
}

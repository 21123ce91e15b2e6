// docker-compose.yml, prometheus.yml and the Dockerfile must agree: no Docker engine runs here, so
// this checks the wiring a `docker compose up` depends on (the image itself is run by test:container).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { repoRoot } from './helpers.ts';

type Json = Record<string, unknown>;

let compose: { services: Record<string, Json>; volumes?: Record<string, unknown> };
let prometheus: { scrape_configs: { job_name: string; metrics_path?: string; static_configs: { targets: string[] }[] }[] };
let dockerfile: string;

beforeAll(async () => {
  const read = (file: string) => readFile(path.join(repoRoot, file), 'utf8');
  compose = parse(await read('docker-compose.yml')) as typeof compose;
  prometheus = parse(await read('prometheus.yml')) as typeof prometheus;
  dockerfile = await read('Dockerfile');
});

/** The runtime stage (everything after the last FROM), continuation lines joined. */
const runtimeStage = (): string => dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')).replace(/\\\n\s*/g, ' ');

describe('container configuration', () => {
  it('runs the runtime stage as a non-root user with DATA_DIR on a declared volume and a /healthz HEALTHCHECK', () => {
    const stage = runtimeStage();
    expect(stage).toMatch(/^USER (?!0\b|root\b)\S+/m);
    expect(stage).toMatch(/DATA_DIR=\/data\b/);
    expect(stage).toMatch(/^VOLUME \["\/data"\]/m);
    expect(stage).toMatch(/^HEALTHCHECK .*\/healthz/m);
    expect(stage).toMatch(/^ENTRYPOINT \["node", "dist\/main\.js"\]/m);
  });

  it('keeps the service data in a named volume mounted at the image DATA_DIR', () => {
    const service = compose.services.wasmhost!;
    expect(service.build).toBe('.');
    const mounts = (service.volumes as string[]).map((v) => v.split(':'));
    const data = mounts.find(([, target]) => target === '/data');
    expect(data, 'a volume at /data').toBeDefined();
    expect(compose.volumes).toHaveProperty(data![0]!);
  });

  it('publishes ports on loopback only', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      for (const port of (service.ports ?? []) as string[]) expect(port, `${name} publishes ${port}`).toMatch(/^127\.0\.0\.1:/);
    }
  });

  it('has Prometheus scrape the service by its compose name and container port, with the repo prometheus.yml', () => {
    const prom = compose.services.prometheus!;
    expect(prom.volumes as string[]).toContain('./prometheus.yml:/etc/prometheus/prometheus.yml:ro');
    const port = /^EXPOSE (\d+)/m.exec(runtimeStage())?.[1];
    const job = prometheus.scrape_configs.find((c) => c.static_configs.some((s) => s.targets.includes(`wasmhost:${port}`)));
    expect(job, `a scrape job targeting wasmhost:${port}`).toBeDefined();
    expect(job!.metrics_path ?? '/metrics').toBe('/metrics');
    expect(Object.keys(compose.services)).toContain('wasmhost');
  });
});

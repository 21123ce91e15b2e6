// deploy/k8s/: valid against the Kubernetes API schemas (deploy/k8s/validate.ts, also run by .ci/run),
// and consistent with the service: the environment it sets is a configuration the service accepts,
// the termination grace covers preStop plus the drain, probes and scrape annotations name real routes.
import { cp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config.ts';
import { validateManifests } from '../deploy/k8s/validate.ts';
import { makeTempDir, removeDir, repoRoot } from './helpers.ts';

const dir = path.join(repoRoot, 'deploy', 'k8s');
/** main.ts: how long a stopped process may take to exit by itself after the drain. */
const EXIT_GRACE_S = 3;

interface Probe {
  httpGet: { path: string; port: string };
}
interface Container {
  ports: { name: string; containerPort: number }[];
  env: { name: string; value: string }[];
  envFrom: { secretRef: { name: string } }[];
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  securityContext: { readOnlyRootFilesystem: boolean; allowPrivilegeEscalation: boolean; capabilities: { drop: string[] } };
  volumeMounts: { name: string; mountPath: string }[];
  livenessProbe: Probe;
  readinessProbe: Probe;
  lifecycle: { preStop: { exec: { command: string[] } } };
}
interface DeploymentDoc {
  spec: {
    replicas: number;
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string>; annotations: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        securityContext: { runAsNonRoot: boolean; runAsUser: number };
        containers: Container[];
        volumes: { name: string; emptyDir?: object }[];
      };
    };
  };
}

async function load<T>(file: string): Promise<T> {
  return parse(await readFile(path.join(dir, file), 'utf8')) as T;
}

describe('Kubernetes manifests', () => {
  const temp: string[] = [];
  afterAll(async () => {
    for (const d of temp) await removeDir(d);
  });

  it('validate against the Kubernetes API schemas, and a broken manifest does not', async () => {
    expect(validateManifests(dir)).toEqual({
      kinds: [
        'apps/v1 Deployment',
        'autoscaling/v2 HorizontalPodAutoscaler',
        'policy/v1 PodDisruptionBudget',
        'v1 Secret',
        'v1 Service',
      ],
      problems: [],
    });
    const broken = await makeTempDir('wasmhost-k8s-');
    temp.push(broken);
    await cp(dir, broken, { recursive: true });
    const deployment = await readFile(path.join(broken, 'deployment.yaml'), 'utf8');
    await writeFile(path.join(broken, 'deployment.yaml'), deployment.replace('replicas: 3', 'replicas: three'));
    await writeFile(path.join(broken, 'extra.yaml'), 'apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: x}\n');
    expect(validateManifests(broken).problems).toEqual([
      { file: 'deployment.yaml', problem: expect.stringContaining('replicas must be integer') },
      { file: 'extra.yaml', problem: 'unexpected apps/v1 Deploymnet' },
    ]);
  });

  it('run three non-root replicas on a read-only root with the blob cache on an emptyDir, with requests and limits', async () => {
    const { spec } = await load<DeploymentDoc>('deployment.yaml');
    const pod = spec.template.spec;
    const container = pod.containers[0]!;
    expect(spec.replicas).toBe(3);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
    expect(container.securityContext).toEqual({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    const dataDir = container.env.find((e) => e.name === 'DATA_DIR')!.value;
    const cacheMount = container.volumeMounts.find((m) => m.mountPath === dataDir)!;
    expect(pod.volumes.find((v) => v.name === cacheMount.name)).toHaveProperty('emptyDir');
    for (const kind of ['requests', 'limits'] as const) {
      expect(Object.keys(container.resources[kind]).sort()).toEqual(['cpu', 'ephemeral-storage', 'memory']);
    }
  });

  it('give the service an environment it accepts (the Secret included): PostgreSQL store, tokens, shared limits', async () => {
    const { spec } = await load<DeploymentDoc>('deployment.yaml');
    const container = spec.template.spec.containers[0]!;
    const secret = await load<{ metadata: { name: string }; stringData: Record<string, string> }>('secret.yaml');
    expect(container.envFrom).toEqual([{ secretRef: { name: secret.metadata.name } }]);
    const env = { ...secret.stringData, ...Object.fromEntries(container.env.map((e) => [e.name, e.value])) };
    const config = loadConfig(env);
    expect(config.store.kind).toBe('postgres');
    expect(config.ops.authTokens.size).toBe(2);
    expect(config.ops.redis).not.toBeNull();
    expect(config.port).toBe(container.ports[0]!.containerPort);

    // Every replica the autoscaler may start holds PG_POOL_MAX connections plus a listener: within
    // PostgreSQL's default max_connections (100).
    const hpa = await load<{ spec: { minReplicas: number; maxReplicas: number } }>('hpa.yaml');
    if (config.store.kind !== 'postgres') throw new Error('unreachable');
    expect(hpa.spec.maxReplicas * (config.store.poolMax + 1)).toBeLessThanOrEqual(100);
    expect(hpa.spec.minReplicas).toBe(spec.replicas);

    // The grace period covers preStop, the drain and the exit after it.
    const pod = spec.template.spec;
    const [command, seconds] = container.lifecycle.preStop.exec.command;
    expect(command).toBe('sleep');
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(
      Number(seconds) + config.ops.shutdownDrainMs / 1000 + EXIT_GRACE_S,
    );
  });

  it('probe /healthz for liveness and /readyz for readiness, and are scraped on /metrics of the container port', async () => {
    const { spec } = await load<DeploymentDoc>('deployment.yaml');
    const container = spec.template.spec.containers[0]!;
    const port = container.ports[0]!;
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: port.name });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: port.name });
    expect(spec.template.metadata.annotations).toEqual({
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': String(port.containerPort),
      'prometheus.io/path': '/metrics',
    });
  });

  it('point the Service, the PodDisruptionBudget and the autoscaler at the Deployment', async () => {
    const deployment = await load<DeploymentDoc & { metadata: { name: string } }>('deployment.yaml');
    const labels = deployment.spec.template.metadata.labels;
    expect(deployment.spec.selector.matchLabels).toEqual(labels);
    const service = await load<{ spec: { selector: Record<string, string>; ports: { targetPort: string }[] } }>('service.yaml');
    expect(service.spec.selector).toEqual(labels);
    expect(service.spec.ports[0]!.targetPort).toBe(deployment.spec.template.spec.containers[0]!.ports[0]!.name);
    const pdb = await load<{ spec: { selector: { matchLabels: Record<string, string> }; maxUnavailable: number } }>('pdb.yaml');
    expect(pdb.spec).toEqual({ selector: { matchLabels: labels }, maxUnavailable: 1 });
    const hpa = await load<{
      spec: { scaleTargetRef: { kind: string; name: string }; metrics: { resource: { name: string } }[] };
    }>('hpa.yaml');
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: deployment.metadata.name });
    expect(hpa.spec.metrics.map((m) => m.resource.name)).toEqual(['cpu']);
    // One document per file: kubectl apply -f deploy/k8s/ takes them all.
    for (const file of ['deployment.yaml', 'service.yaml', 'pdb.yaml', 'hpa.yaml', 'secret.yaml']) {
      expect(parseAllDocuments(await readFile(path.join(dir, file), 'utf8'))).toHaveLength(1);
    }
  });
});

// Validates every manifest in deploy/k8s/ against the Kubernetes API schemas, offline: the JSON schemas
// of the API's OpenAPI document ship, compiled, inside the npm package kubernetes-models. Each document
// must be a kind listed here (a typo in apiVersion or kind fails too). `npm run lint:k8s`.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Secret, Service } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';

interface Validatable {
  validate(): void;
}

const MODELS: Record<string, new (data: never) => Validatable> = {
  'apps/v1 Deployment': Deployment,
  'autoscaling/v2 HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1 PodDisruptionBudget': PodDisruptionBudget,
  'v1 Secret': Secret,
  'v1 Service': Service,
};

export interface ManifestProblem {
  file: string;
  problem: string;
}

/** Every document of every .yaml file in `dir`, with what is wrong with it. */
export function validateManifests(dir: string): { kinds: string[]; problems: ManifestProblem[] } {
  const kinds: string[] = [];
  const problems: ManifestProblem[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    for (const doc of parseAllDocuments(readFileSync(path.join(dir, file), 'utf8'))) {
      if (doc.errors.length > 0) {
        problems.push({ file, problem: doc.errors.map((e) => e.message).join('; ') });
        continue;
      }
      const object = doc.toJS() as { apiVersion?: string; kind?: string } | null;
      if (object === null) continue;
      const key = `${object.apiVersion} ${object.kind}`;
      const Model = MODELS[key];
      if (!Model) {
        problems.push({ file, problem: `unexpected ${key}` });
        continue;
      }
      try {
        new Model(object as never).validate();
        kinds.push(key);
      } catch (err) {
        problems.push({ file, problem: `${key}: ${(err as Error).message}` });
      }
    }
  }
  return { kinds, problems };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = path.dirname(fileURLToPath(import.meta.url));
  const { kinds, problems } = validateManifests(dir);
  for (const { file, problem } of problems) console.error(`deploy/k8s/${file}: ${problem}`);
  if (problems.length > 0) process.exit(1);
  console.log(`deploy/k8s: ${kinds.length} manifests valid (${kinds.join(', ')})`);
}

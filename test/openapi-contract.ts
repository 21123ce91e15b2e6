// Contract checks against openapi.yaml: a real response (status, content type, JSON body, required
// headers) must be one the document promises for that operation. Schemas are validated with Ajv's
// JSON Schema 2020-12 validator, the dialect of OpenAPI 3.1.
//
//   const res = await fetch(`${server.url}/plugins`);
//   await expectContract('GET', '/plugins', res);          // fetch Response (body read from a clone)
//   expectContract('GET', '/plugins', await app.inject({ method: 'GET', url: '/plugins' }));
//   contractProblems(...)                                   // the same check, returning the problems
//   startServer({ appOptions: { onRoute: checkEveryResponse(problems) } })  // every answer of an app
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import type { onSendHookHandler, RouteOptions } from 'fastify';
import addFormatsModule from 'ajv-formats';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { OPENAPI_FILE } from '../src/api/openapi.ts';

type Json = Record<string, unknown>;

/** The parts of a response the contract speaks about. */
export interface ObservedResponse {
  status: number;
  /** Lower-case header names. */
  headers: Record<string, string | undefined>;
  /** Parsed JSON when the content type is JSON, the raw text otherwise. */
  body: unknown;
}

/** What `app.inject()` resolves to (light-my-request), structurally. */
interface InjectResponse {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
// OpenAPI's own schema keywords (annotations to a JSON Schema validator), and the document's
// top-level fields: Ajv compiles the document root when it resolves a pointer into it.
const OAS_KEYWORDS = [
  'example',
  'discriminator',
  'xml',
  'externalDocs',
  'openapi',
  'info',
  'jsonSchemaDialect',
  'servers',
  'paths',
  'webhooks',
  'components',
  'security',
  'tags',
];
const SPEC_ID = 'openapi.json';

interface Contract {
  document: Json;
  ajv: Ajv2020;
  paths: { template: string; pattern: RegExp; literalChars: number }[];
  validators: Map<string, ValidateFunction>;
}

let contract: Contract | undefined;

function load(): Contract {
  if (contract) return contract;
  const document = parse(readFileSync(OPENAPI_FILE, 'utf8')) as Json;
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, allowUnionTypes: true, validateFormats: true });
  // ajv-formats is CommonJS; its typings put the plugin on `.default`.
  addFormatsModule.default(ajv);
  for (const keyword of OAS_KEYWORDS) ajv.addKeyword({ keyword });
  // Every schema is compiled as a pointer into the whole document, so `#/components/...` refs resolve.
  ajv.addSchema({ ...document, $id: SPEC_ID }, undefined, undefined, false);
  const paths = Object.keys((document.paths ?? {}) as Json).map((template) => ({
    template,
    pattern: new RegExp(
      `^${template
        .split(/\{[^}]+\}/)
        .map(escapeRegExp)
        .join('[^/]+')}$`,
    ),
    literalChars: template.replace(/\{[^}]+\}/g, '').length,
  }));
  // The most literal template wins (/plugins/names beats /plugins/{id}).
  paths.sort((a, b) => b.literalChars - a.literalChars);
  contract = { document, ajv, paths, validators: new Map() };
  return contract;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const pointerSegment = (s: string): string => encodeURIComponent(s.replace(/~/g, '~0').replace(/\//g, '~1'));

/** Follows a local `$ref` (responses, headers, parameters) to the object it names. */
export function resolveRef(value: unknown): Json {
  return deref(load().document, value, []).value;
}

function deref(document: Json, value: unknown, pointer: string[]): { value: Json; pointer: string[] } {
  let current = value as Json;
  let at = pointer;
  for (let hops = 0; typeof current?.$ref === 'string'; hops++) {
    const ref = current.$ref as string;
    if (!ref.startsWith('#/') || hops > 10) throw new Error(`unsupported $ref ${ref}`);
    at = ref
      .slice(2)
      .split('/')
      .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    current = at.reduce<unknown>((node, key) => (node as Json | undefined)?.[key], document) as Json;
    if (current === undefined) throw new Error(`dangling $ref ${ref}`);
  }
  return { value: current, pointer: at };
}

/** The documented path template an actual request path falls under, or undefined. */
export function matchPath(urlPath: string): string | undefined {
  return load().paths.find((p) => p.pattern.test(urlPath))?.template;
}

function mediaType(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]?.trim().toLowerCase();
}

const isJsonMedia = (media: string): boolean => media === 'application/json' || media.endsWith('+json');

/** Everything that does not match the contract; empty when the response is one the document promises. */
export function contractProblems(method: string, url: string, response: ObservedResponse): string[] {
  const { document, ajv, validators } = load();
  const urlPath = new URL(url, 'http://service.invalid').pathname;
  const where = `${method.toUpperCase()} ${urlPath} → ${response.status}`;
  const template = matchPath(urlPath);
  if (template === undefined) return [`${where}: path is not in openapi.yaml`];
  const op = method.toLowerCase();
  const operation = ((document.paths as Json)[template] as Json)[op] as Json | undefined;
  if (operation === undefined) return [`${where}: ${method.toUpperCase()} ${template} is not in openapi.yaml`];

  const responses = (operation.responses ?? {}) as Json;
  const code = String(response.status);
  const key = [code, `${code[0]}XX`, 'default'].find((k) => responses[k] !== undefined);
  if (key === undefined) {
    return [
      `${where}: status ${code} is not documented for ${method.toUpperCase()} ${template} (documented: ${Object.keys(responses).join(', ')})`,
    ];
  }
  const basePointer = ['paths', template, op, 'responses', key];
  const { value: documented, pointer } = deref(document, responses[key], basePointer);
  const problems: string[] = [];

  for (const [name, header] of Object.entries((documented.headers ?? {}) as Json)) {
    const { value } = deref(document, header, []);
    if (value.required === true && response.headers[name.toLowerCase()] === undefined) {
      problems.push(`${where}: required header ${name} is missing`);
    }
  }

  const content = (documented.content ?? {}) as Json;
  const media = mediaType(response.headers['content-type']);
  const hasBody = !(response.body === undefined || response.body === '' || response.body === null);
  if (Object.keys(content).length === 0) {
    if (hasBody) problems.push(`${where}: documented without a body, but one was sent (${media ?? 'no content type'})`);
    return problems;
  }
  if (media === undefined) return [...problems, `${where}: no content type (documented: ${Object.keys(content).join(', ')})`];
  const mediaKey =
    Object.keys(content).find((k) => k.toLowerCase() === media) ??
    Object.keys(content).find((k) => k.endsWith('/*') && media.startsWith(k.slice(0, -1))) ??
    Object.keys(content).find((k) => k === '*/*');
  if (mediaKey === undefined) {
    return [...problems, `${where}: content type ${media} is not documented (documented: ${Object.keys(content).join(', ')})`];
  }
  const schema = (content[mediaKey] as Json).schema;
  if (schema === undefined || !isJsonMedia(media)) return problems;

  const schemaPointer = [...pointer, 'content', mediaKey, 'schema'];
  const ref = `${SPEC_ID}#/${schemaPointer.map(pointerSegment).join('/')}`;
  let validate = validators.get(ref);
  if (!validate) {
    validate = ajv.compile({ $ref: ref });
    validators.set(ref, validate);
  }
  if (!validate(response.body)) {
    for (const e of validate.errors ?? []) {
      problems.push(`${where}: body${e.instancePath || ''} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`);
    }
  }
  return problems;
}

function fromInject(res: InjectResponse): ObservedResponse {
  const headers: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(res.headers)) headers[k.toLowerCase()] = v === undefined ? undefined : String(v);
  const media = mediaType(headers['content-type']);
  let body: unknown = res.body;
  if (media && isJsonMedia(media) && res.body !== '') body = JSON.parse(res.body);
  return { status: res.statusCode, headers, body };
}

async function fromFetch(res: Response): Promise<ObservedResponse> {
  const headers: Record<string, string | undefined> = {};
  res.headers.forEach((v, k) => {
    headers[k] = v;
  });
  const media = mediaType(headers['content-type']);
  const text = await res.clone().text();
  const body =
    media && isJsonMedia(media) && text !== ''
      ? (JSON.parse(text) as unknown)
      : media === 'application/wasm' || media === 'application/octet-stream'
        ? text === ''
          ? ''
          : '<binary>'
        : text;
  return { status: res.status, headers, body };
}

export class ContractError extends Error {
  override name = 'ContractError';
}

/**
 * Throws a ContractError listing every mismatch. Takes an observed response, an `app.inject()`
 * result, or a fetch Response (then it returns a promise; the original body stays unread).
 */
export function expectContract(method: string, url: string, response: Response): Promise<void>;
export function expectContract(method: string, url: string, response: InjectResponse | ObservedResponse): void;
export function expectContract(
  method: string,
  url: string,
  response: Response | InjectResponse | ObservedResponse,
): void | Promise<void> {
  const verdict = (observed: ObservedResponse): void => {
    const problems = contractProblems(method, url, observed);
    if (problems.length > 0) throw new ContractError(`response breaks ${OPENAPI_FILE}:\n  ${problems.join('\n  ')}`);
  };
  if (response instanceof Response) return fromFetch(response).then(verdict);
  verdict('statusCode' in response ? fromInject(response) : response);
}

/** Every documented operation: method (upper case), path template and documented status codes. */
export function documentedOperations(): { method: string; path: string; statuses: string[]; operation: Json }[] {
  const { document } = load();
  const out: { method: string; path: string; statuses: string[]; operation: Json }[] = [];
  for (const [path, item] of Object.entries((document.paths ?? {}) as Json)) {
    for (const method of METHODS) {
      const operation = (item as Json)[method] as Json | undefined;
      if (operation)
        out.push({ method: method.toUpperCase(), path, statuses: Object.keys((operation.responses ?? {}) as Json), operation });
    }
  }
  return out;
}

/** The document itself, parsed (for tests that inspect parameters and schemas). */
export function openApiDocument(): Json {
  return load().document;
}

/**
 * An `onRoute` for buildApp (AppOptions.onRoute) that checks every response the app sends from a
 * route against the document and pushes each mismatch onto `problems` (assert it is empty at the end).
 * Swagger UI's own asset routes (schema.hide) are skipped.
 */
export function checkEveryResponse(problems: string[]): (route: RouteOptions) => void {
  const onSend: onSendHookHandler = async (request, reply, payload) => {
    // The client is gone (CLIENT_CLOSED): nothing reaches anyone, nothing to check.
    if (reply.raw.destroyed || reply.raw.socket?.destroyed !== false) return payload;
    let body: unknown = payload;
    if (Buffer.isBuffer(payload)) body = payload.length === 0 ? '' : '<binary>';
    else if (typeof payload !== 'string' && payload !== null && payload !== undefined) body = '<stream>';
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(reply.getHeaders())) headers[k.toLowerCase()] = v === undefined ? undefined : String(v);
    const media = mediaType(headers['content-type']);
    if (typeof body === 'string' && media && isJsonMedia(media) && body !== '') body = JSON.parse(body) as unknown;
    problems.push(...contractProblems(request.method, request.url, { status: reply.statusCode, headers, body }));
    return payload;
  };
  return (route) => {
    if ((route.schema as { hide?: boolean } | undefined)?.hide === true) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (methods.every((m) => m === 'HEAD')) return;
    const existing = route.onSend === undefined ? [] : Array.isArray(route.onSend) ? route.onSend : [route.onSend];
    route.onSend = [...existing, onSend];
  };
}

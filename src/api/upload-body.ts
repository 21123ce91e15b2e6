// Reading an upload's body: a raw module, a JSON manifest, or a multipart form (the module or a
// manifest with its modules, plus name, description, config and allowed hosts), checked field by
// field into an UploadInput the plugin routes store.
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import type { Config } from '../config.ts';
import { validateHostPatterns } from '../host-patterns.ts';
import { AppError, isAppError, type ErrorCode } from '../errors.ts';
import { ID_PATTERN, NAME_PATTERN } from '../store/plugin-record.ts';
import { checkConfigSize } from './config-size.ts';

export const MAX_DESCRIPTION_CHARS = 1024;
/** Room for the form's text fields and part headers on top of the file itself. */
const MULTIPART_FIELD_BYTES = 64 * 1024;
const MULTIPART_FIELDS = 8;
export const MULTIPART_OVERHEAD_BYTES = MULTIPART_FIELDS * MULTIPART_FIELD_BYTES + 64 * 1024;
const UPLOAD_FIELDS = new Set(['name', 'description', 'config', 'allowedHosts', 'manifest']);
/** File parts a manifest upload may carry (its modules, which `path` entries name). */
const MANIFEST_FILE_PARTS = 16;
/**
 * Fields holding JSON text. A client that follows the contract's `encoding` (Swagger UI) sends them as
 * parts of type application/json, which browsers send with a file name: read those parts as the field.
 */
const JSON_FIELDS = new Set(['config', 'allowedHosts', 'manifest']);

export interface ModuleUpload {
  kind: 'module';
  bytes: Uint8Array;
  name: string | null;
  description: string;
  config: Record<string, string>;
  allowedHosts: string[];
}

/** An Extism manifest (JSON, decoded) and, from a multipart upload, its file parts by field and file name. */
export interface ManifestUpload {
  kind: 'manifest';
  manifest: unknown;
  parts: Map<string, Uint8Array>;
  name: string | null;
  description: string;
}

export type UploadInput = ModuleUpload | ManifestUpload;

type NameQuery = { name?: string };

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name) && !ID_PATTERN.test(name);
}

function parseName(value: string | undefined): string | null {
  if (value === undefined) return null;
  if (!isValidName(value)) {
    throw new AppError(
      'INVALID_NAME',
      `invalid name "${value.slice(0, 80)}": use 1-63 characters of a-z, 0-9, ".", "_", "-", starting with a letter or digit, and not 64 hex digits`,
    );
  }
  return value;
}

function parseDescription(value: string | undefined): string {
  if (value === undefined) return '';
  if (value.length > MAX_DESCRIPTION_CHARS) {
    throw new AppError('INVALID_REQUEST', `description is longer than ${MAX_DESCRIPTION_CHARS} characters`);
  }
  return value;
}

/** A field's JSON; undefined for an empty field, which is a field not given (a form's cleared input). */
function jsonField(value: string | undefined, field: string, code: ErrorCode): unknown {
  if (value === undefined || value === '') return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new AppError(code, `${field} is not valid JSON: ${(err as Error).message}`);
  }
}

function parseConfig(value: string | undefined, limits: Config['pluginConfig']): Record<string, string> {
  const parsed = jsonField(value, 'config', 'INVALID_CONFIG');
  if (parsed === undefined) return {};
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new AppError('INVALID_CONFIG', 'config must be a JSON object of string values');
  }
  const config: Record<string, string> = {};
  for (const [key, v] of Object.entries(parsed)) {
    if (typeof v !== 'string') throw new AppError('INVALID_CONFIG', `config value of "${key}" must be a string`);
    config[key] = v;
  }
  checkConfigSize(config, limits, "the plugin's");
  return config;
}

// The pattern grammar is src/host-patterns.ts; the same check as for a call's list.
function parseAllowedHosts(value: string | undefined): string[] {
  const parsed = jsonField(value, 'allowedHosts', 'INVALID_ALLOWED_HOSTS');
  if (parsed === undefined) return [];
  if (!Array.isArray(parsed) || parsed.some((host) => typeof host !== 'string')) {
    throw new AppError('INVALID_ALLOWED_HOSTS', 'allowedHosts must be a JSON array of host pattern strings');
  }
  validateHostPatterns(parsed as string[]);
  return parsed as string[];
}

/**
 * Reads a multipart file stream. Busboy stops passing data at the size limit and emits 'limit':
 * refuse right then, without waiting for (or keeping) the rest of the part.
 */
function readFilePart(file: Readable & { truncated?: boolean }, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let chunks: Buffer[] = [];
    let size = 0;
    const refuse = (): void => {
      chunks = [];
      reject(tooLarge(maxBytes));
    };
    file.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) refuse();
      else chunks.push(chunk);
    });
    file.once('limit', refuse);
    file.once('error', reject);
    file.once('end', () => {
      if (file.truncated || size > maxBytes) reject(tooLarge(maxBytes));
      else resolve(Buffer.concat(chunks, size));
    });
  });
}

/** Reads a JSON field sent as a file part, refusing it past the size of a text field. */
async function readJsonPart(fieldname: string, file: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of file as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MULTIPART_FIELD_BYTES) {
      file.resume();
      throw fieldTooLong(fieldname);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

const fieldTooLong = (fieldname: string): AppError =>
  new AppError('INVALID_REQUEST', `form field "${fieldname}" is longer than ${MULTIPART_FIELD_BYTES} bytes`);

export function tooLarge(maxBytes: number): AppError {
  return new AppError(
    'PLUGIN_TOO_LARGE',
    `the plugin is larger than the limit of ${maxBytes} bytes (MAX_PLUGIN_BYTES, and at most what MODULE_CACHE_BYTES holds compiled: ~12 bytes per byte of Wasm)`,
  );
}

function parseManifestText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AppError('INVALID_MANIFEST', `invalid manifest: not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * The multipart parser's own errors (no boundary, a body cut before its closing boundary) are the
 * client's: 400, not 500. Errors that already have a code or a status keep them.
 */
function malformedForm(err: unknown): unknown {
  if (isAppError(err) || typeof (err as { statusCode?: unknown }).statusCode === 'number') return err;
  return new AppError('INVALID_REQUEST', `the multipart form is malformed: ${(err as Error).message}`, { cause: err });
}

async function readMultipart(
  request: FastifyRequest,
  maxBytes: number,
  query: NameQuery,
  configLimits: Config['pluginConfig'],
): Promise<UploadInput> {
  try {
    return await readForm(request, maxBytes, query, configLimits);
  } catch (err) {
    throw malformedForm(err);
  }
}

async function readForm(
  request: FastifyRequest,
  maxBytes: number,
  query: NameQuery,
  configLimits: Config['pluginConfig'],
): Promise<UploadInput> {
  let bytes: Buffer | null = null;
  /** File parts besides "file", kept in case the form holds a manifest naming them. */
  const others = new Map<string, Buffer>();
  let otherBytes = 0;
  const fields = new Map<string, string>();
  const setField = (fieldname: string, value: string): void => {
    if (fields.has(fieldname)) throw new AppError('INVALID_REQUEST', `form field "${fieldname}" given twice`);
    fields.set(fieldname, value);
  };
  const parts = request.parts({
    limits: {
      // The JSON parts have the text fields' cap, which may be above a small plugin limit (checked per part).
      fileSize: Math.max(maxBytes, MULTIPART_FIELD_BYTES + 1),
      files: 1 + JSON_FIELDS.size + MANIFEST_FILE_PARTS,
      fields: MULTIPART_FIELDS,
      fieldSize: MULTIPART_FIELD_BYTES,
      parts: MULTIPART_FIELDS + 1 + MANIFEST_FILE_PARTS,
    },
  });
  for await (const part of parts) {
    if (part.type === 'file') {
      if (JSON_FIELDS.has(part.fieldname) && part.mimetype === 'application/json') {
        setField(part.fieldname, await readJsonPart(part.fieldname, part.file));
        continue;
      }
      if (part.fieldname !== 'file') {
        // A manifest's module (checked once the whole form is read): all of them within MAX_PLUGIN_BYTES.
        const partBytes = await readFilePart(part.file, maxBytes - otherBytes);
        otherBytes += partBytes.length;
        if (others.has(part.fieldname)) throw new AppError('INVALID_REQUEST', `form field "${part.fieldname}" given twice`);
        others.set(part.fieldname, partBytes);
        if (part.filename && !others.has(part.filename)) others.set(part.filename, partBytes);
        continue;
      }
      if (bytes !== null) throw new AppError('INVALID_REQUEST', 'form field "file" given twice');
      bytes = await readFilePart(part.file, maxBytes);
      continue;
    }
    if (!UPLOAD_FIELDS.has(part.fieldname)) {
      throw new AppError(
        'INVALID_REQUEST',
        `unknown form field "${part.fieldname}" (known: file, ${[...UPLOAD_FIELDS].join(', ')})`,
      );
    }
    if (part.valueTruncated) throw fieldTooLong(part.fieldname);
    // @fastify/multipart already parses fields sent as application/json; keep one representation.
    setField(part.fieldname, typeof part.value === 'string' ? part.value : JSON.stringify(part.value));
  }
  // An empty field is a field not given, like config's and allowedHosts' (a form sends its cleared
  // inputs; the query's too).
  const formName = fields.get('name') || undefined;
  const queryName = query.name || undefined;
  if (formName !== undefined && queryName !== undefined)
    throw new AppError('INVALID_REQUEST', 'the name is given twice (form field "name" and query "name"): give it once');
  // An empty field is a field not given (a form's cleared input, as Swagger UI sends one).
  const manifest = fields.get('manifest') || undefined;
  if (manifest !== undefined) {
    for (const field of ['config', 'allowedHosts']) {
      if (fields.has(field)) {
        throw new AppError('INVALID_REQUEST', `form field "${field}" cannot go with a manifest: set it in the manifest`);
      }
    }
    if (bytes !== null) others.set('file', bytes);
    return {
      kind: 'manifest',
      manifest: parseManifestText(manifest),
      parts: others,
      name: parseName(formName ?? queryName),
      description: parseDescription(fields.get('description')),
    };
  }
  if (others.size > 0) {
    const first = others.keys().next().value as string;
    throw new AppError('INVALID_REQUEST', `unexpected file part "${first}": send the Wasm module in the part "file"`);
  }
  const input = {
    name: parseName(formName ?? queryName),
    description: parseDescription(fields.get('description')),
    config: parseConfig(fields.get('config'), configLimits),
    allowedHosts: parseAllowedHosts(fields.get('allowedHosts')),
  };
  if (bytes === null) throw new AppError('MISSING_FILE', 'the form has no file part named "file" holding the Wasm module');
  if (bytes.length === 0) throw new AppError('EMPTY_BODY', 'the file part "file" is empty');
  return { kind: 'module', ...input, bytes };
}

export function readUpload(
  request: FastifyRequest,
  query: NameQuery,
  maxBytes: number,
  configLimits: Config['pluginConfig'],
): Promise<UploadInput> | UploadInput {
  if (request.isMultipart()) return readMultipart(request, maxBytes, query, configLimits);
  const body = request.body;
  const name = parseName(query.name);
  if (isJson(request)) {
    if (body === undefined || body === null)
      throw new AppError('EMPTY_BODY', 'the request body is empty: send the manifest as JSON');
    return { kind: 'manifest', manifest: body, parts: new Map(), name, description: '' };
  }
  if (body === undefined || body === null || (Buffer.isBuffer(body) && body.length === 0)) {
    throw new AppError('EMPTY_BODY', 'the request body is empty: send the Wasm module as the body (application/wasm)');
  }
  if (!Buffer.isBuffer(body)) {
    throw new AppError(
      'UNSUPPORTED_MEDIA_TYPE',
      `upload the module as application/wasm, application/octet-stream or multipart/form-data, not ${request.headers['content-type'] ?? 'no content type'}`,
    );
  }
  return { kind: 'module', bytes: body, name, description: '', config: {}, allowedHosts: [] };
}

function isJson(request: FastifyRequest): boolean {
  return request.headers['content-type']?.split(';')[0]!.trim().toLowerCase() === 'application/json';
}

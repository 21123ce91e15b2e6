// JSON schemas shared by routes (responses are serialized through them). openapi.yaml mirrors these.

export const errorSchema = {
  type: 'object',
  required: ['statusCode', 'code', 'error', 'message'],
  properties: {
    statusCode: { type: 'integer' },
    code: { type: 'string' },
    error: { type: 'string' },
    message: { type: 'string' },
  },
  // Some errors carry details (e.g. unsupportedImports, logs).
  additionalProperties: true,
} as const;

export const pluginSchema = {
  type: 'object',
  required: ['id', 'name', 'description', 'size', 'createdAt', 'exports', 'imports', 'wasi', 'config', 'allowedHosts'],
  properties: {
    id: { type: 'string' },
    name: { type: ['string', 'null'] },
    description: { type: 'string' },
    size: { type: 'integer' },
    createdAt: { type: 'string' },
    exports: { type: 'array', items: { type: 'string' } },
    imports: {
      type: 'array',
      items: {
        type: 'object',
        required: ['module', 'name'],
        properties: { module: { type: 'string' }, name: { type: 'string' } },
      },
    },
    wasi: { type: 'boolean' },
    config: { type: 'object', additionalProperties: { type: 'string' } },
    allowedHosts: { type: 'array', items: { type: 'string' } },
    manifest: {
      type: 'object',
      required: ['modules', 'main', 'limits'],
      properties: {
        modules: {
          type: 'array',
          items: {
            type: 'object',
            required: ['id', 'name'],
            properties: { id: { type: 'string' }, name: { type: ['string', 'null'] } },
          },
        },
        main: { type: 'string' },
        limits: {
          type: 'object',
          properties: {
            memoryMaxPages: { type: 'integer' },
            maxHttpResponseBytes: { type: 'integer' },
            maxVarBytes: { type: 'integer' },
            timeoutMs: { type: 'integer' },
          },
        },
      },
    },
  },
} as const;

/** `:id` of every plugin route: an id (sha256 hex) or a name. */
export const pluginParamsSchema = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1 } },
} as const;

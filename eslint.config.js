import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Below api/, nothing knows about HTTP: the dependency rule of the rooms (see STYLE.md). */
const httpFree = {
  patterns: [
    { group: ['**/api/*', '**/api/**'], message: 'engine/, store/ and egress/ must not depend on api/ (HTTP lives there only).' },
    { group: ['fastify', 'fastify-*', '@fastify/*'], message: 'engine/, store/ and egress/ must not depend on Fastify.' },
  ],
};

/**
 * The bottom of the rooms: config.ts, errors.ts and the host pattern grammar are imported by every room
 * and import none of them (only each other), so a rule, a code or a limit never depends on how it is used.
 */
const BOTTOM = ['src/config.ts', 'src/errors.ts', 'src/host-patterns.ts'];
const bottomOnly = {
  patterns: [
    {
      group: ['./*', '!./config.ts', '!./errors.ts', '!./host-patterns.ts', './*/**', '../**'],
      message: 'config.ts, errors.ts and host-patterns.ts import nothing above them (only each other).',
    },
    { group: ['fastify', 'fastify-*', '@fastify/*'], message: 'config.ts, errors.ts and host-patterns.ts know nothing of HTTP.' },
  ],
};

export default tseslint.config(
  {
    ignores: [
      'node_modules/',
      'dist/',
      'playground/dist/',
      'test-artifacts/',
      'src/client/schema.ts',
      'data/',
      'plugins/**/build/',
      'plugins/dist/',
      'plugins/**/assembly/',
      'coverage/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        TextEncoder: 'readonly',
        TextDecoder: 'readonly',
        WebAssembly: 'readonly',
        fetch: 'readonly',
        AbortController: 'readonly',
        AbortSignal: 'readonly',
        performance: 'readonly',
        queueMicrotask: 'readonly',
        structuredClone: 'readonly',
        SharedArrayBuffer: 'readonly',
        Atomics: 'readonly',
        Response: 'readonly',
        Request: 'readonly',
        Headers: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    files: ['src/engine/**', 'src/store/**', 'src/egress/**'],
    rules: { 'no-restricted-imports': ['error', httpFree] },
  },
  {
    files: BOTTOM,
    rules: { 'no-restricted-imports': ['error', bottomOnly] },
  },
);

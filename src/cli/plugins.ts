// `wasmhost push | ls | info | rm`: upload, list, describe and delete stored plugins.
import { readFile } from 'node:fs/promises';
import { listAllPlugins, unwrap, uploadPlugin, type Plugin, type WasmhostClient } from '../client/client.ts';
import { callConfig, type Io } from './call.ts';
import { CliError } from './errors.ts';
import { escapeControls } from './terminal.ts';

export interface PushOptions {
  name?: string;
  description?: string;
  config: string[];
  setConfig?: string;
  allowHost: string[];
  json?: boolean;
}

export async function runPush(client: WasmhostClient, file: string, options: PushOptions, io: Io): Promise<void> {
  const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
    throw new CliError(err.code === 'ENOENT' ? `no such file: ${file}` : `cannot read ${file}: ${err.message}`);
  });
  const config = callConfig(options);
  const { plugin, created } = await uploadPlugin(client, new Uint8Array(bytes), {
    name: options.name,
    description: options.description,
    config: Object.keys(config).length > 0 ? config : undefined,
    allowedHosts: options.allowHost.length > 0 ? options.allowHost : undefined,
  });
  if (options.json) io.stdout.write(`${JSON.stringify(plugin)}\n`);
  else {
    const name = plugin.name ? ` as ${escapeControls(plugin.name)}` : '';
    io.stdout.write(`${created ? 'stored' : 'already stored'} ${plugin.id}${name}\n`);
  }
}

export async function runList(client: WasmhostClient, options: { name?: string; json?: boolean }, io: Io): Promise<void> {
  const plugins = await listAllPlugins(client, { name: options.name });
  if (options.json) {
    io.stdout.write(`${JSON.stringify(plugins)}\n`);
    return;
  }
  const rows = plugins.map((p) => [p.id.slice(0, 12), p.name ?? '-', String(p.size), p.createdAt, p.exports.join(',')]);
  io.stdout.write(table([['ID', 'NAME', 'SIZE', 'CREATED', 'EXPORTS'], ...rows]));
}

export async function runInfo(client: WasmhostClient, idOrName: string, options: { json?: boolean }, io: Io): Promise<void> {
  const plugin = unwrap(await client.GET('/plugins/{id}', { params: { path: { id: idOrName } } }));
  io.stdout.write(options.json ? `${JSON.stringify(plugin)}\n` : describe(plugin));
}

export async function runRemove(client: WasmhostClient, idsOrNames: string[], io: Io): Promise<void> {
  for (const id of idsOrNames) {
    unwrap(await client.DELETE('/plugins/{id}', { params: { path: { id } } }));
    io.stdout.write(`deleted ${id}\n`);
  }
}

function describe(plugin: Plugin): string {
  const config = Object.entries(plugin.config).map(([k, v]) => `${k}=${v}`);
  const lines: [string, string][] = [
    ['id', plugin.id],
    ['name', plugin.name ?? '-'],
    ['description', plugin.description || '-'],
    ['size', `${plugin.size} bytes`],
    ['created', plugin.createdAt],
    ['exports', plugin.exports.join(', ')],
    ['wasi', plugin.wasi ? 'yes' : 'no'],
    ['config', config.length > 0 ? config.join(', ') : '-'],
    ['allowed hosts', plugin.allowedHosts.length > 0 ? plugin.allowedHosts.join(', ') : '-'],
  ];
  return lines.map(([key, value]) => `${`${key}:`.padEnd(15)}${escapeControls(value)}\n`).join('');
}

function table(cells: string[][]): string {
  const rows = cells.map((row) => row.map((cell) => escapeControls(cell)));
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
  return rows
    .map((row) => `${row.map((cell, col) => (col === row.length - 1 ? cell : cell.padEnd(widths[col]!))).join('  ')}\n`)
    .join('');
}

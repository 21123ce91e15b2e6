// The stored plugins: a searchable list, and the picked plugin's details.
import type { Plugin } from '../../src/client/client.ts';
import { formatBytes } from './format.ts';

export function matchesSearch(plugin: Plugin, search: string): boolean {
  const needle = search.trim().toLowerCase();
  if (needle === '') return true;
  return [plugin.id, plugin.name ?? '', plugin.description, ...plugin.exports].some((text) =>
    text.toLowerCase().includes(needle),
  );
}

export function PluginList(props: {
  plugins: Plugin[];
  search: string;
  onSearch: (search: string) => void;
  selected: string | null;
  onSelect: (plugin: Plugin) => void;
  onRefresh: () => void;
  /** Fetches the next page; null when the list is complete. */
  onLoadMore: (() => void) | null;
}) {
  const shown = props.plugins.filter((plugin) => matchesSearch(plugin, props.search));
  return (
    <section class="card plugins">
      <div class="heading">
        <h2>Plugins</h2>
        <button type="button" class="link" onClick={props.onRefresh}>
          refresh
        </button>
      </div>
      <input
        type="search"
        aria-label="search plugins"
        placeholder="Search by name, id, description or export"
        value={props.search}
        onInput={(e) => props.onSearch(e.currentTarget.value)}
      />
      <ul>
        {shown.map((plugin) => (
          <li key={plugin.id}>
            <button
              type="button"
              class={`plugin${props.selected === plugin.id ? ' selected' : ''}`}
              onClick={() => props.onSelect(plugin)}
            >
              <span class="name">{plugin.name ?? <em>unnamed</em>}</span>
              <code class="id">{plugin.id.slice(0, 12)}</code>
              <span class="meta">
                {plugin.exports.length} export{plugin.exports.length === 1 ? '' : 's'} · {formatBytes(plugin.size)}
                {plugin.wasi ? ' · WASI' : ''}
              </span>
            </button>
          </li>
        ))}
        {shown.length === 0 && <li class="empty">{props.plugins.length === 0 ? 'No plugins yet: upload one.' : 'No match.'}</li>}
      </ul>
      {props.onLoadMore && (
        <button type="button" class="link" onClick={props.onLoadMore}>
          load more (search covers the loaded plugins)
        </button>
      )}
    </section>
  );
}

export function PluginDetails({ plugin, onDelete }: { plugin: Plugin; onDelete: () => void }) {
  return (
    <section class="card details">
      <div class="heading">
        <h2>{plugin.name ?? 'unnamed plugin'}</h2>
        <button type="button" class="danger" onClick={onDelete}>
          Delete
        </button>
      </div>
      {plugin.description && <p>{plugin.description}</p>}
      <dl>
        <dt>id</dt>
        <dd>
          <code>{plugin.id}</code>
        </dd>
        <dt>size</dt>
        <dd>
          {formatBytes(plugin.size)} · uploaded {new Date(plugin.createdAt).toLocaleString()}
          {plugin.wasi ? ' · imports WASI' : ''}
        </dd>
        <dt>exports</dt>
        <dd class="exports">
          {plugin.exports.map((name) => (
            <code key={name}>{name}</code>
          ))}
        </dd>
        <dt>config</dt>
        <dd>
          {Object.keys(plugin.config).length === 0
            ? 'none'
            : Object.entries(plugin.config).map(([key, value]) => (
                <code key={key}>
                  {key}={value}
                </code>
              ))}
        </dd>
        <dt>allowed hosts</dt>
        <dd>{plugin.allowedHosts.length === 0 ? 'none' : plugin.allowedHosts.map((host) => <code key={host}>{host}</code>)}</dd>
      </dl>
    </section>
  );
}

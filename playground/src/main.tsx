// The playground: upload, list and search plugins, pick one, call it, see what it did.
import { render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { listPluginPage, unwrap, WasmhostError, type Plugin } from '../../src/client/client.ts';
import { client, storedToken, storeToken } from './api.ts';
import { CallPanel } from './call.tsx';
import { ErrorBox } from './errors.tsx';
import { PluginDetails, PluginList } from './plugins.tsx';
import { Upload } from './upload.tsx';
import './style.css';

/** Plugins per page of the list (the service's GET /plugins pages). */
const PAGE_SIZE = 50;

function App() {
  const [plugins, setPlugins] = useState<Plugin[]>([]);
  const [search, setSearch] = useState('');
  const [selected, setSelected] = useState<Plugin | null>(null);
  const [error, setError] = useState<unknown>(null);
  // The token field shows when the service asked for a token (401), or one is already kept.
  const [needsToken, setNeedsToken] = useState(storedToken() !== '');
  const [token, setToken] = useState(storedToken());

  const failed = (err: unknown) => {
    if (err instanceof WasmhostError && err.statusCode === 401) setNeedsToken(true);
    setError(err);
  };

  const [nextCursor, setNextCursor] = useState<string | null>(null);

  const refresh = useCallback(async () => {
    try {
      const page = await listPluginPage(client, { limit: PAGE_SIZE });
      setPlugins(page.plugins);
      setNextCursor(page.nextCursor);
      setError(null);
    } catch (err) {
      failed(err);
    }
  }, []);

  const loadMore = async () => {
    try {
      const page = await listPluginPage(client, { limit: PAGE_SIZE, cursor: nextCursor });
      setPlugins((shown) => [...shown, ...page.plugins]);
      setNextCursor(page.nextCursor);
    } catch (err) {
      failed(err);
    }
  };

  useEffect(() => {
    void refresh();
  }, [refresh]);

  const select = async (plugin: Plugin) => {
    setSelected(plugin);
    try {
      setSelected(unwrap(await client.GET('/plugins/{id}', { params: { path: { id: plugin.id } } })));
    } catch (err) {
      failed(err);
    }
  };

  const remove = async (plugin: Plugin) => {
    if (!confirm(`Delete ${plugin.name ?? plugin.id}?`)) return;
    try {
      unwrap(await client.DELETE('/plugins/{id}', { params: { path: { id: plugin.id } } }));
      setSelected(null);
      await refresh();
    } catch (err) {
      failed(err);
    }
  };

  return (
    <>
      <header>
        <h1>
          wasmhost <span>playground</span>
        </h1>
        <nav>
          <a href="/docs">API docs</a>
          <a href="/openapi.yaml">openapi.yaml</a>
        </nav>
        {needsToken && (
          <form
            class="token"
            onSubmit={(e) => {
              e.preventDefault();
              storeToken(token.trim());
              void refresh();
            }}
          >
            <label>
              Token
              <input
                type="password"
                autocomplete="off"
                value={token}
                placeholder="bearer token"
                onInput={(e) => setToken(e.currentTarget.value)}
              />
            </label>
            <button type="submit">Use</button>
          </form>
        )}
      </header>
      <ErrorBox error={error} />
      <main>
        <div class="column">
          <Upload
            onUploaded={(plugin) => {
              void refresh();
              void select(plugin);
            }}
          />
          <PluginList
            plugins={plugins}
            search={search}
            onSearch={setSearch}
            selected={selected?.id ?? null}
            onSelect={(plugin) => void select(plugin)}
            onRefresh={() => void refresh()}
            onLoadMore={nextCursor === null ? null : () => void loadMore()}
          />
        </div>
        <div class="column wide">
          {selected ? (
            <>
              <PluginDetails plugin={selected} onDelete={() => void remove(selected)} />
              <CallPanel key={selected.id} plugin={selected} />
            </>
          ) : (
            <section class="card intro">
              <h2>Pick a plugin</h2>
              <p>Upload a .wasm on the left, or pick a stored plugin, to see its exports and call them.</p>
            </section>
          )}
        </div>
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);

// Upload a .wasm: drop it or pick it, with a name, description, default config and allowed hosts.
import { useState } from 'preact/hooks';
import { uploadPlugin, type Plugin } from '../../src/client/client.ts';
import { client } from './api.ts';
import { ErrorBox } from './errors.tsx';
import { formatBytes } from './format.ts';
import { KeyValueRows, parseHosts, rowsToRecord, type Row } from './rows.tsx';

export function Upload({ onUploaded }: { onUploaded: (plugin: Plugin, created: boolean) => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [config, setConfig] = useState<Row[]>([]);
  const [hosts, setHosts] = useState('');
  const [dragging, setDragging] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState('');

  const pick = (picked: File | undefined) => {
    if (!picked) return;
    setFile(picked);
    setError(null);
    setNote('');
    if (name === '') setName(suggestName(picked.name));
  };

  const submit = async (event: Event) => {
    event.preventDefault();
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const configRecord = rowsToRecord(config);
      const allowedHosts = parseHosts(hosts);
      const { plugin, created } = await uploadPlugin(client, bytes, {
        name: name.trim() || undefined,
        description: description.trim() || undefined,
        config: Object.keys(configRecord).length > 0 ? configRecord : undefined,
        allowedHosts: allowedHosts.length > 0 ? allowedHosts : undefined,
      });
      setNote(
        created
          ? `stored as ${plugin.name ?? plugin.id.slice(0, 12)}`
          : 'already stored (same bytes): nothing changed but the name',
      );
      onUploaded(plugin, created);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card upload" onSubmit={submit}>
      <h2>Upload a plugin</h2>
      <label
        class={`drop${dragging ? ' dragging' : ''}`}
        onDragOver={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => {
          e.preventDefault();
          setDragging(false);
          pick(e.dataTransfer?.files[0]);
        }}
      >
        <input
          type="file"
          accept=".wasm,application/wasm"
          aria-label="wasm file"
          onChange={(e) => pick(e.currentTarget.files?.[0])}
        />
        <span>{file ? `${file.name} · ${formatBytes(file.size)}` : 'Drop a .wasm here, or click to pick one'}</span>
      </label>
      <label>
        Name
        <input value={name} placeholder="optional, e.g. hello" onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label>
        Description
        <input value={description} placeholder="optional" onInput={(e) => setDescription(e.currentTarget.value)} />
      </label>
      <KeyValueRows label="Config" rows={config} onChange={setConfig} />
      <label>
        Allowed hosts
        <input
          value={hosts}
          placeholder="e.g. api.example.com, *.cdn.example.com"
          onInput={(e) => setHosts(e.currentTarget.value)}
        />
      </label>
      <button type="submit" disabled={!file || busy}>
        {busy ? 'Uploading…' : 'Upload'}
      </button>
      {note && <p class="note">{note}</p>}
      <ErrorBox error={error} />
    </form>
  );
}

/** A valid plugin name from a file name (lower case, a-z0-9._-), or '' when nothing is left. */
function suggestName(fileName: string): string {
  return fileName
    .replace(/\.wasm$/i, '')
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 63);
}

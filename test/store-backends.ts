// The store backends a test can run against: each gives the service environment that selects it and
// cleans up what it made.
export interface StoreBackend {
  name: string;
  /** Environment for the service (added to a test server's or a child process's env). */
  env(): Promise<Record<string, string>>;
  cleanup(): Promise<void>;
}

export const fsBackend = (): StoreBackend => ({
  name: 'filesystem',
  env: async () => ({}),
  cleanup: async () => {},
});

export const STORE_BACKENDS: StoreBackend[] = [fsBackend()];

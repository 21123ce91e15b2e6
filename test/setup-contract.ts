// Runs with every test file (vitest setupFiles): a response that breaks openapi.yaml, from any server
// the file started with startServer, fails the file — so the whole suite checks the contract.
import { afterAll, expect } from 'vitest';
import { responsesBreakingContract } from './contract-problems.ts';

afterAll(() => {
  expect([...new Set(responsesBreakingContract)], 'responses that break openapi.yaml').toEqual([]);
});

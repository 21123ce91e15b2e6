/**
 * Mismatches with openapi.yaml in any response of any server startServer made in the current test
 * file (a module of its own so test/setup-contract.ts stays light for files that start no server).
 */
export const responsesBreakingContract: string[] = [];

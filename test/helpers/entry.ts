import { fileURLToPath } from "node:url";

/**
 * `node` arguments that run the CLI from the sources, as `edge-ingest …` runs the build: tests run
 * what is in the tree, never a stale dist/ (test/build.test.ts checks the build itself).
 */
export const CLI = ["--import", "tsx", fileURLToPath(new URL("../../src/main.ts", import.meta.url))];

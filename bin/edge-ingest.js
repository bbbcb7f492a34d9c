#!/usr/bin/env node
// The compiled service (`npm run build` writes dist/; `npm start` builds first).
import { existsSync } from "node:fs";

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(main)) {
  console.error("edge-ingest is not built: run `npm run build` (or `npm start`, which builds first)");
  process.exit(1);
}
await import(main.href);

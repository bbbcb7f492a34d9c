import { runCli } from "./cli/commands.ts";

// Process entry for `npm start` and the `edge-ingest` bin: with no command, serve.
const argv = process.argv.slice(2);
process.exitCode = await runCli(argv.length > 0 ? argv : ["serve"]);

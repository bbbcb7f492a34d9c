// `npm run build [-- OUT_DIR]`: compiles src/ to JavaScript (default dist/) with the console's
// static files beside it. OUT_DIR must sit at the project root, as dist/ does: the service finds
// prisma/migrations and node_modules relative to it.
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const out = path.resolve(root, process.argv[2] ?? "dist");
if (path.dirname(out) !== root) throw new Error(`${out}: the output directory must be directly in ${root}`);

rmSync(out, { recursive: true, force: true });
const tsc = path.join(root, "node_modules/typescript/bin/tsc");
execFileSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.build.json"), "--outDir", out], {
  stdio: "inherit",
});
cpSync(path.join(root, "src/console/public"), path.join(out, "console/public"), { recursive: true });

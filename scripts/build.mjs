// `npm run build [-- OUT_DIR]`: compiles src/ to JavaScript (default dist/) with the console's
// static files beside it. OUT_DIR must sit at the project root, as dist/ does: the service finds
// prisma/migrations and node_modules relative to it.
//
// A service may be running from OUT_DIR (a second broker, a benchmark): its lazily loaded modules
// must never be missing. So the build is skipped while OUT_DIR was built from the same sources, and
// otherwise made in a directory of its own and swapped in by two renames.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const out = path.resolve(root, process.argv[2] ?? "dist");
if (path.dirname(out) !== root) throw new Error(`${out}: the output directory must be directly in ${root}`);
const STAMP = ".build-stamp";

/** A hash of everything the build reads: the sources, the TypeScript settings and this script. */
function sourcesHash() {
  const hash = createHash("sha256");
  const files = readdirSync(path.join(root, "src"), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(root, path.join(entry.parentPath, entry.name)))
    .concat(["tsconfig.json", "tsconfig.build.json", "scripts/build.mjs", "package-lock.json"])
    .sort();
  for (const file of files)
    hash
      .update(`${file}\0`)
      .update(readFileSync(path.join(root, file)))
      .update("\0");
  return hash.digest("hex");
}

const stamp = sourcesHash();
let built;
try {
  built = readFileSync(path.join(out, STAMP), "utf8");
} catch {
  built = undefined;
}
if (built === stamp) {
  console.log(`${path.basename(out)}/ is current`);
  process.exit(0);
}

const partial = `${out}.partial-${process.pid}`;
const old = `${out}.old-${process.pid}`;
rmSync(partial, { recursive: true, force: true });
const tsc = path.join(root, "node_modules/typescript/bin/tsc");
execFileSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.build.json"), "--outDir", partial], {
  stdio: "inherit",
});
cpSync(path.join(root, "src/console/public"), path.join(partial, "console/public"), { recursive: true });
writeFileSync(path.join(partial, STAMP), stamp);

try {
  renameSync(out, old);
} catch (error) {
  if (error.code !== "ENOENT") throw error;
}
try {
  renameSync(partial, out);
} catch (error) {
  // Another build of the same sources swapped its own in first.
  if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
  rmSync(partial, { recursive: true, force: true });
}
rmSync(old, { recursive: true, force: true });

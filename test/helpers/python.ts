import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { access, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Kept between runs (node_modules is not in git); CI makes it anew on its fresh checkout. */
const CACHE = path.join(ROOT, "node_modules/.cache");

/**
 * A Python with these packages, in a virtual environment the tests make (pip, from the package
 * index pip is configured with). Without python3 it is undefined, with the reason printed; under
 * CI=true that is a failure, as the Python clients' tests must run there.
 *
 * Test files run in parallel and may ask at once: each builds in a directory of its own and moves
 * it into place whole, so none ever sees one half made (a Python whose pip is not there yet).
 */
export async function pythonWith(packages: string[]): Promise<string | undefined> {
  const name = createHash("sha256").update(packages.join("\n")).digest("hex").slice(0, 12);
  const venv = path.join(CACHE, `edge-ingest-python-${name}`);
  const python = path.join(venv, "bin/python");
  const ready = path.join(venv, "ready");
  try {
    if (
      await access(ready).then(
        () => false,
        () => true,
      )
    ) {
      const building = `${venv}.${process.pid}-${randomBytes(4).toString("hex")}`;
      await run("python3", ["-m", "venv", building]);
      await run(path.join(building, "bin/python"), [
        ...["-m", "pip", "install", "--quiet", "--disable-pip-version-check"],
        ...["--retries", "0", "--timeout", "10"],
        ...packages,
      ]);
      await writeFile(path.join(building, "ready"), "");
      // Another file may have put its own in place first: then that one is used.
      await rename(building, venv).catch(() => rm(building, { recursive: true, force: true }));
      await access(ready);
    }
    return python;
  } catch (error) {
    const reason = `no Python with ${packages.join(", ")}: ${(error as Error).message}`;
    if (process.env.CI === "true") throw new Error(`CI=true but ${reason}`);
    console.warn(`skipping the Python client tests: ${reason}`);
    return undefined;
  }
}

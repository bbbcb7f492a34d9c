import { execFile } from "node:child_process";
import { access } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Kept between runs (node_modules is not in git); CI makes it anew on its fresh checkout. */
const VENV = path.join(ROOT, "node_modules/.cache/edge-ingest-python");

/**
 * A Python with these packages, in a virtual environment the tests make (pip, from the package
 * index pip is configured with). Without python3 it is undefined, with the reason printed; under
 * CI=true that is a failure, as the Python clients' tests must run there.
 */
export async function pythonWith(packages: string[]): Promise<string | undefined> {
  const python = path.join(VENV, "bin/python");
  try {
    await access(python).catch(() => run("python3", ["-m", "venv", VENV]));
    await run(path.join(VENV, "bin/pip"), [
      "install",
      "--quiet",
      "--disable-pip-version-check",
      ...["--retries", "0", "--timeout", "10"],
      ...packages,
    ]);
    return python;
  } catch (error) {
    const reason = `no Python with ${packages.join(", ")}: ${(error as Error).message}`;
    if (process.env.CI === "true") throw new Error(`CI=true but ${reason}`);
    console.warn(`skipping the Python client tests: ${reason}`);
    return undefined;
  }
}

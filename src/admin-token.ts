import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { generateSecret } from "./credentials/secrets.ts";

export const ADMIN_TOKEN_FILE = "admin-token";

/**
 * Embedded mode keeps a generated admin token in DATA_DIR/admin-token (mode 0600), where the CLI
 * finds it; ADMIN_TOKEN, when set, wins and is never written anywhere.
 */
export async function embeddedAdminToken(dataDir: string, configured: string | undefined): Promise<string> {
  if (configured) return configured;
  const file = path.join(dataDir, ADMIN_TOKEN_FILE);
  try {
    return (await readFile(file, "utf8")).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const token = generateSecret();
  await writeFile(file, `${token}\n`, { mode: 0o600, flag: "wx" });
  return token;
}

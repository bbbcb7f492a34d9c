import { readFile } from "node:fs/promises";
import path from "node:path";
import { ADMIN_TOKEN_FILE } from "../admin-token.ts";

export class CliError extends Error {
  override name = "CliError";
}

/** The admin token: --token, else ADMIN_TOKEN, else the embedded server's DATA_DIR/admin-token. */
export async function resolveAdminToken(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<string> {
  if (flag) return flag;
  if (env.ADMIN_TOKEN) return env.ADMIN_TOKEN;
  const file = path.resolve(env.DATA_DIR || "./data", ADMIN_TOKEN_FILE);
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    throw new CliError(`no admin token: pass --token, set ADMIN_TOKEN, or run where ${file} exists`);
  }
}

/** Calls the running server's admin API and returns its JSON answer (or throws its error). */
export async function callAdminApi(
  baseUrl: string,
  token: string,
  method: "GET" | "POST" | "PUT" | "DELETE",
  route: string,
  body?: unknown,
): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(new URL(route, baseUrl), {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new CliError(
      `cannot reach ${baseUrl}: ${(error as Error).cause ?? (error as Error).message}; is the server running?`,
    );
  }
  const text = await response.text();
  const json = text ? (JSON.parse(text) as unknown) : { ok: true };
  if (!response.ok) {
    const message = (json as { error?: { code: string; message: string } }).error;
    throw new CliError(`${response.status} ${message?.code ?? ""}: ${message?.message ?? text}`);
  }
  return json;
}

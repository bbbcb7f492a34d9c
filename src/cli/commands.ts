import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config.ts";
import { LIMITS } from "../limits/tenant-limits.ts";
import { createLogger, resolveLogFormat } from "../logger.ts";
import { migratePglite, migratePostgres } from "../store/database.ts";
import { CliError, callAdminApi, resolveAdminToken } from "./admin-client.ts";
import { serve } from "./serve.ts";

export const USAGE = `usage: edge-ingest <command> [options]

  serve                                        run the service (what npm start runs)
  migrate                                      apply pending database migrations
  tenant create --name NAME                    create a tenant
  agent create --tenant ID --agent AGENT_ID [--certificate FILE.pem]
                                               register an agent; prints its MQTT username/password once,
                                               or pins its certificate (its fingerprint is the credential)
  token create --tenant ID --role ingest|viewer  create a tenant token; printed once
  credential revoke USERNAME                   revoke an agent credential or a token
  jobs failed                                  submissions that used their last attempt: count, reasons, oldest
  jobs retry --all | ID...                     put failed submissions back in the queue (stored once each)
  tenant ca add --tenant ID --pem FILE.pem [--register-agents]
                                               trust a CA for the tenant's device certificates (CN = agent id);
                                               --register-agents registers an agent at its first connection
  tenant ca list --tenant ID                   the CAs a tenant trusts
  tenant ca remove --tenant ID --fingerprint F stop trusting one; its devices are disconnected
  tenant limits show --tenant ID               a tenant's limits: what holds, its overrides, the defaults
  tenant limits set --tenant ID [--LIMIT N|default ...]
                                               override limits for one tenant (default: back to the default)
                                               LIMIT: ${LIMITS.map((l) => l.flag).join(", ")}

Admin commands call a running server: --url (default http://127.0.0.1:$HTTP_PORT) and
--token (default $ADMIN_TOKEN, else $DATA_DIR/admin-token written by the embedded server).`;

const OPTIONS = {
  name: { type: "string" },
  tenant: { type: "string" },
  agent: { type: "string" },
  role: { type: "string" },
  url: { type: "string" },
  token: { type: "string" },
  all: { type: "boolean" },
  certificate: { type: "string" },
  pem: { type: "string" },
  fingerprint: { type: "string" },
  "register-agents": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  ...Object.fromEntries(LIMITS.map(({ flag }) => [flag, { type: "string" }])),
} as const;

/** `--LIMIT N|default` flags as the admin API's body: a positive whole number, or null for the default. */
function limitChanges(values: Record<string, unknown>): Record<string, number | null> {
  const changes: Record<string, number | null> = {};
  for (const { flag, api } of LIMITS) {
    const raw = values[flag];
    if (typeof raw !== "string") continue;
    if (raw === "default") changes[api] = null;
    else if (/^[1-9]\d*$/.test(raw)) changes[api] = Number(raw);
    else throw new CliError(`--${flag} must be a positive whole number or "default" (got "${raw}")`);
  }
  if (Object.keys(changes).length === 0) throw new CliError(`tenant limits set needs at least one --LIMIT\n\n${USAGE}`);
  return changes;
}

/** A PEM file's text; a file that cannot be read is the CLI's error, not the server's. */
async function readPem(file: string): Promise<string> {
  return readFile(file, "utf8").catch((error: Error) => {
    throw new CliError(`cannot read ${file}: ${error.message}`);
  });
}

function required(value: string | undefined, flag: string): string {
  if (!value) throw new CliError(`missing --${flag}\n\n${USAGE}`);
  return value;
}

/** Runs one CLI command; returns the process exit code. Results are printed as JSON. */
export async function runCli(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
    const [command, sub, arg] = positionals;
    const tenantRoute = () => `/api/v1/admin/tenants/${encodeURIComponent(required(values.tenant, "tenant"))}`;
    if (values.help || command === undefined) {
      console.log(USAGE);
      return values.help ? 0 : 2;
    }
    if (command === "serve") return await serve(loadConfig(env), env);
    if (command === "migrate") {
      const config = loadConfig(env);
      const logger = createLogger(config.LOG_LEVEL, resolveLogFormat(config.LOG_FORMAT));
      const applied = await (config.DATABASE_URL
        ? migratePostgres(config.DATABASE_URL, logger)
        : migratePglite(config.DATA_DIR, logger)
      ).catch((error: Error) => {
        throw new CliError(`migrate failed: ${error.message}`);
      });
      console.log(JSON.stringify({ applied }));
      return 0;
    }

    const baseUrl = values.url ?? `http://127.0.0.1:${env.HTTP_PORT || 3000}`;
    const admin = async (method: "GET" | "POST" | "PUT" | "DELETE", route: string, body?: unknown) =>
      callAdminApi(baseUrl, await resolveAdminToken(values.token, env), method, route, body);
    let result: unknown;
    switch (`${command} ${sub ?? ""}`) {
      case "tenant create":
        result = await admin("POST", "/api/v1/admin/tenants", { name: required(values.name, "name") });
        break;
      case "agent create": {
        const agent = { agent_id: required(values.agent, "agent") };
        const certificate = values.certificate === undefined ? undefined : await readPem(values.certificate);
        result = await admin("POST", `${tenantRoute()}/agents`, certificate ? { ...agent, certificate } : agent);
        break;
      }
      case "tenant ca":
        if (arg === "add") {
          const pem = await readPem(required(values.pem, "pem"));
          result = await admin("POST", `${tenantRoute()}/cas`, {
            pem,
            register_agents: values["register-agents"] === true,
          });
        } else if (arg === "list") result = await admin("GET", `${tenantRoute()}/cas`);
        else if (arg === "remove") {
          const fingerprint = required(values.fingerprint, "fingerprint");
          await admin("DELETE", `${tenantRoute()}/cas/${encodeURIComponent(fingerprint)}`);
          result = { removed: fingerprint };
        } else throw new CliError(`usage: tenant ca add|list|remove --tenant ID ...\n\n${USAGE}`);
        break;
      case "token create":
        result = await admin("POST", `${tenantRoute()}/tokens`, { role: required(values.role, "role") });
        break;
      case "tenant limits":
        if (arg === "show") result = await admin("GET", `${tenantRoute()}/limits`);
        else if (arg === "set") result = await admin("PUT", `${tenantRoute()}/limits`, limitChanges(values));
        else throw new CliError(`usage: tenant limits show|set --tenant ID ...\n\n${USAGE}`);
        break;
      case "jobs failed":
        result = await admin("GET", "/api/v1/admin/jobs/failed");
        break;
      case "jobs retry": {
        const ids = positionals.slice(2);
        if (Boolean(values.all) === ids.length > 0) throw new CliError(`jobs retry takes --all or job ids\n\n${USAGE}`);
        result = await admin("POST", "/api/v1/admin/jobs/failed/retry", values.all ? { all: true } : { ids });
        break;
      }
      case "credential revoke":
        await admin("DELETE", `/api/v1/admin/credentials/${encodeURIComponent(required(arg, "USERNAME"))}`);
        result = { revoked: arg };
        break;
      default:
        throw new CliError(`unknown command: ${positionals.join(" ")}\n\n${USAGE}`);
    }
    console.log(JSON.stringify(result, null, 2));
    return 0;
  } catch (error) {
    if (error instanceof ConfigError || error instanceof CliError) {
      console.error(`edge-ingest: ${error.message}`);
      return error instanceof ConfigError ? 78 : 1;
    }
    if ((error as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`edge-ingest: ${(error as Error).message}\n\n${USAGE}`);
      return 2;
    }
    throw error;
  }
}

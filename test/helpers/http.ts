/** Small HTTP helpers over fetch, so tests read as requests and answers. */
export interface Answer<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export async function request<T = any>(
  url: string,
  options: { method?: string; auth?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.auth) headers.authorization = options.auth;
  let body: string | undefined;
  if (options.body !== undefined || options.rawBody !== undefined) {
    headers["content-type"] ??= "application/json";
    body = options.rawBody ?? JSON.stringify(options.body);
  }
  const response = await fetch(url, { method: options.method ?? (body ? "POST" : "GET"), headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {}
  return { status: response.status, body: parsed as T, headers: response.headers };
}

export const bearer = (token: string) => `Bearer ${token}`;
export const basic = (username: string, password: string) =>
  `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;

export interface TenantFixture {
  tenantId: string;
  agent: { agentId: string; username: string; password: string; auth: string };
  ingestToken: string;
  viewerToken: string;
}

/** A tenant with one agent, an ingest token and a viewer token, made through the admin API. */
export async function createTenant(
  baseUrl: string,
  adminToken: string,
  agentId = "agent-1",
  name = "test tenant",
): Promise<TenantFixture> {
  const admin = bearer(adminToken);
  const tenant = await request(`${baseUrl}/api/v1/admin/tenants`, { auth: admin, body: { name } });
  if (tenant.status !== 201) throw new Error(`tenant create: ${tenant.status} ${JSON.stringify(tenant.body)}`);
  const tenantId = tenant.body.id as string;
  const agent = await request(`${baseUrl}/api/v1/admin/tenants/${tenantId}/agents`, {
    auth: admin,
    body: { agent_id: agentId },
  });
  const token = async (role: string) =>
    (await request(`${baseUrl}/api/v1/admin/tenants/${tenantId}/tokens`, { auth: admin, body: { role } })).body
      .token as string;
  return {
    tenantId,
    agent: {
      agentId,
      username: agent.body.username,
      password: agent.body.password,
      auth: basic(agent.body.username, agent.body.password),
    },
    ingestToken: await token("ingest"),
    viewerToken: await token("viewer"),
  };
}

/** Polls until `check` returns a value that is not undefined, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A tenant's stored readings of a metric, newest first, once there are `count` (a distributed worker stores asynchronously). */
export function storedRows(baseUrl: string, viewerToken: string, name: string, count: number) {
  return eventually(async () => {
    const answer = await request(`${baseUrl}/api/v1/metrics?name=${name}&limit=100`, { auth: bearer(viewerToken) });
    return answer.body.items.length === count ? answer.body.items : undefined;
  });
}

/** The sum of a Prometheus metric's samples whose labels include `labels`, read from `/metrics`. */
export async function metricValue(baseUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = (await request<string>(`${baseUrl}/metrics`)).body;
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
    const matches = Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`));
    if (matches) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

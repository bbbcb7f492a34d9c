import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, request } from "../helpers/http.ts";

/** Every method and path the server answers, read from fastify's own route tree. */
function registeredRoutes(app: TestApp["app"]): { method: string; path: string }[] {
  const routes: { method: string; path: string }[] = [];
  const parents: string[] = [];
  for (const line of app.http.printRoutes({ commonPrefix: false }).split("\n")) {
    const match = /^([│ ]*)[├└]── (\S+) \(([^)]+)\)/.exec(line);
    if (!match) continue;
    // Four characters of indentation per level; a child's segment continues its parent's path.
    const depth = (match[1] as string).length / 4;
    const path = `${parents[depth - 1] ?? ""}${match[2]}`;
    parents[depth] = path;
    for (const method of (match[3] as string).split(", ")) if (method !== "HEAD") routes.push({ method, path });
  }
  return routes;
}

describe("the OpenAPI document", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp("embedded");
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it("lists every route of the API with a summary and its replies", async () => {
    const document = (await request(`${t.url}/api/openapi.json`)).body;
    expect(document.openapi).toBe("3.1.0");
    const routes = registeredRoutes(t.app).filter(
      // The console's files and the document itself are not API routes.
      ({ path }) =>
        path.startsWith("/api/v1/") ||
        ["/healthz", "/readyz", "/metrics", "/api/v2/write", "/write", "/v1/metrics"].includes(path),
    );
    expect(routes.length).toBeGreaterThan(15);
    for (const { method, path } of routes) {
      const operation = document.paths[path.replace(/:(\w+)/g, "{$1}")]?.[method.toLowerCase()];
      expect(operation, `${method} ${path}`).toBeDefined();
      expect(operation.summary, `${method} ${path}`).toMatch(/\w/);
      expect(
        Object.keys(operation.responses).some((status) => /^2/.test(status)),
        `${method} ${path}`,
      ).toBe(true);
    }
  });

  it("describes requests by their schemas: query parameters, bodies and shared components", async () => {
    const document = (await request(`${t.url}/api/openapi.json`)).body;
    const query = document.paths["/api/v1/metrics"].get.parameters.map((p: { name: string }) => p.name);
    expect(query).toEqual(expect.arrayContaining(["agent_id", "name", "from", "to", "limit", "cursor"]));
    const ingest = document.paths["/api/v1/metrics"].post.requestBody.content["application/json"].schema;
    expect(ingest.properties.metrics.items.$ref).toBe("#/components/schemas/Reading");
    expect(Object.keys(document.components.schemas)).toEqual(
      expect.arrayContaining(["Reading", "Error", "Metric", "Agent", "Rejection"]),
    );
    expect(document.components.securitySchemes.bearer.scheme).toBe("bearer");
  });

  it("keeps the error body shape for requests a schema refuses", async () => {
    const admin = bearer(t.adminToken);
    const tenant = await request(`${t.url}/api/v1/admin/tenants`, { auth: admin, body: {} });
    expect(tenant.status).toBe(400);
    expect(tenant.body).toEqual({
      error: { code: "bad_request", message: "name must be a non-empty string of at most 200 characters, with no NUL" },
    });
    const { id } = (await request(`${t.url}/api/v1/admin/tenants`, { auth: admin, body: { name: "acme" } })).body;
    const limits = await request(`${t.url}/api/v1/admin/tenants/${id}/limits`, {
      method: "PUT",
      auth: admin,
      body: { agent_readings_per_second: 0 },
    });
    expect(limits.status).toBe(400);
    expect(limits.body.error.code).toBe("bad_request");
    expect(limits.body.error.message).toMatch(/^agent_readings_per_second: /);
    const agent = await request(`${t.url}/api/v1/admin/tenants/${id}/agents`, {
      auth: admin,
      body: { agent_id: "has space" },
    });
    expect(agent.body).toEqual({
      error: { code: "bad_agent_id", message: "agent_id must be 1-64 characters of A-Z a-z 0-9 . _ -" },
    });
    const token = (
      await request(`${t.url}/api/v1/admin/tenants/${id}/tokens`, { auth: admin, body: { role: "viewer" } })
    ).body.token;
    const page = await request(`${t.url}/api/v1/metrics?limit=100000`, { auth: bearer(token) });
    expect(page.status).toBe(400);
    expect(page.body.error).toEqual({ code: "bad_request", message: "limit must be a whole number from 1 to 1000" });
  });

  it("answers 401 before it validates anything", async () => {
    const answer = await request(`${t.url}/api/v1/metrics?limit=abc`);
    expect(answer.status).toBe(401);
    expect(answer.body.error.code).toBe("unauthorized");
  });
});

import { access } from "node:fs/promises";
import path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { hasOpenssl, selfSigned } from "../helpers/certificates.ts";
import { createTenant, request, type TenantFixture } from "../helpers/http.ts";
import { connackOf, connect } from "../helpers/mqtt.ts";
import { tempDir } from "../helpers/services.ts";

// Debian's chromium (apt-get install chromium), driven by playwright-core: no browser download.
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const installed = await access(CHROMIUM).then(
  () => true,
  () => false,
);
if (!installed && process.env.CI) throw new Error(`${CHROMIUM} is missing: .ci/run installs the chromium package`);
const openssl = await hasOpenssl();
/** Where `npm run screenshots` wants the console's pictures (docs/). */
const SCREENSHOTS = process.env.CONSOLE_SCREENSHOTS;

describe.skipIf(!installed)("the web console in a real browser", () => {
  let t: TestApp;
  let browser: Browser;
  let acme: TenantFixture;
  let rival: TenantFixture;
  let mqttUrl: string;

  beforeAll(async () => {
    t = await startTestApp("embedded", { MQTT_FEEDBACK_INTERVAL_MS: "100" });
    mqttUrl = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
    acme = await createTenant(t.url, t.adminToken, "boiler-1", "Acme Heating");
    rival = await createTenant(t.url, t.adminToken, "rival-secret-agent", "Rival Works");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await t?.cleanup();
  });

  /** Signs in on a new page; `problems` collects what the browser reports (errors, failed requests). */
  async function signIn(token: string, viewport = { width: 1360, height: 1000 }) {
    const page = await browser.newPage({ viewport });
    const problems: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(message.text());
    });
    page.on("pageerror", (error) => problems.push(error.message));
    page.on("response", (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`);
    });
    page.on("dialog", (dialog) => void dialog.accept());
    await page.goto(t.url);
    await page.fill("#token", token);
    await page.click("#sign-in-form button[type=submit]");
    return { page, problems };
  }

  const chart = (page: Page, metric: string) => page.locator(`[data-testid=charts] figure[data-metric="${metric}"]`);
  /** The chart's x-axis as uPlot scales it, in seconds. */
  const xAxis = async (page: Page, metric: string): Promise<[number, number]> => [
    Number(await chart(page, metric).getAttribute("data-x-min")),
    Number(await chart(page, metric).getAttribute("data-x-max")),
  ];

  it("shows a viewer its agents, readings on charts over the chosen window, and refusals from before the page opened", async () => {
    const boiler = await connect(mqttUrl, { username: acme.agent.username, password: acme.agent.password });
    const topic = (metric: string) => `metrics/${acme.tenantId}/boiler-1/${metric}`;
    // Before the page opens: one reading, two readings 45 minutes apart, and a refused publish.
    const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();
    await boiler.publishAsync(topic("temperature"), JSON.stringify({ value: 20.5, timestamp: minutesAgo(20) }), {
      qos: 1,
    });
    await boiler.publishAsync(topic("flow"), JSON.stringify({ value: 3, timestamp: minutesAgo(50) }), { qos: 1 });
    await boiler.publishAsync(topic("flow"), JSON.stringify({ value: 4, timestamp: minutesAgo(5) }), { qos: 1 });
    await boiler.publishAsync(topic("humidity"), JSON.stringify({ value: 40, timestamp: minutesAgo(180) }), { qos: 1 });
    await boiler.publishAsync(topic("temperature"), '{"value": "very hot"}', { qos: 1 });
    await expect
      .poll(
        async () => (await request(`${t.url}/api/v1/rejections`, { auth: `Bearer ${acme.viewerToken}` })).body.items,
      )
      .toHaveLength(1);

    const { page, problems } = await signIn(acme.viewerToken);
    await expect.poll(() => page.textContent("[data-testid=who]")).toContain("Acme Heating");
    const agents = page.locator("[data-testid=agents] tbody tr");
    await expect.poll(() => agents.allTextContents()).toEqual([expect.stringContaining("boiler-1")]);
    expect(await page.textContent("[data-testid=agents]")).not.toContain("rival-secret-agent");
    await expect.poll(() => page.textContent("[data-testid=agents-updated]")).toMatch(/^updated /);

    // The refusal sent before the page opened is there, counted by reason.
    const rejections = page.locator("[data-testid=rejections] tbody tr");
    await expect.poll(() => rejections.first().textContent()).toContain("bad_value");
    expect(await rejections.first().textContent()).toContain("boiler-1");
    expect(await page.textContent("[data-testid=rejection-counts]")).toContain("bad_value 1");

    // One reading: one point, on an x-axis that is the last hour.
    await expect.poll(() => chart(page, "temperature").locator(".count").textContent()).toBe("1 point");
    await expect
      .poll(async () => (await xAxis(page, "temperature")).reduce((min, max) => max - min))
      .toBeCloseTo(3600, -1);
    expect((await xAxis(page, "temperature"))[1] * 1000).toBeGreaterThan(Date.now() - 60_000);
    // Two readings with a gap between: two points among empty buckets, which break the line.
    await expect.poll(() => chart(page, "flow").locator(".count").textContent()).toBe("2 points");
    expect(Number(await chart(page, "flow").getAttribute("data-buckets"))).toBeGreaterThan(100);
    // A metric with nothing in the window: an empty chart of the window, until the window takes it in.
    await expect.poll(() => chart(page, "humidity").locator(".count").textContent()).toBe("0 points");
    await page.selectOption("[data-testid=chart-window]", "21600000");
    await expect.poll(() => chart(page, "humidity").locator(".count").textContent()).toBe("1 point");
    // A window of 15 minutes leaves the older flow reading out.
    await page.selectOption("[data-testid=chart-window]", "900000");
    await expect.poll(() => chart(page, "flow").locator(".count").textContent()).toBe("1 point");
    await expect.poll(async () => (await xAxis(page, "flow")).reduce((min, max) => max - min)).toBeCloseTo(900, -1);
    await page.selectOption("[data-testid=chart-window]", "3600000");

    await boiler.publishAsync(topic("temperature"), JSON.stringify({ value: 73.25, dedupe_id: "browser-1" }), {
      qos: 1,
    });
    await expect.poll(() => page.textContent("[data-testid=latest]")).toContain("73.25");
    await expect.poll(() => chart(page, "temperature").locator(".count").textContent()).toBe("2 points");
    expect(await chart(page, "temperature").locator("canvas").count()).toBe(1);

    await boiler.publishAsync(topic("temperature"), '{"value": "cold"}', { qos: 1 });
    await expect.poll(() => page.textContent("[data-testid=rejection-counts]")).toContain("bad_value 2");

    // The rival tenant's reading never reaches this page.
    const rivalAgent = await connect(mqttUrl, { username: rival.agent.username, password: rival.agent.password });
    await rivalAgent.publishAsync(`metrics/${rival.tenantId}/rival-secret-agent/temperature`, "999", { qos: 1 });
    await boiler.publishAsync(topic("pressure"), "1.5", { qos: 1 });
    await expect.poll(() => page.textContent("[data-testid=latest]")).toContain("pressure");
    // Charts are read again a second after a burst of new readings (REDRAW_AFTER_MS), then drawn.
    await expect.poll(() => chart(page, "pressure").count(), { timeout: 10_000 }).toBe(1);
    expect(await page.textContent("main")).not.toContain("999");
    expect(await page.textContent("main")).not.toContain("rival-secret-agent");
    // The token is never in a URL the page asked for.
    expect(page.url()).not.toContain(acme.viewerToken);
    expect(problems).toEqual([]);

    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, "console-viewer.png"), fullPage: true });
    await Promise.all([boiler.endAsync(), rivalAgent.endAsync()]);
    await page.close();
  });

  it("fits a phone's width: nothing wider than the screen", async () => {
    const { page, problems } = await signIn(acme.viewerToken, { width: 390, height: 844 });
    await expect.poll(() => page.locator("[data-testid=charts] figure").count()).toBeGreaterThan(0);
    const overflow = await page.evaluate<number>("document.documentElement.scrollWidth - window.innerWidth");
    expect(overflow).toBeLessThanOrEqual(0);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("lets the admin register an agent, whose credential works over MQTT, and revoke it", async () => {
    const { page, problems } = await signIn(t.adminToken);
    await expect.poll(() => page.textContent("[data-testid=who]")).toBe("admin");
    const tenantRows = page.locator("[data-testid=tenants] tbody tr");
    await expect.poll(() => tenantRows.count()).toBe(2);
    // The first tenant is open at once, its credentials listed; the panel says when it was updated.
    await expect.poll(() => page.locator("[data-testid=credentials] tbody tr").count()).toBeGreaterThan(0);
    expect(await page.textContent("[data-testid=tenants-updated]")).toMatch(/^updated /);
    await page.click(`[data-testid=tenants] tr[data-tenant="${acme.tenantId}"]`);

    await page.fill("#create-agent input[name=agent_id]", "pump-7");
    await page.click("#create-agent button");
    const secret = page.locator("[data-testid=secret] pre");
    await expect.poll(() => secret.textContent()).toContain("mosquitto_pub");
    const text = (await secret.textContent()) ?? "";
    const username = /username: (\S+)/.exec(text)?.[1] as string;
    const password = /password: (\S+)/.exec(text)?.[1] as string;
    expect(text).toContain(`-t 'metrics/${acme.tenantId}/pump-7/temperature'`);
    expect(text).toContain(`-p ${t.app.mqttPorts?.tcp}`);
    expect(await connackOf(mqttUrl, { username, password })).toBe("connected");

    const pump = await connect(mqttUrl, { clientId: "pump-7-main", username, password });
    await expect.poll(() => page.textContent("[data-testid=clients]"), { timeout: 10_000 }).toContain("pump-7-main");
    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, "console-admin.png"), fullPage: true });

    const closed = new Promise<void>((resolve) => pump.once("close", () => resolve()));
    await page.click(`[data-testid=credentials] tr[data-username="${username}"] button`);
    await expect
      .poll(() => page.textContent(`[data-testid=credentials] tr[data-username="${username}"]`))
      .toContain("revoked");
    await closed;
    expect(await connackOf(mqttUrl, { username, password })).toBe(4);
    const credentials = await request(`${t.url}/api/v1/admin/tenants/${acme.tenantId}/credentials`, {
      auth: `Bearer ${t.adminToken}`,
    });
    expect(credentials.body.find((c: { username: string }) => c.username === username).revoked_at).not.toBeNull();
    await pump.endAsync(true);
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(!openssl)("lets the admin pin an agent's certificate and trust a CA for the tenant", async () => {
    const { dir, remove } = await tempDir();
    try {
      const device = await selfSigned(dir, "device", "boiler-9");
      const ca = await selfSigned(dir, "ca", "Acme boilers CA", { ca: true });
      const { page, problems } = await signIn(t.adminToken);
      await page.click(`[data-testid=tenants] tr[data-tenant="${acme.tenantId}"]`);
      await expect.poll(() => page.locator("#cas-empty").isVisible()).toBe(true);

      await page.fill("#create-agent input[name=agent_id]", "boiler-9");
      await page.fill("#create-agent textarea[name=certificate]", device.pem);
      await page.click("#create-agent button");
      await expect.poll(() => page.textContent("[data-testid=secret] pre")).toContain("certificate pinned (ct_");
      await expect.poll(() => page.textContent("[data-testid=credentials]")).toContain("ct_");

      await page.fill("#add-ca textarea[name=pem]", ca.pem);
      await page.check("#add-ca input[name=register_agents]");
      await page.click("#add-ca button");
      const row = page.locator("[data-testid=cas] tbody tr");
      await expect.poll(() => row.textContent()).toContain("CN=Acme boilers CA");
      expect(await row.textContent()).toContain("yes");
      const trusted = await request(`${t.url}/api/v1/admin/tenants/${acme.tenantId}/cas`, {
        auth: `Bearer ${t.adminToken}`,
      });
      expect(trusted.body).toEqual([expect.objectContaining({ subject: "CN=Acme boilers CA", register_agents: true })]);

      await row.locator("button").click();
      await expect.poll(() => page.locator("[data-testid=cas] tbody tr").count()).toBe(0);
      expect(problems).toEqual([]);
      await page.close();
    } finally {
      await remove();
    }
  });

  it("refuses an unknown token and serves its files with a content security policy", async () => {
    const { page } = await signIn("tk_nobody.nothing");
    await expect.poll(() => page.textContent("#sign-in-error")).toContain("unknown or revoked");
    expect(await page.isVisible("#viewer")).toBe(false);
    await page.close();
    // Bodies read to the end: an unread one keeps its connection busy, and the server's close waits for it.
    const index = await fetch(`${t.url}/`);
    expect(index.headers.get("content-security-policy")).toContain("script-src 'self'");
    await index.text();
    const uplot = await fetch(`${t.url}/vendor/uplot/uPlot.iife.min.js`);
    expect(uplot.status).toBe(200);
    await uplot.text();
    expect((await request(`${t.url}/no-such-page`)).body.error.code).toBe("not_found");
  });

  it("links the API reference from its header, which renders every route from the OpenAPI document", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    await page.goto(t.url);
    await page.click("[data-testid=api-docs]");
    await page.waitForURL(/\/api\/docs/);
    const ingest = page.locator(".opblock-summary-path", { hasText: "/api/v1/metrics" }).first();
    await expect.poll(() => ingest.isVisible(), { timeout: 15_000 }).toBe(true);
    expect(await page.locator(".opblock-summary-path").count()).toBeGreaterThan(15);
    // Swagger UI comes from the package: nothing is asked of another host.
    const requested: string[] = [];
    page.on("request", (r) => requested.push(r.url()));
    await page.reload();
    await expect.poll(() => page.locator(".opblock-summary-path").count(), { timeout: 15_000 }).toBeGreaterThan(15);
    expect(requested.filter((url) => !url.startsWith(t.url) && !url.startsWith("data:"))).toEqual([]);
    expect(errors).toEqual([]);
    await page.close();
  });
});

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";

const PUBLIC_DIR = fileURLToPath(new URL("./public/", import.meta.url));
// The chart library comes from its package, never from a CDN.
const UPLOT_DIR = path.dirname(createRequire(import.meta.url).resolve("uplot/dist/uPlot.iife.min.js"));

/** What every console file is sent with: only our own scripts run, nothing leaks in a Referer. */
function securityHeaders(res: { setHeader(name: string, value: string): void }): void {
  res.setHeader(
    "content-security-policy",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  );
  res.setHeader("referrer-policy", "no-referrer");
  res.setHeader("x-content-type-options", "nosniff");
}

/**
 * The web console at `/`: static files of this folder and uPlot, no build step. It signs in with a
 * token kept in sessionStorage and talks to the same API as everyone else (src/console/public).
 */
export const consolePlugin = fp(
  async (app: FastifyInstance) => {
    // One route per file (no wildcard), so an unknown path still gets the API's JSON 404.
    await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: "/", wildcard: false, setHeaders: securityHeaders });
    for (const file of ["uPlot.iife.min.js", "uPlot.min.css"]) {
      app.get(`/vendor/uplot/${file}`, { schema: { hide: true } }, (_request, reply) => {
        securityHeaders(reply.raw);
        return reply.sendFile(file, UPLOT_DIR);
      });
    }
  },
  { name: "console", dependencies: ["errors"] },
);

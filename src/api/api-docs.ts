import swaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";

/** Where the rendered API reference is served (linked from the console's header). */
export const API_DOCS_PATH = "/api/docs";

/**
 * The interactive API reference at /api/docs: Swagger UI, served from its npm package (no CDN),
 * rendering the OpenAPI document the openapi plugin builds from the routes' schemas.
 */
export const apiDocsPlugin = fp(
  async (app: FastifyInstance) => {
    await app.register(swaggerUi, {
      routePrefix: API_DOCS_PATH,
      // No validator badge: it would ask validator.swagger.io about our document.
      uiConfig: { docExpansion: "list", deepLinking: true, validatorUrl: null },
      // Its policy with the hashes of its inline scripts, less what would let the page reach other
      // hosts, and less `upgrade-insecure-requests`, which breaks the page on a plain-HTTP listener.
      staticCSP: true,
      transformStaticCSP: (policy) =>
        policy
          .replace(" validator.swagger.io", "")
          .replaceAll(" https:", "")
          .replace(" upgrade-insecure-requests;", ""),
      transformSpecificationClone: true,
    });
  },
  { name: "api-docs", dependencies: ["openapi"] },
);

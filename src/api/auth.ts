import type { FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { Identifier } from "../credentials/identify.ts";
import type { Principal } from "../credentials/store.ts";
import { ApiError } from "./errors.ts";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyInstance {
    /**
     * onRequest hook: resolves `request.principal` or answers 401, before the body is read or the
     * request validated (a stranger learns nothing about what would be valid).
     */
    authenticate(request: FastifyRequest): Promise<void>;
  }
}

function unauthorized(message: string): ApiError {
  return new ApiError("unauthorized", message);
}

/**
 * Accepts `Authorization: Basic` (a credential's username and secret, as over MQTT),
 * `Authorization: Bearer <token>` or `Token <token>` (InfluxDB's word; tenant token or the admin
 * token), `?token=` for EventSource, which cannot set headers, and `?u=&p=` for InfluxDB 1.x clients.
 */
export const authPlugin = fp(
  async (app: FastifyInstance, options: { identifier: Identifier }) => {
    const { identifier } = options;

    async function resolve(request: FastifyRequest): Promise<Principal> {
      const header = request.headers.authorization;
      const query = (request.query as Record<string, unknown> | undefined) ?? {};
      const basic = async (username: string, secret: string) => {
        const principal = await identifier.basic(username, secret);
        if (!principal) throw unauthorized("unknown or revoked credential");
        return principal;
      };
      if (header?.startsWith("Basic ")) {
        const decoded = Buffer.from(header.slice(6), "base64").toString("utf8");
        const colon = decoded.indexOf(":");
        if (colon <= 0) throw unauthorized("malformed Basic credentials");
        return basic(decoded.slice(0, colon), decoded.slice(colon + 1));
      }
      // InfluxDB 1.x clients put a username and password in the query.
      if (header === undefined && typeof query.u === "string" && typeof query.p === "string") {
        return basic(query.u, query.p);
      }
      // `Token` is InfluxDB's name for a bearer token.
      const scheme = /^(?:Bearer|Token) /.exec(header ?? "");
      const token = scheme
        ? (header as string).slice(scheme[0].length)
        : typeof query.token === "string"
          ? query.token
          : undefined;
      if (token === undefined) throw unauthorized("credentials required: Basic, Bearer, Token or ?token=");
      const principal = await identifier.bearer(token);
      if (!principal) throw unauthorized("unknown or revoked credential");
      return principal;
    }

    app.decorateRequest("principal", null as never);
    app.decorate("authenticate", async (request: FastifyRequest) => {
      request.principal = await resolve(request);
    });
  },
  { name: "auth", dependencies: ["errors"] },
);

import type { AuthenticateError, AuthenticateHandler } from "aedes";
import type { Logger } from "pino";
import type { Identifier } from "../credentials/identify.ts";
import { type MqttPrincipal, namespacedClientId } from "./access.ts";
import type { Sessions } from "./sessions.ts";

// CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
export const SERVER_UNAVAILABLE = 3;
export const BAD_USERNAME_OR_PASSWORD = 4;
export const NOT_AUTHORIZED = 5;

export function connackError(returnCode: number, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/**
 * CONNECT: who the client is. Agents connect with their credential; viewers and the admin with their
 * token as the password; nobody without credentials unless anonymous access is on. The client id
 * is namespaced by principal, so no principal can reach another's session.
 */
export function createAuthenticate(deps: {
  identifier: Identifier;
  sessions: Sessions;
  allowAnonymous: boolean;
  logger: Logger;
}): AuthenticateHandler {
  const { identifier, sessions, logger } = deps;

  async function identify(username: string | undefined, password: Buffer | undefined): Promise<MqttPrincipal> {
    const secret = password?.toString("utf8");
    if (!username && !secret) {
      if (deps.allowAnonymous) return { kind: "anonymous" };
      throw connackError(NOT_AUTHORIZED, "credentials are required");
    }
    if (!secret) throw connackError(BAD_USERNAME_OR_PASSWORD, "a password is required");
    const principal = await identifier.password(username, secret);
    if (!principal) throw connackError(BAD_USERNAME_OR_PASSWORD, "unknown or revoked credential");
    if (principal.kind === "token" && principal.role !== "viewer") {
      throw connackError(NOT_AUTHORIZED, "over MQTT a tenant token connects only as a viewer");
    }
    return principal;
  }

  return (client, username, password, done) => {
    identify(username, password).then(
      (principal) => {
        client.id = namespacedClientId(principal, client.id);
        sessions.open(client, principal);
        done(null, true);
      },
      (error: AuthenticateError) => {
        if (error.returnCode === undefined) {
          logger.error({ err: error }, "credential lookup failed");
          return done(connackError(SERVER_UNAVAILABLE, "the credential store is unavailable"), false);
        }
        done(error, false);
      },
    );
  };
}

import tls from "node:tls";
import type { AuthenticateError, AuthenticateHandler, Client, PreConnectHandler } from "aedes";
import type { Logger } from "pino";
import { CertificateError } from "../credentials/certificates.ts";
import type { Identifier } from "../credentials/identify.ts";
import { type ConnectRefusal, connackReturnCode, REFUSALS } from "../ingest/refusals.ts";
import type { TenantLimitsStore } from "../limits/limits-store.ts";
import type { RateLimiter } from "../limits/rate-limiter.ts";
import { rateLimitedLog } from "../logger.ts";
import { type Presence, presenceMember } from "../presence/presence.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { clientIdRefusal, type MqttPrincipal, namespacedClientId } from "./access.ts";
import { acceptMqtt5, closeMqtt5, type Mqtt5Settings, reasonOf, refuseMqtt5 } from "./mqtt5.ts";
import type { Sessions } from "./sessions.ts";

/** The TLS socket under a client (TLS, or WSS through its HTTP request); undefined on a plain listener. */
function tlsSocketOf(client: Client): tls.TLSSocket | undefined {
  const conn: unknown = client.conn;
  if (conn instanceof tls.TLSSocket) return conn;
  const socket: unknown = client.req?.socket;
  return socket instanceof tls.TLSSocket ? socket : undefined;
}

/** setTimeout's longest delay; a certificate valid for longer is checked again then. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/** Ends the connection when the certificate it was made with expires (it was valid at CONNECT). */
function cutAtExpiry(client: Client, remainingMs: number, onCut: () => void): void {
  const timer = setTimeout(
    () => {
      if (remainingMs > LONGEST_TIMER_MS) return cutAtExpiry(client, remainingMs - LONGEST_TIMER_MS, onCut);
      onCut();
      closeMqtt5(client, reasonOf("certificate_expired", "the client certificate expired"));
    },
    Math.min(remainingMs, LONGEST_TIMER_MS),
  );
  timer.unref();
  client.conn.once("close", () => clearTimeout(timer));
}

/** Why a CONNECT was refused, as counted in `edge_ingest_mqtt_connects_refused_total`. */
type RefusalReason = ConnectRefusal | "unavailable";

type Refusal = AuthenticateError & { reason: RefusalReason };

/** A CONNACK refusing the connection, with the return code the catalogue gives the reason. */
function refuse(reason: RefusalReason, message: string): Refusal {
  const returnCode = connackReturnCode(REFUSALS[reason].mqtt5);
  return Object.assign(new Error(message), { returnCode, reason }) as Refusal;
}

export interface AuthenticateDeps {
  identifier: Identifier;
  sessions: Sessions;
  limiter: RateLimiter;
  tenantLimits: TenantLimitsStore;
  presence: Presence;
  /** Names this broker's connections in the presence registry. */
  brokerId: string;
  allowAnonymous: boolean;
  maxClientIdLength: number;
  /** MQTT_TLS_CLIENT_AUTH: whether a TLS client's certificate identifies it, and must. */
  clientAuth: "none" | "optional" | "required";
  /** What MQTT 5 clients are offered. */
  mqtt5: Mqtt5Settings;
  /** Called once the client is known, before Aedes restores its session (a persistent one stops expiring). */
  onAuthenticated(client: Client): Promise<void>;
  telemetry: Telemetry;
  logger: Logger;
}

/**
 * CONNECT: whether the client id is acceptable, then who the client is. Agents connect with their
 * credential; viewers and the admin with their token as the password; nobody without credentials
 * unless anonymous access is on. The client id is namespaced by principal, so no principal can
 * reach another's session. A tenant's agents and viewers together hold at most its
 * `max_connections`, across every broker (CONNACK 3 past it).
 */
export function createConnectHooks(deps: AuthenticateDeps): {
  preConnect: PreConnectHandler;
  authenticate: AuthenticateHandler;
} {
  const { identifier, sessions, presence, logger } = deps;
  const logPresenceError = rateLimitedLog(logger, 5, 60_000);
  const logExpiryError = rateLimitedLog(logger, 5, 60_000);
  const logLookupError = rateLimitedLog(logger, 5, 60_000, "error");
  let serial = 0;
  /** Client ids refused at CONNECT, answered by `authenticate` (Aedes sends no CONNACK for a preConnect error). */
  const refusedIds = new WeakMap<Client, string>();

  const preConnect: PreConnectHandler = (client, packet, callback) => {
    // An MQTT 5 client that sent no id is given one, which is not the client's to be refused for.
    const { assignedId } = acceptMqtt5(client, packet, deps.mqtt5);
    const refusal = assignedId
      ? undefined
      : clientIdRefusal(packet.clientId, packet.clean !== false, deps.maxClientIdLength);
    if (refusal) refusedIds.set(client, refusal);
    callback(null, true);
  };

  async function identify(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
  ): Promise<MqttPrincipal> {
    const socket = deps.clientAuth === "none" ? undefined : tlsSocketOf(client);
    const peer = socket?.getPeerX509Certificate();
    if (peer) {
      const now = Date.now();
      const identified = await identifier.certificate(peer, now);
      if (identified instanceof CertificateError) throw refuse("bad_certificate", identified.message);
      const { principal, registered } = identified;
      if (registered) {
        logger.info(
          { tenantId: principal.tenantId, agentId: principal.agentId },
          "agent registered by its certificate",
        );
      }
      cutAtExpiry(client, Date.parse(peer.validTo) - now, () => {
        deps.telemetry.countDisconnect("certificate_expired");
        logger.info({ clientId: client.id }, "disconnecting: the client certificate expired");
      });
      return principal;
    }
    if (socket && deps.clientAuth === "required") {
      throw refuse("certificate_required", "this listener needs a client certificate");
    }
    const secret = password?.toString("utf8");
    if (!username && !secret) {
      if (deps.allowAnonymous) return { kind: "anonymous" };
      throw refuse("no_credentials", "credentials are required");
    }
    if (!secret) throw refuse("bad_credentials", "a password is required");
    const principal = await identifier.password(username, secret);
    if (!principal) throw refuse("bad_credentials", "unknown or revoked credential");
    if (principal.kind === "token" && principal.role !== "viewer") {
      throw refuse("not_authorized", "over MQTT a tenant token connects only as a viewer");
    }
    return principal;
  }

  /** Counts the connection against its tenant's quota until it closes. */
  async function admit(client: Client, tenantId: string): Promise<void> {
    const { maxConnections } = await deps.tenantLimits.get(tenantId);
    const member = presenceMember(deps.brokerId, ++serial, client.id);
    // Without the registry (Redis down) connections are let in: the quota protects, it must not lock out.
    const admitted = await presence.admit(tenantId, member, maxConnections).catch((error: Error) => {
      logPresenceError({ reason: error.message }, "cannot count a tenant's connections; letting the connection in");
      return true;
    });
    if (!admitted) {
      throw refuse("tenant_connection_quota", `the tenant has its ${maxConnections} connections`);
    }
    const release = () => void presence.release(tenantId, member).catch(() => undefined);
    if (client.conn.destroyed) release();
    else client.conn.once("close", release);
  }

  const authenticate: AuthenticateHandler = (client, username, password, done) => {
    const idRefusal = refusedIds.get(client);
    Promise.resolve()
      .then(() => {
        if (idRefusal) throw refuse("bad_client_id", idRefusal);
        return identify(client, username, password);
      })
      .then(async (principal) => {
        client.id = namespacedClientId(principal, client.id);
        if (principal.kind === "agent" || principal.kind === "token") await admit(client, principal.tenantId);
        // The tenant's first tokens are ready before its first publish needs them.
        if (principal.kind === "agent") await deps.limiter.prepare(principal.tenantId);
        sessions.open(client, principal);
        await deps
          .onAuthenticated(client)
          .catch((error: Error) =>
            logExpiryError({ reason: error.message }, "cannot keep the session's expiry; it may end early"),
          );
      })
      .then(
        () => done(null, true),
        (error: Refusal) => {
          if (error.returnCode === undefined) {
            logLookupError({ reason: error.message }, "credential lookup failed");
            error = refuse("unavailable", "the credential store is unavailable");
          }
          deps.telemetry.mqttConnectsRefused.inc({ reason: error.reason });
          refuseMqtt5(client, { code: REFUSALS[error.reason].mqtt5, reasonString: error.message });
          done(error, false);
        },
      );
  };
  return { preConnect, authenticate };
}

import { createHash, X509Certificate } from "node:crypto";
import { AGENT_ID_PATTERN } from "../ingest/payload.ts";

/**
 * Device certificates (docs/certificates.md), as plain decisions: what names a certificate, who
 * issued it, whether it is valid now. The TLS handshake has already proved that the client holds
 * the certificate's private key; these say whom the certificate stands for.
 */

/** A certificate that cannot identify anyone, with the reason a person can act on. */
export class CertificateError extends Error {}

/** SHA-256 of the certificate's DER, base64url: how a pinned certificate and a tenant CA are named. */
export function fingerprintOf(certificate: X509Certificate): string {
  return createHash("sha256").update(certificate.raw).digest("base64url");
}

/** The credential a pinned certificate is (`ct_` and its fingerprint): revoked like any other. */
export function certificateUsername(certificate: X509Certificate): string {
  return `ct_${fingerprintOf(certificate)}`;
}

/**
 * The name the sessions of a tenant CA's devices share: removing the CA announces it as revoked,
 * which ends them on every broker.
 */
export function authorityUsername(caFingerprint: string): string {
  return `${AUTHORITY_PREFIX}${caFingerprint}`;
}

const AUTHORITY_PREFIX = "ca_";

/** Whether a revoked name is a tenant CA's (its removal), not a credential's. */
export function isAuthorityUsername(username: string): boolean {
  return username.startsWith(AUTHORITY_PREFIX);
}

/** One PEM certificate, parsed; anything else (several, a key, garbage) is refused by name. */
export function parseCertificate(pem: string): X509Certificate {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  if (blocks !== 1) throw new CertificateError(`expected one PEM certificate, found ${blocks}`);
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw new CertificateError(`not a readable certificate: ${(error as Error).message}`);
  }
}

/** Why the certificate cannot be used at `now` (not yet valid, expired), if it cannot. */
export function validityProblem(certificate: X509Certificate, now: number): string | undefined {
  if (Date.parse(certificate.validFrom) > now) return `the certificate is not valid before ${certificate.validFrom}`;
  if (Date.parse(certificate.validTo) <= now) return `the certificate expired at ${certificate.validTo}`;
  return undefined;
}

/** The agent a tenant CA's certificate names: its subject's CN, which must be an agent id. */
export function agentIdOf(certificate: X509Certificate): string {
  const names = certificate.subject
    .split("\n")
    .filter((line) => line.startsWith("CN="))
    .map((line) => line.slice(3));
  const [name] = names;
  if (names.length !== 1 || name === undefined || !AGENT_ID_PATTERN.test(name)) {
    throw new CertificateError(
      "the certificate's subject needs one CN that is an agent id (1-64 of A-Z a-z 0-9 . _ -)",
    );
  }
  return name;
}

/** Whether `authority` issued `certificate`: its subject is the issuer and its key made the signature. */
export function issuedBy(certificate: X509Certificate, authority: X509Certificate): boolean {
  return certificate.checkIssued(authority) && certificate.verify(authority.publicKey);
}

/** A tenant CA must be a CA, valid now. */
export function checkAuthority(authority: X509Certificate, now: number): void {
  if (!authority.ca) throw new CertificateError("the certificate is not a CA (basicConstraints CA:TRUE)");
  const problem = validityProblem(authority, now);
  if (problem) throw new CertificateError(problem);
}

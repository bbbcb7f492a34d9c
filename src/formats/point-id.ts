import { createHash } from "node:crypto";

/**
 * The dedupe id of a reading that carries its own time in a format without ids of its own (line
 * protocol, OTLP): the same point sent again (a client's retry after an answer it never got) is
 * stored once within the dedupe window, as InfluxDB keeps one value per series and time. The id
 * covers agent, metric, time and tags, so distinct points never share one.
 */
export function pointDedupeId(
  format: "lp" | "otlp",
  agentId: string,
  name: string,
  ts: number,
  tags: Record<string, string> | undefined,
): string {
  const hash = createHash("sha256").update(agentId).update("\0").update(name).update("\0").update(String(ts));
  if (tags)
    for (const key in tags)
      hash
        .update("\0")
        .update(key)
        .update("=")
        .update(tags[key] as string);
  return `${format}:${hash.digest("base64url").slice(0, 32)}`;
}

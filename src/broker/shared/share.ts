/**
 * Shared subscriptions (`$share/{share name}/{filter}`, MQTT 5.0, 4.8.2): the pure decisions.
 * docs/devices.md, "Shared subscriptions", says what they deliver.
 */

export const SHARE_PREFIX = "$share/";

/** A `$share/` filter, read: the share name and the filter it covers. */
export interface SharedFilter {
  share: string;
  filter: string;
}

/**
 * A `$share/{name}/{filter}` filter's parts; undefined for any other filter, `invalid` for one that
 * starts so but is not a shared subscription (MQTT-4.8.2-1, -2: a name of at least one character
 * without `/`, `+` or `#`, then a filter).
 */
export function parseSharedFilter(topic: string): SharedFilter | "invalid" | undefined {
  if (!topic.startsWith(SHARE_PREFIX)) return undefined;
  const end = topic.indexOf("/", SHARE_PREFIX.length);
  if (end < 0) return "invalid";
  const share = topic.slice(SHARE_PREFIX.length, end);
  const filter = topic.slice(end + 1);
  if (share === "" || share.includes("+") || share.includes("#") || filter === "") return "invalid";
  return { share, filter };
}

/**
 * Whether `topic` matches `filter` (MQTT 4.7): `+` one level, a final `#` this level and every level
 * below; a filter starting with a wildcard matches no topic starting with `$` (MQTT-4.7.2-1).
 */
export function topicMatches(filter: string, topic: string): boolean {
  if ((filter.startsWith("+") || filter.startsWith("#")) && topic.startsWith("$")) return false;
  const filterLevels = filter.split("/");
  const topicLevels = topic.split("/");
  for (let i = 0; i < filterLevels.length; i++) {
    const level = filterLevels[i];
    if (level === "#") return i === filterLevels.length - 1;
    if (i >= topicLevels.length) return false;
    if (level !== "+" && level !== topicLevels[i]) return false;
  }
  return filterLevels.length === topicLevels.length;
}

/**
 * A group's id: who may be in it (the scope), its share name and its filter. Principals of different
 * scopes never share a group, whatever the names they use: a tenant's viewers form groups among
 * themselves, never with another tenant's.
 */
export function groupId(scope: string, shared: SharedFilter): string {
  return `${scope}|${shared.share}|${shared.filter}`;
}

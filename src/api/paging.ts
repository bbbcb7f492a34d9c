import type { JsonPage } from "../store/readings.ts";
import { ApiError } from "./errors.ts";

/** An opaque cursor: the position of the last item of a page, as JSON in base64url. */
export function encodeCursor(position: Record<string, string>): string {
  return Buffer.from(JSON.stringify(position)).toString("base64url");
}

export function decodeCursor<T>(raw: string, valid: (position: Record<string, unknown>) => boolean): T {
  try {
    const position = JSON.parse(Buffer.from(raw, "base64url").toString("utf8")) as Record<string, unknown>;
    if (valid(position)) return position as T;
  } catch {}
  throw new ApiError("bad_request", "cursor is not one this API returned");
}

/** A page from `limit + 1` rows: the extra row only says there is a next page, which starts after the last item. */
export function pageOf<Row, Item = Row>(
  rows: Row[],
  limit: number,
  cursorAfter: (last: Row) => string,
  item: (row: Row) => Item = (row) => row as unknown as Item,
): { items: Item[]; next_cursor: string | null } {
  const shown = rows.slice(0, limit);
  const last = shown.at(-1);
  return { items: shown.map(item), next_cursor: rows.length > limit && last ? cursorAfter(last) : null };
}

/** The body of a page whose items PostgreSQL wrote as JSON (`JsonPage`), sent as it is. */
export function jsonPageBody<Position extends Record<string, string>>(page: JsonPage<Position>): string {
  const cursor = page.next ? encodeCursor(page.next) : null;
  return `{"items":${page.itemsJson},"next_cursor":${JSON.stringify(cursor)}}`;
}

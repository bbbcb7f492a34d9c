/** The window a series covers when the caller leaves `from` out: the last hour. */
export const DEFAULT_SERIES_WINDOW_MS = 3_600_000;
/** Buckets a default step aims at: enough for a chart's width, few enough to send at once. */
export const DEFAULT_SERIES_BUCKETS = 360;

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
/** Steps a default is chosen from, shortest first. */
const NICE_STEPS_MS = [
  ...[1, 5, 10, 15, 30].map((s) => s * SECOND),
  ...[1, 2, 5, 10, 15, 30].map((m) => m * MINUTE),
  ...[1, 2, 3, 6, 12, 24].map((h) => h * HOUR),
  7 * 24 * HOUR,
];

/**
 * The step of a series whose caller gave none: the shortest of the steps above that gives at most
 * `DEFAULT_SERIES_BUCKETS` buckets (or `maxPoints`, if fewer) over `windowMs`; past a week a step,
 * the window divided into that many buckets, in whole seconds.
 */
export function defaultSeriesStep(windowMs: number, maxPoints: number): number {
  const buckets = Math.min(DEFAULT_SERIES_BUCKETS, maxPoints);
  return (
    NICE_STEPS_MS.find((step) => Math.ceil(windowMs / step) <= buckets) ??
    Math.ceil(windowMs / buckets / SECOND) * SECOND
  );
}

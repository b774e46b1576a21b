// Number and label formatting of the Recsys diagnostics page: one place, unit-tested with
// node (tests/test_tensorboard_plugin.py). No DOM here.

/**
 * A number as the page shows it, to `digits` significant digits (3 by default; hover
 * read-outs ask for 6):
 * - integers below 1e9 in full (700 -> "700", 12345 -> "12345"): counts never lose digits;
 * - other values from 1e-3 to 1e6 to `digits` significant digits, never dropping integer
 *   digits (0.125, 1.5, 12.3, 30124), no trailing zeros;
 * - smaller and larger ones in exponent form (3e-7, 2.5e9);
 * - strings ("nan", "inf", "-inf": JSON has no NaN) pass through; NaN/Infinity become those strings.
 */
export function num(x, digits = 3) {
  if (typeof x === 'string') return x;
  if (x === null || x === undefined) return '';
  if (typeof x !== 'number') return String(x);
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return '0';  // also -0
  const a = Math.abs(x);
  if (Number.isInteger(x) && a < 1e9) return String(x);
  if (a >= 1e-3 && a < 1e6) {
    if (a >= 10 ** (digits - 1)) return String(Math.round(x));
    return trimZeros(x.toPrecision(digits));
  }
  const [mantissa, exponent] = x.toExponential(digits - 1).split('e');
  return `${trimZeros(mantissa)}e${Number(exponent)}`;
}

function trimZeros(text) {
  return text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
}

/** Labels of axis ticks: `num`, with as many more digits as it takes to tell the ticks apart. */
export function tickLabels(ticks) {
  let labels = ticks.map((t) => num(t));
  for (let d = 4; d <= 12 && new Set(labels).size < labels.length; d++) labels = ticks.map((t) => num(t, d));
  return labels;
}

/** An epoch index (0-based, as the callbacks write it) as Keras prints it: epoch 1 first. */
export function epochText(epoch) {
  return typeof epoch === 'number' && Number.isFinite(epoch) ? `epoch ${epoch + 1}` : '';
}

/** Where a point is on its x axis: "step 50" or "epoch 2" (an epoch-indexed tag's step is the epoch index). */
export function atText(x, unit) {
  return unit === 'epoch' ? epochText(x) : `step ${num(x)}`;
}

/**
 * The queries of an evaluation, from a group_table record's payload: "943 queries (one per
 * user_id)", "(one per test row)" when query_key is null, just the count when the payload
 * does not say; "" without a count.
 */
export function queriesText(payload) {
  const n = payload ? payload.queries : undefined;
  if (typeof n !== 'number' || !Number.isFinite(n)) return '';
  const count = `${num(n)} ${n === 1 ? 'query' : 'queries'}`;
  if (!payload || !('query_key' in payload)) return count;
  return payload.query_key === null ? `${count} (one per test row)` : `${count} (one per ${payload.query_key})`;
}

/** "averaged over 943 queries (one per user_id)", or "" when the payload has no count. */
export function averagedOver(payload) {
  const q = queriesText(payload);
  return q ? `averaged over ${q}` : '';
}

/** A family's caption (schema `over`) with "{queries}" filled in ("its queries" when unknown). */
export function overText(template, payload) {
  return String(template || '').replace('{queries}', queriesText(payload) || 'its queries');
}

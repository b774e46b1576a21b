// Recsys diagnostics: the front end of the tfrs_diag TensorBoard plugin.
//
// Plain ES modules (no build step): this one draws the page, format.js formats numbers
// and labels, grouping.js decides which tags share a chart, chart.js draws line charts,
// dom.js builds elements. TensorBoard loads this module in an iframe and calls render();
// the plugin's own `page` route does the same outside TensorBoard.
// Every string that comes from the logs (run, tag, group, feature, variable names,
// messages) goes into the page through textContent / createTextNode / attribute
// setters, never through innerHTML, so names like "<img src=x onerror=...>" stay text.
//
// The page: a summary of what is wrong now (one line per active alert, linking to the
// view with its evidence), then the views of the checked runs side by side, then one
// collapsed line naming the views without data and which callback writes each.

import {lineChart} from './chart.js';
import {COLORS, el, legend, svg} from './dom.js';
import {averagedOver, epochText, num, overText} from './format.js';
import {byFirstPart, byMetric, chartGroups} from './grouping.js';
import {diversityMetrics, paretoChart} from './tradeoff.js';

const BASE = new URL('../', import.meta.url);  // the plugin's route: .../data/plugin/<plugin>/
// The summary schema (tag prefixes, families, record types, chart rules, alert views), from
// the `runs` route: the page spells no tag of its own, so it cannot drift from the callbacks.
let SCHEMA = null;
const tagOf = (key) => SCHEMA.tags[key];
const familyPrefix = (name) => SCHEMA.families.find((f) => f.name === name).prefix;
const familyOver = (name) => SCHEMA.families.find((f) => f.name === name).over;

// ------------------------------------------------------------------ helpers

async function getJSON(path, params = {}) {
  const url = new URL(path, BASE);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

const isFiniteNumber = (v) => typeof v === 'number' && Number.isFinite(v);
const tagTail = (tag, prefix) => (tag.startsWith(prefix) ? tag.slice(prefix.length) : tag);
const stepText = (step, epoch) => `step ${num(step)}` + (isFiniteNumber(epoch) ? ` (${epochText(epoch)})` : '');

function table(headers, rows, cellClass, {rowAttrs, cls = ''} = {}) {
  const t = el('table', {class: `tfd-table ${cls}`.trim()});
  t.appendChild(el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', {text: h})))));
  const body = el('tbody');
  rows.forEach((row, i) => {
    const tr = el('tr', rowAttrs ? rowAttrs(i) : {});
    row.forEach((cell, j) => {
      const td = el('td', {}, cell instanceof Node ? cell : String(cell ?? ''));
      const cls = cellClass ? cellClass(i, j) : '';
      if (cls) td.className = cls;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  t.appendChild(body);
  return t;
}

/** A link to a section of the page. It scrolls by script: TensorBoard's plugin frame has a
 * <base href> that would turn "#id" into a navigation away from the page. */
function jump(id, text, attrs = {}) {
  return el('a', {href: `#${id}`, text, ...attrs, onclick: (e) => {
    const target = document.getElementById(id);
    if (!target) return;
    e.preventDefault();
    target.scrollIntoView({block: 'start'});
  }});
}

function jsonBlock(value) {
  return el('pre', {class: 'tfd-json', text: JSON.stringify(value, null, 2)});
}

function select(options, onChange) {
  const s = el('select', {class: 'tfd-select'});
  options.forEach(([value, label]) => s.appendChild(el('option', {value: String(value), text: label})));
  s.addEventListener('change', () => onChange(s.value));
  return s;
}

function recordsOf(data, type) {
  return (data.records[type] || []).slice().sort((a, b) => a.step - b.step);
}

/** The newest per-group table of a run: its payload says how many queries an evaluation has. */
function evaluationPayload(data) {
  const tables = recordsOf(data, 'group_table');
  return tables.length ? tables[tables.length - 1].payload : null;
}

/** Line charts of scalar tags, one per quantity (grouping.js), with their captions. */
function charts(data, tags, {group = byFirstPart, payload = evaluationPayload(data), title, over} = {}) {
  const box = el('div', {class: 'tfd-multiples'});
  for (const g of chartGroups(tags, SCHEMA, group)) box.appendChild(chartOf(data, over ? {...g, over} : g, {payload, title}));
  return box;
}

function chartOf(data, g, {payload = null, title} = {}) {
  const series = g.series.map((s) => ({name: s.name, tag: s.tag, points: data.scalars[s.tag] || []}));
  return lineChart(series, {quantity: g.quantity, x: g.x, domain: g.domain, over: overText(g.over, payload),
                            title: title ? title(g) : null});
}

// ------------------------------------------------------------------ charts not of scalars

/** Bars of one histogram ({step, left, right, counts}). */
function histogramChart(tag, h, {width = 300, height = 110} = {}) {
  const m = {l: 8, r: 8, t: 18, b: 18};
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-chart', role: 'img'});
  root.appendChild(svg('text', {x: m.l, y: 12, class: 'tfd-chart-title'}, `${tagTail(tag, SCHEMA.prefix)} (step ${h.step})`));
  const counts = h.counts.map((c) => (isFiniteNumber(c) ? c : 0));
  const top = Math.max(1e-12, ...counts);
  const n = counts.length || 1, w = (width - m.l - m.r) / n;
  counts.forEach((c, i) => {
    const bh = (c / top) * (height - m.t - m.b);
    const bar = svg('rect', {x: (m.l + i * w).toFixed(1), y: (height - m.b - bh).toFixed(1), width: Math.max(w - 0.5, 0.5).toFixed(1),
                             height: bh.toFixed(1), class: 'tfd-hist'});
    bar.appendChild(svg('title', {}, `[${num(h.left[i])}, ${num(h.right[i])}): ${num(c)}`));
    root.appendChild(bar);
  });
  if (n) {
    root.appendChild(svg('text', {x: m.l, y: height - 4, class: 'tfd-tick'}, num(h.left[0])));
    root.appendChild(svg('text', {x: width - m.r, y: height - 4, class: 'tfd-tick', 'text-anchor': 'end'}, num(h.right[n - 1])));
  }
  return root;
}

function heatmapView(hm) {
  const rows = hm.rows, bins = hm.bins;
  const labelW = 230, rowH = 12;
  const colW = bins.length ? Math.max(3, Math.min(40, 480 / bins.length)) : 1;
  const width = labelW + bins.length * colW + 10, height = 24 + rows.length * rowH;
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-heatmap', role: 'img',
                           'data-quantity': 'gradient norm per layer', 'data-x': 'step'});
  const finite = hm.values.flat().filter(isFiniteNumber).filter((v) => v > 0);
  const lo = finite.length ? Math.log10(Math.min(...finite)) : 0;
  const hi = finite.length ? Math.log10(Math.max(...finite)) : 1;
  root.appendChild(svg('text', {x: labelW, y: 12, class: 'tfd-tick'},
                       `steps ${bins.length ? bins[0][0] : ''}–${bins.length ? bins[bins.length - 1][1] : ''}; ` +
                       `colour: gradient norm ${num(10 ** lo)} (light) … ${num(10 ** hi)} (dark), log scale`));
  rows.forEach((name, r) => {
    const y = 18 + r * rowH;
    const label = svg('text', {x: labelW - 4, y: y + rowH - 3, class: 'tfd-tick', 'text-anchor': 'end'},
                      name.length > 34 ? '…' + name.slice(-33) : name);
    label.appendChild(svg('title', {}, name));
    root.appendChild(label);
    hm.values[r].forEach((v, b) => {
      if (v === null) return;
      const x = labelW + b * colW;
      let fill;
      if (!isFiniteNumber(v)) fill = '#e00';
      else {
        const t = v > 0 && hi > lo ? (Math.log10(v) - lo) / (hi - lo) : 0;
        fill = `hsl(215, 70%, ${Math.round(92 - t * 62)}%)`;
      }
      const rect = svg('rect', {x: x.toFixed(1), y, width: Math.max(colW, 1).toFixed(1), height: rowH - 1, fill,
                                class: isFiniteNumber(v) ? 'tfd-cell' : 'tfd-cell tfd-cell-nonfinite'});
      rect.appendChild(svg('title', {}, `${name}, steps ${bins[b][0]}–${bins[b][1]}: ${num(v)}`));
      root.appendChild(rect);
    });
  });
  return root;
}

function lorenzChart(curves) {
  const size = 220, m = 28;
  const root = svg('svg', {viewBox: `0 0 ${size + m + 8} ${size + m + 8}`, class: 'tfd-lorenz', role: 'img',
                           'data-quantity': 'share of exposure', 'data-x': 'share of items'});
  const X = (v) => m + v * size, Y = (v) => 8 + (1 - v) * size;
  root.appendChild(svg('rect', {x: m, y: 8, width: size, height: size, class: 'tfd-frame'}));
  root.appendChild(svg('line', {x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), class: 'tfd-equality'}));
  root.appendChild(svg('text', {x: m, y: size + 24, class: 'tfd-tick'}, 'share of items (least exposed first) →'));
  root.appendChild(svg('text', {x: 10, y: size, class: 'tfd-tick', transform: `rotate(-90 10 ${size})`}, 'share of exposure →'));
  curves.forEach((c, i) => {
    const line = svg('polyline', {points: c.x.map((x, j) => `${X(x).toFixed(1)},${Y(c.y[j]).toFixed(1)}`).join(' '),
                                  fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2});
    line.appendChild(svg('title', {}, `top-${c.k}: Gini ${num(c.gini)}`));
    root.appendChild(line);
  });
  return root;
}

// ------------------------------------------------------------------ views

// What each view says when no checked run has its data (tags from the schema).
const EMPTY = {
  alerts: () => 'GradientStatistics writes nonfinite / exploding / vanishing gradient alerts, BeyondAccuracy ' +
          'fairness_gap and exposure_concentration, OverfittingMonitor over- and underfitting and embedding ' +
          `alerts, all at ${tagOf('alerts')}.`,
  gradients: () => 'GradientStatistics(log_dir) writes per-layer gradient norms ' +
             `(${familyPrefix('grad')}...) every every_n_steps steps; the noise scale needs two or more replicas.`,
  overfitting: () => 'OverfittingMonitor writes train/validation curves per epoch and probe curves ' +
               `under ${familyPrefix('overfit')}.`,
  embeddings: () => `GradientStatistics and OverfittingMonitor write embedding-table statistics under ${familyPrefix('embed')}.`,
  fairness: () => 'BeyondAccuracy(log_dir, data, candidates, user_group_keys=...) writes ' +
            `${tagOf('fair_groups')} after each evaluation.`,
  exposure: () => 'BeyondAccuracy writes the Lorenz curve of item exposure ' +
            `(${tagOf('fair_exposure_lorenz')}) and item-group shares after each evaluation.`,
  diversity: () => `BeyondAccuracy writes ${familyPrefix('div')}... after each evaluation.`,
  accuracy: () => `BeyondAccuracy writes ${familyPrefix('rank')}... after each evaluation.`,
  explanations: () => 'The explainer writes attribution tables of the probe examples at ' +
                `${tagOf('explain_attributions')}.`,
  tradeoff: () => 'BeyondAccuracy(..., reranker=tfrs_diag.layers.MMR(), sweep=[...]) writes the accuracy / ' +
            `diversity trade-off of the re-ranker's knob at ${tagOf('div_pareto')} after each evaluation.`,
};

function alertsView(data) {
  const alerts = data.alerts;
  if (!alerts.length) return null;
  const box = el('div');
  const counts = {};
  for (const a of alerts) {
    const key = a.status === 'cleared' ? 'cleared' : a.severity;
    counts[key] = (counts[key] || 0) + 1;
  }
  box.appendChild(el('div', {class: 'tfd-badges'}, ...Object.entries(counts).map(([k, n]) =>
    el('span', {class: `tfd-badge tfd-sev-${k}`, text: `${n} ${k}`}))));
  // Timeline: one mark per alert at its step, by severity; cleared ones hollow.
  const width = 640, height = 70;
  const steps = alerts.map((a) => Number(a.step) || 0);
  const s0 = Math.min(...steps), s1 = Math.max(...steps) === s0 ? s0 + 1 : Math.max(...steps);
  const tl = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-timeline', role: 'img'});
  tl.appendChild(svg('line', {x1: 10, y1: 50, x2: width - 10, y2: 50, class: 'tfd-axis'}));
  tl.appendChild(svg('text', {x: 10, y: 66, class: 'tfd-tick'}, `step ${s0}`));
  tl.appendChild(svg('text', {x: width - 10, y: 66, class: 'tfd-tick', 'text-anchor': 'end'}, `step ${s1}`));
  const lane = {critical: 14, warning: 26, info: 38};
  alerts.forEach((a) => {
    const x = 10 + ((Number(a.step) - s0) / (s1 - s0)) * (width - 20);
    const cleared = a.status === 'cleared';
    const mark = svg('circle', {cx: x.toFixed(1), cy: cleared ? 44 : (lane[a.severity] || 38), r: 5,
                                class: `tfd-mark tfd-sev-${cleared ? 'cleared' : a.severity}`});
    mark.appendChild(svg('title', {}, `${a.kind} (${a.subject}) at step ${a.step}: ${a.message}`));
    tl.appendChild(mark);
  });
  box.appendChild(tl);
  const rows = alerts.map((a) => [
    stepText(a.step, a.epoch),
    a.status === 'cleared' ? 'cleared' : a.severity, a.kind, a.subject,
    el('div', {}, el('div', {text: a.message}),
       el('details', {}, el('summary', {text: 'evidence'}), jsonBlock(a.evidence || {})))]);
  box.appendChild(table(['at', 'severity', 'kind', 'subject', 'message and evidence'], rows,
    (i, j) => (j === 1 ? `tfd-sev-${alerts[i].status === 'cleared' ? 'cleared' : alerts[i].severity}` :
               j === 4 ? 'tfd-message' : ''), {cls: 'tfd-text-table'}));
  return box;
}

function gradientsView(data) {
  const hm = data.gradients.layer_norm;
  const s = data.scalars;
  const scalarTags = [tagOf('grad_global_norm'), tagOf('grad_noise_scale')].filter((t) => s[t]);
  if (!hm.rows.length && !scalarTags.length) return null;
  const box = el('div');
  if (hm.rows.length) {
    box.appendChild(el('h4', {text: 'Gradient norm per layer'}));
    box.appendChild(el('div', {class: 'tfd-over', text: `${familyOver('grad')}; each cell the largest reading in its step bin ` +
                                                      '(a spike shows); red: NaN/Inf'}));
    box.appendChild(heatmapView(hm));
    if (hm.nonfinite.length) {
      const first = hm.nonfinite.reduce((a, b) => (b[1] < a[1] ? b : a));
      box.appendChild(el('div', {class: 'tfd-warn',
        text: `Non-finite gradient norms: ${hm.nonfinite.length} readings, first at step ${first[1]} in ${hm.rows[first[0]]}`}));
    }
  }
  const names = {[tagOf('grad_global_norm')]: 'global gradient norm', [tagOf('grad_noise_scale')]: 'gradient noise scale B_simple (examples)'};
  const multiples = el('div', {class: 'tfd-multiples'});
  for (const g of chartGroups(scalarTags, SCHEMA, (rest) => ({key: rest, quantity: names[familyPrefix('grad') + rest] || rest, series: rest}))) {
    multiples.appendChild(chartOf(data, g));
  }
  if (!s[tagOf('grad_noise_scale')]) {
    multiples.appendChild(el('div', {class: 'tfd-note', text: 'Noise scale: written with two or more replicas (MirroredStrategy).'}));
  }
  box.appendChild(multiples);
  const histograms = Object.entries(data.histograms);
  if (histograms.length) {
    const details = el('details', {}, el('summary', {text: `Newest histograms (${histograms.length}): gradient values, embedding row norms (log10)`}),
                       el('div', {class: 'tfd-over', text: 'the newest reading of each tag: how many entries fall in each bin'}));
    const box2 = el('div', {class: 'tfd-multiples'});
    for (const [tag, h] of histograms) box2.appendChild(el('div', {class: 'tfd-multiple'}, histogramChart(tag, h)));
    details.appendChild(box2);
    box.appendChild(details);
  }
  if (data.gradients.variables) {
    const holder = el('div', {class: 'tfd-multiples'});
    const button = el('button', {class: 'tfd-button', text: `Gradient norm of each of the ${data.gradients.variables} variables`});
    button.addEventListener('click', async () => {
      button.disabled = true;
      holder.textContent = 'Loading…';
      try {
        const body = await getJSON('scalars', {run: data.run, prefix: tagOf('grad_norm'), max_points: 200});
        holder.textContent = '';
        for (const tag of Object.keys(body.scalars).sort()) {
          holder.appendChild(lineChart([{name: 'norm', tag, points: body.scalars[tag]}],
            {quantity: 'gradient norm', title: tagTail(tag, tagOf('grad_norm')), over: familyOver('grad')}));
        }
      } catch (e) {
        holder.textContent = `Could not load: ${e.message}`;
      }
    });
    box.appendChild(el('div', {}, button, holder));
  }
  return box;
}

const byTag = (rest) => ({key: rest, quantity: rest, series: rest.slice(rest.lastIndexOf('/') + 1)});

function overfittingView(data) {
  const tags = Object.keys(data.scalars).filter((t) => t.startsWith(familyPrefix('overfit')));
  if (!tags.length) return null;
  const epochPrefix = tagOf('overfit_epoch'), probePrefix = tagOf('overfit_probe');
  // Unknown tags get a chart each: nothing says two of them are one quantity.
  const groups = chartGroups(tags, SCHEMA, byTag);
  const isEpoch = (g) => g.prefix === epochPrefix, isProbe = (g) => g.prefix === probePrefix;
  const isTrend = (g) => g.prefix !== epochPrefix && g.prefix.startsWith(epochPrefix);
  const box = el('div');
  const row = (gs) => el('div', {class: 'tfd-multiples'}, ...gs.map((g) => chartOf(data, g)));
  const epoch = groups.filter(isEpoch);
  if (epoch.length) {
    // The loss first, a row per metric (curves, gap, relative gap); other metrics folded.
    const names = [...new Set(epoch.map((g) => g.name))].sort((a, b) => (b === 'loss') - (a === 'loss'));
    box.appendChild(el('h4', {text: 'Train vs. validation per epoch'}));
    box.appendChild(row(epoch.filter((g) => g.name === names[0])));
    if (names.length > 1) {
      const details = el('details', {}, el('summary', {text: `Other epoch metrics: ${names.slice(1).join(', ')}`}));
      for (const n of names.slice(1)) details.appendChild(row(epoch.filter((g) => g.name === n)));
      box.appendChild(details);
    }
  }
  const trend = groups.filter(isTrend);
  if (trend.length) {
    box.appendChild(el('h4', {text: 'Trend tests over the recent epochs'}));
    box.appendChild(row(trend));
  }
  const probe = groups.filter(isProbe);
  if (probe.length) {
    box.appendChild(el('h4', {text: 'Probes during training'}));
    box.appendChild(row(probe));
  }
  const other = groups.filter((g) => !isEpoch(g) && !isTrend(g) && !isProbe(g));
  if (other.length) {
    box.appendChild(el('h4', {text: 'Other overfitting scalars'}));
    box.appendChild(row(other));
  }
  return box;
}

function embeddingsView(data) {
  const tags = Object.keys(data.scalars).filter((t) => t.startsWith(familyPrefix('embed')));
  if (!tags.length) return null;
  // One chart per statistic, a line per table.
  return charts(data, tags);
}

function scalarFamilyView(data, family) {
  const tags = Object.keys(data.scalars).filter((t) => t.startsWith(familyPrefix(family)));
  if (!tags.length) return null;
  return charts(data, tags, {group: byMetric});
}

/** A selector of evaluations (latest first) and the view of the chosen one. */
function perEvaluation(records, renderOne) {
  const box = el('div');
  const holder = el('div');
  const labelOf = (r) => `${r.payload.epoch !== undefined ? `${epochText(r.payload.epoch)}, ` : ''}step ${r.step}` +
                         (r.tag ? ` (${r.tag})` : '');
  const show = (i) => { holder.textContent = ''; holder.appendChild(renderOne(records[i])); };
  if (records.length > 1) {
    const options = records.map((r, i) => [i, labelOf(r)]).reverse();
    box.appendChild(el('label', {class: 'tfd-label'}, 'evaluation: ', select(options, (v) => show(Number(v)))));
  } else {
    box.appendChild(el('div', {class: 'tfd-note', text: labelOf(records[0])}));
  }
  box.appendChild(holder);
  show(records.length - 1);
  return box;
}

/**
 * A table of rows (objects) with the best and worst value of every numeric column marked,
 * (unless not `marks`), a gap row (max - min) and a ratio row (min / max, flagged under
 * `ratioWarn`), and, with a `baseline` row (all queries), each group's difference to it.
 */
function groupTable(rows, columns, {ratioWarn = 0.8, baseline = null, marks = true} = {}) {
  const headers = ['group', ...columns];
  const rel = (v, b) => (isFiniteNumber(v) && isFiniteNumber(b) && b > 0 ? v / b - 1 : null);
  const cell = (r, c) => {
    const value = el('span', {class: 'tfd-value', text: num(r[c])});
    const d = baseline && c !== 'count' ? rel(r[c], baseline[c]) : null;
    if (d === null) return value;
    const pct = Math.round(d * 100);
    return el('span', {}, value, el('span', {class: 'tfd-rel', text: ` ${pct > 0 ? '+' : pct < 0 ? '−' : '±'}${Math.abs(pct)}%`}));
  };
  const body = rows.map((r) => [String(r.group), ...columns.map((c) => cell(r, c))]);
  const present = rows.map((r) => (r.count === undefined ? true : r.count > 0));
  const best = {}, worst = {};
  columns.forEach((c, j) => {
    const vals = rows.map((r, i) => (present[i] && isFiniteNumber(r[c]) ? r[c] : null));
    const ok = vals.filter((v) => v !== null);
    if (ok.length < 2 || c === 'count') return;
    best[j] = vals.indexOf(Math.max(...ok));
    worst[j] = vals.indexOf(Math.min(...ok));
  });
  // Gap row: max - min and min/max; flagged when min/max < ratioWarn (the alert's default).
  const gapRow = ['gap (max − min)'], ratioRow = ['min / max'];
  const flagged = new Set();
  columns.forEach((c, j) => {
    if (best[j] === undefined) { gapRow.push(''); ratioRow.push(''); return; }
    const hi = rows[best[j]][c], lo = rows[worst[j]][c];
    gapRow.push(num(hi - lo));
    const ratio = hi > 0 ? lo / hi : 1;
    ratioRow.push(num(ratio));
    if (ratio < ratioWarn) flagged.add(j + 1);
  });
  const top = baseline ? [[baseline.group, ...columns.map((c) => num(baseline[c]))]] : [];
  const all = [...top, ...body, gapRow, ratioRow];
  return table(headers, all, (i, j) => {
    if (i < top.length) return 'tfd-baseline';
    i -= top.length;
    if (i >= rows.length) return flagged.has(j) ? 'tfd-gap tfd-gap-flagged' : 'tfd-gap';
    if (j === 0 || !marks) return '';
    if (best[j - 1] === i) return 'tfd-best';
    if (worst[j - 1] === i) return flagged.has(j) ? 'tfd-worst tfd-gap-flagged' : 'tfd-worst';
    return '';
  }, {rowAttrs: (i) => (i < top.length ? {class: 'tfd-baseline-row'} : i - top.length < rows.length ?
                                           {'data-group': String(rows[i - top.length].group)} : {})});
}

/** The all-queries row of an evaluation: its accuracy scalars at the record's step (Fairness Indicators' "overall"). */
function baselineRow(data, record, columns) {
  const row = {group: 'all queries', count: record.payload.queries};
  let found = false;
  for (const c of columns) {
    const points = data.scalars[familyPrefix('rank') + c] || [];
    const p = points.find((q) => q[0] === record.step);
    if (p) { row[c] = p[1]; found = true; }
  }
  return found ? row : null;
}

function fairnessView(data) {
  const records = recordsOf(data, 'group_table');
  const gapRe = /^(.*)\/(.*)_at_(\d+)_gap$/;
  const fair = familyPrefix('fair');
  const gaps = Object.keys(data.scalars).filter((t) => t.startsWith(fair) && gapRe.test(tagTail(t, fair)));
  if (!records.length && !gaps.length) return null;
  const box = el('div');
  if (records.length) {
    box.appendChild(perEvaluation(records, (r) => {
      const p = r.payload;
      const out = el('div');
      const over = averagedOver(p);
      out.appendChild(el('div', {class: 'tfd-over', text: `Each metric ${over || 'averaged over the evaluation\'s queries'}` +
        `; a group's row over its own queries (count); K = ${(p.ks || []).join(', ')}` +
        (p.missing_positives ? `; ${p.missing_positives} positives not in the candidates` : '')}));
      for (const [key, rows] of Object.entries(p.user_groups || {})) {
        const columns = rows.length ? Object.keys(rows[0]).filter((c) => c !== 'group') : [];
        out.appendChild(el('h4', {text: `by ${key}`}));
        const table = groupTable(rows, columns, {baseline: baselineRow(data, r, columns)});
        table.setAttribute('data-key', key);
        out.appendChild(table);
      }
      if (!Object.keys(p.user_groups || {}).length) out.appendChild(el('div', {class: 'tfd-note', text: 'No user groups: pass user_group_keys to BeyondAccuracy.'}));
      return out;
    }));
    box.appendChild(el('div', {class: 'tfd-note', text: 'Green: best group of a column, red: worst; "±N%": the ' +
      'group against all queries; a column is flagged when its worst group gets under 0.8 of the best.'}));
  }
  if (gaps.length) {
    box.appendChild(el('h4', {text: 'User-group gaps over evaluations'}));
    box.appendChild(charts(data, gaps, {over: 'per evaluation: the best group minus the worst, each averaged over its own ' +
                                              'queries ({queries} in all)', group: (rest) => {
      const m = gapRe.exec(rest);
      return {key: `${m[1]}/${m[2]}`, quantity: `${m[2]} gap across ${m[1]} (max − min)`, series: `@${m[3]}`};
    }}));
  }
  // Each group's metric over evaluations: tags <key>/<metric>/<group> of the tables' user-group keys.
  const keys = new Set(records.flatMap((r) => Object.keys(r.payload.user_groups || {})));
  const perGroup = Object.keys(data.scalars).filter((t) => {
    const parts = tagTail(t, fair).split('/');
    return t.startsWith(fair) && parts.length >= 3 && keys.has(parts[0]);
  });
  if (perGroup.length) {
    const details = el('details', {}, el('summary', {text: 'Each group over evaluations'}));
    details.appendChild(charts(data, perGroup, {over: 'per evaluation, averaged over the group\'s queries', group: (rest) => {
      const [key, metric, ...group] = rest.split('/');
      return {key: `${key}/${metric}`, quantity: `${metric} by ${key}`, series: group.join('/')};
    }}));
    box.appendChild(details);
  }
  return box;
}

function exposureView(data) {
  const lorenz = recordsOf(data, 'lorenz');
  const tables = recordsOf(data, 'group_table').filter((r) => (r.payload.item_groups || []).length);
  const gini = Object.keys(data.scalars).filter((t) => t.startsWith(tagOf('fair_exposure_gini')));
  if (!lorenz.length && !tables.length && !gini.length) return null;
  const box = el('div');
  const over = overText(familyOver('fair'), evaluationPayload(data));
  if (lorenz.length) {
    box.appendChild(perEvaluation(lorenz, (r) => {
      const curves = r.payload.curves || [];
      return el('div', {}, el('div', {class: 'tfd-over', text: `Lorenz curve of position-discounted item exposure: ${over}`}),
                el('div', {class: 'tfd-row'}, lorenzChart(curves), legend(curves.map((c) => `top-${c.k}: Gini ${num(c.gini)}`))));
    }));
  }
  if (tables.length) {
    box.appendChild(el('h4', {text: 'Item-group exposure share vs. share of relevant items (disparity 1 = parity)'}));
    box.appendChild(perEvaluation(tables, (r) => {
      const rows = r.payload.item_groups;
      const columns = Object.keys(rows[0]).filter((c) => c !== 'group');
      return el('div', {}, el('div', {class: 'tfd-over', text: overText(familyOver('fair'), r.payload)}),
                // Neither the most nor the least exposed group is "best": parity is 1.
                groupTable(rows, columns, {ratioWarn: 0, marks: false}));
    }));
  }
  if (gini.length) box.appendChild(charts(data, gini, {group: byMetric}));
  return box;
}

function tradeoffView(data) {
  const records = recordsOf(data, 'pareto');
  if (!records.length) return null;
  return perEvaluation(records, (r) => {
    const p = r.payload, rows = p.rows || [], k = (p.ks || [])[0];
    const metrics = diversityMetrics(rows, k);
    const holder = el('div', {class: 'tfd-pareto-holder'});
    const draw = (x) => { holder.textContent = ''; holder.appendChild(paretoChart(rows, {k, x, knob: p.knob})); };
    const box = el('div', {}, el('div', {class: 'tfd-over', text: `${p.reranker ?? 're-ranker'}: ${rows.length} ` +
                                                              `values of ${p.knob ?? 'its knob'}, at K = ${k}`}));
    if (metrics.length > 1) {
      box.appendChild(el('label', {class: 'tfd-label'}, 'diversity axis: ',
                         select(metrics.map((m) => [m, `${m}@${k}`]), draw)));
    }
    box.appendChild(holder);
    draw(metrics[0] || 'coverage');
    const columns = Object.keys(rows[0] || {}).filter((c) => c !== 'knob');
    box.appendChild(table(columns.map((c) => (c === 'value' ? p.knob ?? c : c)),
                          rows.map((row) => columns.map((c) => num(row[c])))));
    return box;
  });
}

function explanationsView(data) {
  const records = recordsOf(data, 'attribution_table');
  if (!records.length) return null;
  const box = el('div');
  box.appendChild(perEvaluation(records, (r) => {
    const p = r.payload;
    const groups = (p.group_names || []).map(String);
    const values = p.values || [];
    const maxAbs = Math.max(1e-12, ...values.flat().filter(isFiniteNumber).map(Math.abs));
    const headers = ['example', ...groups, 'base value', 'output'];
    const rows = values.map((row, i) => {
      const cells = row.map((v) => {
        const bar = el('span', {class: v >= 0 ? 'tfd-bar tfd-bar-pos' : 'tfd-bar tfd-bar-neg'});
        bar.style.width = `${Math.round((Math.abs(Number(v)) / maxAbs) * 100)}%`;
        return el('div', {class: 'tfd-barcell'}, bar, el('span', {class: 'tfd-barlabel', text: num(v)}));
      });
      const label = p.examples && p.examples[i] !== undefined ? String(p.examples[i]) : `#${i}`;
      const output = Array.isArray(p.outputs) ? num(p.outputs[i]) : '';
      return [label, ...cells, num(Array.isArray(p.base_value) ? p.base_value[i] : p.base_value), output];
    });
    return el('div', {}, el('div', {class: 'tfd-over', text: `method: ${p.method ?? '?'}; ${values.length} probe ` +
                                                           'examples, one row each (red: raises the score, blue: lowers it)'}),
              table(headers, rows));
  }));
  box.appendChild(el('div', {class: 'tfd-note', text: `The explainer's bar chart image (${tagOf('explain_bar_chart')}) is in the Images dashboard.`}));
  return box;
}

function otherRecordsView(data) {
  const types = Object.keys(data.records).filter((t) => !SCHEMA.record_types.includes(t));
  if (!types.length) return null;
  const box = el('div');
  for (const type of types) {
    for (const r of recordsOf(data, type).slice(-5)) {
      box.appendChild(el('details', {}, el('summary', {text: `${r.tag} (${type}) at step ${r.step}`}), jsonBlock(r.payload)));
    }
  }
  return box;
}

/** Records of this run the server could not decode (damaged event files are listed at the top). */
function skippedRecordsView(data) {
  const records = (data.skipped || []).filter((e) => e.kind === 'record');
  if (!records.length) return null;
  return table(['record', 'why it was skipped'], records.map((e) => [e.file, e.reason]));
}

/** The event files the server could not read whole: shown once, above the runs. */
function skippedFilesNote(skipped) {
  if (!skipped || !skipped.length) return null;
  const box = el('div', {class: 'tfd-warn tfd-skipped'},
                 el('div', {text: `${skipped.length} event file(s) could not be read whole; everything readable is shown:`}));
  box.appendChild(el('ul', {}, ...skipped.map((e) => el('li', {text: `${e.run}/${e.file}: ${e.reason}`}))));
  return box;
}

function otherScalarsView(data) {
  const covered = ['grad', 'overfit', 'embed', 'fair', 'div', 'rank'].map(familyPrefix);  // the views above
  const tags = Object.keys(data.scalars).filter((t) => !covered.some((c) => t.startsWith(c)));
  if (!tags.length) return null;
  return charts(data, tags);
}

// Views whose tables are wide show runs one under the other, the others side by side.
const STACKED = new Set(['alerts', 'fairness', 'explanations']);
const WIDE = new Set(['overfitting']);

// [id, title, view]; the schema's alert_views name these ids.
// The evidence first (the summary links there), then every alert as it fired and cleared.
const VIEWS = [
  ['gradients', 'Gradient health', gradientsView],
  ['overfitting', 'Overfitting', overfittingView],
  ['embeddings', 'Embedding tables', embeddingsView],
  ['fairness', 'Fairness by user group', fairnessView],
  ['exposure', 'Exposure', exposureView],
  ['accuracy', 'Top-K accuracy', (d) => scalarFamilyView(d, 'rank')],
  ['diversity', 'Diversity & coverage', (d) => scalarFamilyView(d, 'div')],
  ['tradeoff', 'Re-ranking trade-off', tradeoffView],
  ['explanations', 'Explanations', explanationsView],
  ['alerts', 'Alert history', alertsView],
  ['records', 'Other records', otherRecordsView],
  ['scalars', 'Other scalars', otherScalarsView],
  ['skipped', 'Unreadable records', skippedRecordsView],
];
const TITLE = Object.fromEntries(VIEWS.map(([id, title]) => [id, title]));

// ------------------------------------------------------------------ the summary

/** What is wrong now in the checked runs: one line per active alert, worst first, linked to its evidence. */
function summaryView(results, drawnViews) {
  const rank = Object.fromEntries(SCHEMA.severities.map((s, i) => [s, i]));
  const active = results.flatMap(({run, data}) => (data ? data.active_alerts.map((a) => ({...a, run})) : []));
  active.sort((a, b) => (rank[b.severity] ?? 0) - (rank[a.severity] ?? 0) || (a.since_step ?? 0) - (b.since_step ?? 0));
  const fired = results.reduce((n, {data}) => n + (data ? data.alert_counts.fired : 0), 0);
  const cleared = results.reduce((n, {data}) => n + (data ? data.alert_counts.cleared : 0), 0);
  const section = el('section', {class: 'tfd-summary', id: 'tfd-summary'});
  const history = drawnViews.has('alerts') ? jump('tfd-alerts', 'Alert history') : 'Alert history';
  // A run that did not load is not a run without problems.
  const failed = results.filter((r) => !r.data).map((r) => r.run);
  if (failed.length) {
    const why = results.find((r) => r.error).error.message;
    section.appendChild(el('div', {class: 'tfd-warn tfd-failed', text: `Could not load ${failed.join(', ')} (${why}): ` +
      (failed.length === results.length ? 'nothing to summarise.' : 'left out of the summary and the views.')}));
    if (failed.length === results.length) return section;
  }
  if (!active.length) {
    if (!failed.length) section.classList.add('tfd-summary-ok');
    const counts = fired ? `${fired} alert${fired === 1 ? '' : 's'} fired, ${cleared} cleared` : 'no alert has fired';
    section.appendChild(el('div', {class: 'tfd-summary-line'}, `Nothing needs attention: no active alert in the checked runs (${counts}).`));
    return section;
  }
  section.appendChild(el('h2', {text: `What needs attention: ${active.length} active problem${active.length === 1 ? '' : 's'}`}));
  const rows = active.map((a) => {
    const view = SCHEMA.alert_views[a.kind];
    const target = drawnViews.has(view) ? view : 'alerts';
    return [a.severity, a.kind, a.subject, a.run, stepText(a.since_step, a.since_epoch), a.message,
            jump(`tfd-${target}`, `${TITLE[target]} →`, {class: 'tfd-look', 'data-view': target})];
  });
  section.appendChild(table(['severity', 'problem', 'subject', 'run', 'since', 'what to try', 'evidence'], rows,
    (i, j) => (j === 0 ? `tfd-sev-${active[i].severity}` : j === 4 ? 'tfd-since' : j === 5 ? 'tfd-message' : ''),
    {cls: 'tfd-text-table', rowAttrs: (i) => ({'data-kind': active[i].kind, 'data-subject': active[i].subject, 'data-run': active[i].run,
                         'data-severity': active[i].severity})}));
  const closed = fired - active.length;
  section.appendChild(el('div', {class: 'tfd-note'},
    `${fired} alert${fired === 1 ? '' : 's'} fired in the checked runs, ${cleared} cleared` +
    (closed > 0 ? '; the ones no longer active are in the ' : '; every one is in the '), history, '.'));
  return section;
}

// ------------------------------------------------------------------ page

let rendering = 0;  // the latest showRuns call: an older one still loading must not draw over it

async function showRuns(main, runs) {
  const me = ++rendering;
  main.textContent = '';
  if (!runs.length) {
    main.appendChild(el('div', {class: 'tfd-empty', text: 'Select a run.'}));
    return;
  }
  const loading = el('div', {class: 'tfd-note', text: 'Loading…'});
  main.appendChild(loading);
  const results = await Promise.all(runs.map((run) => getJSON('overview', {run}).then(
    (data) => ({run, data}), (error) => ({run, error}))));
  if (me !== rendering) return;
  loading.remove();
  const sections = [], empty = [];
  // A run that could not load is named once, in the summary, not in every view.
  const loaded = results.filter((r) => r.data);
  for (const [id, title, view] of VIEWS) {
    const drawn = loaded.map(({run, data}) => {
      let content;
      try {
        content = view(data);
      } catch (e) {
        content = el('div', {class: 'tfd-warn', text: `Could not draw this view: ${e.message}`});
      }
      return {run, content};
    });
    const withData = drawn.filter((d) => d.content);
    if (!withData.length) {
      if (EMPTY[id]) empty.push(id);
      continue;
    }
    const without = drawn.filter((d) => !d.content).map((d) => d.run);
    const section = el('section', {class: 'tfd-section', id: `tfd-${id}`}, el('h2', {text: title}));
    const panels = withData.map(({run, content}) =>
      el('div', {class: 'tfd-panel', 'data-run': run}, el('div', {class: 'tfd-run', text: run}), content));
    const row = el('div', {class: 'tfd-panels'}, ...panels);
    // Side by side while each run gets room for two charts (three for a metric's curves and gaps), else stacked.
    const min = WIDE.has(id) ? 960 : 640;
    row.style.gridTemplateColumns = STACKED.has(id) ? '1fr' : `repeat(auto-fit, minmax(min(100%, ${min}px), 1fr))`;
    section.appendChild(row);
    if (without.length) section.appendChild(el('div', {class: 'tfd-note tfd-without', text: `No data in ${without.join(', ')}.`}));
    sections.push([id, section]);
  }
  const drawnViews = new Set(sections.map(([id]) => id));
  main.appendChild(summaryView(results, drawnViews));
  if (sections.length) {
    main.appendChild(el('nav', {class: 'tfd-nav'}, 'Views: ', ...sections.flatMap(([id], i) =>
      [i ? ' · ' : '', jump(`tfd-${id}`, TITLE[id])])));
  }
  for (const [, section] of sections) main.appendChild(section);
  // Views no checked run has data for: one folded line, each with the callback that writes it.
  if (empty.length) {
    const details = el('details', {class: 'tfd-empty-views', id: 'tfd-empty-views'},
                       el('summary', {text: `No data yet in the checked runs: ${empty.map((id) => TITLE[id]).join(', ')}`}));
    details.appendChild(el('ul', {}, ...empty.map((id) =>
      el('li', {'data-view': id}, el('b', {text: `${TITLE[id]}: `}), EMPTY[id]()))));
    main.appendChild(details);
  }
}

export async function render() {
  document.head.appendChild(el('link', {rel: 'stylesheet', href: new URL('style.css', import.meta.url).href}));
  const root = el('div', {class: 'tfd'});
  document.body.appendChild(root);
  root.appendChild(el('h1', {text: 'Recsys diagnostics'}));
  let runs, listing;
  try {
    listing = await getJSON('runs');
    runs = Object.keys(listing.runs);
    SCHEMA = listing.schema;
  } catch (e) {
    root.appendChild(el('div', {class: 'tfd-warn', text: `Could not list runs: ${e.message}`}));
    return;
  }
  const skippedNote = skippedFilesNote(listing.skipped);
  if (skippedNote) root.appendChild(skippedNote);
  if (!runs.length) {
    root.appendChild(el('div', {class: 'tfd-empty', text: 'No tfrs_diag data in this logdir yet. Add tfrs_diag.callbacks.GradientStatistics ' +
      '(gradient health and alerts) and tfrs_diag.callbacks.BeyondAccuracy (accuracy, fairness, exposure, diversity) ' +
      'to model.fit(..., callbacks=[...]) with log_dir inside this logdir, then reload.'}));
    return;
  }
  const main = el('main');
  const picker = el('div', {class: 'tfd-runs'}, el('span', {text: 'Runs (side by side): '}));
  const MAX_CHECKED = 6;  // every run of a usual logdir; more would make the columns too narrow
  const boxes = runs.map((run, i) => {
    const box = el('input', {type: 'checkbox', value: run});
    box.checked = i < MAX_CHECKED;
    box.addEventListener('change', () => showRuns(main, boxes.filter((b) => b.checked).map((b) => b.value)));
    picker.appendChild(el('label', {class: 'tfd-run-choice'}, box, run));
    return box;
  });
  root.appendChild(picker);
  root.appendChild(main);
  await showRuns(main, boxes.filter((b) => b.checked).map((b) => b.value));
}

// Recsys diagnostics: the front end of the tfrs_diag TensorBoard plugin.
//
// A plain ES module (no build step). TensorBoard loads it in an iframe and calls
// render(); the plugin's own `page` route does the same outside TensorBoard.
// Every string that comes from the logs (run, tag, group, feature, variable names,
// messages) goes into the page through textContent / createTextNode / attribute
// setters, never through innerHTML, so names like "<img src=x onerror=...>" stay text.

const BASE = new URL('../', import.meta.url);  // the plugin's route: .../data/plugin/<plugin>/
const SVG = 'http://www.w3.org/2000/svg';
// The summary schema (tag prefixes, families, record types), from the `runs` route: the
// page spells no tag of its own, so it cannot drift from what the callbacks write.
let SCHEMA = null;
const tagOf = (key) => SCHEMA.tags[key];
const familyPrefix = (name) => SCHEMA.families.find((f) => f.name === name).prefix;
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

// ------------------------------------------------------------------ DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

async function getJSON(path, params = {}) {
  const url = new URL(path, BASE);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function num(x) {
  if (typeof x === 'string') return x;  // "nan", "inf", "-inf"
  if (x === null || x === undefined) return '';
  if (typeof x !== 'number') return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1e-2 && a < 1e4 ? x.toPrecision(3).replace(/\.?0+$/, '') : x.toExponential(2);
}

const isFiniteNumber = (v) => typeof v === 'number' && Number.isFinite(v);

function tagTail(tag, prefix) {
  return tag.startsWith(prefix) ? tag.slice(prefix.length) : tag;
}

function emptyState(message) {
  return el('div', {class: 'tfd-empty', text: message});
}

function table(headers, rows, cellClass) {
  const t = el('table', {class: 'tfd-table'});
  t.appendChild(el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', {text: h})))));
  const body = el('tbody');
  rows.forEach((row, i) => {
    const tr = el('tr');
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

function jsonBlock(value) {
  return el('pre', {class: 'tfd-json', text: JSON.stringify(value, null, 2)});
}

function select(options, onChange) {
  const s = el('select', {class: 'tfd-select'});
  options.forEach(([value, label]) => s.appendChild(el('option', {value: String(value), text: label})));
  s.addEventListener('change', () => onChange(s.value));
  return s;
}

// ------------------------------------------------------------------ charts

/** A line chart of [{name, points: [[step, value]]}]; non-finite points are red marks at the top. */
function lineChart(series, {title = '', width = 420, height = 160, xLabel = 'step', domainY = null, logY = false} = {}) {
  const m = {l: 48, r: 8, t: 18, b: 22};
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-chart', role: 'img'});
  if (title) root.appendChild(svg('text', {x: m.l, y: 12, class: 'tfd-chart-title'}, title));
  const finite = series.flatMap((s) => s.points.filter((p) => isFiniteNumber(p[1]) && (!logY || p[1] > 0)));
  const all = series.flatMap((s) => s.points);
  if (!all.length) return root;
  const tx = (v) => (logY ? Math.log10(v) : v);
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = domainY || (finite.length ? [Math.min(...finite.map((p) => tx(p[1]))),
                                              Math.max(...finite.map((p) => tx(p[1])))] : [0, 1]);
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (v) => height - m.b - ((v - y0) / (y1 - y0)) * (height - m.t - m.b);
  root.appendChild(svg('line', {x1: m.l, y1: height - m.b, x2: width - m.r, y2: height - m.b, class: 'tfd-axis'}));
  root.appendChild(svg('line', {x1: m.l, y1: m.t, x2: m.l, y2: height - m.b, class: 'tfd-axis'}));
  const yText = (v) => (logY ? `1e${v.toFixed(1)}` : num(v));
  root.appendChild(svg('text', {x: m.l - 3, y: m.t + 8, class: 'tfd-tick', 'text-anchor': 'end'}, yText(y1)));
  root.appendChild(svg('text', {x: m.l - 3, y: height - m.b, class: 'tfd-tick', 'text-anchor': 'end'}, yText(y0)));
  root.appendChild(svg('text', {x: m.l, y: height - 6, class: 'tfd-tick'}, `${num(x0)}`));
  root.appendChild(svg('text', {x: width - m.r, y: height - 6, class: 'tfd-tick', 'text-anchor': 'end'},
                       `${num(x1)} ${xLabel}`));
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => isFiniteNumber(p[1]) && (!logY || p[1] > 0));
    if (pts.length > 1) {
      root.appendChild(svg('polyline', {points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(tx(p[1])).toFixed(1)}`).join(' '),
                                        fill: 'none', stroke: color, 'stroke-width': 1.5}));
    } else if (pts.length === 1) {
      root.appendChild(svg('circle', {cx: X(pts[0][0]), cy: Y(tx(pts[0][1])), r: 3, fill: color}));
    }
    for (const p of s.points.filter((q) => !isFiniteNumber(q[1]))) {
      const mark = svg('text', {x: X(p[0]), y: m.t + 4, class: 'tfd-nonfinite', 'text-anchor': 'middle'}, '▲');
      mark.appendChild(svg('title', {}, `${s.name}: ${p[1]} at step ${p[0]}`));
      root.appendChild(mark);
    }
  });
  return root;
}

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

function legend(names) {
  return el('div', {class: 'tfd-legend'}, ...names.map((n, i) =>
    el('span', {class: 'tfd-legend-item'}, el('span', {class: 'tfd-swatch', style: `background:${COLORS[i % COLORS.length]}`}), n)));
}

/** Charts of scalar tags grouped by their parent path: one chart per parent, one line per leaf. */
function chartsByParent(scalars, prefix, {groupBy = (tag) => tag.slice(0, tag.lastIndexOf('/')),
                                            leaf = (tag) => tag.slice(tag.lastIndexOf('/') + 1)} = {}) {
  const groups = new Map();
  for (const tag of Object.keys(scalars).filter((t) => t.startsWith(prefix)).sort()) {
    const key = groupBy(tag);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(tag);
  }
  const box = el('div', {class: 'tfd-multiples'});
  for (const [key, tags] of groups) {
    const series = tags.map((t) => ({name: leaf(t), points: scalars[t]}));
    box.appendChild(el('div', {class: 'tfd-multiple'},
                       lineChart(series, {title: tagTail(key, prefix) || tagTail(tags[0], prefix), width: 300, height: 140}),
                       series.length > 1 ? legend(series.map((s) => s.name)) : null));
  }
  return box;
}

/** Strips "_at_<K>": metric families with one line per K. */
function byMetric(tag) {
  const m = /^(.*)_at_(\d+)(.*)$/.exec(tag);
  return m ? `${m[1]}${m[3]}` : tag;
}
function kOf(tag) {
  const m = /_at_(\d+)/.exec(tag);
  return m ? `@${m[1]}` : tag.slice(tag.lastIndexOf('/') + 1);
}

function heatmapView(hm) {
  const rows = hm.rows, bins = hm.bins;
  const labelW = 230, rowH = 12;
  const colW = bins.length ? Math.max(3, Math.min(40, 480 / bins.length)) : 1;
  const width = labelW + bins.length * colW + 10, height = 24 + rows.length * rowH;
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-heatmap', role: 'img'});
  const finite = hm.values.flat().filter(isFiniteNumber).filter((v) => v > 0);
  const lo = finite.length ? Math.log10(Math.min(...finite)) : 0;
  const hi = finite.length ? Math.log10(Math.max(...finite)) : 1;
  root.appendChild(svg('text', {x: labelW, y: 12, class: 'tfd-tick'},
                       `steps ${bins.length ? bins[0][0] : ''}–${bins.length ? bins[bins.length - 1][1] : ''}; ` +
                       `log10 norm ${lo.toFixed(1)} (light) … ${hi.toFixed(1)} (dark)`));
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

// ------------------------------------------------------------------ views

// What each view says when no checked run has its data (tags from the schema).
const EMPTY = {
  alerts: () => 'No alerts yet. GradientStatistics writes nonfinite / exploding / vanishing gradient alerts, ' +
          'BeyondAccuracy writes fairness_gap and exposure_concentration, the overfitting monitor writes ' +
          `overfitting alerts, all at ${tagOf('alerts')}.`,
  gradients: () => 'No gradient statistics yet. GradientStatistics(log_dir) writes per-layer gradient norms ' +
             `(${familyPrefix('grad')}...) every every_n_steps steps; the noise scale needs two or more replicas.`,
  overfitting: () => 'No overfitting curves yet. The overfitting monitor writes the train/validation gap and probe ' +
               `curves under ${familyPrefix('overfit')}.`,
  fairness: () => 'No per-group table yet. BeyondAccuracy(log_dir, data, candidates, user_group_keys=...) writes ' +
            `${tagOf('fair_groups')} after each evaluation.`,
  exposure: () => 'No exposure data yet. BeyondAccuracy writes the Lorenz curve of item exposure ' +
            `(${tagOf('fair_exposure_lorenz')}) and item-group shares after each evaluation.`,
  diversity: () => `No diversity or coverage yet. BeyondAccuracy writes ${familyPrefix('div')}... after each evaluation.`,
  accuracy: () => `No top-K accuracy yet. BeyondAccuracy writes ${familyPrefix('rank')}... after each evaluation.`,
  explanations: () => 'No explanations yet. The explainer writes attribution tables of the probe examples at ' +
                `${tagOf('explain_attributions')}.`,
};

function alertsView(data) {
  const alerts = data.alerts;
  if (!alerts.length) return emptyState(EMPTY.alerts());
  const box = el('div');
  const counts = {};
  for (const a of alerts) {
    const key = a.status === 'cleared' ? 'cleared' : a.severity;
    counts[key] = (counts[key] || 0) + 1;
  }
  box.appendChild(el('div', {class: 'tfd-summary'}, ...Object.entries(counts).map(([k, n]) =>
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
    String(a.step) + (a.epoch === null || a.epoch === undefined ? '' : ` (epoch ${a.epoch + 1})`),
    a.status === 'cleared' ? 'cleared' : a.severity, a.kind, a.subject,
    el('div', {}, el('div', {text: a.message}),
       el('details', {}, el('summary', {text: 'evidence'}), jsonBlock(a.evidence || {})))]);
  box.appendChild(table(['step', 'severity', 'kind', 'subject', 'message and evidence'], rows,
    (i, j) => (j === 1 ? `tfd-sev-${alerts[i].status === 'cleared' ? 'cleared' : alerts[i].severity}` :
               j === 4 ? 'tfd-message' : '')));
  return box;
}

function gradientsView(data) {
  const hm = data.gradients.layer_norm;
  const s = data.scalars;
  const global = s[tagOf('grad_global_norm')];
  if (!hm.rows.length && !global) return emptyState(EMPTY.gradients());
  const box = el('div');
  if (hm.rows.length) {
    box.appendChild(el('h4', {text: 'Gradient norm per layer (largest reading per step bin; red: NaN/Inf)'}));
    box.appendChild(heatmapView(hm));
    if (hm.nonfinite.length) {
      const first = hm.nonfinite.reduce((a, b) => (b[1] < a[1] ? b : a));
      box.appendChild(el('div', {class: 'tfd-warn',
        text: `Non-finite gradient norms: ${hm.nonfinite.length} readings, first at step ${first[1]} in ${hm.rows[first[0]]}`}));
    }
  }
  const multiples = el('div', {class: 'tfd-multiples'});
  if (global) multiples.appendChild(lineChart([{name: 'global norm', points: global}], {title: 'global gradient norm', width: 300, height: 140}));
  const noise = s[tagOf('grad_noise_scale')];
  multiples.appendChild(noise ? lineChart([{name: 'B_simple', points: noise}], {title: 'gradient noise scale B_simple (examples)', width: 300, height: 140})
                              : el('div', {class: 'tfd-note', text: 'Noise scale: written with two or more replicas (MirroredStrategy).'}));
  box.appendChild(multiples);
  const histograms = Object.entries(data.histograms);
  if (histograms.length) {
    const details = el('details', {}, el('summary', {text: `Newest histograms (${histograms.length}): gradient values, embedding row norms (log10)`}));
    const box2 = el('div', {class: 'tfd-multiples'});
    for (const [tag, h] of histograms) box2.appendChild(el('div', {class: 'tfd-multiple'}, histogramChart(tag, h)));
    details.appendChild(box2);
    box.appendChild(details);
  }
  if (data.gradients.variables) {
    const holder = el('div');
    const button = el('button', {class: 'tfd-button', text: `Gradient norm of each of the ${data.gradients.variables} variables`});
    button.addEventListener('click', async () => {
      button.disabled = true;
      holder.textContent = 'Loading…';
      try {
        const body = await getJSON('scalars', {run: data.run, prefix: tagOf('grad_norm'), max_points: 200});
        holder.textContent = '';
        holder.appendChild(chartsByParent(body.scalars, tagOf('grad_norm'), {groupBy: (t) => t, leaf: () => 'norm'}));
      } catch (e) {
        holder.textContent = `Could not load: ${e.message}`;
      }
    });
    box.appendChild(el('div', {}, button, holder));
  }
  return box;
}

function scalarFamilyView(data, prefix, emptyText, opts) {
  const tags = Object.keys(data.scalars).filter((t) => t.startsWith(prefix));
  if (!tags.length) return emptyState(emptyText());
  return chartsByParent(data.scalars, prefix, opts);
}

function recordsOf(data, type) {
  return (data.records[type] || []).slice().sort((a, b) => a.step - b.step);
}

/** A selector of evaluations (latest first) and the view of the chosen one. */
function perEvaluation(records, renderOne) {
  const box = el('div');
  const holder = el('div');
  const labelOf = (r) => `${r.payload.epoch !== undefined ? `epoch ${r.payload.epoch + 1}, ` : ''}step ${r.step}` +
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

/** A table of rows (objects) with the best and worst value of every numeric column marked. */
function groupTable(rows, columns, {ratioWarn = 0.8} = {}) {
  const headers = ['group', ...columns];
  const body = rows.map((r) => [String(r.group), ...columns.map((c) => num(r[c]))]);
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
  const all = [...body, gapRow, ratioRow];
  return table(headers, all, (i, j) => {
    if (i >= rows.length) return flagged.has(j) ? 'tfd-gap tfd-gap-flagged' : 'tfd-gap';
    if (j === 0) return '';
    if (best[j - 1] === i) return 'tfd-best';
    if (worst[j - 1] === i) return flagged.has(j) ? 'tfd-worst tfd-gap-flagged' : 'tfd-worst';
    return '';
  });
}

function fairnessView(data) {
  const records = recordsOf(data, 'group_table');
  const gaps = Object.keys(data.scalars).filter((t) => t.startsWith(familyPrefix('fair')) && /_gap$/.test(t) && !/exposure_gap/.test(t));
  if (!records.length && !gaps.length) return emptyState(EMPTY.fairness());
  const box = el('div');
  if (records.length) {
    box.appendChild(perEvaluation(records, (r) => {
      const p = r.payload;
      const out = el('div');
      out.appendChild(el('div', {class: 'tfd-note', text: `${p.queries ?? '?'} queries, K = ${(p.ks || []).join(', ')}` +
                                                       (p.missing_positives ? `, ${p.missing_positives} positives not in the candidates` : '')}));
      for (const [key, rows] of Object.entries(p.user_groups || {})) {
        const columns = rows.length ? Object.keys(rows[0]).filter((c) => c !== 'group') : [];
        out.appendChild(el('h4', {text: `by ${key}`}));
        out.appendChild(groupTable(rows, columns));
      }
      if (!Object.keys(p.user_groups || {}).length) out.appendChild(emptyState('No user groups: pass user_group_keys to BeyondAccuracy.'));
      return out;
    }));
  }
  if (gaps.length) {
    box.appendChild(el('h4', {text: 'User-group gaps over evaluations'}));
    const subset = Object.fromEntries(gaps.map((t) => [t, data.scalars[t]]));
    box.appendChild(chartsByParent(subset, familyPrefix('fair'), {groupBy: (t) => byMetric(t), leaf: kOf}));
  }
  return box;
}

function lorenzChart(curves) {
  const size = 220, m = 28;
  const root = svg('svg', {viewBox: `0 0 ${size + m + 8} ${size + m + 8}`, class: 'tfd-lorenz', role: 'img'});
  const X = (v) => m + v * size, Y = (v) => 8 + (1 - v) * size;
  root.appendChild(svg('rect', {x: m, y: 8, width: size, height: size, class: 'tfd-frame'}));
  root.appendChild(svg('line', {x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), class: 'tfd-equality'}));
  root.appendChild(svg('text', {x: m, y: size + 24, class: 'tfd-tick'}, 'share of items (least exposed first) →'));
  const yl = svg('text', {x: 10, y: size, class: 'tfd-tick', transform: `rotate(-90 10 ${size})`}, 'share of exposure →');
  root.appendChild(yl);
  curves.forEach((c, i) => {
    root.appendChild(svg('polyline', {points: c.x.map((x, j) => `${X(x).toFixed(1)},${Y(c.y[j]).toFixed(1)}`).join(' '),
                                      fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2}));
  });
  return root;
}

function exposureView(data) {
  const lorenz = recordsOf(data, 'lorenz');
  const tables = recordsOf(data, 'group_table').filter((r) => (r.payload.item_groups || []).length);
  const gini = Object.keys(data.scalars).filter((t) => t.startsWith(tagOf('fair_exposure_gini')));
  if (!lorenz.length && !tables.length && !gini.length) return emptyState(EMPTY.exposure());
  const box = el('div');
  if (lorenz.length) {
    box.appendChild(perEvaluation(lorenz, (r) => {
      const curves = r.payload.curves || [];
      return el('div', {class: 'tfd-row'}, lorenzChart(curves),
                legend(curves.map((c) => `top-${c.k}: Gini ${num(c.gini)}`)));
    }));
  }
  if (tables.length) {
    box.appendChild(el('h4', {text: 'Item-group exposure share vs. share of relevant items (disparity 1 = parity)'}));
    box.appendChild(perEvaluation(tables, (r) => {
      const rows = r.payload.item_groups;
      const columns = Object.keys(rows[0]).filter((c) => c !== 'group');
      return groupTable(rows, columns, {ratioWarn: 0});
    }));
  }
  if (gini.length) {
    const subset = Object.fromEntries(gini.map((t) => [t, data.scalars[t]]));
    box.appendChild(chartsByParent(subset, familyPrefix('fair'), {groupBy: byMetric, leaf: kOf}));
  }
  return box;
}

function explanationsView(data) {
  const records = recordsOf(data, 'attribution_table');
  if (!records.length) return emptyState(EMPTY.explanations());
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
    return el('div', {}, el('div', {class: 'tfd-note', text: `method: ${p.method ?? '?'}`}),
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
  const covered = ['grad', 'overfit', 'fair', 'div', 'rank'].map(familyPrefix);  // the views above
  const tags = Object.keys(data.scalars).filter((t) => !covered.some((c) => t.startsWith(c)));
  if (!tags.length) return null;
  const box = el('div');
  const subset = Object.fromEntries(tags.map((t) => [t, data.scalars[t]]));
  box.appendChild(chartsByParent(subset, SCHEMA.prefix));
  return box;
}

// Views whose tables are wide show runs one under the other, the others side by side.
const STACKED = new Set(['alerts', 'fairness', 'explanations']);

const VIEWS = [
  ['alerts', 'Alerts', alertsView],
  ['gradients', 'Gradient health', gradientsView],
  ['overfitting', 'Overfitting', (d) => scalarFamilyView(d, familyPrefix('overfit'), EMPTY.overfitting)],
  ['fairness', 'Fairness by user group', fairnessView],
  ['exposure', 'Exposure', exposureView],
  ['diversity', 'Diversity & coverage', (d) => scalarFamilyView(d, familyPrefix('div'), EMPTY.diversity, {groupBy: byMetric, leaf: kOf})],
  ['accuracy', 'Top-K accuracy', (d) => scalarFamilyView(d, familyPrefix('rank'), EMPTY.accuracy, {groupBy: byMetric, leaf: kOf})],
  ['explanations', 'Explanations', explanationsView],
  ['records', 'Other records', otherRecordsView],
  ['scalars', 'Other scalars', otherScalarsView],
  ['skipped', 'Unreadable records', skippedRecordsView],
];

// ------------------------------------------------------------------ page

async function showRuns(main, runs) {
  main.textContent = '';
  if (!runs.length) {
    main.appendChild(emptyState('Select a run.'));
    return;
  }
  const loading = el('div', {class: 'tfd-note', text: 'Loading…'});
  main.appendChild(loading);
  const results = await Promise.all(runs.map((run) => getJSON('overview', {run}).then(
    (data) => ({run, data}), (error) => ({run, error}))));
  loading.remove();
  for (const [id, title, view] of VIEWS) {
    const drawn = results.map(({run, data, error}) => {
      let content;
      try {
        content = error ? el('div', {class: 'tfd-warn', text: `Could not load: ${error.message}`}) : view(data);
      } catch (e) {
        content = el('div', {class: 'tfd-warn', text: `Could not draw this view: ${e.message}`});
      }
      return {run, content};
    }).filter((d) => d.content);
    if (!drawn.length) continue;
    // Runs with data side by side; the "no data yet" message once, naming the runs without.
    const withData = drawn.filter((d) => !d.content.classList.contains('tfd-empty'));
    const without = drawn.filter((d) => d.content.classList.contains('tfd-empty')).map((d) => d.run);
    const section = el('section', {class: 'tfd-section', id: `tfd-${id}`}, el('h2', {text: title}));
    if (!withData.length) {
      section.appendChild(drawn[0].content);
    } else {
      const panels = withData.map(({run, content}) =>
        el('div', {class: 'tfd-panel'}, el('div', {class: 'tfd-run', text: run}), content));
      const row = el('div', {class: 'tfd-panels'}, ...panels);
      row.style.gridTemplateColumns = STACKED.has(id) ? '1fr' : `repeat(${panels.length}, minmax(0, 1fr))`;
      section.appendChild(row);
      if (without.length) {
        section.appendChild(el('div', {class: 'tfd-note', text: `No data in ${without.join(', ')}.`}));
      }
    }
    main.appendChild(section);
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
    root.appendChild(emptyState('No tfrs_diag data in this logdir yet. Add tfrs_diag.callbacks.GradientStatistics ' +
      '(gradient health and alerts) and tfrs_diag.callbacks.BeyondAccuracy (accuracy, fairness, exposure, diversity) ' +
      'to model.fit(..., callbacks=[...]) with log_dir inside this logdir, then reload.'));
    return;
  }
  const main = el('main');
  const picker = el('div', {class: 'tfd-runs'}, el('span', {text: 'Runs side by side: '}));
  const boxes = runs.map((run, i) => {
    const box = el('input', {type: 'checkbox', value: run});
    box.checked = i < 3;
    box.addEventListener('change', () => showRuns(main, boxes.filter((b) => b.checked).map((b) => b.value)));
    picker.appendChild(el('label', {class: 'tfd-run-choice'}, box, run));
    return box;
  });
  root.appendChild(picker);
  root.appendChild(main);
  await showRuns(main, boxes.filter((b) => b.checked).map((b) => b.value));
}

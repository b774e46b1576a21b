// The accuracy / diversity trade-off of a re-ranker's knob (a "pareto" record of
// BeyondAccuracy(sweep=...)): one point per knob value, accuracy up, diversity across,
// both from the same re-ranked lists. Plain SVG, like chart.js.

import {niceTicks} from './chart.js';
import {el, svg} from './dom.js';
import {num, tickLabels} from './format.js';

/** Diversity-side metrics a sweep row may hold, and whether more of them is better. */
export const DIVERSITY = [['coverage', true], ['ild', true], ['aplt', true], ['novelty', true],
                          ['exposure_gini', false], ['gini', false]];

const isFiniteNumber = (v) => typeof v === 'number' && Number.isFinite(v);

/** The diversity metrics present (finite in some row) at K in a sweep's rows. */
export function diversityMetrics(rows, k) {
  return DIVERSITY.filter(([m]) => rows.some((r) => isFiniteNumber(r[`${m}_at_${k}`]))).map(([m]) => m);
}

/**
 * A scatter of `y` (accuracy) against `x` (diversity) at K, one point per row in knob
 * order, joined by a line and labelled with the knob's value. Returns a figure carrying
 * data-quantity (y), data-x (x) and one [data-knob] point per drawn row.
 */
export function paretoChart(rows, {k, x = 'coverage', y = 'ndcg', knob = 'knob', width = 360, height = 250} = {}) {
  const xs = `${x}_at_${k}`, ys = `${y}_at_${k}`;
  const pts = rows.filter((r) => isFiniteNumber(r[xs]) && isFiniteNumber(r[ys])).map((r) => ({x: r[xs], y: r[ys], v: r.value}));
  const better = (DIVERSITY.find(([m]) => m === x) || [x, true])[1];
  const figure = el('figure', {class: 'tfd-pareto', 'data-quantity': `${y}@${k}`, 'data-x': `${x}@${k}`});
  const m = {l: 54, r: 14, t: 22, b: 34};
  const pw = width - m.l - m.r, ph = height - m.t - m.b;
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-chart', role: 'img',
                           'aria-label': `${y}@${k} against ${x}@${k}`});
  figure.appendChild(root);
  if (pts.length) {
    const span = (vals) => {
      let [lo, hi] = [Math.min(...vals), Math.max(...vals)];
      if (hi === lo) { const d = Math.abs(lo) * 0.1 || 0.5; lo -= d; hi += d; }
      const ticks = niceTicks(lo, hi, 4);
      return {lo: Math.min(lo, ticks[0]), hi: Math.max(hi, ticks[ticks.length - 1]), ticks};
    };
    const sx = span(pts.map((p) => p.x)), sy = span(pts.map((p) => p.y));
    const X = (v) => m.l + ((v - sx.lo) / (sx.hi - sx.lo)) * pw;
    const Y = (v) => m.t + ph - ((v - sy.lo) / (sy.hi - sy.lo)) * ph;
    root.appendChild(svg('rect', {x: m.l, y: m.t, width: pw, height: ph, class: 'tfd-plot'}));
    tickLabels(sy.ticks).forEach((label, i) => {
      const yy = Y(sy.ticks[i]);
      root.appendChild(svg('line', {x1: m.l, y1: yy, x2: m.l + pw, y2: yy, class: 'tfd-grid'}));
      root.appendChild(svg('text', {x: m.l - 4, y: yy + 3, class: 'tfd-tick', 'text-anchor': 'end'}, label));
    });
    tickLabels(sx.ticks).forEach((label, i) => {
      const xx = X(sx.ticks[i]);
      root.appendChild(svg('line', {x1: xx, y1: m.t + ph, x2: xx, y2: m.t + ph + 3, class: 'tfd-axis'}));
      root.appendChild(svg('text', {x: xx, y: m.t + ph + 13, class: 'tfd-tick', 'text-anchor': 'middle'}, label));
    });
    root.appendChild(svg('polyline', {class: 'tfd-line', fill: 'none', stroke: '#1f77b4', 'stroke-width': 1.4,
                                      points: pts.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ')}));
    for (const p of pts) {
      const dot = svg('circle', {cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: 4, class: 'tfd-pareto-point',
                                 fill: '#1f77b4', 'data-knob': String(p.v)});
      dot.appendChild(svg('title', {}, `${knob} = ${num(p.v, 6)}: ${y}@${k} ${num(p.y, 6)}, ${x}@${k} ${num(p.x, 6)}`));
      root.appendChild(dot);
      root.appendChild(svg('text', {x: (X(p.x) + 6).toFixed(1), y: (Y(p.y) - 5).toFixed(1), class: 'tfd-tick'},
                           num(p.v)));
    }
  }
  root.appendChild(svg('text', {x: m.l + pw, y: height - 4, class: 'tfd-axis-label', 'text-anchor': 'end'},
                       `${x}@${k} (${better ? 'higher' : 'lower'} is more diverse) →`));
  root.appendChild(svg('text', {x: 2, y: 13, class: 'tfd-y-label'}, `${y}@${k} ↑`));
  figure.appendChild(el('figcaption', {class: 'tfd-over', text:
    `one point per value of ${knob} (labelled), each from the same evaluation pass over the re-ranked top-${k}; ` +
    `accuracy up, diversity across: how much ${y} each step of ${x} costs`}));
  return figure;
}

// Line charts of the Recsys diagnostics page: plain SVG, one y quantity per chart, axes
// with ticks and units, a log scale when the values span more than two decades, and a
// hover read-out of the nearest point. No external library.

import {COLORS, el, legend, svg} from './dom.js';
import {atText, num, tickLabels} from './format.js';

const isFiniteNumber = (v) => typeof v === 'number' && Number.isFinite(v);

/** Ticks at 1, 2 or 5 times a power of ten covering [lo, hi], about `count` of them. */
export function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * p).find((s) => s >= raw) || 10 * p;
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    if (t >= lo - step * 1e-9) ticks.push(Number(t.toPrecision(12)));
  }
  return ticks;
}

/** Powers of ten (as exponents) covering [lo, hi] (log10 values), at most about 6. */
function logTicks(lo, hi) {
  const a = Math.floor(lo), b = Math.ceil(hi);
  const every = Math.max(1, Math.ceil((b - a) / 6));
  const out = [];
  for (let e = a; e <= b; e += every) out.push(e);
  return out;
}

/** Whether values (finite numbers) call for a log y axis: all positive, spanning more than two decades. */
export function wantsLog(values) {
  if (!values.length || values.some((v) => v <= 0)) return false;
  return Math.max(...values) / Math.min(...values) > 100;
}

/**
 * A line chart of one quantity: series [{name, tag, points: [[step, value]]}].
 * Options: quantity (the y label), x ("step" or "epoch": epoch indexes are shown from 1,
 * as Keras counts), domain (a fixed y range), over (the caption: what a point stands for).
 * Returns a figure element carrying data-quantity, data-x and data-scale; each line
 * carries data-tag and data-series.
 */
export function lineChart(series, {quantity, x = 'step', domain = null, over = '', width = 300, height = 180,
                                   title = null} = {}) {
  const m = {l: 50, r: 10, t: 22, b: 30};
  const pw = width - m.l - m.r, ph = height - m.t - m.b;
  const finite = series.flatMap((s) => s.points.filter((p) => isFiniteNumber(p[1])).map((p) => p[1]));
  const log = !domain && wantsLog(finite);
  const scale = log ? 'log' : 'linear';
  const figure = el('figure', {class: 'tfd-figure', 'data-quantity': quantity, 'data-x': x, 'data-scale': scale});
  // The y axis' label is the chart's heading; `title` (e.g. a variable name) goes above it.
  if (title) figure.appendChild(el('div', {class: 'tfd-figure-title', text: title}));
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, width, height, class: 'tfd-chart', role: 'img',
                           'aria-label': `${quantity} by ${x}`});
  figure.appendChild(root);
  const caption = over ? el('figcaption', {class: 'tfd-over', text: over}) : null;
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    if (caption) figure.appendChild(caption);
    return figure;
  }

  // x: the tag's step; epoch indexes are labelled from 1.
  const shift = x === 'epoch' ? 1 : 0;
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  const xPad = x1 === x0 ? 1 : 0;
  const X = (v) => m.l + ((v - x0 + xPad) / (x1 - x0 + 2 * xPad)) * pw;
  // y: the values, a fixed domain, or their log10.
  const ty = (v) => (log ? Math.log10(v) : v);
  let y0, y1;
  if (domain) [y0, y1] = domain;
  else if (finite.length) [y0, y1] = [Math.min(...finite.map(ty)), Math.max(...finite.map(ty))];
  else [y0, y1] = [0, 1];
  if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 0.5; y0 -= d; y1 += d; }
  let yTicks;
  if (log) {
    yTicks = logTicks(y0, y1);
    [y0, y1] = [Math.min(y0, yTicks[0]), Math.max(y1, yTicks[yTicks.length - 1])];
  } else {
    yTicks = niceTicks(y0, y1, 4);
    if (!domain) {  // extend to the outer ticks (a nice frame)
      const step = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 0;
      if (step) {
        if (yTicks[0] > y0) yTicks.unshift(Number((yTicks[0] - step).toPrecision(12)));
        if (yTicks[yTicks.length - 1] < y1) yTicks.push(Number((yTicks[yTicks.length - 1] + step).toPrecision(12)));
        [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
      }
    }
  }
  const Y = (v) => m.t + ph - ((v - y0) / (y1 - y0)) * ph;

  // Axes, grid, ticks and labels.
  root.appendChild(svg('rect', {x: m.l, y: m.t, width: pw, height: ph, class: 'tfd-plot'}));
  const yLabels = tickLabels(yTicks.map((t) => (log ? 10 ** t : t)));
  yTicks.forEach((t, i) => {
    const y = Y(t);
    root.appendChild(svg('line', {x1: m.l, y1: y, x2: m.l + pw, y2: y, class: 'tfd-grid'}));
    root.appendChild(svg('text', {x: m.l - 4, y: y + 3, class: 'tfd-tick', 'text-anchor': 'end'}, yLabels[i]));
  });
  let xs = niceTicks(x0 + shift, x1 + shift, 5).filter((t) => Number.isInteger(t));
  if (!xs.length) xs = [x0 + shift];
  for (const t of xs) {
    const xp = X(t - shift);
    root.appendChild(svg('line', {x1: xp, y1: m.t + ph, x2: xp, y2: m.t + ph + 3, class: 'tfd-axis'}));
    root.appendChild(svg('text', {x: xp, y: m.t + ph + 13, class: 'tfd-tick', 'text-anchor': 'middle'}, num(t)));
  }
  root.appendChild(svg('text', {x: m.l + pw, y: height - 4, class: 'tfd-axis-label', 'text-anchor': 'end'}, x));
  root.appendChild(svg('text', {x: 2, y: 13, class: 'tfd-y-label'}, `${quantity}${log ? ' (log scale)' : ''}`));

  // Lines; non-finite readings as red marks along the top.
  const topY = m.t + 8;
  const drawn = series.map((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => isFiniteNumber(p[1]) && (!log || p[1] > 0));
    const attrs = {'data-tag': s.tag || '', 'data-series': s.name, stroke: color, fill: color};
    if (pts.length > 1) {
      root.appendChild(svg('polyline', {...attrs, class: 'tfd-line', fill: 'none', 'stroke-width': 1.6,
                                        points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(ty(p[1])).toFixed(1)}`).join(' ')}));
    }
    if (pts.length <= 12) {  // few points (epochs, evaluations): each one marked
      for (const p of pts) root.appendChild(svg('circle', {...attrs, class: 'tfd-dot', cx: X(p[0]).toFixed(1), cy: Y(ty(p[1])).toFixed(1), r: 2.5}));
    }
    const bad = s.points.filter((q) => !isFiniteNumber(q[1]));
    for (const p of bad) {
      const mark = svg('text', {x: X(p[0]), y: topY + 3, class: 'tfd-nonfinite', 'text-anchor': 'middle'}, '▲');
      mark.appendChild(svg('title', {}, `${s.name}: ${num(p[1])} at ${atText(p[0], x)}`));
      root.appendChild(mark);
    }
    // What the hover read-out can point at: every reading, the non-finite ones at their marks.
    const at = [...pts.map((p) => ({step: p[0], value: p[1], px: X(p[0]), py: Y(ty(p[1]))})),
                ...bad.map((p) => ({step: p[0], value: p[1], px: X(p[0]), py: topY}))].sort((a, b) => a.step - b.step);
    return {name: s.name, color, at};
  });
  if (series.length > 1) figure.appendChild(legend(series.map((s) => s.name), drawn.map((d) => d.color)));
  if (caption) figure.appendChild(caption);

  // Hover: the reading nearest the pointer, and each line's reading nearest its step.
  const rule = svg('line', {y1: m.t, y2: m.t + ph, class: 'tfd-hover-rule', visibility: 'hidden'});
  const marks = drawn.map((d) => svg('circle', {r: 4, fill: 'none', stroke: d.color, 'stroke-width': 2, visibility: 'hidden'}));
  root.appendChild(rule);
  marks.forEach((c) => root.appendChild(c));
  const readout = el('div', {class: 'tfd-readout', hidden: ''});
  figure.appendChild(readout);
  // A little larger than the plot, so readings on its edges are reachable.
  const overlay = svg('rect', {x: m.l - 6, y: m.t - 6, width: pw + 12, height: ph + 12, class: 'tfd-hover'});
  root.appendChild(overlay);
  const hide = () => {
    readout.hidden = true;
    rule.setAttribute('visibility', 'hidden');
    marks.forEach((c) => c.setAttribute('visibility', 'hidden'));
  };
  overlay.addEventListener('pointerleave', hide);
  overlay.addEventListener('pointermove', (ev) => {
    const box = root.getBoundingClientRect();
    const vx = ((ev.clientX - box.left) / box.width) * width, vy = ((ev.clientY - box.top) / box.height) * height;
    let best = null;
    for (const d of drawn) {
      for (const a of d.at) {
        const dist = Math.hypot(a.px - vx, a.py - vy);
        if (!best || dist < best.dist) best = {dist, step: a.step};
      }
    }
    if (!best) return hide();
    readout.textContent = '';
    readout.appendChild(el('div', {class: 'tfd-readout-at', text: atText(best.step, x)}));
    drawn.forEach((d, i) => {
      if (!d.at.length) return;
      const a = d.at.reduce((p, q) => (Math.abs(q.step - best.step) < Math.abs(p.step - best.step) ? q : p));
      marks[i].setAttribute('cx', a.px.toFixed(1));
      marks[i].setAttribute('cy', a.py.toFixed(1));
      marks[i].setAttribute('visibility', 'visible');
      const line = el('div', {class: 'tfd-readout-line', 'data-series': d.name},
                      el('span', {class: 'tfd-swatch', style: `background:${d.color}`}),
                      `${d.name}: `, el('b', {class: 'tfd-readout-value', text: num(a.value, 6)}));
      if (a.step !== best.step) line.appendChild(document.createTextNode(` (${atText(a.step, x)})`));
      readout.appendChild(line);
    });
    rule.setAttribute('x1', X(best.step).toFixed(1));
    rule.setAttribute('x2', X(best.step).toFixed(1));
    rule.setAttribute('visibility', 'visible');
    // Beside the reading, inside the figure.
    const left = (X(best.step) / width) * box.width;
    readout.hidden = false;
    readout.style.left = `${Math.round(left > box.width / 2 ? left - readout.offsetWidth - 10 : left + 10)}px`;
    const svgTop = box.top - figure.getBoundingClientRect().top;  // an SVG element has no offsetTop
    readout.style.top = `${Math.round(svgTop + (m.t / height) * box.height)}px`;
  });
  return figure;
}

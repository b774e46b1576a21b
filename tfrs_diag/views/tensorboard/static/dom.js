// DOM helpers of the Recsys diagnostics page. Every string from the logs goes in through
// textContent, createTextNode or setAttribute (never innerHTML), so a name like
// "<img src=x onerror=...>" stays text.

export const SVG_NS = 'http://www.w3.org/2000/svg';
export const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return node;
}

export function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

export function legend(names, colors = COLORS) {
  return el('div', {class: 'tfd-legend'}, ...names.map((n, i) =>
    el('span', {class: 'tfd-legend-item'}, el('span', {class: 'tfd-swatch', style: `background:${colors[i % colors.length]}`}), n)));
}

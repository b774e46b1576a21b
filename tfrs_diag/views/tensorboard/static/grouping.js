// Which scalar tags share a chart: one y quantity (and one x unit) per chart. The rules, x
// units and captions come from the schema (`frontend_schema()`); no DOM here, so node tests it.

/** The most specific tag spec of the schema that `tag` is or starts with, or null. */
export function specOf(tag, schema) {
  // tag_specs come longest first.
  return schema.tag_specs.find((s) => tag === s.tag || (s.prefix && tag.startsWith(s.tag))) || null;
}

/** What a tag's step counts: "epoch" for epoch-indexed tags, else "step". */
export function xUnitOf(tag, schema) {
  const spec = specOf(tag, schema);
  return spec && spec.x ? spec.x : 'step';
}

export function familyOf(tag, schema) {
  return schema.families.find((f) => tag.startsWith(f.prefix)) || null;
}

/** What one point of a tag's figure stands for (a template with "{queries}"). */
export function overOf(tag, schema) {
  const spec = specOf(tag, schema);
  if (spec && spec.over) return spec.over;
  const family = familyOf(tag, schema);
  return family ? family.over : '';
}

/** Default grouping: one chart per first name part after the family, a line per the rest. */
export function byFirstPart(rest) {
  const i = rest.indexOf('/');
  return i < 0 ? {key: rest, quantity: rest, series: rest} : {key: rest.slice(0, i), quantity: rest.slice(0, i), series: rest.slice(i + 1)};
}

/** Evaluation metrics: "ndcg_at_10" and "ndcg_at_50" on one chart ("ndcg"), one line per K. */
export function byMetric(rest) {
  const m = /^(.*)_at_(\d+)(.*)$/.exec(rest);
  if (!m) return byFirstPart(rest);
  const key = `${m[1]}${m[3]}`;
  return {key, quantity: key, series: `@${m[2]}`};
}

function ruleMatch(tag, rule) {
  if (!tag.startsWith(rule.prefix)) return null;
  const rest = tag.slice(rule.prefix.length);
  const i = rest.lastIndexOf('/');
  const leaf = rest.slice(i + 1), name = i < 0 ? '' : rest.slice(0, i);
  if (!Object.prototype.hasOwnProperty.call(rule.series, leaf)) return null;
  return {name, series: rule.series[leaf]};
}

/**
 * Charts of `tags`: [{key, rule, prefix, name, quantity, x, domain, over, series: [{tag, name}]}].
 * A tag goes to the first schema chart rule it matches (train and validation of a metric
 * together, each gap and trend statistic alone), else to `group(rest)` of its family
 * (rest: the tag after the family prefix). Charts never mix x units. Ordered by name,
 * then by the rules' order.
 */
export function chartGroups(tags, schema, group = byFirstPart) {
  const groups = new Map();
  for (const tag of [...tags].sort()) {
    const x = xUnitOf(tag, schema);
    let g = null;
    schema.charts.some((rule, r) => {
      const m = ruleMatch(tag, rule);
      if (!m) return false;
      g = {key: `rule${r}|${m.name}|${x}`, rule: r, prefix: rule.prefix, name: m.name, series: m.series,
           quantity: rule.quantity.split('{name}').join(m.name).trim(), domain: rule.domain,
           over: rule.over, order: Object.values(rule.series)};
      return true;
    });
    if (!g) {
      const family = familyOf(tag, schema);
      const prefix = family ? family.prefix : schema.prefix;
      const d = group(tag.slice(prefix.length));
      g = {key: `${prefix}${d.key}|${x}`, rule: schema.charts.length, prefix, name: d.key, series: d.series,
           quantity: d.quantity, domain: null, over: '', order: null};
    }
    if (!groups.has(g.key)) {
      groups.set(g.key, {key: g.key, rule: g.rule, prefix: g.prefix, name: g.name, quantity: g.quantity, x,
                         domain: g.domain, over: g.over || overOf(tag, schema), series: [], order: g.order});
    }
    groups.get(g.key).series.push({tag, name: g.series});
  }
  // Lines in the rule's order (train before validation), else by name with numbers in order (@10 before @100).
  const out = [...groups.values()];
  for (const g of out) {
    g.series.sort(g.order ? (a, b) => g.order.indexOf(a.name) - g.order.indexOf(b.name)
                          : (a, b) => a.name.localeCompare(b.name, 'en', {numeric: true}));
    delete g.order;
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.rule - b.rule));
}

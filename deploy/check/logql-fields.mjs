// Parses every Loki query of a Grafana dashboard with Grafana's own LogQL grammar
// (@grafana/lezer-logql) and prints, as JSON, the stream labels it selects on and the log
// fields it reads (label filters after a parser, line_format templates), so a test can check
// them against the worker's real log lines. Exit 1 when a query does not parse.
//   node deploy/check/logql-fields.mjs deploy/grafana/renewal.json
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(process.env.LOGQL_MODULES ? `${process.env.LOGQL_MODULES}/` : import.meta.url);
const { parser } = require('@grafana/lezer-logql');

const dashboard = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const queries = [];
for (const panel of dashboard.panels ?? []) {
  for (const target of panel.targets ?? []) {
    if ((target.datasource?.type ?? panel.datasource?.type) === 'loki') queries.push({ panel: panel.title, expr: target.expr });
  }
}

const streamLabels = new Set();
const fields = new Set();
const errors = [];
for (const { panel, expr } of queries) {
  const tree = parser.parse(expr);
  const text = (node) => expr.slice(node.from, node.to);
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(`${panel}: syntax error at ${node.from}: ${expr}`);
      if (node.name !== 'Matcher') return;
      const id = node.node.getChild('Identifier');
      if (!id) return;
      // A matcher inside the stream selector names a stream label; one inside a label filter
      // (after `| json`) names a field of the log line.
      let inSelector = false;
      for (let p = node.node.parent; p; p = p.parent) if (p.name === 'Selector') inSelector = true;
      (inSelector ? streamLabels : fields).add(text(id));
    },
    leave(node) {
      if (node.name === 'LineFormatExpr') {
        for (const m of text(node).matchAll(/\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) fields.add(m[1]);
      }
    },
  });
  if (!/\|\s*json\b/.test(expr)) errors.push(`${panel}: no json parser, so no field can be read: ${expr}`);
}

console.log(JSON.stringify({ queries: queries.length, stream_labels: [...streamLabels].sort(), fields: [...fields].sort(), errors }));
process.exit(errors.length ? 1 : 0);

// Lints Cypher statements with Neo4j's own front-end (@neo4j-cypher/language-support).
// stdin: {"schema": {labels, relationshipTypes, propertyKeys},
//         "statements": [{"name", "cypher", "params": {...}}]}
// stdout: [{"name", "diagnostics": [{"severity": "error"|"warning", "message", "line", "column"}]}]
import { readFileSync } from 'node:fs';
import { lintCypherQuery } from '@neo4j-cypher/language-support';

const input = JSON.parse(readFileSync(0, 'utf8'));
const severities = { 1: 'error', 2: 'warning', 3: 'information', 4: 'hint' };
const results = input.statements.map((statement) => {
  const dbSchema = { ...input.schema, parameters: statement.params ?? {} };
  const { diagnostics } = lintCypherQuery(statement.cypher, dbSchema);
  return {
    name: statement.name,
    diagnostics: diagnostics.map((d) => ({
      severity: severities[d.severity] ?? String(d.severity),
      message: d.message,
      line: d.range?.start?.line,
      column: d.range?.start?.character,
    })),
  };
});
process.stdout.write(JSON.stringify(results));

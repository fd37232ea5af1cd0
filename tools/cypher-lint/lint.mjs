// Lints Cypher statements with Neo4j's own front-end (@neo4j-cypher/language-support), against
// Neo4j 5's function and procedure lists and kgrec's graph allow-list.
// stdin: {"schema": {labels, relationshipTypes, propertyKeys},
//         "statements": [{"name", "cypher", "params": {...}}]}
// stdout: [{"name", "diagnostics": [{"severity": "error"|"warning", "message", "line", "column"}]}]
//
// The package checks syntax, semantics, parameters, functions and procedures. Labels, relationship
// types and properties are checked here instead (checkAllowList), on the package's own parse tree:
// its checks skip whatever CREATE, MERGE, SET and REMOVE write, and attribute a row field inside a
// node pattern (`(u:User {id: r.user_id})`) to the node, so row keys had to be declared as graph
// properties, and `u.user_id` passed.
import { readFileSync } from 'node:fs';
import { lintCypherQuery, testData } from '@neo4j-cypher/language-support';
// Internals of the pinned package version (package-lock.json): the parse tree the linter itself uses.
const INTERNALS = './node_modules/@neo4j-cypher/language-support/dist/esm/project/language-support/src';
const { createParsingResult } = await import(`${INTERNALS}/cypherLanguageService.js`);
const P = await import(`${INTERNALS}/generated-parser/CypherCmdParser.js`);

const CYPHER_VERSION = 'CYPHER 5';
// Procedure namespaces of plugins (APOC, Graph Data Science), not of Neo4j itself.
const PLUGIN_NAMESPACES = ['apoc.', 'gds.'];

/**
 * Neo4j 5's built-in functions and procedures.
 *
 * Source: the registry @neo4j-cypher/language-support ships as `testData.mockSchema`, which Neo4j
 * captured from a server (SHOW FUNCTIONS / SHOW PROCEDURES) with the APOC and GDS plugins installed.
 * Kept: the CYPHER 5 entries, functions marked isBuiltIn, procedures outside the plugin namespaces.
 */
function neo4j5Registry() {
  const schema = testData?.mockSchema;
  const functions = schema?.functions?.[CYPHER_VERSION];
  const procedures = schema?.procedures?.[CYPHER_VERSION];
  if (!functions || !procedures) {
    throw new Error(
      '@neo4j-cypher/language-support no longer ships testData.mockSchema: ' +
        "write Neo4j 5's function and procedure lists into a data file here",
    );
  }
  const builtIn = (entries, keep) =>
    Object.fromEntries(Object.entries(entries).filter(([, v]) => keep(v)));
  return {
    functions: { [CYPHER_VERSION]: builtIn(functions, (f) => f.isBuiltIn) },
    procedures: {
      [CYPHER_VERSION]: builtIn(procedures, (p) => !PLUGIN_NAMESPACES.some((ns) => p.name.startsWith(ns))),
    },
  };
}

/** Keys of every map inside a parameter value (the fields of `UNWIND $rows AS r`). */
function mapKeys(value, into = new Set()) {
  if (Array.isArray(value)) value.forEach((v) => mapKeys(v, into));
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      into.add(k);
      mapKeys(v, into);
    }
  }
  return into;
}

/** Keys of the maps found under `field` anywhere in the parameters (`SET e += r.counts`). */
function fieldMapKeys(value, field, into = new Set()) {
  if (Array.isArray(value)) value.forEach((v) => fieldMapKeys(v, field, into));
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === field && v !== null && typeof v === 'object' && !Array.isArray(v)) {
        Object.keys(v).forEach((key) => into.add(key));
      }
      fieldMapKeys(v, field, into);
    }
  }
  return into;
}

/** Property keys a `SET n = <map>` / `SET n += <map>` writes when the map comes from the parameters. */
function keysWrittenFromParams(setItem, params) {
  const source = setItem.expression().getText();
  const parameter = /^\$(\w+)$/.exec(source);
  if (parameter) return Object.keys(params[parameter[1]] ?? {});
  const field = /^\w+\.(\w+)$/.exec(source);
  return field ? [...fieldMapKeys(params, field[1])] : [];
}

const unquote = (text) => text.replace(/^`|`$/g, '');
const ancestor = (ctx, test) => {
  for (let c = ctx.parent; c; c = c.parent) if (test(c)) return c;
  return undefined;
};
function* walk(ctx) {
  yield ctx;
  for (const child of ctx.children ?? []) yield* walk(child);
}

// Contexts whose symbolic names are labels (node) or relationship types (rel); 'either' where the
// grammar does not say, e.g. `WHERE n:Item`.
const LABEL_CONTEXTS = [
  [P.LabelTypeContext, 'node'],
  [P.NodeLabelsIsContext, 'node'],
  [P.InsertNodeLabelExpressionContext, 'node'],
  [P.MultiLabelNodePatternContext, 'node'],
  [P.RelTypeContext, 'rel'],
  [P.InsertRelationshipLabelExpressionContext, 'rel'],
  [P.MultiRelTypeRelPatternContext, 'rel'],
  [P.LabelOrRelTypeContext, 'either'],
  [P.LabelNameContext, 'either'],
];

function labelKind(ctx, declared) {
  if (declared !== 'either') return declared;
  const pattern = ancestor(
    ctx,
    (c) => c instanceof P.NodePatternContext || c instanceof P.RelationshipPatternContext,
  );
  if (pattern instanceof P.NodePatternContext) return 'node';
  if (pattern instanceof P.RelationshipPatternContext) return 'rel';
  return 'either';
}

const PATTERN_CONTEXTS = [
  P.NodePatternContext,
  P.RelationshipPatternContext,
  P.InsertNodePatternContext,
  P.InsertRelationshipPatternContext,
];

/**
 * What each variable holds: 'graph' (a node or relationship: typed so by Neo4j's semantic analysis,
 * or bound in a pattern) or 'row' (unwound from a parameter, or from a row's field). Others are
 * absent. The pattern rule is needed because the analysis returns no symbols for some statements
 * (any with a pattern comprehension).
 */
function classifyVariables(tree, symbols) {
  const kinds = new Map();
  for (const s of symbols) {
    if (s.types.length > 0 && s.types.every((t) => t === 'Node' || t === 'Relationship')) {
      kinds.set(s.variable, 'graph');
    }
  }
  for (const ctx of walk(tree)) {
    if (PATTERN_CONTEXTS.some((type) => ctx instanceof type) && ctx.variable()) {
      kinds.set(ctx.variable().getText(), 'graph');
    } else if (ctx instanceof P.UnwindClauseContext && !kinds.has(ctx.variable().getText())) {
      const isRow = (c) => c instanceof P.VariableContext && kinds.get(c.getText()) === 'row';
      const fromRows = [...walk(ctx.expression())].some((c) => c instanceof P.ParameterContext || isRow(c));
      if (fromRows) kinds.set(ctx.variable().getText(), 'row');
    }
  }
  return kinds;
}

/**
 * Who owns a property key: 'graph' (a node or relationship), 'row' (a parameter map or a row
 * unwound from one), 'unknown' (a variable of neither kind, e.g. a FOREACH element), or undefined
 * (a key of a map kgrec builds itself, e.g. `RETURN {id: u.id}`).
 */
function propertyOwner(keyCtx, kinds) {
  const parent = keyCtx.parent;
  const ofVariable = (variable) => kinds.get(variable.getText()) ?? 'unknown';
  if (parent instanceof P.PropertyContext) {
    const postfix = parent.parent;
    if (postfix instanceof P.PropertyPostfixContext) {
      const expr2 = postfix.parent;
      if (!(expr2 instanceof P.Expression2Context) || expr2.postFix()[0] !== postfix) return 'unknown';
      const base = expr2.expression1();
      if (base.variable()) return ofVariable(base.variable());
      return base.parameter() ? 'row' : 'unknown';
    }
    if (postfix instanceof P.MapProjectionElementContext) return ofVariable(postfix.parent.variable());
    return 'graph'; // index and constraint property lists
  }
  if (parent instanceof P.MapContext) {
    const holder = parent.parent;
    if (PATTERN_CONTEXTS.some((type) => holder instanceof type) || holder instanceof P.PropertiesContext) {
      return 'graph';
    }
    // SET n = {…} / SET n += {…}: the literal map is the whole right-hand side.
    const setItem = ancestor(parent, (c) => c instanceof P.SetPropsContext || c instanceof P.AddPropContext);
    if (setItem && setItem.expression().getText() === parent.getText()) return 'graph';
  }
  return undefined;
}

/**
 * Labels, relationship types and properties outside the allow-list, and row fields that no
 * parameter map has. A property of a variable of unknown kind must be one or the other.
 */
function checkAllowList(parsed, schema, params, symbols) {
  const labels = new Set(schema.labels);
  const relTypes = new Set(schema.relationshipTypes);
  const propertyKeys = new Set(schema.propertyKeys);
  const rowKeys = mapKeys(params);
  const kinds = classifyVariables(parsed.ctx, symbols);
  const diagnostics = [];
  const report = (ctx, message) =>
    diagnostics.push({ severity: 'error', message, line: ctx.start.line - 1, column: ctx.start.column });

  for (const ctx of walk(parsed.ctx)) {
    const labelContext = LABEL_CONTEXTS.find(([type]) => ctx instanceof type);
    if (labelContext) {
      const kind = labelKind(ctx, labelContext[1]);
      for (const nameCtx of ctx.children.filter((c) => c instanceof P.SymbolicNameStringContext)) {
        const name = unquote(nameCtx.getText());
        const known = (kind !== 'rel' && labels.has(name)) || (kind !== 'node' && relTypes.has(name));
        const what = { node: 'Label', rel: 'Relationship type', either: 'Label or relationship type' }[kind];
        if (!known) report(nameCtx, `${what} ${name} is not in kgrec's graph allow-list`);
      }
    } else if (ctx instanceof P.SetPropsContext || ctx instanceof P.AddPropContext) {
      if (kinds.get(ctx.variable().getText()) === 'graph') {
        for (const name of keysWrittenFromParams(ctx, params)) {
          if (!propertyKeys.has(name)) {
            report(ctx, `Property ${name} (from a parameter map) is not in kgrec's graph allow-list`);
          }
        }
      }
    } else if (ctx instanceof P.PropertyKeyNameContext) {
      const name = unquote(ctx.getText());
      const owner = propertyOwner(ctx, kinds);
      if (owner === 'graph' && !propertyKeys.has(name)) {
        report(ctx, `Property ${name} is not in kgrec's graph allow-list`);
      } else if (owner === 'row' && !rowKeys.has(name)) {
        report(ctx, `Field ${name} is in no parameter map`);
      } else if (owner === 'unknown' && !propertyKeys.has(name) && !rowKeys.has(name)) {
        report(ctx, `Key ${name} is neither in kgrec's graph allow-list nor in a parameter map`);
      }
    }
  }
  return diagnostics;
}

const input = JSON.parse(readFileSync(0, 'utf8'));
const registry = neo4j5Registry();
const severities = { 1: 'error', 2: 'warning', 3: 'information', 4: 'hint' };
const results = input.statements.map((statement) => {
  const params = statement.params ?? {};
  // Labels and properties are left to checkAllowList, so the package is not given them.
  const dbSchema = { ...registry, defaultLanguage: CYPHER_VERSION, parameters: params };
  const { diagnostics, symbolTables } = lintCypherQuery(statement.cypher, dbSchema);
  const { statementsParsing } = createParsingResult(statement.cypher, { consoleCommandsEnabled: true });
  const own = statementsParsing.flatMap((parsed, i) =>
    checkAllowList(parsed, input.schema, params, symbolTables[i] ?? []),
  );
  return {
    name: statement.name,
    diagnostics: diagnostics
      .map((d) => ({
        severity: severities[d.severity] ?? String(d.severity),
        message: d.message,
        line: d.range?.start?.line,
        column: d.range?.start?.character,
      }))
      .concat(own),
  };
});
process.stdout.write(JSON.stringify(results));

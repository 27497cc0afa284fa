// The deployment files parse, and the fields that matter agree with the code: images and commands,
// ports and probes, every environment variable a manifest sets is one the service reads, and the
// KEDA trigger watches the list BullMQ really uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { COMMANDS } from '../../services/cli/main.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const k8s = join(root, 'deploy/k8s');

type Doc = Record<string, any>;

function docs(file: string): Doc[] {
  const all = parseAllDocuments(readFileSync(file, 'utf8'));
  for (const d of all) assert.deepEqual(d.errors, [], `${relative(root, file)}: ${d.errors.join('; ')}`);
  return all.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

function walk(dir: string, out: string[] = []): string[] {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

/** Environment variables the code reads (process.env.X, env.X, env['X'] under services/, workers/, bin/). */
function envRead(): Set<string> {
  const names = new Set<string>();
  const files = [...walk(join(root, 'services')), ...walk(join(root, 'workers')), ...walk(join(root, 'bin'))].filter((f) => /\.[jt]s$/.test(f));
  for (const f of files) {
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/\benv(?:\.([A-Z][A-Z0-9_]+)|\[['"]([A-Z][A-Z0-9_]+)['"]\])/g)) names.add(m[1] ?? m[2]!);
    // int(env, 'NAME', ...) and similar helpers take the name as a string argument.
    for (const m of src.matchAll(/\(env, '([A-Z][A-Z0-9_]+)'/g)) names.add(m[1]!);
  }
  return names;
}

const k8sDocs = readdirSync(k8s).filter((f) => f.endsWith('.yaml')).flatMap((f) => docs(join(k8s, f)).map((d) => ({ file: f, d })));
const byKind = (kind: string) => k8sDocs.filter((x) => x.d.kind === kind);
const configMap = byKind('ConfigMap')[0]!.d.data as Record<string, string>;

test('kustomization lists every manifest in deploy/k8s', () => {
  const kust = docs(join(k8s, 'kustomization.yaml'))[0]!;
  const files = readdirSync(k8s).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  assert.deepEqual([...kust.resources].sort(), files);
});

test('every container runs the one stacksanity image with a command the CLI has', () => {
  const deployments = byKind('Deployment');
  assert.deepEqual(deployments.map((x) => x.d.metadata.name).sort(), ['stacksanity-api', 'stacksanity-worker']);
  for (const { d } of deployments) {
    for (const c of d.spec.template.spec.containers) {
      assert.equal(c.image, 'stacksanity');
      assert.ok(COMMANDS[c.args[0]], `${d.metadata.name}: command '${c.args[0]}' is not a stacksanity command`);
    }
  }
  const dockerfile = readFileSync(join(root, 'deploy/Dockerfile'), 'utf8');
  assert.match(dockerfile, /ENTRYPOINT \["node", "bin\/stacksanity\.js"\]/);
});

test('ports, probes and scrape annotations agree with the environment each process reads', () => {
  for (const { d } of byKind('Deployment')) {
    const c = d.spec.template.spec.containers[0];
    const env = Object.fromEntries((c.env ?? []).map((e: Doc) => [e.name, e.value]));
    const portVar = c.args[0] === 'api' ? 'PORT' : 'METRICS_PORT';
    const port = Number(env[portVar]);
    assert.ok(port > 0, `${d.metadata.name}: ${portVar} not set`);
    assert.equal(env.HOST, '0.0.0.0', `${d.metadata.name}: must listen beyond loopback in a pod`);
    assert.equal(c.ports[0].containerPort, port);
    const ann = d.spec.template.metadata.annotations;
    assert.equal(Number(ann['prometheus.io/port']), port);
    assert.equal(ann['prometheus.io/path'], '/metrics');
    for (const p of [c.livenessProbe, c.readinessProbe]) assert.equal(p.httpGet.port, c.ports[0].name);
    if (c.args[0] === 'api') {
      assert.equal(c.livenessProbe.httpGet.path, '/healthz');
      assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    }
    assert.ok(c.resources.requests.memory && c.resources.limits.memory, `${d.metadata.name}: memory request and limit`);
  }
});

test('every environment variable set by a manifest or the compose file is read by the code', () => {
  const read = envRead();
  const set = new Set<string>(Object.keys(configMap));
  for (const { d } of byKind('Deployment')) for (const c of d.spec.template.spec.containers) for (const e of c.env ?? []) set.add(e.name);
  const compose = docs(join(root, 'deploy/compose.yaml'))[0]!;
  for (const [name, svc] of Object.entries(compose.services as Record<string, Doc>)) {
    if (!['api', 'worker'].includes(name)) continue;
    for (const k of Object.keys(svc.environment ?? {})) set.add(k);
  }
  // Variables Node itself reads are not the service's to read.
  const NODE_OWN = new Set(['NODE_OPTIONS', 'NODE_ENV']);
  const unknown = [...set].filter((n) => !read.has(n) && !NODE_OWN.has(n));
  assert.deepEqual(unknown, [], `set in deploy/ but never read by the code: ${unknown.join(', ')}`);
});

test('the KEDA trigger watches BullMQ\'s wait list for the configured prefix and queue', () => {
  const so = byKind('ScaledObject')[0]!.d;
  assert.equal(so.spec.scaleTargetRef.name, 'stacksanity-worker');
  const trig = so.spec.triggers[0];
  assert.equal(trig.type, 'redis');
  assert.equal(trig.metadata.listName, `${configMap.STACKSANITY_PREFIX}:${configMap.STACKSANITY_QUEUE}:wait`);
  assert.match(configMap.STACKSANITY_PREFIX!, /^\{[^{}]+\}$/, 'the prefix must be a hash tag (Redis Cluster)');
});

test('compose: the Prometheus mount holds the config, the rules it names, and the Grafana provisioning', () => {
  const compose = docs(join(root, 'deploy/compose.yaml'))[0]!;
  for (const s of ['api', 'worker', 'redis', 'prometheus', 'grafana']) assert.ok(compose.services[s], `compose: no ${s} service`);
  const prom = docs(join(root, 'deploy/prometheus/prometheus.yml'))[0]!;
  assert.deepEqual(prom.scrape_configs.map((s: Doc) => s.job_name).sort(), ['stacksanity-api', 'stacksanity-worker']);
  for (const f of prom.rule_files) assert.ok(statSync(join(root, 'deploy/prometheus', f.replace(/\s.*$/, ''))).isFile());
  const ds = docs(join(root, 'deploy/grafana/provisioning/datasources/stacksanity.yml'))[0]!;
  assert.equal(ds.datasources[0].type, 'prometheus');
});

test('the Grafana dashboard picks its datasource by variable and links panels to the trace list', () => {
  const dash = JSON.parse(readFileSync(join(root, 'deploy/grafana/dashboards/stacksanity.json'), 'utf8'));
  const vars = dash.templating.list as Doc[];
  assert.equal(vars.find((v) => v.name === 'datasource')?.type, 'datasource');
  const panels = (dash.panels as Doc[]).filter((p) => p.type !== 'row' && p.type !== 'text');
  for (const p of panels) {
    assert.equal(p.datasource.uid, '${datasource}', `${p.title}: datasource not from the variable`);
    for (const t of p.targets) assert.equal(t.datasource.uid, '${datasource}');
  }
  const linked = panels.filter((p) => (p.fieldConfig.defaults.links ?? []).some((l: Doc) => String(l.url).startsWith('${api_url}/v1/traces?')));
  assert.ok(linked.length >= 4, 'panels link to the API trace list');
  // No exported placeholder such as ${DS_PROMETHEUS} left behind.
  assert.doesNotMatch(JSON.stringify(dash), /\$\{DS_[A-Z_]+\}/);
});

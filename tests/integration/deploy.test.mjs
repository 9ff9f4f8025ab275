// Offline checks of the deployment artifacts under deploy/ and of
// config/multi-node.json: no container engine, no cluster, no database.
//   - every YAML under deploy/ parses;
//   - the Kubernetes manifests validate against the Kubernetes OpenAPI
//     schemas shipped by the npm package kubernetes-models, plus a strict
//     pass that rejects unknown fields (the schemas allow them), plus
//     structural assertions tying the objects together;
//   - compose.yaml, nginx.conf (nginx -t), haproxy.cfg (haproxy -c, when
//     installed), the Dockerfile and the systemd unit (systemd-analyze
//     verify, when installed) are consistent with one another;
//   - `mcp-broker check-config` accepts every shipped configuration with
//     dummy values for its ${NAME} placeholders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { BINARY, SOURCE_DIR, key, run } from '../lib/harness.mjs';

const DEPLOY = path.join(SOURCE_DIR, 'deploy');
const K8S = path.join(DEPLOY, 'k8s');
const DOCKER = path.join(DEPLOY, 'docker');
const read = (p) => readFileSync(p, 'utf8');

function walk(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** Parses every document of a YAML file; throws on any error or warning. */
function parseYamlDocs(file) {
  const docs = YAML.parseAllDocuments(read(file), { merge: true, prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) {
    const problems = [...d.errors, ...d.warnings];
    if (problems.length) throw new Error(`${file}: ${problems.map((e) => e.message).join('; ')}`);
  }
  return list.map((d) => d.toJS({ maxAliasCount: 100 })).filter((d) => d != null);
}

function which(cmd) {
  for (const dir of [...(process.env.PATH || '').split(':'), '/usr/sbin', '/sbin', '/usr/bin']) {
    const p = path.join(dir, cmd);
    try { if (statSync(p).isFile()) return p; } catch { /* next */ }
  }
  return null;
}

/** Kubernetes quantity ("128Mi", "250m", "2") as a number of base units. */
function quantity(q) {
  const m = /^([0-9.]+)(m|Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `bad quantity ${q}`);
  const f = { m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2]] ?? 1;
  return Number(m[1]) * f;
}

const placeholders = (text) => [...new Set([...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]))].sort();

// ---------------------------------------------------------------- loading

const k8sFiles = readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
const k8s = []; // { file, obj }
for (const f of k8sFiles) for (const obj of parseYamlDocs(path.join(K8S, f))) k8s.push({ file: f, obj });
const one = (kind) => {
  const all = k8s.filter((d) => d.obj.kind === kind);
  assert.equal(all.length, 1, `exactly one ${kind} in deploy/k8s`);
  return all[0].obj;
};
const deployment = one('Deployment');
const service = one('Service');
const pdb = one('PodDisruptionBudget');
const hpa = one('HorizontalPodAutoscaler');
const secret = one('Secret');
const configMap = one('ConfigMap');
const job = one('Job');
const netpol = one('NetworkPolicy');
const k8sConfigText = configMap.data['config.json'];
const k8sConfig = JSON.parse(k8sConfigText);
const multiNodeText = read(path.join(SOURCE_DIR, 'config/multi-node.json'));
const multiNode = JSON.parse(multiNodeText);
const dockerConfigText = read(path.join(DOCKER, 'config.json'));
const dockerConfig = JSON.parse(dockerConfigText);

const drainOf = (cfg) => cfg.http?.drain_timeout_s ?? 25; // the binary's default
const portOf = (cfg) => Number(/:(\d+)$/.exec(cfg.listen)[1]);
const labelsMatch = (selector, labels) =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

// ---------------------------------------------------------------- YAML

test('every YAML file under deploy/ parses', () => {
  const files = walk(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
  assert.ok(files.length >= 10, `found ${files.length} YAML files`);
  for (const f of files) assert.ok(parseYamlDocs(f).length >= 1, `${f} holds a document`);
});

// ---------------------------------------------------------------- Kubernetes schemas

// kubernetes-models ships the Kubernetes OpenAPI schemas compiled to ajv
// validators; its .d.ts files carry the same field lists, which the strict
// pass below uses to reject unknown (misspelt) fields like kubectl --validate=strict.
function modelSpecifier(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : [null, apiVersion];
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

const dtsCache = new Map();
function dtsInterface(file) {
  if (dtsCache.has(file)) return dtsCache.get(file);
  const src = read(file).replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const imports = new Map();
  for (const m of src.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    for (const name of m[1].split(',').map((s) => s.trim()).filter(Boolean)) {
      const [orig, alias] = name.split(/\s+as\s+/);
      imports.set((alias || orig).trim(), m[2]);
    }
  }
  const head = /export interface (\w+)(?:\s+extends\s+([^{]+))?\s*\{/.exec(src);
  let info = null;
  if (head) {
    let i = head.index + head[0].length, depth = 1;
    const start = i;
    while (depth > 0 && i < src.length) {
      if (src[i] === '{') depth++;
      else if (src[i] === '}') depth--;
      i++;
    }
    const body = src.slice(start, i - 1);
    const props = new Map();
    // "name"?: TYPE;   TYPE may hold nested braces ({ [key: string]: T; })
    const re = /"([^"]+)"\??:\s*/g;
    let m;
    let pos = 0;
    while ((re.lastIndex = pos, m = re.exec(body))) {
      let j = re.lastIndex, d = 0;
      while (j < body.length && !(d === 0 && body[j] === ';')) {
        if ('{<('.includes(body[j])) d++;
        else if ('}>)'.includes(body[j])) d--;
        j++;
      }
      props.set(m[1], body.slice(re.lastIndex, j).trim());
      pos = j + 1;
    }
    info = { file, imports, props, extends: head[2] ? head[2].split(',').map((s) => s.trim()) : [] };
  }
  dtsCache.set(file, info);
  return info;
}

function resolveDts(specifier, fromFile) {
  let js;
  if (specifier.startsWith('.')) js = path.resolve(path.dirname(fromFile), specifier);
  else js = fileURLToPath(import.meta.resolve(specifier));
  const dts = js.replace(/\.js$/, '') + '.d.ts';
  return existsSync(dts) ? dts : null;
}

/** Collects "path: unknown field" for every key the schema does not declare. */
function strictFields(value, info, where, errors) {
  if (!info || value === null || typeof value !== 'object' || Array.isArray(value)) return;
  const props = new Map(info.props);
  for (const base of info.extends) {
    const spec = info.imports.get(base);
    const f = spec && resolveDts(spec, info.file);
    const bi = f && dtsInterface(f);
    if (bi) for (const [k, v] of bi.props) props.set(k, v);
  }
  for (const [k, v] of Object.entries(value)) {
    if (!props.has(k)) {
      errors.push(`${where}.${k}: unknown field`);
      continue;
    }
    strictType(v, props.get(k), info, `${where}.${k}`, errors);
  }
}

function strictType(value, type, ctx, where, errors) {
  let m;
  if ((m = /^Array<([\s\S]+)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => strictType(v, m[1].trim(), ctx, `${where}[${i}]`, errors));
  } else if ((m = /^\{\s*\[key: string\]:\s*([\s\S]+?);?\s*\}$/.exec(type))) {
    if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) strictType(v, m[1].trim(), ctx, `${where}.${k}`, errors);
  } else if (/^I\w+$/.test(type) && ctx.imports.has(type)) {
    const f = resolveDts(ctx.imports.get(type), ctx.file);
    strictFields(value, f && dtsInterface(f), where, errors);
  }
}

test('Kubernetes manifests validate against the Kubernetes schemas (kubernetes-models), strictly', async () => {
  for (const { file, obj } of k8s) {
    const spec = modelSpecifier(obj.apiVersion, obj.kind);
    let mod;
    try {
      mod = await import(spec);
    } catch (e) {
      assert.fail(`${file}: no schema for ${obj.apiVersion} ${obj.kind} (${spec}): ${e.message}`);
    }
    const Model = mod[obj.kind];
    assert.ok(Model, `${spec} exports ${obj.kind}`);
    try {
      new Model(obj).validate();
    } catch (e) {
      assert.fail(`${file} ${obj.kind}/${obj.metadata?.name}: ${e.message}`);
    }
    const errors = [];
    const info = dtsInterface(resolveDts(spec, null));
    assert.ok(info?.props.has('metadata'), `${spec}: field list found`);
    strictFields(obj, info, `${file}:${obj.kind}`, errors);
    assert.deepEqual(errors, [], errors.join('\n'));
  }
});

test('the strict schema pass catches misspelt and misplaced fields', async () => {
  const bad = structuredClone(deployment);
  const c = bad.spec.template.spec.containers[0];
  c.readinesProbe = c.readinessProbe;
  c.securityContext.runAsNonroot = true;
  bad.spec.template.spec.securityContext.readOnlyRootFilesystem = true; // container-only field
  const spec = modelSpecifier(bad.apiVersion, bad.kind);
  const errors = [];
  strictFields(bad, dtsInterface(resolveDts(spec, null)), 'bad', errors);
  assert.deepEqual(errors.sort(), [
    'bad.spec.template.spec.containers[0].readinesProbe: unknown field',
    'bad.spec.template.spec.containers[0].securityContext.runAsNonroot: unknown field',
    'bad.spec.template.spec.securityContext.readOnlyRootFilesystem: unknown field',
  ]);
  const { Deployment } = await import(spec);
  const wrongType = structuredClone(deployment);
  wrongType.spec.replicas = 'three';
  assert.throws(() => new Deployment(wrongType).validate(), /replicas/);
});

// ---------------------------------------------------------------- Kubernetes structure

test('k8s: the expected objects, namespace-agnostic, all listed in kustomization.yaml', () => {
  const pairs = k8s.map(({ obj }) => `${obj.apiVersion} ${obj.kind}`).sort();
  assert.deepEqual(pairs, [
    'apps/v1 Deployment',
    'autoscaling/v2 HorizontalPodAutoscaler',
    'batch/v1 Job',
    'networking.k8s.io/v1 NetworkPolicy',
    'policy/v1 PodDisruptionBudget',
    'v1 ConfigMap',
    'v1 Secret',
    'v1 Service',
  ]);
  for (const { file, obj } of k8s) assert.equal(obj.metadata.namespace, undefined, `${file}: no namespace`);
  const [kust] = parseYamlDocs(path.join(K8S, 'kustomization.yaml'));
  assert.equal(kust.kind, 'Kustomization');
  assert.deepEqual([...kust.resources].sort(), k8sFiles);
});

test('k8s Deployment: probes, graceful termination, hardening, resources', () => {
  const pod = deployment.spec.template.spec;
  assert.equal(deployment.spec.replicas, 3);
  assert.ok(labelsMatch(deployment.spec.selector.matchLabels, deployment.spec.template.metadata.labels));
  assert.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0);
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0];
  assert.deepEqual(c.args, ['serve', '--config', '/etc/mcp-broker/config.json', '--no-migrate']);
  const port = c.ports.find((p) => p.name === 'http');
  assert.equal(port.containerPort, portOf(k8sConfig), 'containerPort = the port of "listen"');
  const probePort = (p) => (p.httpGet.port === 'http' ? port.containerPort : p.httpGet.port);
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.startupProbe.httpGet.path, '/healthz');
  for (const p of [c.readinessProbe, c.livenessProbe, c.startupProbe]) assert.equal(probePort(p), 8080);
  assert.ok(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold >= 60,
    'startup allows the node its 30 s wait for PostgreSQL');

  const sleep = c.lifecycle.preStop.exec.command;
  assert.equal(sleep[0], 'sleep');
  const preStop = Number(sleep[1]);
  assert.ok(preStop >= 5, 'preStop leaves the endpoints time to deregister');
  const drain = drainOf(k8sConfig);
  assert.ok(pod.terminationGracePeriodSeconds >= preStop + drain + 5,
    `grace ${pod.terminationGracePeriodSeconds} >= preStop ${preStop} + drain ${drain} + margin`);

  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.runAsUser, 10001);
  assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  assert.equal(pod.automountServiceAccountToken, false);
  const sc = c.securityContext;
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  assert.equal(sc.capabilities.add, undefined);
  assert.equal(sc.seccompProfile.type, 'RuntimeDefault');

  const r = c.resources;
  // Measured: ~78 MiB idle RSS (see the comment in deployment.yaml).
  assert.ok(quantity(r.requests.memory) >= 96 * 1024 ** 2, 'memory request covers the idle RSS');
  assert.ok(quantity(r.limits.memory) >= 2 * quantity(r.requests.memory));
  assert.ok(quantity(r.requests.cpu) > 0 && quantity(r.limits.cpu) >= quantity(r.requests.cpu));

  const vol = pod.volumes.find((v) => v.name === c.volumeMounts[0].name);
  assert.equal(vol.configMap.name, configMap.metadata.name);
  assert.equal(c.volumeMounts[0].mountPath, '/etc/mcp-broker');
});

test('k8s: every ${NAME} of the config is set in the node and Job environments, secrets from the Secret', () => {
  const names = placeholders(k8sConfigText);
  assert.ok(names.includes('DATABASE_URL') && names.includes('BROKER_KEY'));
  for (const [what, c] of [['Deployment', deployment.spec.template.spec.containers[0]], ['Job', job.spec.template.spec.containers[0]]]) {
    const env = new Map(c.env.map((e) => [e.name, e]));
    for (const n of names) assert.ok(env.has(n), `${what} sets ${n}`);
    for (const e of c.env) {
      const ref = e.valueFrom?.secretKeyRef;
      if (!ref) continue;
      assert.equal(ref.name, secret.metadata.name, `${what} ${e.name} comes from ${secret.metadata.name}`);
      assert.ok(Object.hasOwn(secret.stringData, ref.key), `the Secret has ${ref.key}`);
    }
    for (const n of ['DATABASE_URL', 'BROKER_KEY', 'BROKER_COOKIE_SECRET', 'BROKER_ADMIN_TOKEN', 'GITHUB_CLIENT_SECRET'])
      assert.ok(env.get(n).valueFrom?.secretKeyRef, `${what}: ${n} is a secret`);
  }
  assert.match(read(path.join(K8S, 'secret.example.yaml')), /sealed-secrets/);
  assert.match(read(path.join(K8S, 'secret.example.yaml')), /external-secrets/);
});

test('k8s: Service, PodDisruptionBudget, HPA and NetworkPolicy select the nodes', () => {
  const podLabels = deployment.spec.template.metadata.labels;
  const jobLabels = job.spec.template.metadata.labels;
  // Service: the nodes, never the migration Job's pod.
  assert.ok(labelsMatch(service.spec.selector, podLabels));
  assert.ok(!labelsMatch(service.spec.selector, jobLabels));
  const sp = service.spec.ports[0];
  assert.equal(sp.targetPort, 'http');
  // PDB
  assert.deepEqual(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels);
  assert.ok(pdb.spec.maxUnavailable === 1 || pdb.spec.minAvailable === 2);
  // HPA
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
  assert.equal(hpa.spec.minReplicas, deployment.spec.replicas);
  assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas);
  const cpu = hpa.spec.metrics.find((m) => m.type === 'Resource' && m.resource.name === 'cpu');
  assert.equal(cpu.resource.target.type, 'Utilization');
  // PostgreSQL budget: (maxReplicas + maxSurge) x (pool_size + 2) + the Job <= 100 - 3 reserved.
  const pool = k8sConfig.database.pool_size;
  const peak = (hpa.spec.maxReplicas + deployment.spec.strategy.rollingUpdate.maxSurge) * (pool + 2) + 1;
  assert.ok(peak <= 97, `peak PostgreSQL connections ${peak} fit max_connections=100`);
  // NetworkPolicy: nodes and Job, ingress 8080 from the ingress namespace only.
  assert.ok(labelsMatch(netpol.spec.podSelector.matchLabels, podLabels));
  assert.ok(labelsMatch(netpol.spec.podSelector.matchLabels, jobLabels));
  assert.deepEqual([...netpol.spec.policyTypes].sort(), ['Egress', 'Ingress']);
  assert.equal(netpol.spec.ingress.length, 1);
  const ing = netpol.spec.ingress[0];
  assert.deepEqual(ing.ports, [{ protocol: 'TCP', port: 8080 }]);
  assert.ok(ing.from.length === 1 && ing.from[0].namespaceSelector && !ing.from[0].ipBlock);
  const egress = new Set(netpol.spec.egress.flatMap((e) => e.ports.map((p) => `${p.protocol}/${p.port}`)));
  for (const p of ['TCP/5432', 'UDP/53', 'TCP/53', 'TCP/443']) assert.ok(egress.has(p), `egress ${p}`);
});

test('k8s migration Job: same image and config as the nodes, hardened, one-shot', () => {
  const pod = job.spec.template.spec;
  const c = pod.containers[0];
  const node = deployment.spec.template.spec.containers[0];
  assert.deepEqual(c.args, ['migrate', '--config', '/etc/mcp-broker/config.json']);
  assert.equal(c.image, node.image);
  assert.ok(['OnFailure', 'Never'].includes(pod.restartPolicy));
  assert.ok(job.spec.backoffLimit >= 1);
  assert.equal(pod.volumes[0].configMap.name, configMap.metadata.name);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.equal(pod.securityContext.runAsNonRoot, true);
});

// ---------------------------------------------------------------- compose + nginx + haproxy

const compose = parseYamlDocs(path.join(DOCKER, 'compose.yaml'))[0];
const brokerServices = Object.keys(compose.services).filter((s) => /^broker\d+$/.test(s)).sort();

test('compose: PostgreSQL 15 with a health check, a one-shot migrate, three nodes, nginx', () => {
  const s = compose.services;
  assert.match(s.postgres.image, /^postgres:15/);
  assert.ok(s.postgres.healthcheck.test.join(' ').includes('pg_isready'));
  assert.deepEqual(s.migrate.command, ['migrate', '--config', '/etc/mcp-broker/config.json']);
  assert.equal(s.migrate.depends_on.postgres.condition, 'service_healthy');
  assert.deepEqual(brokerServices, ['broker1', 'broker2', 'broker3']);
  const drain = drainOf(dockerConfig);
  const configVars = placeholders(dockerConfigText);
  const envExample = read(path.join(DOCKER, 'env.example'));
  for (const name of brokerServices) {
    const b = s[name];
    assert.equal(b.command[0], 'serve');
    assert.equal(b.image, s.migrate.image, `${name} runs the image migrate ran`);
    assert.equal(b.depends_on.migrate.condition, 'service_completed_successfully');
    assert.equal(b.depends_on.postgres.condition, 'service_healthy');
    assert.ok(b.volumes.includes('./config.json:/etc/mcp-broker/config.json:ro'), `${name} mounts the shared config`);
    for (const v of configVars) assert.ok(Object.hasOwn(b.environment, v), `${name} sets ${v}`);
    const grace = Number(/^(\d+)s$/.exec(b.stop_grace_period)[1]);
    assert.ok(grace >= drain + 5, `${name} stop_grace_period ${grace}s covers the ${drain}s drain`);
    assert.equal(b.read_only, true);
    assert.deepEqual(b.cap_drop, ['ALL']);
  }
  // Every variable compose interpolates is documented in env.example.
  const composeVars = new Set([...read(path.join(DOCKER, 'compose.yaml')).replace(/#.*$/gm, '').matchAll(/\$\{([A-Z_][A-Z0-9_]*)(?::?[?-][^}]*)?\}/g)].map((m) => m[1]));
  for (const v of composeVars) assert.match(envExample, new RegExp(`^${v}=`, 'm'), `env.example documents ${v}`);
  for (const name of brokerServices) assert.ok(s.nginx.depends_on[name], `nginx waits for ${name}`);
  assert.equal(s.migrate.build.dockerfile, 'deploy/docker/Dockerfile');
  assert.equal(path.resolve(DOCKER, s.migrate.build.context), SOURCE_DIR, 'the build context is the repository root');
});

const nginxConf = read(path.join(DOCKER, 'nginx.conf')).replace(/#.*$/gm, '');

test('nginx: the upstream lists the three compose nodes with passive health checks; SSE-friendly', () => {
  const up = /upstream\s+mcp_broker\s*\{([^}]*)\}/.exec(nginxConf);
  assert.ok(up, 'upstream mcp_broker');
  const servers = [...up[1].matchAll(/^\s*server\s+([^\s;]+)([^;]*);/gm)];
  assert.deepEqual(servers.map((m) => m[1]).sort(), brokerServices.map((b) => `${b}:${portOf(dockerConfig)}`));
  for (const m of servers) {
    assert.match(m[2], /max_fails=\d+/);
    assert.match(m[2], /fail_timeout=\d+s/);
  }
  assert.match(up[1], /^\s*keepalive\s+\d+;/m);
  assert.match(nginxConf, /proxy_http_version 1\.1;/);
  assert.match(nginxConf, /proxy_set_header Connection "";/);
  assert.match(nginxConf, /proxy_buffering off;/);
  assert.match(nginxConf, /proxy_read_timeout 1h;/);
  assert.match(nginxConf, /proxy_next_upstream error timeout http_502 http_503;/);
  assert.doesNotMatch(nginxConf, /non_idempotent/, 'POSTs are never replayed');
  assert.match(read(path.join(DOCKER, 'nginx.conf')), /\/readyz/, 'documents the active health endpoint');
});

test('nginx -t accepts nginx.conf (hostnames rewritten to loopback)', (t) => {
  const nginx = which('nginx');
  if (!nginx) return t.skip('nginx not installed (deploy/install-deps.sh --test installs it)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-nginx-'));
  try {
    // The container logs to /dev/stdout and /dev/stderr; under node's
    // socketpair stdio those cannot be opened, so log to files here.
    let i = 0;
    const errorLog = path.join(dir, 'error.log');
    const conf = read(path.join(DOCKER, 'nginx.conf'))
      .replace(/server\s+(broker\d+):(\d+)/g, (_, _h, port) => `server 127.0.0.${++i}:${port}`)
      .replaceAll('/dev/stderr', errorLog)
      .replaceAll('/dev/stdout', path.join(dir, 'access.log'));
    assert.equal(i, 3);
    writeFileSync(path.join(dir, 'nginx.conf'), conf);
    const r = spawnSync(nginx, ['-t', '-q', '-p', dir, '-e', errorLog, '-c', path.join(dir, 'nginx.conf')], { encoding: 'utf8' });
    const log = existsSync(errorLog) ? read(errorLog) : '';
    assert.equal(r.status, 0, `nginx -t failed:\n${r.stderr}${log}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('HAProxy alternative: active checks on /readyz, the same three nodes; haproxy -c when installed', (t) => {
  const file = path.join(DEPLOY, 'lb/haproxy.cfg');
  const cfg = read(file).replace(/#.*$/gm, '');
  assert.match(cfg, /option httpchk GET \/readyz/);
  const servers = [...cfg.matchAll(/^\s*server\s+\S+\s+(\S+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(servers, brokerServices.map((b) => `${b}:8080`));
  assert.doesNotMatch(cfg, /retry-on[^\n]*\b50[234]\b/, 'no status-code retries: they would replay POSTs');
  const haproxy = which('haproxy');
  if (!haproxy) return t.skip('haproxy not installed: syntax not checked');
  const r = spawnSync(haproxy, ['-c', '-f', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, `haproxy -c failed:\n${r.stdout}${r.stderr}`);
});

// ---------------------------------------------------------------- Dockerfile

test('Dockerfile: multi-stage, non-root, runtime libraries only, signals and CMD as documented', () => {
  const src = read(path.join(DOCKER, 'Dockerfile'));
  const lines = src.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const froms = lines.filter((l) => /^FROM\s/i.test(l));
  assert.equal(froms.length, 2, 'two stages');
  assert.match(froms[0], /^FROM debian:12 AS build$/);
  assert.match(froms[1], /^FROM debian:12-slim$/);
  const stages = src.replace(/^\s*#.*$/gm, '').split(/^FROM .*$/m);
  const [build, runtime] = [stages[1], stages[2]];
  assert.match(build, /-DCMAKE_BUILD_TYPE=Release/);
  assert.match(build, /-DMCPB_TESTS=OFF/);
  for (const p of ['build-essential', 'cmake', 'pkg-config', 'libmicrohttpd-dev', 'libpq-dev', 'libssl-dev', 'libjansson-dev', 'libcurl4-openssl-dev'])
    assert.match(build, new RegExp(`\\s${p}\\b`), `build installs ${p}`);
  const installed = /apt-get install[^&]*?--no-install-recommends([^&]*)/.exec(runtime.replace(/\\\n/g, ' '))[1].trim().split(/\s+/).sort();
  assert.deepEqual(installed, ['ca-certificates', 'libcurl4', 'libjansson4', 'libmicrohttpd12', 'libpq5', 'libssl3']);
  assert.doesNotMatch(runtime, /-dev\b|build-essential|\bcurl\b(?!4)/, 'no build tools or curl at run time');
  const user = lines.filter((l) => /^USER\s/.test(l)).pop();
  assert.match(user, /^USER 10001(:10001)?$/, 'numeric non-root user');
  assert.ok(lines.indexOf(user) > lines.indexOf(froms[1]), 'USER is set in the runtime stage');
  assert.match(runtime, /COPY --from=build \/src\/build\/mcp-broker \/usr\/local\/bin\/mcp-broker/);
  assert.match(runtime, /COPY sql\/ \/usr\/share\/mcp-broker\/sql\//);
  assert.ok(lines.includes('EXPOSE 8080'));
  assert.ok(lines.includes('STOPSIGNAL SIGTERM'));
  assert.ok(lines.includes('ENTRYPOINT ["mcp-broker"]'));
  assert.ok(lines.includes('CMD ["serve", "--config", "/etc/mcp-broker/config.json"]'));
  const hc = lines.find((l) => l.startsWith('HEALTHCHECK'));
  const hcCmd = JSON.parse(/CMD (\[.*\])$/.exec(hc)[1]);
  assert.equal(hcCmd[0], '/bin/bash', 'health check needs nothing beyond the base image');
  // Every build-stage COPY source exists and is allowed by the ignore file.
  const ignore = read(path.join(DOCKER, 'Dockerfile.dockerignore')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  assert.equal(ignore[0], '*', 'allow-list');
  const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
  for (const m of src.matchAll(/^COPY (?!--from)(\S+)/gm)) {
    const p = m[1].replace(/\/$/, '');
    assert.ok(existsSync(path.join(SOURCE_DIR, p)), `COPY source ${p} exists`);
    assert.ok(allowed.includes(p), `COPY source ${p} is in the build context`);
  }
});

// ---------------------------------------------------------------- systemd

test('systemd unit: simple service, check-config first, drain-sized stop timeout, hardened', (t) => {
  const file = path.join(DEPLOY, 'systemd/mcp-broker.service');
  const text = read(file);
  const kv = new Map();
  let section = '';
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (!l || l.startsWith('#')) continue;
    const s = /^\[(\w+)\]$/.exec(l);
    if (s) { section = s[1]; continue; }
    const [k, ...v] = l.split('=');
    const name = `${section}.${k}`;
    kv.set(name, [...(kv.get(name) || []), v.join('=')]);
  }
  const get = (k) => (kv.get(`Service.${k}`) || []).at(-1);
  assert.equal(get('Type'), 'simple');
  assert.ok(get('DynamicUser') === 'yes' || get('User') === 'mcp-broker');
  assert.equal(get('EnvironmentFile'), '/etc/mcp-broker/env');
  assert.equal(get('ExecStartPre'), '/usr/local/bin/mcp-broker check-config --config /etc/mcp-broker/config.json');
  assert.equal(get('ExecStart'), '/usr/local/bin/mcp-broker serve --config /etc/mcp-broker/config.json');
  assert.equal(get('KillSignal'), 'SIGTERM');
  assert.equal(get('Restart'), 'on-failure');
  assert.ok(Number(get('TimeoutStopSec')) >= drainOf(multiNode) + 5, 'TimeoutStopSec covers the drain');
  const want = {
    ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', PrivateDevices: 'yes', NoNewPrivileges: 'yes',
    ProtectKernelTunables: 'yes', ProtectKernelModules: 'yes', ProtectKernelLogs: 'yes', ProtectControlGroups: 'yes',
    RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX', RestrictNamespaces: 'yes', LockPersonality: 'yes',
    MemoryDenyWriteExecute: 'yes', CapabilityBoundingSet: '', UMask: '0077',
  };
  for (const [k, v] of Object.entries(want)) assert.equal(get(k), v, `${k}=${v}`);
  assert.equal(kv.get('Service.SystemCallFilter')[0], '@system-service');
  assert.deepEqual(kv.get('Install.WantedBy'), ['multi-user.target']);

  const analyze = which('systemd-analyze');
  if (!analyze) return t.skip('systemd-analyze not installed: unit not verified');
  // verify needs the executables to exist: point them at the built binary.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-unit-'));
  try {
    const unit = path.join(dir, 'mcp-broker.service');
    writeFileSync(unit, text.replaceAll('/usr/local/bin/mcp-broker', BINARY));
    const r = spawnSync(analyze, ['verify', unit], { encoding: 'utf8' });
    assert.equal(r.status, 0, `systemd-analyze verify failed:\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /Unknown|ignoring|Invalid|Failed/i, r.stderr);
    const s = spawnSync(analyze, ['security', '--offline=true', '--threshold=20', unit], { encoding: 'utf8' });
    if (/unrecognized option|Unknown option|invalid option/i.test(s.stderr)) return; // systemd < 250
    assert.equal(s.status, 0, `exposure above 2.0 (threshold 20):\n${s.stdout.split('\n').slice(-3).join('\n')}${s.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- check-config

function dummyEnv(names) {
  const env = {};
  for (const n of names) env[n] = 'dummy';
  Object.assign(env, {
    DATABASE_URL: 'postgresql://mcpb:dummy@db.invalid:5432/mcpb',
    BROKER_KEY: key(),
    BROKER_COOKIE_SECRET: key(),
    BROKER_ADMIN_TOKEN: 'dummy-admin-token-0123456789',
    BROKER_PUBLIC_URL: 'https://mcp.example.com',
    MCP_DOWNSTREAM_URL: 'http://github-mcp:8082/mcp',
  });
  return Object.fromEntries(Object.entries(env).filter(([k]) => names.includes(k)));
}

const configs = [
  ['config/multi-node.json', () => multiNodeText],
  ['deploy/docker/config.json', () => dockerConfigText],
  ['deploy/k8s/configmap.yaml (config.json)', () => k8sConfigText],
];

for (const [name, text] of configs) {
  test(`mcp-broker check-config accepts ${name} with dummy values`, async () => {
    assert.ok(existsSync(BINARY), `${BINARY} not built (cmake --build build)`);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-cfg-'));
    try {
      const file = path.join(dir, 'config.json');
      writeFileSync(file, text());
      const names = placeholders(text());
      const env = dummyEnv(names);
      assert.deepEqual(Object.keys(env).sort(), names);
      const ok = await run(['check-config', '--config', file], { env });
      assert.equal(ok.code, 0, `${ok.stdout}${ok.stderr}`);
      assert.match(ok.stdout, /ok \(\d+ clients, 1 upstreams, 1 resources\)/);
      // The placeholders are real: without one, check-config names it.
      const { BROKER_KEY: _, ...without } = env;
      const missing = await run(['check-config', '--config', file], { env: without });
      assert.notEqual(missing.code, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('multi-node config: https public_url, a pool within the connection budget, a github upstream and a resource', () => {
  assert.match(multiNode.public_url, /^https:\/\//);
  assert.equal(multiNode.listen, '0.0.0.0:8080');
  assert.ok(multiNode.database.pool_size >= multiNode.http.threads, 'a pool connection per HTTP worker');
  assert.equal(multiNode.upstreams.github.preset, 'github');
  assert.equal(multiNode.resources[0].upstream, 'github');
  assert.ok(multiNode.admin_tokens.length >= 1);
  // The three shipped multi-node configurations differ only where documented.
  assert.deepEqual({ ...dockerConfig, public_url: multiNode.public_url }, multiNode);
  assert.deepEqual(k8sConfig, multiNode);
});

test('the example Secret cannot be deployed as is: its placeholders fail check-config', async () => {
  assert.ok(existsSync(BINARY), `${BINARY} not built`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-cfg-'));
  try {
    const file = path.join(dir, 'config.json');
    writeFileSync(file, k8sConfigText);
    const env = { ...secret.stringData, MCP_DOWNSTREAM_URL: 'http://github-mcp:8082/mcp' };
    const r = await run(['check-config', '--config', file], { env });
    assert.equal(r.code, 1);
    assert.match(r.stdout + r.stderr, /encryption_keys\[0\]\.key/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

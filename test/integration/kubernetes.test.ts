// deploy/kubernetes/: every manifest validated against the Kubernetes API schemas
// (kubernetes-models, and @kubernetes-models/prometheus-operator for the ServiceMonitor), and the
// arithmetic that keeps a rolling update lossless: the grace period covers preStop + the drain +
// the primary's kill grace; the probes hit the right port and the right health endpoints.
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { parseDotenv } from '../../lib/config/dotenv.js';
import { SETTING_NAMES, validateSettings } from '../../lib/config/settings.js';
import { KILL_GRACE_MS } from '../../lib/ipc.js';
import { HEALTH_PATHS } from '../../lib/http/routes/health.js';
import { ROOT } from '../support/service.js';

const DIR = join(ROOT, 'deploy', 'kubernetes');

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const MODELS: Record<string, new (doc: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

function load(file: string): Doc[] {
  return parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((d) => {
    expect(d.errors, `${file}: YAML errors`).to.deep.equal([]);
    return d.toJS() as Doc;
  });
}

describe('Kubernetes manifests (deploy/kubernetes)', () => {
  const kustomization = load('kustomization.yaml')[0]!;
  const files = kustomization.resources as string[];
  const docs = files.flatMap((f) => load(f).map((doc) => ({ file: f, doc })));
  const one = (kind: string) => docs.find((d) => d.doc.kind === kind)!.doc;

  it('the kustomization lists every manifest of the folder, and only those', () => {
    const onDisk = readdirSync(DIR).filter(
      (f) => f.endsWith('.yaml') && f !== 'kustomization.yaml',
    );
    expect([...files].sort()).to.deep.equal(onDisk.sort());
  });

  it('every manifest validates against the API schema of its kind', () => {
    expect(docs.map((d) => d.doc.kind).sort()).to.deep.equal(
      [
        'ConfigMap',
        'Deployment',
        'HorizontalPodAutoscaler',
        'PodDisruptionBudget',
        'Secret',
        'Service',
        'ServiceMonitor',
      ].sort(),
    );
    for (const { file, doc } of docs) {
      const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
      expect(Model, `${file}: no schema for ${doc.apiVersion} ${doc.kind}`).to.not.equal(undefined);
      expect(() => new Model!(doc as never).validate(), file).to.not.throw();
    }
  });

  it('the validator is real: a broken Deployment is refused', () => {
    const bad = structuredClone(one('Deployment'));
    bad.spec.replicas = 'two';
    expect(() => new Deployment(bad).validate()).to.throw(/replicas/);
    const noPort = structuredClone(one('Deployment'));
    noPort.spec.template.spec.containers[0].readinessProbe.httpGet.port = { name: 'http' };
    expect(() => new Deployment(noPort).validate()).to.throw();
  });

  it('config.env in the ConfigMap is valid settings, every key a known setting', () => {
    const text = one('ConfigMap').data['config.env'] as string;
    const { values, problems } = parseDotenv(text);
    expect(problems).to.deep.equal([]);
    for (const k of values.keys()) expect(SETTING_NAMES as readonly string[]).to.include(k);
    expect(() => validateSettings(Object.fromEntries(values))).to.not.throw();
  });

  it("grace period >= preStop + SERVICE_GRACEFUL_TIMEOUT + the primary's kill grace + a margin", () => {
    const settings = validateSettings(
      Object.fromEntries(parseDotenv(one('ConfigMap').data['config.env'] as string).values),
    );
    const pod = one('Deployment').spec.template.spec;
    const container = pod.containers[0];
    const sleep = container.lifecycle.preStop.exec.command as string[];
    expect(sleep[0]).to.equal('sleep');
    const preStop = Number(sleep[1]);
    const needed = preStop + (settings.SERVICE_GRACEFUL_TIMEOUT + KILL_GRACE_MS) / 1000 + 1;
    expect(pod.terminationGracePeriodSeconds).to.be.at.least(needed);
  });

  it('probes: the http port is SERVICE_PORT; startup and liveness on /health/live, readiness on /health/ready', () => {
    const settings = validateSettings(
      Object.fromEntries(parseDotenv(one('ConfigMap').data['config.env'] as string).values),
    );
    const container = one('Deployment').spec.template.spec.containers[0];
    const http = (container.ports as Doc[]).find((p) => p.name === 'http')!;
    expect(http.containerPort).to.equal(settings.SERVICE_PORT);
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const get = container[probe].httpGet;
      expect(get.port, probe).to.equal('http');
      expect(HEALTH_PATHS.has(get.path), `${probe} ${get.path}`).to.equal(true);
    }
    // A dependency outage must not restart pods: liveness never looks at MySQL or Redis.
    expect(container.livenessProbe.httpGet.path).to.equal('/health/live');
    expect(container.startupProbe.httpGet.path).to.equal('/health/live');
    expect(container.readinessProbe.httpGet.path).to.equal('/health/ready');
    expect(one('Service').spec.ports[0].targetPort).to.equal('http');
    const sm = one('ServiceMonitor').spec.endpoints[0];
    expect(sm).to.include({ port: 'http', path: '/metrics' });
  });

  it('non-root, read-only root filesystem, a writable data/ volume, config from the ConfigMap, secrets from the Secret', () => {
    const pod = one('Deployment').spec.template.spec;
    const c = pod.containers[0];
    expect(pod.securityContext.runAsNonRoot).to.equal(true);
    expect(c.securityContext).to.deep.include({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
    expect(c.securityContext.capabilities.drop).to.deep.equal(['ALL']);
    const mounts = c.volumeMounts as Doc[];
    const data = mounts.find((m) => m.mountPath === '/app/data')!;
    expect((pod.volumes as Doc[]).find((v) => v.name === data.name)!.emptyDir).to.not.equal(
      undefined,
    );
    const config = mounts.find((m) => m.mountPath === '/app/config.env')!;
    expect((pod.volumes as Doc[]).find((v) => v.name === config.name)!.configMap.name).to.equal(
      one('ConfigMap').metadata.name,
    );
    expect(c.envFrom[0].secretRef.name).to.equal(one('Secret').metadata.name);
  });

  it('the autoscaler scales on the in-flight gauge the primary serves; PDB and selectors match the pods', () => {
    const metric = one('HorizontalPodAutoscaler').spec.metrics[0].pods.metric.name as string;
    expect(metric).to.equal('http_server_active_requests');
    // The primary's own registry (lib/supervisor/scrape-render.ts) serves it.
    const scrape = readFileSync(join(ROOT, 'lib', 'supervisor', 'scrape-render.ts'), 'utf8');
    expect(scrape).to.contain(`name: '${metric}'`);
    const labels = one('Deployment').spec.template.metadata.labels;
    for (const kind of ['PodDisruptionBudget'])
      expect(labels).to.deep.include(one(kind).spec.selector.matchLabels);
    expect(labels).to.deep.include(one('Service').spec.selector);
    expect(one('Service').metadata.labels).to.deep.include(
      one('ServiceMonitor').spec.selector.matchLabels,
    );
  });
});

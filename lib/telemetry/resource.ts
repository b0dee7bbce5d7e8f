// The OTLP resource of a worker, shared by the metrics push and the trace export so that a
// backend joins a worker's metrics and spans on the same service.instance.id. Attributes only:
// each SDK module builds its own Resource from them (this module loads no SDK).
import { hostname } from 'node:os';
import type { Settings } from '../config/settings.js';
import { version } from '../version.js';

export function resourceAttributes(
  settings: Pick<Settings, 'SERVICE_NAME'>,
  instanceId: string,
): Record<string, string | number> {
  return {
    'service.name': settings.SERVICE_NAME,
    'service.instance.id': instanceId,
    'service.version': version(),
    'host.name': hostname(),
    'process.pid': process.pid,
  };
}
